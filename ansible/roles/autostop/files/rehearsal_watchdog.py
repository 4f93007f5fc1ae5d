#!/usr/bin/python3
"""rehearsal-watchdog: stop this rehearsal VM when nobody has used it for a while, or it is too old.

Run once a minute by rehearsal-watchdog.timer (installed by the autostop role). Each run reads
what the machine did since the previous run, decides, journals the decision with its reasons
(stdout goes to the journal) and acts.

Activity (anything else is idle, however many connections are open):
- inference: a request Ollama finished (its request log, see below) or Ollama's service using
  CPU (a request, model load or pull in flight; Ollama's log only shows finished requests);
- GPU utilisation at or above the threshold (nvidia-smi; unreadable = not busy);
- an interactive terminal that received input (a tty whose access time moved since the last run:
  the kernel stamps it on input, as `w` uses for its IDLE column).
An SSH tunnel (`ssh -N -L 11434:...`) has no terminal and carries no inference while idle, so it
keeps nothing awake; neither do idle keep-alive HTTP clients.

Why Ollama's request log and not /api/ps: expires_at is wall-clock time and equals "end of the last
request + that request's keep_alive", which a client may set per request (server/sched.go sets
runner.sessionDuration from the request), so subtracting the server's OLLAMA_KEEP_ALIVE is wrong
whenever a client sends keep_alive; /api/ps also shows nothing once the model is unloaded. The
server logs one `[GIN] ... | POST "/api/chat"` line per finished request (gin.Default() in
server/routes.go), and journald stamps each line with CLOCK_MONOTONIC (__MONOTONIC_TIMESTAMP),
the clock this program uses too: no wall-clock step can shift it.

Times: the idle streak is kept on CLOCK_MONOTONIC (time.monotonic) in a state file under /run
(forgotten at reboot, tagged with the boot id); max_hours counts from boot (/proc/uptime).

Stopping: AWS = OS shutdown (the instance's shutdown behaviour is "stop"). Azure = deallocate
through ARM with the VM's managed identity, then follow the operation's Azure-AsyncOperation URL
until it reports Succeeded (where the VM's role may not read that URL, until the VM's instance
view says PowerState/deallocated): only then is the VM known to have stopped billing compute (an
OS shutdown alone leaves it "Stopped" and billing). Anything short of a confirmed deallocation
leaves the VM running and the next run tries again; this program never powers an Azure VM off
itself before Azure has confirmed.

No probe failure (a hung nvidia-smi, a permission error, an unexpected IMDS reply) ends a run: it
is journaled and the run goes on, and max_hours is enforced whatever else fails.

Standard library only, Python 3.10 compatible (Ubuntu 22.04's system python3). Everything that
touches the machine (files, commands, clocks, HTTP, sleep) is injected for the unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_PATH = Path("/etc/rehearsal/watchdog.json")
STATE_PATH = Path("/run/rehearsal-watchdog/state.json")  # tmpfs: a reboot starts afresh
IMDS = "http://169.254.169.254/metadata"
ARM = "https://management.azure.com"
# Virtual Machines - Deallocate (POST .../virtualMachines/{vm}/deallocate): 200 or 202 Accepted.
ARM_COMPUTE_API = "2024-07-01"
TCP_ESTABLISHED = "01"
# The paths of Ollama's API that do model work (inference, embeddings, model transfers):
# docs/api.md and docs/openai.mdx at the pinned tag. Polls such as /api/ps, /api/tags and
# /api/version are not use.
WORK_PATHS = (
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/pull",
    "/api/push",
    "/api/create",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
)
# gin's default log line (gin.Default() -> LoggerWithFormatter(defaultLogFormatter)):
# [GIN] 2026/08/21 - 10:00:00 | 200 |  1.234567s |       127.0.0.1 | POST     "/api/chat"
GIN_LINE = re.compile(r'\[GIN\][^|]*\|\s*(\d{3})\s*\|[^|]*\|[^|]*\|\s*([A-Z]+)\s+"([^"?]*)')
TERMINALS = re.compile(r"^(pts/\d+|tty\d+|ttyS\d+)$")


@dataclass
class Config:
    idle_minutes: float = 30
    max_hours: float = 4
    gpu_idle_percent: float = 10
    # Ollama's service CPU, in % of one core averaged since the last run, at or above which
    # work is in flight (an idle server with a model loaded uses ~0).
    ollama_cpu_busy_percent: float = 5
    cloud: str = "aws"  # "aws" | "azure" | "none" (journal only, never act)
    dry_run: bool = False
    ollama_unit: str = "ollama.service"
    ssh_port: int = 22
    probe_timeout_s: float = 20
    deallocate_attempts: int = 3
    deallocate_backoff_s: float = 10
    # The whole deallocation (all attempts and polls) must end within this budget; the unit's
    # TimeoutStartSec is set above it by the role.
    deallocate_budget_s: float = 600
    deallocate_poll_interval_s: float = 15

    @classmethod
    def load(cls, path: Path) -> Config:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        cfg = cls(**data)
        if cfg.cloud not in ("aws", "azure", "none"):
            raise ValueError(f"{path}: cloud {cfg.cloud!r} is not aws, azure or none")
        return cfg


# --- what the machine is: files, commands, clocks (injected in tests) -----------------------


class ProbeError(Exception):
    """A probe could not read its signal; the message says why (journaled, never fatal)."""


@dataclass
class System:
    root: Path = Path("/")
    monotonic: Callable[[], float] = time.monotonic

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str:
        return self.path(absolute).read_text(encoding="utf-8", errors="replace")

    def run(self, cmd: list[str], timeout: float) -> tuple[int, str]:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
        return proc.returncode, proc.stdout


def _probe(what: str, fn: Callable[[], Any]) -> tuple[Any, str]:
    """Run one probe; any failure becomes a note instead of an exception."""
    try:
        return fn(), ""
    except subprocess.TimeoutExpired as exc:
        return None, f"{what}: {exc.cmd[0] if exc.cmd else 'command'} hung ({exc.timeout:g} s)"
    except FileNotFoundError as exc:
        return None, f"{what}: {exc.filename or exc} not found"
    except PermissionError as exc:
        return None, f"{what}: permission denied ({exc.filename or exc})"
    except ProbeError as exc:
        return None, f"{what}: {exc}"
    except Exception as exc:  # a probe must never end the run
        return None, f"{what}: {type(exc).__name__}: {exc}"


def read_uptime(sys_: System) -> float:
    return float(sys_.read("/proc/uptime").split()[0])


def read_boot_id(sys_: System) -> str:
    return sys_.read("/proc/sys/kernel/random/boot_id").strip()


@dataclass
class RequestLog:
    last_work_mono: float | None  # CLOCK_MONOTONIC seconds of the last finished work request
    work_requests: int
    cursor: str | None


def parse_journal(lines: str, cursor: str | None) -> RequestLog:
    """journalctl -o json output of Ollama's unit -> the last finished work request."""
    last: float | None = None
    count = 0
    for line in lines.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        cursor = entry.get("__CURSOR", cursor)
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # journald's JSON form of a non-UTF-8 message
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
                errors="replace"
            )
        if not isinstance(message, str):
            continue
        m = GIN_LINE.search(message)
        if not m or not m.group(3).startswith(WORK_PATHS):
            continue
        try:
            stamp = int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
        except (KeyError, TypeError, ValueError):
            continue
        count += 1
        last = stamp if last is None else max(last, stamp)
    return RequestLog(last, count, cursor)


def read_request_log(sys_: System, cfg: Config, cursor: str | None) -> RequestLog:
    cmd = ["journalctl", "-u", cfg.ollama_unit, "-b", "-o", "json", "--output-fields=MESSAGE"]
    cmd += ["--no-pager", "-q"]
    # After the last entry seen; on the first run of a boot, the latest entries are enough.
    cmd += [f"--after-cursor={cursor}"] if cursor else ["-n", "5000"]
    rc, out = sys_.run(cmd, cfg.probe_timeout_s)
    if rc != 0 and not out:
        raise ProbeError(f"journalctl exited {rc}")
    return parse_journal(out, cursor)


def read_service_cpu_usec(sys_: System, cfg: Config) -> int:
    """CPU time used by Ollama's service (all its processes, runners included), microseconds."""
    rc, out = sys_.run(
        ["systemctl", "show", "-p", "ControlGroup", "--value", cfg.ollama_unit],
        cfg.probe_timeout_s,
    )
    group = out.strip()
    if rc != 0 or not group.startswith("/"):
        raise ProbeError(f"{cfg.ollama_unit} has no control group (not running?)")
    v2 = sys_.path(f"/sys/fs/cgroup{group}/cpu.stat")
    if v2.exists():
        for line in v2.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value)
        raise ProbeError(f"{v2} has no usage_usec")
    v1 = sys_.path(f"/sys/fs/cgroup/cpu,cpuacct{group}/cpuacct.usage")
    return int(v1.read_text().split()[0]) // 1000


def gpu_utilisation(sys_: System, cfg: Config) -> float:
    """Highest utilisation over the GPUs; ProbeError when there is none or it is unreadable."""
    try:
        rc, out = sys_.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            cfg.probe_timeout_s,
        )
    except FileNotFoundError as exc:
        raise ProbeError("no nvidia-smi, GPU not considered") from exc
    values = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
    if rc != 0 or not values:
        raise ProbeError(f"nvidia-smi failed (rc {rc}), GPU not considered")
    return max(values)


def terminal_atimes(sys_: System) -> dict[str, float]:
    """Access time of each terminal device (pts/N, ttyN, ttySN): the kernel sets it on input."""
    found: dict[str, float] = {}
    for base in ("/dev/pts", "/dev"):
        directory = sys_.path(base)
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            rel = str(entry.relative_to(sys_.path("/dev")))
            if TERMINALS.match(rel):
                try:
                    found[rel] = entry.stat().st_atime
                except OSError:
                    continue
    return found


def established(tcp_tables: list[str], local_port: int) -> int:
    """Established TCP connections whose local end is `local_port` (from /proc/net/tcp{,6})."""
    count = 0
    for table in tcp_tables:
        for line in table.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 4 or parts[3] != TCP_ESTABLISHED:
                continue
            try:
                port = int(parts[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            count += port == local_port
    return count


def ssh_connections(sys_: System, cfg: Config) -> int:
    tables = []
    for name in ("tcp", "tcp6"):
        path = sys_.path(f"/proc/net/{name}")
        if path.exists():
            tables.append(path.read_text())
    return established(tables, cfg.ssh_port)


# --- state between runs ---------------------------------------------------------------------


@dataclass
class State:
    boot_id: str = ""
    first_run_mono: float | None = None
    last_activity_mono: float | None = None
    last_activity_why: str = ""
    journal_cursor: str | None = None
    cpu_usec: int | None = None
    cpu_mono: float | None = None
    terminals: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, boot_id: str) -> tuple[State, str]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return cls(boot_id=boot_id), ""
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return cls(boot_id=boot_id), f"state {path} unreadable ({exc}): starting afresh"
        if boot_id and state.boot_id != boot_id:
            return cls(boot_id=boot_id), "state from another boot: starting afresh"
        return state, ""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


# --- one minute's observation and the decision ---------------------------------------------


@dataclass
class Observation:
    now_mono: float
    uptime_s: float
    last_request_mono: float | None = None  # last finished work request (Ollama's log)
    ollama_cpu_percent: float | None = None  # since the previous run; None = unknown
    gpu_percent: float | None = None  # None = no GPU or unreadable
    terminal_input: tuple[str, ...] = ()  # terminals with input since the previous run
    ssh_connections: int = 0
    notes: tuple[str, ...] = ()


@dataclass
class Decision:
    action: str  # "none" | "stop"
    reasons: list[str]
    idle_for_s: float = 0.0
    acted: list[str] = field(default_factory=list)


def activity_now(obs: Observation, cfg: Config) -> list[str]:
    """What counts as use at this very run."""
    out = []
    if obs.ollama_cpu_percent is not None and obs.ollama_cpu_percent >= cfg.ollama_cpu_busy_percent:
        out.append(f"Ollama working (CPU {obs.ollama_cpu_percent:.0f}% of a core)")
    if obs.gpu_percent is not None and obs.gpu_percent >= cfg.gpu_idle_percent:
        out.append(f"GPU {obs.gpu_percent:g}% >= {cfg.gpu_idle_percent:g}%")
    if obs.terminal_input:
        out.append(f"terminal input on {', '.join(obs.terminal_input)}")
    return out


def decide(obs: Observation, state: State, cfg: Config) -> Decision:
    """Pure: update state's idle bookkeeping and decide this run. Never a negative idle time."""
    notes = list(obs.notes)
    if state.first_run_mono is None or state.first_run_mono > obs.now_mono:
        state.first_run_mono = obs.now_mono
    if state.last_activity_mono is not None and state.last_activity_mono > obs.now_mono:
        notes.append("stored activity time is in the future (clock source changed): reset")
        state.last_activity_mono = obs.now_mono
    busy = activity_now(obs, cfg)
    if busy:
        state.last_activity_mono, state.last_activity_why = obs.now_mono, "; ".join(busy)
    if obs.last_request_mono is not None:
        stamp = min(obs.last_request_mono, obs.now_mono)
        if state.last_activity_mono is None or stamp > state.last_activity_mono:
            state.last_activity_mono, state.last_activity_why = stamp, "Ollama request"
    # Nothing seen this boot: idle since boot (the uptime), at least since the first run.
    since = state.last_activity_mono
    if since is None:
        since = min(state.first_run_mono, obs.now_mono - max(0.0, obs.uptime_s))
    idle_for = max(0.0, obs.now_mono - since)
    if obs.ssh_connections and not obs.terminal_input:
        notes.append(
            f"{obs.ssh_connections} SSH connection(s) without terminal input "
            "(tunnels are not activity)"
        )
    up = f"up {obs.uptime_s / 3600:.2f} h of max {cfg.max_hours:g} h"
    if obs.uptime_s >= cfg.max_hours * 3600:
        why = [f"max_hours reached: {up}"] + ([f"busy: {'; '.join(busy)}"] if busy else [])
        return Decision("stop", why + notes, idle_for)
    if busy:
        return Decision("none", [f"busy: {'; '.join(busy)}", up, *notes], 0.0)
    last = (
        f"last activity {idle_for / 60:.1f} min ago ({state.last_activity_why})"
        if state.last_activity_mono is not None
        else "no activity since boot"
    )
    idle = f"idle {idle_for / 60:.1f} of {cfg.idle_minutes:g} min"
    if idle_for >= cfg.idle_minutes * 60:
        return Decision("stop", [f"idle_minutes reached: {idle}", last, up, *notes], idle_for)
    return Decision("none", [idle, last, up, *notes], idle_for)


def observe(sys_: System, cfg: Config, state: State) -> Observation:
    """Read every signal; a failing probe adds a note and leaves its signal unknown."""
    notes: list[str] = []
    now = sys_.monotonic()
    uptime, note = _probe("uptime", lambda: read_uptime(sys_))
    if uptime is None:
        notes.append(f"{note}; using the monotonic clock")
        uptime = now

    log, note = _probe(
        "Ollama request log", lambda: read_request_log(sys_, cfg, state.journal_cursor)
    )
    if log is None:
        notes.append(note)
        last_request = None
    else:
        state.journal_cursor = log.cursor
        last_request = log.last_work_mono

    cpu_percent = None
    usec, note = _probe("Ollama CPU", lambda: read_service_cpu_usec(sys_, cfg))
    if usec is None:
        notes.append(note)
        state.cpu_usec = state.cpu_mono = None
    else:
        if state.cpu_usec is not None and state.cpu_mono is not None and now > state.cpu_mono:
            delta = usec - state.cpu_usec
            if delta >= 0:  # a restarted service starts a new count
                cpu_percent = delta / 1e6 / (now - state.cpu_mono) * 100
        state.cpu_usec, state.cpu_mono = usec, now

    gpu, note = _probe("GPU", lambda: gpu_utilisation(sys_, cfg))
    if note:
        notes.append(note)

    terminals, note = _probe("terminals", lambda: terminal_atimes(sys_))
    typed: list[str] = []
    if terminals is None:
        notes.append(note)
    else:
        # The first run of a boot only records them: input is a change since a previous run.
        if state.first_run_mono is not None:
            typed = sorted(t for t, at in terminals.items() if state.terminals.get(t) != at)
        state.terminals = terminals

    ssh, note = _probe("SSH connections", lambda: ssh_connections(sys_, cfg))
    if note:
        notes.append(note)
    return Observation(
        now_mono=now,
        uptime_s=uptime,
        last_request_mono=last_request,
        ollama_cpu_percent=cpu_percent,
        gpu_percent=gpu,
        terminal_input=tuple(typed),
        ssh_connections=ssh or 0,
        notes=tuple(notes),
    )


# --- acting ---------------------------------------------------------------------------------

# (method, url, headers) -> (status, response headers with lower-case names, body)
Http = Callable[[str, str, dict[str, str]], tuple[int, dict[str, str], bytes]]


def urllib_http(
    method: str, url: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    data = b"" if method == "POST" else None
    req = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # fixed IMDS / ARM hosts
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, exc.read()


class DeallocateFailed(Exception):
    pass


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body[:200].decode(errors="replace")


def _retry_after(headers: dict[str, str], default: float) -> float:
    try:
        return max(1.0, min(120.0, float(headers.get("retry-after", ""))))
    except ValueError:
        return default


@dataclass
class Actor:
    """Carries out a stop. Everything it does goes through `log`."""

    cfg: Config
    log: Callable[..., None]
    http: Http = urllib_http
    run: Callable[[list[str]], tuple[int, str]] = lambda cmd: System().run(cmd, 60)
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def stop(self, reasons: list[str]) -> list[str]:
        if self.cfg.dry_run:
            plan = (
                ["deallocate via ARM", "wait for Succeeded", "poweroff"]
                if self.cfg.cloud == "azure"
                else ["poweroff"]
            )
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
                # Powering off now would end our retries while Azure keeps billing: stay up.
                self.log(
                    "deallocate-failed",
                    level=3,
                    error=str(exc),
                    next="retry on the next run (1 min); the VM is left running",
                )
                return ["deallocate-failed"]
            done.append("deallocated")
        try:
            rc, _ = self.run(["systemctl", "poweroff"])
        except Exception as exc:  # journaled, never raised
            self.log("poweroff-failed", level=3, error=f"{type(exc).__name__}: {exc}")
            return [*done, "poweroff-failed"]
        self.log("poweroff", rc=rc)
        done.append("poweroff")
        return done

    # Azure: token and VM from IMDS, POST deallocate, then the operation's status URL.

    def _token(self) -> str:
        status, _, body = self.http(
            "GET",
            f"{IMDS}/identity/oauth2/token?api-version=2018-02-01&resource={ARM}/",
            {"Metadata": "true"},
        )
        token = _json(body)
        if status != 200 or not isinstance(token, dict) or not token.get("access_token"):
            raise DeallocateFailed(
                f"IMDS token: HTTP {status} {token!r:.200} — does the VM have a managed "
                "identity with a role allowing deallocate?"
            )
        return str(token["access_token"])

    def _vm_id(self) -> str:
        status, _, body = self.http(
            "GET", f"{IMDS}/instance/compute?api-version=2021-02-01", {"Metadata": "true"}
        )
        compute = _json(body)
        if status != 200 or not isinstance(compute, dict):
            raise DeallocateFailed(f"IMDS compute metadata: HTTP {status} {compute!r:.200}")
        resource_id = compute.get("resourceId")
        if isinstance(resource_id, str) and resource_id.startswith("/subscriptions/"):
            return resource_id
        try:
            return (
                f"/subscriptions/{compute['subscriptionId']}/resourceGroups/"
                f"{compute['resourceGroupName']}/providers/Microsoft.Compute/virtualMachines/"
                f"{compute['name']}"
            )
        except KeyError as exc:
            raise DeallocateFailed(f"IMDS compute metadata lacks {exc}") from exc

    def deallocate(self) -> None:
        """Return only once ARM says the deallocation Succeeded; else DeallocateFailed."""
        deadline = self.monotonic() + self.cfg.deallocate_budget_s
        errors: list[str] = []
        for attempt in range(1, self.cfg.deallocate_attempts + 1):
            try:
                self._deallocate_once(deadline)
                self.log("deallocate-succeeded", attempt=attempt)
                return
            except (DeallocateFailed, OSError, ValueError, KeyError, TypeError) as exc:
                errors.append(str(exc))
                self.log(
                    "deallocate-retry",
                    level=4,
                    attempt=attempt,
                    of=self.cfg.deallocate_attempts,
                    error=f"{type(exc).__name__}: {exc}",
                )
            wait = self.cfg.deallocate_backoff_s * 2 ** (attempt - 1)
            if attempt == self.cfg.deallocate_attempts or self.monotonic() + wait >= deadline:
                break
            self.sleep(wait)
        raise DeallocateFailed(f"{len(errors)} attempt(s) failed, last: {errors[-1]}")

    def _deallocate_once(self, deadline: float) -> None:
        token = self._token()
        vm_id = self._vm_id()
        url = f"{ARM}{vm_id}/deallocate?api-version={ARM_COMPUTE_API}"
        status, headers, body = self.http("POST", url, {"Authorization": f"Bearer {token}"})
        if status == 200:
            return  # finished synchronously
        if status != 202:
            raise DeallocateFailed(f"ARM deallocate: HTTP {status} {_json(body)!r:.300}")
        # 202 only means accepted. Azure-AsyncOperation carries the outcome; Location is the
        # fallback when it is absent ("Track asynchronous Azure operations").
        status_url = headers.get("azure-asyncoperation")
        location = None if status_url else headers.get("location")
        if not status_url and not location:
            raise DeallocateFailed("ARM deallocate: 202 without Azure-AsyncOperation or Location")
        self.log("deallocate-accepted", status_url=status_url or location)
        self._follow(
            status_url or location or "",
            token,
            deadline,
            headers,
            by_location=not status_url,
            vm_id=vm_id,
        )

    def _follow(
        self,
        url: str,
        token: str,
        deadline: float,
        headers: dict[str, str],
        by_location: bool,
        vm_id: str,
    ) -> None:
        wait = _retry_after(headers, self.cfg.deallocate_poll_interval_s)
        last = "no answer yet"
        instance_view = False  # reading the operation is forbidden: watch the VM's power state
        auth = {"Authorization": f"Bearer {token}"}
        while True:
            if self.monotonic() + wait > deadline:
                raise DeallocateFailed(
                    f"deallocation not confirmed within {self.cfg.deallocate_budget_s:g} s "
                    f"(last: {last})"
                )
            self.sleep(wait)
            target = f"{ARM}{vm_id}/instanceView?api-version={ARM_COMPUTE_API}"
            try:
                status, headers, body = self.http("GET", target if instance_view else url, auth)
            except OSError as exc:  # a network blip while polling: poll again
                last, wait = f"{type(exc).__name__}: {exc}", self.cfg.deallocate_poll_interval_s
                continue
            wait = _retry_after(headers, self.cfg.deallocate_poll_interval_s)
            data = _json(body)
            if instance_view:
                if status == 200 and isinstance(data, dict):
                    codes = [
                        str(s.get("code", ""))
                        for s in data.get("statuses") or []
                        if isinstance(s, dict)
                    ]
                    if "PowerState/deallocated" in codes:
                        return
                    failed = [c for c in codes if c.startswith("ProvisioningState/failed")]
                    if failed:
                        raise DeallocateFailed(f"VM instance view: {failed[0]}")
                    last = f"instance view {', '.join(codes) or '?'}"
                    continue
                if status in (401, 403):
                    raise DeallocateFailed(
                        f"cannot read the operation status nor the VM's instance view (HTTP "
                        f"{status}): the VM's role needs Microsoft.Compute/virtualMachines/"
                        "instanceView/read"
                    )
                last = f"instance view HTTP {status}"
                continue
            if by_location:
                if status in (200, 204):
                    return
                if status == 202:
                    last = "HTTP 202 (in progress)"
                    continue
            elif status == 200 and isinstance(data, dict):
                outcome = str(data.get("status", ""))
                if outcome == "Succeeded":
                    return
                if outcome in ("Failed", "Canceled"):
                    error = data.get("error") if isinstance(data.get("error"), dict) else {}
                    code, message = error.get("code", "?"), error.get("message", "")
                    raise DeallocateFailed(f"ARM operation {outcome}: {code} {message}")
                last = f"status {outcome or '?'}"
                continue
            if status in (401, 403):
                # The status URL is not under the VM: a role scoped to the VM may not read it.
                # The VM's own power state says the same thing ("PowerState/deallocated").
                self.log("deallocate-status-forbidden", level=4, status=status, next="instanceView")
                instance_view, last, wait = True, f"operation HTTP {status}", 0.0
                continue
            last = f"HTTP {status} {data!r:.120}"  # 5xx / 429: transient, poll again


# --- one run --------------------------------------------------------------------------------


def journal(event: str, level: int = 6, **fields: Any) -> None:
    # "<N>" is sd-daemon's priority prefix: journald files the line at that level.
    print(f"<{level}>{json.dumps({'event': event, **fields}, sort_keys=True)}", flush=True)


def run_once(
    cfg: Config,
    sys_: System,
    state_path: Path,
    actor: Actor,
) -> Decision:
    boot_id, note = _probe("boot id", lambda: read_boot_id(sys_))
    state, state_note = State.load(state_path, boot_id or "")
    obs = observe(sys_, cfg, state)
    extra = tuple(n for n in (note, state_note) if n)
    if extra:
        obs.notes = obs.notes + extra
    decision = decide(obs, state, cfg)
    try:
        state.save(state_path)
    except OSError as exc:
        decision.reasons.append(f"state not saved: {exc}")
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    try:
        decision = run_once(cfg, System(), args.state, Actor(cfg, journal))
    except Exception as exc:  # journal it; the timer runs us again in a minute
        journal(
            "error", level=3, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()
        )
        return 1
    return 1 if "deallocate-failed" in decision.acted else 0


if __name__ == "__main__":
    sys.exit(main())
