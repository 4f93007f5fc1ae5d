"""The idle watchdog the autostop role installs, driven minute by minute with an injected clock,
fake signals, fake HTTP (IMDS / ARM) and a fake power-off."""

from __future__ import annotations

import importlib.util
import json
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
TOKEN_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
COMPUTE_URL = "http://169.254.169.254/metadata/instance/compute"
DEALLOCATE = (
    "https://management.azure.com/subscriptions/sub-1/resourceGroups/rg-rehearsal/providers/"
    "Microsoft.Compute/virtualMachines/vm-t4/deallocate?api-version="
)


def idle(uptime_s: float = 600.0, **kw: Any) -> Any:
    base = {"ollama_connections": 0, "ssh_sessions": 0, "gpu_percent": 0.0, "bench_lock": False}
    return wd.Signals(uptime_s=uptime_s, **{**base, **kw})


@dataclass
class Machine:
    """The world the watchdog sees: what it journaled, ran and requested."""

    cfg: Any
    tmp: Path
    arm_failures: int = 0  # deallocate calls answered 500 before one is accepted
    log: list[dict[str, Any]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def journal(self, event: str, level: int = 6, **fields: Any) -> None:
        self.log.append({"event": event, "level": level, **fields})

    def http(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        self.requests.append((method, url, headers))
        if url.startswith(TOKEN_URL):
            assert headers == {"Metadata": "true"}
            return 200, json.dumps({"access_token": "tok-123", "expires_in": "3599"}).encode()
        if url.startswith(COMPUTE_URL):
            body = {"subscriptionId": "sub-1", "resourceGroupName": "rg-rehearsal", "name": "vm-t4"}
            return 200, json.dumps(body).encode()
        if url.startswith(DEALLOCATE) and method == "POST":
            assert headers == {"Authorization": "Bearer tok-123"}
            if self.arm_failures > 0:
                self.arm_failures -= 1
                return 500, b'{"error": {"code": "InternalServerError"}}'
            return 202, b""
        return 404, b"unexpected"

    def run(self, cmd: list[str]) -> tuple[int, str]:
        self.commands.append(cmd)
        return 0, ""

    def actor(self) -> Any:
        return wd.Actor(
            self.cfg, self.journal, http=self.http, run=self.run, sleep=self.sleeps.append
        )

    def minute(self, now: float, signals: Any) -> Any:
        return wd.run_once(self.cfg, signals, now, self.tmp / "state.json", self.actor())

    @property
    def powered_off(self) -> bool:
        return ["systemctl", "poweroff"] in self.commands

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e["event"] == name]


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(wd.Config(idle_minutes=30, max_hours=4, cloud="aws"), tmp_path)


def run_minutes(m: Machine, minutes: int, start: float = 1_000_000.0, **kw: Any) -> list[Any]:
    """One watchdog run per minute (as the timer does), the machine idle throughout."""
    return [m.minute(start + i * MIN, idle(600 + i * MIN, **kw)) for i in range(minutes + 1)]


def test_busy_machine_is_left_alone(machine: Machine) -> None:
    busy = idle(ollama_connections=1, ssh_sessions=2, gpu_percent=85.0, bench_lock=True)
    for i in range(120):
        decision = machine.minute(1_000_000 + i * MIN, busy)
        assert decision.action == "none"
    assert not machine.commands and not machine.requests
    reasons = machine.events("decision")[-1]["reasons"][0]
    assert "1 connection(s) to Ollama" in reasons and "2 SSH session(s)" in reasons
    assert "GPU 85% >= 10%" in reasons and "bench lock" in reasons


def test_idle_29_of_30_minutes_does_nothing(machine: Machine) -> None:
    decisions = run_minutes(machine, 29)
    assert [d.action for d in decisions] == ["none"] * 30
    assert decisions[-1].reasons[0] == "idle 29.0 of 30 min"
    assert not machine.powered_off


def test_idle_31_minutes_stops(machine: Machine) -> None:
    decisions = run_minutes(machine, 31)
    first_stop = next(i for i, d in enumerate(decisions) if d.action == "stop")
    assert first_stop == 30  # the 30th idle minute after the first idle observation
    assert decisions[-1].reasons[0] == "idle_minutes reached: idle 31.0 of 30 min"
    assert machine.powered_off
    assert machine.events("poweroff")


def test_activity_resets_the_idle_streak(machine: Machine) -> None:
    t = 1_000_000.0
    for i in range(25):
        machine.minute(t + i * MIN, idle())
    machine.minute(t + 25 * MIN, idle(ssh_sessions=1))
    for i in range(26, 55):  # 29 idle minutes after the SSH session: still not enough
        assert machine.minute(t + i * MIN, idle()).action == "none"
    assert not machine.powered_off
    assert machine.minute(t + 56 * MIN, idle()).action == "stop"


def test_gpu_under_threshold_counts_as_idle_and_no_gpu_is_ignored(machine: Machine) -> None:
    assert wd.busy_reasons(idle(gpu_percent=9.0), machine.cfg) == []
    assert wd.busy_reasons(idle(gpu_percent=None), machine.cfg) == []
    assert wd.busy_reasons(idle(gpu_percent=10.0), machine.cfg) == ["GPU 10% >= 10%"]


def test_busy_at_max_hours_stops_anyway(machine: Machine) -> None:
    busy = idle(uptime_s=4 * 3600 - 30, ollama_connections=3)
    assert machine.minute(1_000_000, busy).action == "none"
    decision = machine.minute(1_000_060, idle(uptime_s=4 * 3600 + 30, ollama_connections=3))
    assert decision.action == "stop"
    assert decision.reasons[0].startswith("max_hours reached: up 4.01 h of max 4 h")
    assert decision.reasons[1] == "busy: 3 connection(s) to Ollama on :11434"
    assert machine.powered_off


def test_azure_deallocates_through_arm_before_shutdown(tmp_path: Path) -> None:
    m = Machine(wd.Config(idle_minutes=30, cloud="azure"), tmp_path)
    run_minutes(m, 30)
    urls = [url for _, url, _ in m.requests]
    assert urls[0].startswith(TOKEN_URL) and "resource=https://management.azure.com/" in urls[0]
    assert urls[1].startswith(COMPUTE_URL)
    assert m.requests[2][0] == "POST" and urls[2].startswith(DEALLOCATE)
    assert m.commands == [["systemctl", "poweroff"]]  # only after ARM accepted
    order = [e["event"] for e in m.log if e["event"] != "decision"]
    assert order == ["deallocate-accepted", "poweroff"]


def test_failed_deallocate_is_retried_and_logged(tmp_path: Path) -> None:
    m = Machine(wd.Config(cloud="azure", deallocate_backoff_s=5), tmp_path, arm_failures=2)
    acted = m.actor().stop(["idle_minutes reached"])
    assert acted == ["deallocate", "poweroff"]
    retries = m.events("deallocate-retry")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["level"] == 4 and "HTTP 500" in r["error"] for r in retries)
    assert m.sleeps == [5, 10]
    assert m.events("deallocate-accepted")[0]["attempt"] == 3


def test_deallocate_that_keeps_failing_is_an_error_and_keeps_the_vm_up(tmp_path: Path) -> None:
    m = Machine(wd.Config(cloud="azure", deallocate_backoff_s=1), tmp_path, arm_failures=99)
    decision = m.minute(1_000_000, idle(uptime_s=5 * 3600))
    assert decision.action == "stop"
    assert decision.acted == ["deallocate-failed", "kept-running"]
    assert not m.powered_off  # an OS shutdown would stop the retries while Azure keeps billing
    failed = m.events("deallocate-failed")[0]
    assert failed["level"] == 3 and "3 attempts failed" in failed["error"]
    assert len(m.events("deallocate-retry")) == 3


def test_dry_run_only_journals(tmp_path: Path) -> None:
    m = Machine(wd.Config(cloud="azure", dry_run=True), tmp_path)
    decision = m.minute(1_000_000, idle(uptime_s=9 * 3600))
    assert decision.action == "stop" and decision.acted == ["dry-run"]
    assert not m.commands and not m.requests
    assert m.events("dry-run")[0]["would"] == ["deallocate via ARM", "poweroff"]


def test_every_decision_is_journaled_with_reasons(machine: Machine) -> None:
    run_minutes(machine, 3)
    decisions = machine.events("decision")
    assert len(decisions) == 4
    for entry in decisions:
        assert entry["action"] == "none" and entry["reasons"] and entry["cloud"] == "aws"
        assert any(r.startswith("up 0.") for r in entry["reasons"])


def test_journal_lines_carry_a_priority_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    wd.journal("deallocate-failed", level=3, error="boom")
    line = capsys.readouterr().out.strip()
    assert line.startswith("<3>")
    assert json.loads(line[3:]) == {"event": "deallocate-failed", "error": "boom"}


# --- the real signal readers, on recorded /proc text -----------------------------------------

# /proc/net/tcp as the kernel writes it: sshd on :22 (0x0016) with one established session,
# Ollama on 127.0.0.1:11434 (0x2CAA) listening plus one established request, one TIME_WAIT.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:2CAA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 2 1
   2: 0A00000F:0016 0B00000A:D431 01 00000000:00000000 02:0009A7E5 00000000     0        0 3 4
   3: 0100007F:2CAA 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   999        0 4 1
   4: 0100007F:2CAA 0100007F:9C44 06 00000000:00000000 03:00000F4B 00000000     0        0 0 3
"""


def test_established_counts_only_established_connections_on_the_port() -> None:
    assert wd.established([PROC_NET_TCP], 22) == 1
    assert wd.established([PROC_NET_TCP], 11434) == 1
    assert wd.established([PROC_NET_TCP, PROC_NET_TCP], 11434) == 2
    assert wd.established([PROC_NET_TCP], 8080) == 0


def test_read_signals_from_a_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/tcp").write_text(PROC_NET_TCP)
    (tmp_path / "uptime").write_text("7265.31 14000.02\n")
    lock = tmp_path / "bench.lock"
    lock.touch()
    cfg = wd.Config(bench_lock=str(lock))

    def smi(cmd: list[str]) -> tuple[int, str]:
        assert cmd[0] == "nvidia-smi"
        return 0, "3\n47\n"

    sig = wd.read_signals(cfg, proc=tmp_path, run=smi)
    assert sig == wd.Signals(7265.31, 1, 1, 47.0, True)

    def no_smi(cmd: list[str]) -> tuple[int, str]:
        raise FileNotFoundError(cmd[0])

    sig = wd.read_signals(wd.Config(bench_lock=str(tmp_path / "none")), tmp_path, no_smi)
    assert sig.gpu_percent is None and not sig.bench_lock
    assert sig.notes == ("no nvidia-smi: GPU not considered",)


def test_config_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "watchdog.json"
    path.write_text(json.dumps({"idle_minutes": 30, "idle_minuts": 5}))
    with pytest.raises(ValueError, match="unknown keys \\['idle_minuts'\\]"):
        wd.Config.load(path)


def test_main_journals_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        wd.main(["--config", str(tmp_path / "missing.json"), "--state", str(tmp_path / "s")]) == 2
    )
    assert '"event": "config-error"' in capsys.readouterr().out
