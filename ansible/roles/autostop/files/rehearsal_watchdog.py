#!/usr/bin/python3
"""rehearsal-watchdog: stop this rehearsal VM when it has been idle too long, or is too old.

Run once a minute by rehearsal-watchdog.timer (installed by the autostop role). Each run reads
the signals, updates the idle streak kept in a small state file, decides, journals the decision
with its reasons (stdout goes to the journal), and acts:

- idle = no request in flight to Ollama, no SSH session, GPU utilisation under the threshold
  (when a GPU exists) and no bench lock file, continuously for idle_minutes;
- whatever happens, stop once the machine has been up max_hours;
- AWS: OS shutdown (the instance's shutdown behaviour is "stop");
- Azure: deallocate through ARM with the VM's managed identity (an OS shutdown alone keeps
  billing), then shutdown; a failed deallocate is retried, journaled as an error, and the VM is
  left running so that the next run tries again (the daily schedule is the cloud-side backstop);
- dry_run: journal what would be done, do nothing.

Standard library only and Python 3.10 compatible: it runs on the VM's system python3
(Ubuntu 22.04 ships 3.10). Clock, signals, HTTP, sleep and the power-off command are injected
so that the unit tests can drive every path without a VM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_PATH = Path("/etc/rehearsal/watchdog.json")
STATE_PATH = Path("/run/rehearsal-watchdog/state.json")  # tmpfs: a reboot restarts the streak
IMDS = "http://169.254.169.254/metadata"
ARM = "https://management.azure.com"
ARM_COMPUTE_API = "2024-07-01"
TCP_ESTABLISHED = "01"


@dataclass
class Config:
    idle_minutes: float = 30
    max_hours: float = 4
    gpu_idle_percent: float = 10
    cloud: str = "aws"  # "aws" | "azure" | "none" (journal only, never act)
    dry_run: bool = False
    ollama_port: int = 11434
    ssh_port: int = 22
    bench_lock: str = "/run/rehearsal/bench.lock"
    deallocate_attempts: int = 3
    deallocate_backoff_s: float = 10

    @classmethod
    def load(cls, path: Path) -> Config:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class Signals:
    """What the machine is doing right now. gpu_percent None = no GPU (or unreadable)."""

    uptime_s: float
    ollama_connections: int
    ssh_sessions: int
    gpu_percent: float | None
    bench_lock: bool
    notes: tuple[str, ...] = ()


@dataclass
class Decision:
    action: str  # "none" | "stop"
    reasons: list[str]
    idle_since: float | None
    idle_for_s: float = 0.0
    acted: list[str] = field(default_factory=list)


def busy_reasons(sig: Signals, cfg: Config) -> list[str]:
    out = []
    if sig.ollama_connections:
        out.append(f"{sig.ollama_connections} connection(s) to Ollama on :{cfg.ollama_port}")
    if sig.ssh_sessions:
        out.append(f"{sig.ssh_sessions} SSH session(s)")
    if sig.gpu_percent is not None and sig.gpu_percent >= cfg.gpu_idle_percent:
        out.append(f"GPU {sig.gpu_percent:g}% >= {cfg.gpu_idle_percent:g}%")
    if sig.bench_lock:
        out.append(f"bench lock {cfg.bench_lock} present")
    return out


def decide(sig: Signals, now: float, idle_since: float | None, cfg: Config) -> Decision:
    """Pure: the decision for this minute, given when the current idle streak began."""
    max_s = cfg.max_hours * 3600
    busy = busy_reasons(sig, cfg)
    if busy:
        idle_since, idle_for = None, 0.0
    else:
        idle_since = now if idle_since is None else idle_since
        idle_for = now - idle_since
    up = f"up {sig.uptime_s / 3600:.2f} h of max {cfg.max_hours:g} h"
    if sig.uptime_s >= max_s:
        why = [f"max_hours reached: {up}"] + ([f"busy: {'; '.join(busy)}"] if busy else [])
        return Decision("stop", why + list(sig.notes), idle_since, idle_for)
    if busy:
        return Decision("none", [f"busy: {'; '.join(busy)}", up, *sig.notes], None, 0.0)
    idle = f"idle {idle_for / 60:.1f} of {cfg.idle_minutes:g} min"
    if idle_for >= cfg.idle_minutes * 60:
        return Decision(
            "stop", [f"idle_minutes reached: {idle}", up, *sig.notes], idle_since, idle_for
        )
    return Decision("none", [idle, up, *sig.notes], idle_since, idle_for)


# --- reading the signals from /proc and nvidia-smi ----------------------------------------


def established(tcp_tables: list[str], local_port: int) -> int:
    """Established TCP connections whose local end is `local_port` (from /proc/net/tcp{,6}).

    A request in flight to Ollama holds one (also when it arrives through an SSH tunnel, which
    connects from 127.0.0.1); an SSH session or tunnel holds one to sshd's port.
    """
    count = 0
    for table in tcp_tables:
        for line in table.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 4 or parts[3] != TCP_ESTABLISHED:
                continue
            port = int(parts[1].rsplit(":", 1)[1], 16)
            count += port == local_port
    return count


def gpu_utilisation(run: Callable[[list[str]], tuple[int, str]]) -> tuple[float | None, str]:
    """Highest utilisation over the GPUs, or None with the reason when there is none."""
    try:
        rc, out = run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        )
    except FileNotFoundError:
        return None, "no nvidia-smi: GPU not considered"
    values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
    if rc != 0 or not values:
        return None, f"nvidia-smi failed (rc {rc}): GPU not considered"
    return max(values), ""


def _run(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    return proc.returncode, proc.stdout


def read_signals(cfg: Config, proc: Path = Path("/proc"), run: Callable = _run) -> Signals:
    tables = [
        (proc / "net" / name).read_text()
        for name in ("tcp", "tcp6")
        if (proc / "net" / name).exists()
    ]
    gpu, note = gpu_utilisation(run)
    return Signals(
        uptime_s=float((proc / "uptime").read_text().split()[0]),
        ollama_connections=established(tables, cfg.ollama_port),
        ssh_sessions=established(tables, cfg.ssh_port),
        gpu_percent=gpu,
        bench_lock=Path(cfg.bench_lock).exists(),
        notes=(note,) if note else (),
    )


# --- acting ---------------------------------------------------------------------------------

Http = Callable[[str, str, dict[str, str]], tuple[int, bytes]]


def urllib_http(method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    data = b"" if method == "POST" else None
    req = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # fixed IMDS / ARM hosts
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class DeallocateFailed(Exception):
    pass


@dataclass
class Actor:
    """Carries out a stop. Everything it does goes through `log`."""

    cfg: Config
    log: Callable[..., None]
    http: Http = urllib_http
    run: Callable[[list[str]], tuple[int, str]] = _run
    sleep: Callable[[float], None] = time.sleep

    def stop(self, reasons: list[str]) -> list[str]:
        if self.cfg.dry_run:
            plan = ["deallocate via ARM", "poweroff"] if self.cfg.cloud == "azure" else ["poweroff"]
            self.log("dry-run", would=plan, reasons=reasons)
            return ["dry-run"]
        if self.cfg.cloud == "none":
            self.log("no-action", why="cloud = none: journal only", reasons=reasons)
            return []
        done = []
        if self.cfg.cloud == "azure":
            try:
                self.deallocate()
            except DeallocateFailed as exc:
                # An OS shutdown would end our retries while Azure keeps billing: stay up.
                self.log(
                    "deallocate-failed",
                    level=3,
                    error=str(exc),
                    next="retry on the next run (1 min); the VM is left running",
                )
                return ["deallocate-failed"]
            done.append("deallocate")
        rc, _ = self.run(["systemctl", "poweroff"])
        self.log("poweroff", rc=rc)
        done.append("poweroff")
        return done

    def _json(self, url: str, method: str = "GET", token: str = "") -> tuple[int, Any]:
        headers = {"Metadata": "true"} if not token else {"Authorization": f"Bearer {token}"}
        status, body = self.http(method, url, headers)
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = body[:200].decode(errors="replace")
        return status, data

    def deallocate(self) -> None:
        errors: list[str] = []
        for attempt in range(1, self.cfg.deallocate_attempts + 1):
            try:
                self._deallocate_once()
                self.log("deallocate-accepted", attempt=attempt)
                return
            except (DeallocateFailed, OSError) as exc:
                errors.append(str(exc))
                self.log(
                    "deallocate-retry",
                    level=4,
                    attempt=attempt,
                    of=self.cfg.deallocate_attempts,
                    error=str(exc),
                )
                if attempt < self.cfg.deallocate_attempts:
                    self.sleep(self.cfg.deallocate_backoff_s * attempt)
        raise DeallocateFailed(f"{len(errors)} attempts failed, last: {errors[-1]}")

    def _deallocate_once(self) -> None:
        status, token = self._json(
            f"{IMDS}/identity/oauth2/token?api-version=2018-02-01&resource={ARM}/"
        )
        if status != 200 or not isinstance(token, dict) or "access_token" not in token:
            raise DeallocateFailed(
                f"IMDS token: HTTP {status} {token!r:.200} — does the VM "
                "have a managed identity with a VM contributor role?"
            )
        status, compute = self._json(f"{IMDS}/instance/compute?api-version=2021-02-01")
        if status != 200 or not isinstance(compute, dict):
            raise DeallocateFailed(f"IMDS compute metadata: HTTP {status}")
        url = (
            f"{ARM}/subscriptions/{compute['subscriptionId']}/resourceGroups/"
            f"{compute['resourceGroupName']}/providers/Microsoft.Compute/virtualMachines/"
            f"{compute['name']}/deallocate?api-version={ARM_COMPUTE_API}"
        )
        status, body = self._json(url, "POST", token["access_token"])
        if status not in (200, 202):
            raise DeallocateFailed(f"ARM deallocate: HTTP {status} {body!r:.300}")


# --- one run --------------------------------------------------------------------------------


def journal(event: str, level: int = 6, **fields: Any) -> None:
    # "<N>" is sd-daemon's priority prefix: journald files the line at that level.
    print(f"<{level}>{json.dumps({'event': event, **fields}, sort_keys=True)}", flush=True)


def load_idle_since(path: Path) -> float | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("idle_since")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if value is not None else None


def save_idle_since(path: Path, idle_since: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"idle_since": idle_since}), encoding="utf-8")
    os.replace(tmp, path)


def run_once(
    cfg: Config,
    signals: Signals,
    now: float,
    state_path: Path,
    actor: Actor,
) -> Decision:
    decision = decide(signals, now, load_idle_since(state_path), cfg)
    save_idle_since(state_path, decision.idle_since)
    actor.log(
        "decision",
        action=decision.action,
        reasons=decision.reasons,
        idle_for_min=round(decision.idle_for_s / 60, 1),
        dry_run=cfg.dry_run,
        cloud=cfg.cloud,
    )
    if decision.action == "stop":
        decision.acted = actor.stop(decision.reasons)
        if "deallocate-failed" in decision.acted:
            decision.acted.append("kept-running")
    return decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG_PATH)
    parser.add_argument("--state", type=Path, default=STATE_PATH)
    parser.add_argument("--dry-run", action="store_true", help="journal only, never act")
    parser.add_argument("--check-config", action="store_true", help="load the config, exit")
    args = parser.parse_args(argv)
    try:
        cfg = Config.load(args.config)
    except (OSError, ValueError, TypeError) as exc:
        journal("config-error", level=3, error=str(exc))
        return 2
    if args.check_config:
        return 0
    cfg.dry_run = cfg.dry_run or args.dry_run
    actor = Actor(cfg, journal)
    decision = run_once(cfg, read_signals(cfg), time.time(), args.state, actor)
    return 1 if "deallocate-failed" in decision.acted else 0


if __name__ == "__main__":
    sys.exit(main())
