"""The idle watchdog the autostop role installs, driven minute by minute on a simulated VM.

The VM is a directory tree laid out like the real one (/proc/uptime, /proc/net/tcp, the Ollama
service's cgroup cpu.stat, /dev/pts) plus fake commands that answer in the vendors' formats:
journalctl -o json (systemd's journal JSON export: __CURSOR, __MONOTONIC_TIMESTAMP in µs as a
string, MESSAGE), Ollama's request log lines as gin writes them (gin logger.go
defaultLogFormatter: `[GIN] 2006/01/02 - 15:04:05 | 200 |  1.2s |  127.0.0.1 | POST  "/api/chat"`,
enabled by gin.Default() in ollama server/routes.go:1869 at v0.32.15) and nvidia-smi's CSV
query output. Azure replies follow Microsoft's documents: the IMDS token response ("Use managed
identities on a VM to acquire an access token": access_token, expires_in, resource, token_type),
IMDS instance/compute (subscriptionId, resourceGroupName, name, resourceId), and ARM's
asynchronous pattern ("Track asynchronous Azure operations": 202 with Azure-AsyncOperation,
Location and Retry-After headers; the status URL answers {"status": "InProgress" | "Succeeded" |
"Failed" | "Canceled", "error": {...}}).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SOURCE = (
    Path(__file__).resolve().parent.parent / "ansible/roles/autostop/files/rehearsal_watchdog.py"
)
_spec = importlib.util.spec_from_file_location("rehearsal_watchdog", SOURCE)
assert _spec is not None and _spec.loader is not None
wd = importlib.util.module_from_spec(_spec)
sys.modules["rehearsal_watchdog"] = wd  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(wd)

MIN = 60.0
BOOT_ID = "6f1c0c9a4e0b4b9f9d1f0b0f3c7e2a11"
CGROUP = "/system.slice/ollama.service"
# /proc/net/tcp as the kernel writes it: sshd listening on :22 (0x0016) with one established
# connection from the laptop (the `ssh -N -L 11434:...` tunnel), Ollama on 127.0.0.1:11434
# (0x2CAA) listening plus one established idle keep-alive connection from the tunnel's end.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 2 1
   2: 0A00000F:0016 0B00000A:D431 01 00000000:00000000 02:0009A7E5 00000000     0        0 3 4
   3: 0100007F:2CAA 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   999        0 4 1
   4: 0100007F:2CAA 0100007F:9C44 06 00000000:00000000 03:00000F4B 00000000     0        0 0 3
"""


def gin(path: str, method: str = "POST", status: int = 200, wall: str = "2026/08/21 - 10:00:00"):
    return f'[GIN] {wall} | {status} |  1.234567s |       127.0.0.1 | {method:<7} "{path}"'


class FakeSystem(wd.System):
    """The watchdog's view of a VM: a directory tree and commands with the real output formats."""

    def __init__(self, vm: VM) -> None:
        super().__init__(root=vm.root, monotonic=lambda: vm.mono)
        self.vm = vm

    def run(self, cmd: list[str], timeout: float) -> tuple[int, str]:
        vm = self.vm
        vm.commands.append(cmd)
        if cmd[0] in vm.fail_commands:
            raise vm.fail_commands[cmd[0]]
        if cmd[0] == "journalctl":
            after = next((a.split("=", 1)[1] for a in cmd if a.startswith("--after-cursor=")), None)
            start = int(after.rsplit("=", 1)[1]) + 1 if after else 0
            lines = [json.dumps(e) for e in vm.journal[start:]]
            return 0, "".join(line + "\n" for line in lines)
        if cmd[:2] == ["systemctl", "show"]:
            return 0, CGROUP + "\n"
        if cmd[0] == "nvidia-smi":
            if vm.gpu_percent is None:
                raise FileNotFoundError(2, "No such file or directory", "nvidia-smi")
            return 0, f"{vm.gpu_percent:g}\n"
        raise AssertionError(f"unexpected command {cmd}")


@dataclass
class VM:
    """A simulated VM, advanced one timer run (a minute) at a time."""

    root: Path
    cfg: Any
    mono: float = 0.0  # CLOCK_MONOTONIC, seconds; ~uptime on a real VM
    uptime: float = 0.0
    wall: float = 1_787_000_000.0  # what a wall clock would say (steps freely)
    gpu_percent: float | None = 0.0
    cpu_usec: int = 5_000_000
    journal: list[dict[str, Any]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    fail_commands: dict[str, BaseException] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[Any] = field(default_factory=list)
    powered_off: bool = False

    def __post_init__(self) -> None:
        for d in ("proc/net", "proc/sys/kernel/random", "dev/pts", f"sys/fs/cgroup{CGROUP}"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "proc/net/tcp").write_text(PROC_NET_TCP)
        (self.root / "proc/sys/kernel/random/boot_id").write_text(BOOT_ID + "\n")
        self.sync()

    def sync(self) -> None:
        (self.root / "proc/uptime").write_text(f"{self.uptime:.2f} {self.uptime * 1.7:.2f}\n")
        (self.root / f"sys/fs/cgroup{CGROUP}/cpu.stat").write_text(
            f"usage_usec {self.cpu_usec}\nuser_usec {self.cpu_usec // 2}\n"
            f"system_usec {self.cpu_usec // 2}\n"
        )

    def ollama_log(self, message: str) -> None:
        """Ollama's service writes a line; journald stamps it with both clocks."""
        i = len(self.journal)
        self.journal.append(
            {
                "__CURSOR": f"s=0b1c;i={i}",
                "__REALTIME_TIMESTAMP": str(int(self.wall * 1e6)),
                "__MONOTONIC_TIMESTAMP": str(int(self.mono * 1e6)),
                "_BOOT_ID": BOOT_ID,
                "MESSAGE": message,
            }
        )

    def infer(self, path: str = "/api/chat") -> None:
        self.ollama_log(gin(path))

    def journal_fn(self, event: str, level: int = 6, **fields: Any) -> None:
        self.log.append({"event": event, "level": level, **fields})

    def actor(self, http: Any = None) -> Any:
        def run(cmd: list[str]) -> tuple[int, str]:
            self.commands.append(cmd)
            if cmd == ["systemctl", "poweroff"]:
                self.powered_off = True
            return 0, ""

        kw = {"http": http} if http else {}
        return wd.Actor(
            self.cfg, self.journal_fn, run=run, sleep=self.sleep, monotonic=lambda: self.mono, **kw
        )

    def sleep(self, seconds: float) -> None:
        self.mono += seconds
        self.uptime += seconds

    def minute(self, http: Any = None) -> Any:
        """One timer run, then a minute passes."""
        self.sync()
        state = self.root / "state.json"
        decision = wd.run_once(self.cfg, FakeSystem(self), state, self.actor(http))
        self.decisions.append(decision)
        self.mono += MIN
        self.uptime += MIN
        self.wall += MIN
        return decision

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e["event"] == name]


def new_vm(tmp_path: Path, **cfg: Any) -> VM:
    return VM(tmp_path, wd.Config(**{"idle_minutes": 30, "max_hours": 4, "cloud": "aws", **cfg}))


def first_stop(vm: VM, minutes: int, each: Any = None) -> int | None:
    """Run `minutes` timer runs; the index of the first stop decision, or None."""
    for i in range(minutes):
        if each is not None:
            each(vm, i)
        if vm.minute().action == "stop":
            return i
    return None


# --- idle means no inference -----------------------------------------------------------------


def test_open_tunnel_and_no_inference_stops_within_idle_minutes_plus_two(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.minute()  # the first run of the boot
    vm.infer()  # the last inference, then the user walks away with the tunnel open
    last_inference = vm.mono
    stop = first_stop(vm, 60)
    assert stop is not None and vm.powered_off
    stopped_at = vm.mono - MIN  # the run that decided
    assert 30 * MIN <= stopped_at - last_inference <= 32 * MIN
    reasons = vm.decisions[-1].reasons
    assert reasons[0].startswith("idle_minutes reached: idle 30.")
    assert "1 SSH connection(s) without terminal input (tunnels are not activity)" in reasons
    # The tunnel's sshd connection and Ollama's idle keep-alive socket were both there all along.
    assert wd.established([PROC_NET_TCP], 22) == 1 and wd.established([PROC_NET_TCP], 11434) == 1


def test_inference_every_minute_never_stops_before_max_hours(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    stop = first_stop(vm, 3 * 60, each=lambda v, i: v.infer("/v1/chat/completions"))
    assert stop is None and not vm.powered_off
    assert vm.decisions[-1].reasons[0].startswith("idle 0.")
    assert "(Ollama request)" in vm.decisions[-1].reasons[1]


def test_a_long_request_in_flight_is_seen_by_ollamas_cpu(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)

    def generating(v: VM, i: int) -> None:  # 50 minutes of one request: no log line yet
        if i < 50:
            v.cpu_usec += 45_000_000  # 45 s of CPU per minute
        if i == 50:
            v.infer("/api/generate")  # it finishes and is logged

    stop = first_stop(vm, 100, each=generating)
    assert stop is not None and 50 + 30 <= stop <= 50 + 32
    busy = [d for d in vm.decisions[2:50] if d.reasons[0].startswith("busy: Ollama working")]
    assert len(busy) == 48


def test_polls_and_idle_clients_are_not_inference(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)

    def polling(v: VM, i: int) -> None:  # a UI polling the model list and load state
        if i == 0:
            v.infer()  # the last real request
        v.ollama_log(gin("/api/tags", "GET"))
        v.ollama_log(gin("/api/ps", "GET"))
        v.ollama_log(gin("/api/version", "GET"))
        v.ollama_log('time=2026-08-21T10:00:00Z level=INFO source=server.go msg="request"')
        v.cpu_usec += 20_000  # 0.02 s of CPU per minute answering them

    assert first_stop(vm, 40, each=polling) == 30


def test_terminal_input_keeps_the_vm_and_an_idle_terminal_does_not(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    pts = tmp_path / "dev/pts/0"
    pts.touch()
    os.utime(pts, (vm.wall, vm.wall))
    vm.minute()  # first run: records the terminal

    def typing(v: VM, i: int) -> None:
        if i < 20:
            os.utime(pts, (v.wall, v.wall))  # the kernel stamps atime on input

    stop = first_stop(vm, 80, each=typing)
    assert stop is not None and 20 + 29 <= stop <= 20 + 31
    assert vm.decisions[5].reasons[0] == "busy: terminal input on pts/0"
    # A new login (a new pty) is activity too.
    vm2 = new_vm(tmp_path / "b")
    vm2.minute()
    (tmp_path / "b/dev/pts/3").touch()
    assert vm2.minute().reasons[0] == "busy: terminal input on pts/3"


def test_gpu_at_or_above_the_threshold_is_use(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.gpu_percent = 9.0
    assert first_stop(vm, 31) == 30
    vm = new_vm(tmp_path / "b")
    vm.gpu_percent = 10.0
    assert first_stop(vm, 40) is None
    assert vm.decisions[-1].reasons[0] == "busy: GPU 10% >= 10%"


def test_no_activity_since_boot_counts_from_boot(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.mono = vm.uptime = 120.0  # the timer's first run, 2 min after boot
    stop = first_stop(vm, 40)
    assert stop == 28  # 30 idle minutes after boot
    assert "no activity since boot" in vm.decisions[0].reasons


# --- never crash, always enforce max_hours ----------------------------------------------------


def test_hung_nvidia_smi_still_stops_at_max_hours(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.uptime = vm.mono = 4 * 3600 - 5 * MIN
    hang = subprocess.TimeoutExpired(["nvidia-smi"], 20)
    vm.fail_commands["nvidia-smi"] = hang
    stop = first_stop(vm, 10, each=lambda v, i: v.infer())  # busy all the time
    assert stop == 5 and vm.powered_off
    reasons = vm.decisions[-1].reasons
    assert reasons[0] == "max_hours reached: up 4.00 h of max 4 h"
    assert "GPU: nvidia-smi hung (20 s)" in reasons


def test_every_probe_failing_still_decides_and_stops_at_max_hours(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.uptime = vm.mono = 5 * 3600
    vm.fail_commands.update(
        journalctl=PermissionError(13, "Permission denied", "/var/log/journal"),
        systemctl=FileNotFoundError(2, "No such file", "systemctl"),
        **{"nvidia-smi": OSError(5, "Input/output error")},
    )
    (tmp_path / "proc/uptime").unlink()
    (tmp_path / "proc/net/tcp").write_text("garbage\n 0: zz:zz 00 01\n")
    decision = wd.run_once(vm.cfg, _NoUptime(vm), tmp_path / "state.json", vm.actor())
    assert decision.action == "stop" and vm.powered_off
    notes = " | ".join(decision.reasons)
    assert "max_hours reached: up 5.00 h" in notes
    assert "uptime: " in notes and "using the monotonic clock" in notes
    assert "Ollama request log: permission denied (/var/log/journal)" in notes
    assert "Ollama CPU: systemctl not found" in notes
    assert "GPU: OSError" in notes


class _NoUptime(FakeSystem):
    def read(self, absolute: str) -> str:
        if absolute == "/proc/uptime":
            raise FileNotFoundError(2, "No such file", absolute)
        return super().read(absolute)


def test_garbage_from_the_journal_and_a_broken_state_file_are_survived(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    vm.journal.append({"MESSAGE": gin("/api/chat")})  # no timestamp: ignored
    vm.journal.append({"MESSAGE": [91, 71, 73, 78, 93], "__MONOTONIC_TIMESTAMP": "x"})
    decision = vm.minute()
    assert decision.action == "none"
    assert any("state" in r and "unreadable" in r for r in decision.reasons)


def test_main_never_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "watchdog.json"
    cfg.write_text(json.dumps({"cloud": "none"}))
    real_run_once = wd.run_once

    def boom(*a: Any, **k: Any) -> Any:
        raise KeyError("surprise")

    wd.run_once = boom
    try:
        assert wd.main(["--config", str(cfg), "--state", str(tmp_path / "s.json")]) == 1
    finally:
        wd.run_once = real_run_once
    line = capsys.readouterr().out.strip()
    assert line.startswith("<3>") and json.loads(line[3:])["error"] == "KeyError: 'surprise'"


# --- clocks -------------------------------------------------------------------------------


def test_a_wall_clock_step_back_gives_no_negative_idle(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.minute()
    vm.infer()
    vm.wall -= 1e9  # NTP steps the wall clock back ~31 years
    for _ in range(10):
        vm.infer("/api/generate")  # journald's realtime stamps and gin's text go backwards
        decision = vm.minute()
        assert decision.idle_for_s >= 0
    assert all(d.idle_for_s >= 0 for d in vm.decisions)
    stop = first_stop(vm, 40)
    assert stop == 29  # 30 minutes after the last request, logged a minute before


def test_stored_activity_in_the_future_is_clamped_not_negative(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    state = wd.State(boot_id=BOOT_ID, first_run_mono=900.0, last_activity_mono=vm.mono + 1e9)
    state.save(tmp_path / "state.json")
    decision = vm.minute()
    assert decision.idle_for_s == 0 and decision.action == "none"
    assert "stored activity time is in the future (clock source changed): reset" in (
        decision.reasons
    )


def test_state_from_another_boot_is_dropped(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    wd.State(boot_id="old", first_run_mono=10.0, last_activity_mono=20.0).save(
        tmp_path / "state.json"
    )
    decision = vm.minute()
    assert "state from another boot: starting afresh" in decision.reasons


def test_the_journal_is_read_incrementally_by_cursor(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.infer()
    vm.minute()
    vm.infer()
    vm.minute()
    calls = [c for c in vm.commands if c[0] == "journalctl"]
    assert calls[0][-2:] == ["-n", "5000"] and "-b" in calls[0]
    assert calls[1][-1] == "--after-cursor=s=0b1c;i=0"


# --- stopping ------------------------------------------------------------------------------


TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
COMPUTE_URL = "http://169.254.169.254/metadata/instance/compute"
VM_ID = (
    "/subscriptions/sub-1/resourceGroups/rg-rehearsal/providers/Microsoft.Compute/"
    "virtualMachines/vm-t4"
)
DEALLOCATE = f"https://management.azure.com{VM_ID}/deallocate?api-version="
OPERATION = (
    "https://management.azure.com/subscriptions/sub-1/providers/Microsoft.Compute/locations/"
    "westeurope/operations/0a1b2c3d-4e5f-6789-abcd-ef0123456789?p=abc&api-version=2024-07-01"
)
TOKEN = {
    "access_token": "eyJ0eXAi.tok-123",
    "refresh_token": "",
    "expires_in": "86399",
    "expires_on": "1787086399",
    "not_before": "1787000000",
    "resource": "https://management.azure.com/",
    "token_type": "Bearer",
}
COMPUTE = {
    "azEnvironment": "AzurePublicCloud",
    "location": "westeurope",
    "name": "vm-t4",
    "resourceGroupName": "rg-rehearsal",
    "resourceId": VM_ID,
    "subscriptionId": "sub-1",
    "vmSize": "Standard_NC8as_T4_v3",
}


@dataclass
class Azure:
    """IMDS and ARM as a VM sees them, scripted per request."""

    token: list[tuple[int, Any]] = field(default_factory=lambda: [(200, TOKEN)])
    compute: list[tuple[int, Any]] = field(default_factory=lambda: [(200, COMPUTE)])
    post: list[tuple[int, dict[str, str]]] = field(
        default_factory=lambda: [
            (202, {"azure-asyncoperation": OPERATION, "location": OPERATION, "retry-after": "10"})
        ]
    )
    status: list[tuple[int, Any]] = field(
        default_factory=lambda: [
            (200, {"name": "op", "status": "InProgress", "startTime": "2026-08-21T10:00:00Z"}),
            (200, {"name": "op", "status": "InProgress"}),
            (200, {"name": "op", "status": "Succeeded", "endTime": "2026-08-21T10:01:30Z"}),
        ]
    )
    # GET .../virtualMachines/{vm}/instanceView (Virtual Machines - Instance View): statuses[]
    instance_view: list[tuple[int, Any]] = field(
        default_factory=lambda: [(403, {"error": {"code": "AuthorizationFailed"}})]
    )
    requests: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def _next(script: list[Any]) -> Any:
        return script.pop(0) if len(script) > 1 else script[0]

    def __call__(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        self.requests.append((method, url))
        if url.startswith(TOKEN_URL):
            assert headers == {"Metadata": "true"} and method == "GET"
            status, body = self._next(self.token)
            return status, {}, body if isinstance(body, bytes) else json.dumps(body).encode()
        if url.startswith(COMPUTE_URL):
            assert headers == {"Metadata": "true"}
            status, body = self._next(self.compute)
            return status, {}, body if isinstance(body, bytes) else json.dumps(body).encode()
        assert headers == {"Authorization": "Bearer eyJ0eXAi.tok-123"}
        if url.startswith(DEALLOCATE) and method == "POST":
            status, hdrs = self._next(self.post)
            return status, hdrs, b""
        if url.startswith(f"https://management.azure.com{VM_ID}/instanceView?") and method == "GET":
            status, body = self._next(self.instance_view)
            return status, {}, json.dumps(body).encode()
        if url == OPERATION and method == "GET":
            status, body = self._next(self.status)
            if isinstance(body, OSError):
                raise body
            return status, {"retry-after": "10"}, json.dumps(body).encode()
        return 404, {}, b'{"error": {"code": "NotFound"}}'

    def posts(self) -> int:
        return sum(m == "POST" for m, _ in self.requests)


def azure_vm(tmp_path: Path, **cfg: Any) -> VM:
    vm = new_vm(tmp_path, cloud="azure", **cfg)
    vm.uptime = vm.mono = 5 * 3600  # past max_hours: this run stops
    return vm


def test_azure_powers_off_only_after_arm_confirms_the_deallocation(tmp_path: Path) -> None:
    vm, arm = azure_vm(tmp_path), Azure()
    decision = vm.minute(arm)
    assert decision.acted == ["deallocated", "poweroff"]
    urls = [u for _, u in arm.requests]
    assert urls[0].startswith(TOKEN_URL) and "resource=https://management.azure.com/" in urls[0]
    assert urls[1].startswith(COMPUTE_URL)
    assert arm.requests[2][0] == "POST" and urls[2].startswith(DEALLOCATE)
    assert urls[3:] == [OPERATION] * 3  # followed until Succeeded, honouring Retry-After
    order = [e["event"] for e in vm.log if e["event"] != "decision"]
    assert order == ["deallocate-accepted", "deallocate-succeeded", "poweroff"]
    assert vm.commands[-1] == ["systemctl", "poweroff"]


def test_azure_failed_operation_is_retried_with_backoff_and_never_powers_off(
    tmp_path: Path,
) -> None:
    vm = azure_vm(tmp_path, deallocate_backoff_s=5)
    failed = {"status": "Failed", "error": {"code": "OperationNotAllowed", "message": "busy"}}
    arm = Azure(status=[(200, failed)])
    start = vm.mono
    decision = vm.minute(arm)
    assert decision.acted == ["deallocate-failed", "kept-running"] and not vm.powered_off
    retries = vm.events("deallocate-retry")
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    assert "ARM operation Failed: OperationNotAllowed busy" in retries[0]["error"]
    assert arm.posts() == 3
    assert vm.mono - start - MIN == 3 * 10 + 5 + 10  # three polls after Retry-After, backoff 5, 10
    assert vm.events("deallocate-failed")[0]["level"] == 3


def test_azure_202_accepted_then_no_answer_never_powers_off(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path, deallocate_budget_s=300, deallocate_attempts=1)
    arm = Azure(status=[(200, {"status": "InProgress"})])
    decision = vm.minute(arm)
    assert decision.acted == ["deallocate-failed", "kept-running"] and not vm.powered_off
    assert (
        "not confirmed within 300 s (last: status InProgress)"
        in (vm.events("deallocate-failed")[0]["error"])
    )


def power(*codes: str) -> dict[str, Any]:
    """An instance view as ARM returns it (tests/fixtures/azure/instance_view_running.json)."""
    statuses = [{"code": c, "level": "Info", "displayStatus": c.split("/")[1]} for c in codes]
    return {"computerName": "vm-t4", "osName": "ubuntu", "statuses": statuses}


def test_azure_status_url_forbidden_falls_back_to_the_vms_power_state(tmp_path: Path) -> None:
    # A role scoped to the VM (Desktop Virtualization Power On Off Contributor) cannot read the
    # operation under /subscriptions/.../locations/.../operations, but can read the VM.
    vm = azure_vm(tmp_path, deallocate_attempts=1)
    arm = Azure(
        status=[(403, {"error": {"code": "AuthorizationFailed"}})],
        instance_view=[
            (200, power("ProvisioningState/updating", "PowerState/deallocating")),
            (200, power("ProvisioningState/succeeded", "PowerState/deallocated")),
        ],
    )
    assert vm.minute(arm).acted == ["deallocated", "poweroff"]
    assert vm.events("deallocate-status-forbidden")[0]["status"] == 403


def test_azure_nothing_readable_keeps_the_vm_running(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path, deallocate_attempts=1)
    arm = Azure(status=[(403, {"error": {"code": "AuthorizationFailed"}})])
    decision = vm.minute(arm)
    assert not vm.powered_off and decision.acted[0] == "deallocate-failed"
    error = vm.events("deallocate-failed")[0]["error"]
    assert "cannot read the operation status nor the VM's instance view (HTTP 403)" in error


def test_azure_power_state_stuck_running_is_not_a_confirmation(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path, deallocate_attempts=1, deallocate_budget_s=120)
    arm = Azure(
        status=[(403, {})],
        instance_view=[(200, power("ProvisioningState/succeeded", "PowerState/running"))],
    )
    decision = vm.minute(arm)
    assert not vm.powered_off and decision.acted[0] == "deallocate-failed"
    assert "PowerState/running" in vm.events("deallocate-failed")[0]["error"]


def test_azure_transient_errors_while_polling_are_polled_through(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path)
    arm = Azure(
        status=[
            (503, {"error": {"code": "ServiceUnavailable"}}),
            (200, OSError(104, "Connection reset by peer")),
            (429, {"error": {"code": "TooManyRequests"}}),
            (200, {"status": "Succeeded"}),
        ]
    )
    assert vm.minute(arm).acted == ["deallocated", "poweroff"]
    assert arm.posts() == 1


@pytest.mark.parametrize(
    ("token", "compute", "expected"),
    [
        ([(500, {"error": "unavailable"}), (200, TOKEN)], [(200, COMPUTE)], "IMDS token: HTTP 500"),
        ([(200, b"<html>proxy</html>"), (200, TOKEN)], [(200, COMPUTE)], "IMDS token: HTTP 200"),
        (
            [(200, TOKEN)],
            [(200, {"name": "vm-t4"}), (200, COMPUTE)],
            "IMDS compute metadata lacks 'subscriptionId'",
        ),
        ([(200, TOKEN)], [(200, ["not", "a", "dict"]), (200, COMPUTE)], "IMDS compute metadata"),
    ],
)
def test_imds_surprises_are_retried_not_fatal(
    tmp_path: Path, token: list[Any], compute: list[Any], expected: str
) -> None:
    vm = azure_vm(tmp_path)
    arm = Azure(token=list(token), compute=list(compute))
    decision = vm.minute(arm)
    assert decision.acted == ["deallocated", "poweroff"]
    assert expected in vm.events("deallocate-retry")[0]["error"]


def test_imds_unreachable_keeps_the_vm_running(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path, deallocate_backoff_s=1)

    def down(method: str, url: str, headers: dict[str, str]) -> Any:
        raise OSError(113, "No route to host")

    decision = vm.minute(down)
    assert decision.acted == ["deallocate-failed", "kept-running"] and not vm.powered_off
    assert len(vm.events("deallocate-retry")) == 3


def test_azure_location_header_when_there_is_no_async_operation_url(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path)
    location = OPERATION.replace("/operations/", "/operationResults/")
    arm = Azure(post=[(202, {"location": location, "retry-after": "5"})])
    answers = iter([(202, b""), (200, b"")])
    original = arm.__call__

    def http(method: str, url: str, headers: dict[str, str]) -> Any:
        if url == location:
            arm.requests.append((method, url))
            status, body = next(answers)
            return status, {}, body
        return original(method, url, headers)

    assert vm.minute(http).acted == ["deallocated", "poweroff"]
    assert [u for _, u in arm.requests].count(location) == 2


def test_azure_synchronous_200_is_a_confirmation(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path)
    arm = Azure(post=[(200, {})])
    assert vm.minute(arm).acted == ["deallocated", "poweroff"]


def test_aws_powers_off_and_dry_run_or_none_never_act(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.uptime = vm.mono = 5 * 3600
    assert vm.minute().acted == ["poweroff"] and vm.powered_off
    for cfg in ({"cloud": "azure", "dry_run": True}, {"cloud": "none"}):
        other = new_vm(tmp_path / cfg["cloud"], **cfg)
        other.uptime = other.mono = 5 * 3600
        arm = Azure()
        decision = other.minute(arm)
        assert decision.action == "stop" and not other.powered_off and not arm.requests
    assert other.events("no-action")


def test_every_decision_is_journaled_with_reasons(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    for _ in range(4):
        vm.minute()
    decisions = vm.events("decision")
    assert len(decisions) == 4
    for entry in decisions:
        assert entry["action"] == "none" and entry["cloud"] == "aws"
        assert any(r.startswith("up 0.") for r in entry["reasons"])


def test_journal_lines_carry_a_priority_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    wd.journal("deallocate-failed", level=3, error="boom")
    line = capsys.readouterr().out.strip()
    assert line.startswith("<3>")
    assert json.loads(line[3:]) == {"event": "deallocate-failed", "error": "boom"}


# --- readers and config ----------------------------------------------------------------------


def test_gin_lines_are_recognised_by_path() -> None:
    entries = [
        {"__CURSOR": "c1", "__MONOTONIC_TIMESTAMP": "61000000", "MESSAGE": gin("/api/chat")},
        {"__CURSOR": "c2", "__MONOTONIC_TIMESTAMP": "62000000", "MESSAGE": gin("/api/ps", "GET")},
        {"__CURSOR": "c3", "__MONOTONIC_TIMESTAMP": "63000000", "MESSAGE": gin("/api/pull")},
        {"__CURSOR": "c4", "__MONOTONIC_TIMESTAMP": "64000000", "MESSAGE": 'msg="/api/chat"'},
    ]
    log = wd.parse_journal("\n".join(json.dumps(e) for e in entries), None)
    assert (log.last_work_mono, log.work_requests, log.cursor) == (63.0, 2, "c4")


def test_established_counts_only_established_connections_on_the_port() -> None:
    assert wd.established([PROC_NET_TCP], 22) == 1
    assert wd.established([PROC_NET_TCP, PROC_NET_TCP], 11434) == 2
    assert wd.established([PROC_NET_TCP], 8080) == 0


def test_config_rejects_unknown_keys_and_clouds(tmp_path: Path) -> None:
    path = tmp_path / "watchdog.json"
    path.write_text(json.dumps({"idle_minutes": 30, "idle_minuts": 5}))
    with pytest.raises(ValueError, match="unknown keys \\['idle_minuts'\\]"):
        wd.Config.load(path)
    path.write_text(json.dumps({"cloud": "gcp"}))
    with pytest.raises(ValueError, match="cloud 'gcp'"):
        wd.Config.load(path)


def test_main_journals_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert wd.main(["--config", str(tmp_path / "missing.json"), "--state", str(tmp_path)]) == 2
    assert '"event": "config-error"' in capsys.readouterr().out
