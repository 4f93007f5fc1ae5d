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
import itertools
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
            # `systemctl show -p ControlGroup -p InvocationID UNIT`: Key=Value lines.
            return 0, f"ControlGroup={CGROUP}\nInvocationID={vm.invocation}\n"
        if cmd[0] == "nvidia-smi":
            if vm.smi_output is not None:
                return vm.smi_output
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
    io_bytes: int | None = None  # None: no io.stat (the io controller is off for the unit)
    invocation: str = "4f0d8c1e2b3a49d5a6b7c8d9e0f1a2b3"  # systemd's InvocationID of ollama
    smi_output: tuple[int, str] | None = None  # what nvidia-smi prints instead of gpu_percent
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
        io_stat = self.root / f"sys/fs/cgroup{CGROUP}/io.stat"
        if self.io_bytes is None:
            io_stat.unlink(missing_ok=True)
        else:  # cgroup-v2.rst io.stat: one line per device, nested keys
            io_stat.write_text(
                f"259:0 rbytes={self.io_bytes // 4} wbytes={self.io_bytes - self.io_bytes // 4} "
                "rios=12 wios=340 dbytes=0 dios=0\n"
                "7:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n"
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


def test_hung_nvidia_smi_is_noted_and_idle_still_stops(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.fail_commands["nvidia-smi"] = subprocess.TimeoutExpired(["nvidia-smi"], 20)
    stop = first_stop(vm, 40)
    assert stop == 30 and vm.powered_off
    assert "GPU: nvidia-smi hung (20 s)" in vm.decisions[-1].reasons


def test_at_max_hours_no_probe_runs_before_the_stop(tmp_path: Path) -> None:
    # A driver that lost the GPU leaves nvidia-smi in uninterruptible sleep: the unit's
    # TimeoutStartSec would kill every run before its decision if probes came first.
    vm = new_vm(tmp_path)
    vm.uptime = vm.mono = 4 * 3600 - 5 * MIN
    vm.fail_commands["nvidia-smi"] = AssertionError("nvidia-smi must not run past max_hours")
    vm.gpu_percent = 100.0
    for _ in range(5):
        vm.infer()  # busy all the time
        assert vm.minute().action == "none"
    del vm.fail_commands["nvidia-smi"]
    vm.fail_commands.update(
        journalctl=AssertionError("no journal past max_hours"),
        systemctl=AssertionError("no systemctl show past max_hours"),
        **{"nvidia-smi": AssertionError("no nvidia-smi past max_hours")},
    )
    decision = vm.minute()
    assert decision.action == "stop" and vm.powered_off
    assert decision.reasons[0] == "max_hours reached: up 4.00 h of max 4 h"
    assert "max_hours reached: other signals not read" in decision.reasons


def test_every_probe_failing_still_decides_and_stops(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.uptime = vm.mono = 3 * 3600
    vm.fail_commands.update(
        journalctl=PermissionError(13, "Permission denied", "/var/log/journal"),
        systemctl=FileNotFoundError(2, "No such file", "systemctl"),
        **{"nvidia-smi": OSError(5, "Input/output error")},
    )
    (tmp_path / "proc/uptime").unlink()
    (tmp_path / "proc/net/tcp").write_text("garbage\n 0: zz:zz 00 01\n")
    decision = wd.run_once(vm.cfg, _NoUptime(vm), tmp_path / "state.json", vm.actor())
    assert decision.action == "stop" and vm.powered_off  # idle since boot, 3 h ago
    notes = " | ".join(decision.reasons)
    assert "idle_minutes reached" in notes
    assert "uptime: " in notes and "using the monotonic clock" in notes
    assert "Ollama request log: permission denied (/var/log/journal)" in notes
    assert "Ollama CPU: systemctl not found" in notes
    assert "GPU: OSError" in notes
    vm.uptime = vm.mono = 5 * 3600
    decision = wd.run_once(vm.cfg, _NoUptime(vm), tmp_path / "state.json", vm.actor())
    assert decision.reasons[0] == "max_hours reached: up 5.00 h of max 4 h"


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


def test_config_rejects_unknown_keys_clouds_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "watchdog.json"
    path.write_text(json.dumps({"idle_minutes": 30, "idle_minuts": 5}))
    with pytest.raises(ValueError, match="unknown keys \\['idle_minuts'\\]"):
        wd.Config.load(path)
    path.write_text(json.dumps({"cloud": "gcp"}))
    with pytest.raises(ValueError, match="cloud='gcp'"):
        wd.Config.load(path)
    # A string where a number belongs would make every decision raise TypeError.
    for bad in ({"idle_minutes": "30"}, {"max_hours": 0}, {"max_hours": True}, {"dry_run": 1}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="bad values"):
            wd.Config.load(path)


def test_check_config_fails_on_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert wd.main(["--config", str(tmp_path / "missing.json"), "--check-config"]) == 2
    assert '"event": "config-error"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "dmi", "cloud", "max_hours"),
    [
        (None, {"sys_vendor": "Amazon EC2\n"}, "aws", 4),
        ("{not json", {"sys_vendor": "Microsoft Corporation\n"}, "azure", 4),
        # cloud-init DataSourceAzure: the chassis asset tag marks Azure.
        ("[]", {"chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77\n"}, "azure", 4),
        ('{"max_hours": 2, "idle_minutes": "x", "cloud": "azure"}', {}, "azure", 2),
    ],
)
def test_a_broken_config_still_stops_the_vm_at_max_hours(
    tmp_path: Path, content: str | None, dmi: dict[str, str], cloud: str, max_hours: float
) -> None:
    # Before: a config error made every run exit 2 and the VM billed until a cloud backstop.
    path = tmp_path / "watchdog.json"
    if content is not None:
        path.write_text(content)
    vm = new_vm(tmp_path / "vm")
    (vm.root / "sys/class/dmi/id").mkdir(parents=True)
    for name, value in dmi.items():
        (vm.root / f"sys/class/dmi/id/{name}").write_text(value)
    cfg, how = wd.Config.salvage(path, FakeSystem(vm))
    assert (cfg.cloud, cfg.max_hours, cfg.idle_minutes) == (cloud, max_hours, 30)
    assert how.startswith(f"running with idle_minutes 30, max_hours {max_hours:g}, cloud {cloud}")
    vm.cfg = cfg
    vm.uptime = vm.mono = max_hours * 3600
    arm = Azure(post=[(200, {})])
    decision = vm.minute(arm)
    assert decision.action == "stop" and vm.powered_off
    assert decision.acted == (["deallocated", "poweroff"] if cloud == "azure" else ["poweroff"])


# --- red team: hostile and odd situations ----------------------------------------------------


def coloured_gin(path: str, method: str = "POST", status: int = 200) -> str:
    # gin v1.10.0 logger.go defaultLogFormatter with IsOutputColor() (gin.ForceConsoleColor, or
    # stdout a terminal): colour escapes around the status and the method.
    return (
        f"[GIN] 2026/08/21 - 10:00:00 |\x1b[97;42m {status:3d} \x1b[0m|    1m2.5s |"
        f"       127.0.0.1 |\x1b[97;46m {method:<7} \x1b[0m {json.dumps(path)}"
    )


@pytest.mark.parametrize(
    ("message", "work"),
    [
        (gin("/api/chat"), True),
        (coloured_gin("/api/generate"), True),
        # widths changed (no padding at all), a latency over a minute, an error suffix line
        ('[GIN] 2026/08/21 - 10:00:00 |200| 25m3s |127.0.0.1|POST "/v1/chat/completions"', True),
        (gin("/api/chat", status=500) + "\nError #01: llama runner process has terminated", True),
        (gin("/v1/audio/transcriptions"), True),  # routes.go:1923 at v0.32.15, ChatHandler
        (
            gin(
                "/api/blobs/sha256:29fdb92e57cf0827ded04ae6461b5931d01fa595843f55d36f5b275a52087dd2"
            ),
            True,
        ),
        (gin("/api/pull?insecure=true"), True),  # gin logs path?query; the path decides
        # 4xx: no model work (unknown model, bad JSON, wrong method): a client retrying one in a
        # loop is not use
        (gin("/api/chat", status=404), False),
        (gin("/api/generate", status=400), False),
        (coloured_gin("/v1/chat/completions", status=405), False),
        # polls and look-ups
        (gin("/api/ps", "GET"), False),
        (gin("/api/tags", "GET"), False),
        (gin("/api/version", "GET"), False),
        (gin("/api/show"), False),
        (gin("/", "HEAD"), False),
        (gin("/v1/models", "GET"), False),
        # routes that only share a prefix, gin's debug route table, Ollama's own log lines
        (gin("/api/chatty"), False),
        (
            "[GIN-debug] POST   /api/chat                 --> ollama/server.(*Server).ChatHandler",
            False,
        ),
        ('time=2026-08-21T10:00:00Z level=INFO source=routes.go msg="/api/chat"', False),
    ],
)
def test_request_lines_old_new_coloured_and_refused(message: str, work: bool) -> None:
    assert wd.is_work(message) is work


def test_a_client_retrying_a_missing_model_does_not_keep_the_vm(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)

    def retrying(v: VM, i: int) -> None:  # e.g. a UI configured with a model never pulled
        for _ in range(6):
            v.ollama_log(gin("/api/chat", status=404))

    assert first_stop(vm, 40, each=retrying) == 30


def test_a_cursor_journalctl_rejects_does_not_blind_the_watchdog(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    # `journalctl --after-cursor=<garbage>` prints "Failed to seek to cursor: Invalid argument"
    # on stderr and exits 1 (journalctl.c): before, the bad cursor stayed in the state and
    # every later run of the boot failed the same way.
    wd.State(boot_id=BOOT_ID, first_run_mono=0.0, journal_cursor="s=zz;garbage").save(
        tmp_path / "state.json"
    )
    real_run = FakeSystem.run

    def run(self: FakeSystem, cmd: list[str], timeout: float) -> tuple[int, str]:
        if any(a.startswith("--after-cursor=s=zz") for a in cmd):
            self.vm.commands.append(cmd)
            return 1, ""
        return real_run(self, cmd, timeout)

    vm.infer()
    decision = wd.run_once(vm.cfg, _Patched(vm, run), tmp_path / "state.json", vm.actor())
    assert "Ollama request log: journalctl exited 1" in decision.reasons
    decision = wd.run_once(vm.cfg, _Patched(vm, run), tmp_path / "state.json", vm.actor())
    assert [c for c in vm.commands if c[0] == "journalctl"][-1][-2:] == ["-n", "5000"]
    assert any("(Ollama request)" in r for r in decision.reasons)


class _Patched(FakeSystem):
    def __init__(self, vm: VM, run: Any) -> None:
        super().__init__(vm)
        self._run = run

    def run(self, cmd: list[str], timeout: float) -> tuple[int, str]:
        return self._run(self, cmd, timeout)


def test_journal_unreadable_then_a_long_cpu_job_is_still_seen(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.fail_commands["journalctl"] = PermissionError(13, "Permission denied", "journalctl")

    def working(v: VM, i: int) -> None:
        if i < 40:
            v.cpu_usec += 30_000_000

    stop = first_stop(vm, 100, each=working)
    assert stop is not None and 40 + 29 <= stop <= 40 + 31


def test_ollama_restarting_resets_its_counters_without_a_false_reading(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.cpu_usec = 900_000_000  # 15 min of CPU so far
    vm.minute()
    vm.minute()
    # Restart: a new invocation, new cgroup counters (lower, then higher than before).
    vm.invocation, vm.cpu_usec = "0e5b1f7c9d2a4c3b8e6f1a2b3c4d5e6f", 1_000_000
    decision = vm.minute()
    assert "ollama.service restarted: its counters start again" in decision.reasons
    vm.invocation, vm.cpu_usec = "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b", 950_000_000
    decision = vm.minute()  # more than the old total, but from a new process: not a delta
    assert decision.action == "none" and not decision.reasons[0].startswith("busy")
    vm.cpu_usec += 20_000_000  # the new process really works
    assert vm.minute().reasons[0] == "busy: Ollama working (CPU 33% of a core)"


@pytest.mark.parametrize("layout", ["v1", "v1-split", "hybrid", "v1-no-accounting"])
def test_cgroup_v1_and_hybrid_hosts(tmp_path: Path, layout: str) -> None:
    vm = new_vm(tmp_path)
    v2 = vm.root / f"sys/fs/cgroup{CGROUP}"
    for f in v2.iterdir():
        f.unlink()
    v2.rmdir()
    where = {
        "v1": f"sys/fs/cgroup/cpu,cpuacct{CGROUP}",  # systemd's v1 layout, CPUAccounting=yes
        "v1-split": f"sys/fs/cgroup/cpuacct{CGROUP}",
        "hybrid": f"sys/fs/cgroup/unified{CGROUP}",
        "v1-no-accounting": None,
    }[layout]

    def write(ns: int) -> None:
        if where is None:
            return
        d = vm.root / where
        d.mkdir(parents=True, exist_ok=True)
        if layout == "hybrid":
            (d / "cpu.stat").write_text(f"usage_usec {ns // 1000}\nuser_usec 0\nsystem_usec 0\n")
        else:  # cpuacct.usage: nanoseconds (Documentation/admin-guide/cgroup-v1/cpuacct.rst)
            (d / "cpuacct.usage").write_text(f"{ns}\n")

    vm.sync = lambda: None  # type: ignore[method-assign]
    (vm.root / "proc/uptime").write_text("100.0 100.0\n")
    write(10**9)
    vm.minute()
    write(10**9 + 30 * 10**9)
    decision = vm.minute()
    if where is None:
        assert any("no CPU accounting" in r for r in decision.reasons)
    else:
        assert decision.reasons[0] == "busy: Ollama working (CPU 50% of a core)"


@pytest.mark.parametrize(
    ("output", "expect"),
    [
        ((0, "37\n"), 37.0),
        ((0, "3\n[N/A]\n"), 3.0),  # a second GPU without utilisation (MIG)
        # NVML errors printed with exit 0 must not read as a busy GPU: 580.95 is a version
        (
            (
                0,
                "Failed to initialize NVML: Driver/library version mismatch\n"
                "NVML library version: 580.95\n",
            ),
            None,
        ),
        ((0, "999\n"), None),
        ((0, "nan\n"), None),
        ((0, ""), None),
        ((6, "No devices were found\n"), None),
        (
            (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"),
            None,
        ),
    ],
)
def test_nvidia_smi_garbage_is_ignored_not_read_as_busy(
    tmp_path: Path, output: tuple[int, str], expect: float | None
) -> None:
    vm = new_vm(tmp_path)
    vm.smi_output = output
    value, note = wd._probe("GPU", lambda: wd.gpu_utilisation(FakeSystem(vm), vm.cfg))
    assert value == expect
    assert (note == "") is (expect is not None)
    if expect is None:
        assert first_stop(vm, 31) == 30  # idle, not "GPU 580.95% busy" for ever


# subprocess.run() kills a command that times out and then waits for it without a limit; a
# process stuck in the kernel ignores SIGKILL, so that wait never ends.


class _StuckInKernel:
    """A Popen whose child ignores SIGKILL (uninterruptible sleep)."""

    killed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        assert timeout is not None
        raise subprocess.TimeoutExpired(["nvidia-smi"], timeout)

    def kill(self) -> None:
        _StuckInKernel.killed = True

    def wait(self, timeout: float | None = None) -> int:
        assert timeout is not None, "wait() without a timeout blocks for ever on this process"
        raise subprocess.TimeoutExpired(["nvidia-smi"], timeout)


def test_a_command_that_ignores_sigkill_is_abandoned_not_waited_for() -> None:
    system = wd.System(popen=_StuckInKernel)
    value, note = wd._probe("GPU", lambda: system.run(["nvidia-smi"], 20))
    assert value is None and _StuckInKernel.killed
    assert note == (
        "GPU: nvidia-smi hung (20 s) and did not exit on SIGKILL (stuck in the kernel): abandoned"
    )


def test_real_commands_time_out_even_when_a_grandchild_holds_the_pipe() -> None:
    system = wd.System()
    assert system.run(["sh", "-c", "echo 42"], 5) == (0, "42\n")
    with pytest.raises(subprocess.TimeoutExpired):
        # the shell is killed; its background child keeps stdout open
        system.run(["sh", "-c", "sleep 5 & sleep 5"], 0.5)


def test_a_slow_pull_moves_data_without_cpu_and_keeps_the_vm(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.io_bytes = 1_000_000

    def pulling(v: VM, i: int) -> None:  # 2 MB/s for 45 min: ~1 % CPU, logged when it ends
        if i < 45:
            v.cpu_usec += 600_000
            v.io_bytes = (v.io_bytes or 0) + 120_000_000
        if i == 45:
            v.ollama_log(gin("/api/pull"))

    stop = first_stop(vm, 100, each=pulling)
    assert stop is not None and 45 + 29 <= stop <= 45 + 31
    assert vm.decisions[10].reasons[0] == "busy: Ollama moving model data (114 MiB/min on disk)"


def test_a_script_typing_every_minute_is_still_stopped_at_max_hours(tmp_path: Path) -> None:
    # Input on a terminal is indistinguishable from a person typing; max_hours bounds it.
    vm = new_vm(tmp_path, max_hours=2)
    pts = tmp_path / "dev/pts/1"
    pts.touch()

    def keepalive(v: VM, i: int) -> None:
        st = pts.stat()
        os.utime(pts, (v.wall, st.st_mtime))  # input read: atime moves

    stop = first_stop(vm, 200, each=keepalive)
    assert stop == 120 and vm.decisions[-1].reasons[0].startswith("max_hours reached")


def test_output_without_input_is_not_use(tmp_path: Path) -> None:
    # `watch nvidia-smi` left running writes to its terminal every 2 s: the kernel stamps
    # mtime on output and atime only on input (drivers/tty/tty_io.c tty_update_time).
    vm = new_vm(tmp_path)
    pts = tmp_path / "dev/pts/0"
    pts.touch()
    os.utime(pts, (vm.wall, vm.wall))

    def output(v: VM, i: int) -> None:
        os.utime(pts, (pts.stat().st_atime, v.wall))

    assert first_stop(vm, 40, each=output) == 30


def test_uptime_going_back_does_not_postpone_max_hours(tmp_path: Path) -> None:
    vm = new_vm(tmp_path, max_hours=1)
    for _ in range(40):
        vm.infer()
        vm.minute()
    vm.uptime = 60.0  # a guest restored from a memory snapshot: same boot id, uptime reset
    stop = first_stop(vm, 30, each=lambda v, i: v.infer())
    assert stop == 20  # 40 + 20 minutes of this boot, not 60 minutes after the reset
    assert any("/proc/uptime went back to 0.0" in r for r in vm.decisions[40].reasons)


def test_after_hibernation_the_time_asleep_counts_towards_max_hours(tmp_path: Path) -> None:
    # /proc/uptime is CLOCK_BOOTTIME (includes suspend); the idle clock is CLOCK_MONOTONIC
    # (does not). Resuming a VM that hibernated for a day stops it at the next run: sooner,
    # never later. The deploys do not enable hibernation.
    vm = new_vm(tmp_path)
    vm.minute()
    vm.infer()
    vm.minute()
    vm.uptime += 24 * 3600  # asleep a day; the monotonic clock did not move
    decision = vm.minute()
    assert decision.action == "stop" and decision.reasons[0].startswith("max_hours reached")


def test_a_vm_started_again_starts_a_fresh_idle_clock(tmp_path: Path) -> None:
    # Stopped when idle, started again the next day: the old state (idle for hours) must not
    # stop it at once. /run is a tmpfs and the boot id changes; the journal is read with -b.
    vm = new_vm(tmp_path)
    assert first_stop(vm, 40) == 30
    (tmp_path / "proc/sys/kernel/random/boot_id").write_text("b" * 32 + "\n")
    vm.mono = vm.uptime = 120.0
    vm.powered_off = False
    decision = vm.minute()
    assert "state from another boot: starting afresh" in decision.reasons
    assert decision.action == "none" and decision.idle_for_s == 120.0
    assert "-b" in [c for c in vm.commands if c[0] == "journalctl"][-1]


def test_azure_token_expiring_while_polling_is_renewed_not_called_forbidden(
    tmp_path: Path,
) -> None:
    vm = azure_vm(tmp_path, deallocate_attempts=1)
    tokens = iter(["tok-old", "tok-new"])
    seen: list[tuple[str, str]] = []

    def http(method: str, url: str, headers: dict[str, str]) -> Any:
        if url.startswith(TOKEN_URL):
            return 200, {}, json.dumps(TOKEN | {"access_token": next(tokens)}).encode()
        if url.startswith(COMPUTE_URL):
            return 200, {}, json.dumps(COMPUTE).encode()
        seen.append((method, headers["Authorization"]))
        if method == "POST":
            return 202, {"azure-asyncoperation": OPERATION, "retry-after": "5"}, b""
        if headers["Authorization"] == "Bearer tok-old":  # expired mid-poll
            return 401, {}, b'{"error": {"code": "ExpiredAuthenticationToken"}}'
        return 200, {}, b'{"status": "Succeeded"}'

    assert vm.minute(http).acted == ["deallocated", "poweroff"]
    assert seen == [
        ("POST", "Bearer tok-old"),
        ("GET", "Bearer tok-old"),
        ("GET", "Bearer tok-new"),
    ]
    assert vm.events("token-refreshed") and not vm.events("deallocate-status-forbidden")


def test_azure_operation_that_never_completes_keeps_retrying_and_alerts(tmp_path: Path) -> None:
    # The VM stays up (an OS power-off would leave it Stopped and billing, with no watchdog);
    # every minute retries; everyone logged in and the journal hear that it still bills, every
    # 30 minutes, naming the next stop (the VM's auto-shutdown schedule).
    vm = azure_vm(tmp_path, deallocate_attempts=1, deallocate_budget_s=40)
    arm = Azure(status=[(200, {"status": "InProgress"})])
    alerted_at = []
    for _ in range(70):
        before, start = len(vm.events("still-billing")), vm.mono
        decision = vm.minute(arm)
        assert decision.acted == ["deallocate-failed", "kept-running"] and not vm.powered_off
        if len(vm.events("still-billing")) > before:
            alerted_at.append(start)
    alerts = vm.events("still-billing")
    assert len(alerts) >= 3 and all(a["level"] == 2 for a in alerts)
    gaps = [b - a for a, b in itertools.pairwise(alerted_at)]
    assert all(30 * MIN <= g < 33 * MIN for g in gaps)  # every 30 min, not every minute
    assert "shutdown-computevm-" in alerts[0]["message"]
    walls = [c for c in vm.commands if c[0] == "wall"]
    assert len(walls) == len(alerts) and walls[0][1].startswith("rehearsal-watchdog: STILL BILL")
    assert arm.posts() == 70  # a new attempt every run
    arm.status = [(200, {"status": "Succeeded"})]
    assert vm.minute(arm).acted == ["deallocated", "poweroff"]


def test_aws_refused_poweroff_is_an_error_and_retried(tmp_path: Path) -> None:
    vm = new_vm(tmp_path)
    vm.uptime = vm.mono = 5 * 3600
    answers = iter([(1, 'Operation inhibited by "unattended-upgrade"'), (0, "")])

    def run(cmd: list[str]) -> tuple[int, str]:
        vm.commands.append(cmd)
        return next(answers) if cmd[0] == "systemctl" else (0, "")

    actor = wd.Actor(vm.cfg, vm.journal_fn, run=run, sleep=vm.sleep, monotonic=lambda: vm.mono)
    vm.sync()
    first = wd.run_once(vm.cfg, FakeSystem(vm), tmp_path / "state.json", actor)
    assert first.acted == ["poweroff-failed", "kept-running"]
    assert vm.events("poweroff-failed")[0]["level"] == 3 and vm.events("still-billing")
    vm.mono += MIN
    vm.uptime += MIN
    vm.sync()
    second = wd.run_once(vm.cfg, FakeSystem(vm), tmp_path / "state.json", actor)
    assert second.acted == ["poweroff"]


def test_the_watchdog_parses_as_python_3_10() -> None:
    # Ubuntu 22.04's system python3 is 3.10 (the unit runs /usr/bin/python3).
    import ast

    ast.parse(SOURCE.read_text(), feature_version=(3, 10))


def test_the_roles_settings_render_to_a_config_the_watchdog_accepts(tmp_path: Path) -> None:
    import yaml
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    role = SOURCE.parent.parent
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    source = (role / "templates/watchdog.json.j2").read_text()
    rendered = Templar(loader=DataLoader(), variables=defaults).template(trust_as_template(source))
    path = tmp_path / "watchdog.json"
    path.write_text(str(rendered))
    cfg = wd.Config.load(path)
    assert set(json.loads(path.read_text())) == set(wd.Config.__dataclass_fields__)
    assert (cfg.ollama_io_busy_mib, cfg.ollama_cpu_busy_percent, cfg.cloud) == (8, 5, "aws")


def test_azure_deallocated_but_poweroff_refused_is_not_called_billing(tmp_path: Path) -> None:
    vm = azure_vm(tmp_path)
    arm = Azure(post=[(200, {})])

    def refuse(cmd: list[str]) -> tuple[int, str]:
        vm.commands.append(cmd)
        return (1, "") if cmd[0] == "systemctl" else (0, "")

    actor = wd.Actor(
        vm.cfg, vm.journal_fn, http=arm, run=refuse, sleep=vm.sleep, monotonic=lambda: vm.mono
    )
    vm.sync()
    decision = wd.run_once(vm.cfg, FakeSystem(vm), tmp_path / "state.json", actor)
    assert decision.acted == ["deallocated", "poweroff-failed"]
    assert not vm.events("still-billing")  # ARM confirmed: Azure stops the guest itself
