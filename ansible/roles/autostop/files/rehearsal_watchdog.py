#!/usr/bin/python3
"""rehearsal-watchdog: stop this rehearsal VM when nobody has used it for a while, or it is too old.

Run once a minute by rehearsal-watchdog.timer (installed by the autostop role). Each run reads
what the machine did since the previous run, decides, journals the decision with its reasons
(stdout goes to the journal) and acts.

Activity (anything else is idle, however many connections are open):
- inference: a request Ollama finished (its request log, see below), or Ollama's service using
  CPU or disk since the last run (a request, model load or pull in flight: Ollama's log only
  shows finished requests). Its control group counts the llama-server runners it starts too.
  During a GPU generation the runner's CPU thread waits for each token on the GPU, spinning by
  default (CUDA's cudaDeviceScheduleAuto spins when there are fewer contexts than cores), and
  the GPU signal below sees it as well; a pull writes what it downloads (disk) with little CPU;
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
is journaled and the run goes on, and max_hours is enforced whatever else fails: it is checked
before any other probe runs (a command stuck in the kernel cannot delay it), /proc/uptime may not
go back within a boot, and a broken config falls back to the defaults (the cloud then comes from
the firmware). A stop that is due but fails (Azure not confirming, a refused power-off) is
announced every 30 minutes at "crit" and with wall(1), naming the next backstop.

Standard library only, Python 3.10 compatible (Ubuntu 22.04's system python3). Everything that
touches the machine (files, commands, clocks, HTTP, sleep) is injected for the unit tests.
"""

from __future__ import annotations

import argparse
import contextlib
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
MIB = 1 << 20
MIN_S = 60.0
# The routes of Ollama's API that do model work (inference, embeddings, model transfers), as
# server/routes.go registers them at v0.32.15 (GenerateRoutes, lines 1890-1926). Polls such as
# /api/ps, /api/tags, /api/version, /api/show and HEAD / are not use. Matched exactly: a scanner
# or a client retrying POST /api/chatx gets a 404 and is not use either.
WORK_PATHS = frozenset(
    {
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
        "/v1/audio/transcriptions",
    }
)
# POST /api/blobs/:digest uploads a model file for `ollama create` (routes.go:1886).
WORK_PREFIXES = ("/api/blobs/",)
# gin's default log line (gin.Default() -> Logger() -> defaultLogFormatter, gin v1.10.0 logger.go):
#   "[GIN] %v |%s %3d %s| %13v | %15s |%s %-7s %s %#v\n%s"
# [GIN] 2026/08/21 - 10:00:00 | 200 |  1.234567s |       127.0.0.1 | POST     "/api/chat"
# Colours are off when stdout is not a terminal (journald), but are stripped anyway (gin's
# ForceConsoleColor, a wrapper that allocates a pty) and the padding may change.
GIN_LINE = re.compile(r'\[GIN\][^|]*\|\s*(\d{3})\s*\|[^|]*\|[^|]*\|\s*([A-Z]+)\s+"([^"?]*)')
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TERMINALS = re.compile(r"^(pts/\d+|tty\d+|ttyS\d+)$")


@dataclass
class Config:
    idle_minutes: float = 30
    max_hours: float = 4
    gpu_idle_percent: float = 10
    # Ollama's service CPU, in % of one core averaged since the last run, at or above which
    # work is in flight (an idle server with a model loaded uses ~0).
    ollama_cpu_busy_percent: float = 5
    # Ollama's service disk I/O (MiB per minute) at or above which it is moving model data: a
    # pull writes what it downloads, a load reads the file. A slow pull uses too little CPU to
    # show, and its request is only logged when it ends.
    ollama_io_busy_mib: float = 8
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
        bad = [f"{key}={value!r}" for key, value in data.items() if not _valid(key, value)]
        if bad:
            raise ValueError(
                f"{path}: bad values {', '.join(bad)} (numbers >= 0, idle_minutes and "
                "max_hours > 0, cloud aws/azure/none, dry_run true/false)"
            )
        return cls(**data)

    @classmethod
    def salvage(cls, path: Path, sys_: System) -> tuple[Config, str]:
        """The config when `path` is broken: every valid key it still has, defaults for the
        rest, and the cloud from the machine's firmware if the file does not say. A broken
        file must not turn the watchdog off: max_hours still stops the VM."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        kept = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and _valid(k, v)}
        cfg = cls(**kept)
        how = "from the file"
        if "cloud" not in kept:
            cfg.cloud, how = detect_cloud(sys_), "from the firmware (DMI)"
        return cfg, (
            f"running with idle_minutes {cfg.idle_minutes:g}, max_hours {cfg.max_hours:g}, "
            f"cloud {cfg.cloud} ({how})"
        )


def _valid(key: str, value: Any) -> bool:
    if key == "cloud":
        return value in ("aws", "azure", "none")
    default = getattr(Config, key, None)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value != value or value in (float("inf"), float("-inf")) or value < 0:
            return False
        return value > 0 if key in ("idle_minutes", "max_hours") else True
    return isinstance(value, type(default))


def detect_cloud(sys_: System) -> str:
    """aws or azure from the firmware's vendor strings (Nitro: "Amazon EC2"; Hyper-V on Azure:
    "Microsoft Corporation"). Unknown = aws: a plain power-off, which never bills more than
    running would."""
    vendor = ""
    for name in ("sys_vendor", "board_vendor", "chassis_asset_tag"):
        try:
            vendor += sys_.read(f"/sys/class/dmi/id/{name}") + " "
        except OSError:
            continue
    # The chassis asset tag is Azure's own mark (cloud-init DataSourceAzure's
    # AZURE_CHASSIS_ASSET_TAG).
    if "Microsoft Corporation" in vendor or "7783-7084-3265-9085-8269-3286-77" in vendor:
        return "azure"
    return "aws"


# --- what the machine is: files, commands, clocks (injected in tests) -----------------------


class ProbeError(Exception):
    """A probe could not read its signal; the message says why (journaled, never fatal)."""


# After SIGKILL, how long to wait for a hung command to exit. A process stuck in the kernel
# (nvidia-smi in uninterruptible sleep on a driver that lost the GPU) ignores even SIGKILL, and
# subprocess.run() then waits for it forever (it calls wait() without a timeout after killing):
# the run would never reach its decision, max_hours included.
KILL_GRACE_S = 5.0


@dataclass
class System:
    root: Path = Path("/")
    monotonic: Callable[[], float] = time.monotonic
    popen: Callable[..., Any] = subprocess.Popen

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str:
        return self.path(absolute).read_text(encoding="utf-8", errors="replace")

    def run(self, cmd: list[str], timeout: float) -> tuple[int, str]:
        """(exit status, stdout); TimeoutExpired or ProbeError when it hangs, never blocks longer
        than timeout + KILL_GRACE_S."""
        proc = self.popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                raise ProbeError(
                    f"{cmd[0]} hung ({timeout:g} s) and did not exit on SIGKILL (stuck in the "
                    "kernel): abandoned"
                ) from None
            raise subprocess.TimeoutExpired(cmd, timeout) from None
        return proc.returncode, out or ""


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


def is_work(message: str) -> bool:
    """A gin request line for a work route that the server did not refuse as a client error.

    A 4xx (unknown model, bad request, wrong method) did no model work: a client retrying one
    in a loop must not keep the VM awake. A 5xx may end a long generation: it counts.
    """
    m = GIN_LINE.search(ANSI.sub("", message))
    if not m:
        return False
    status, path = int(m.group(1)), m.group(3)
    if 400 <= status < 500:
        return False
    return path in WORK_PATHS or path.startswith(WORK_PREFIXES)


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
        if not is_work(message):
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


@dataclass
class ServiceUsage:
    """What Ollama's service (all its processes: `ollama serve` and the llama-server runners it
    starts, which systemd keeps in the unit's control group) has used since it started."""

    invocation: str  # systemd's InvocationID: a restart starts new counters
    cpu_usec: int
    io_bytes: int | None  # read + written to disk (io.stat); None = no I/O accounting


def _cgroup_v2_usage(directory: Path) -> tuple[int, int | None]:
    # Documentation/admin-guide/cgroup-v2.rst: cpu.stat "exists whether the controller is
    # enabled or not" and reports usage_usec for the whole group; io.stat lines are
    # "MAJ:MIN rbytes=.. wbytes=.. rios=.. ..." and exist where the io controller is enabled
    # (IOAccounting=yes on the unit).
    cpu = None
    for line in (directory / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            cpu = int(value)
    if cpu is None:
        raise ProbeError(f"{directory}/cpu.stat has no usage_usec")
    io_stat = directory / "io.stat"
    if not io_stat.exists():
        return cpu, None
    total = 0
    for line in io_stat.read_text().splitlines():
        for item in line.split()[1:]:
            key, _, value = item.partition("=")
            if key in ("rbytes", "wbytes") and value.isdigit():
                total += int(value)
    return cpu, total


def read_service_usage(sys_: System, cfg: Config) -> ServiceUsage:
    rc, out = sys_.run(
        ["systemctl", "show", "-p", "ControlGroup", "-p", "InvocationID", cfg.ollama_unit],
        cfg.probe_timeout_s,
    )
    props = {k: v.strip() for k, _, v in (line.partition("=") for line in out.splitlines())}
    group = props.get("ControlGroup", "")
    if rc != 0 or not group.startswith("/"):
        raise ProbeError(f"{cfg.ollama_unit} has no control group (not running?)")
    invocation = props.get("InvocationID", "")
    # cgroup v2, mounted at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        directory = sys_.path(f"{base}{group}")
        if (directory / "cpu.stat").exists():
            cpu, io = _cgroup_v2_usage(directory)
            return ServiceUsage(invocation, cpu, io)
    # cgroup v1: cpuacct.usage in nanoseconds, where the unit has CPU accounting.
    for controller in ("cpu,cpuacct", "cpuacct,cpu", "cpuacct"):
        usage = sys_.path(f"/sys/fs/cgroup/{controller}{group}/cpuacct.usage")
        if usage.exists():
            return ServiceUsage(invocation, int(usage.read_text().split()[0]) // 1000, None)
    raise ProbeError(f"no CPU accounting for {group} (cgroup v1 without CPUAccounting=yes?)")


def gpu_utilisation(sys_: System, cfg: Config) -> float:
    """Highest utilisation over the GPUs; ProbeError when there is none or it is unreadable.

    Strict: a line that is not a percentage (an NVML error such as "NVML library version:
    580.95" printed with exit status 0) must not read as a busy GPU that never idles.
    """
    try:
        rc, out = sys_.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            cfg.probe_timeout_s,
        )
    except FileNotFoundError as exc:
        raise ProbeError("no nvidia-smi, GPU not considered") from exc
    if rc != 0:
        raise ProbeError(f"nvidia-smi failed (rc {rc}), GPU not considered")
    values = []
    for line in out.splitlines():
        text = line.strip()
        if not text or (text.startswith("[") and text.endswith("]")):  # [N/A], [Not Supported]
            continue
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0 <= value <= 100:
            raise ProbeError(f"nvidia-smi said {text[:60]!r}: not a utilisation, GPU ignored")
        values.append(value)
    if not values:
        raise ProbeError("nvidia-smi reported no utilisation, GPU not considered")
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
    cpu_invocation: str = ""
    cpu_usec: int | None = None
    cpu_mono: float | None = None
    io_bytes: int | None = None
    # /proc/uptime as last read, and when (monotonic): it never goes back within a boot.
    uptime_s: float | None = None
    uptime_mono: float | None = None
    # Since when a stop is due but Azure has not confirmed the deallocation, and the last alert.
    stop_failing_since_mono: float | None = None
    alerted_mono: float | None = None
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
    ollama_io_mib_per_min: float | None = None  # disk I/O since the previous run; None = unknown
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
    io = obs.ollama_io_mib_per_min
    if io is not None and io >= cfg.ollama_io_busy_mib:
        out.append(f"Ollama moving model data ({io:.0f} MiB/min on disk)")
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


def steady_uptime(state: State, raw: float, now: float, notes: list[str]) -> float:
    """/proc/uptime, never less than the last reading plus the monotonic time since.

    Uptime (CLOCK_BOOTTIME) runs at least as fast as CLOCK_MONOTONIC; a reading that went back
    (a guest restored from a memory snapshot, a container's virtualised /proc) must not push
    max_hours away. It does run ahead of the monotonic clock across a suspend or hibernation:
    the time asleep counts towards max_hours, which only stops sooner.
    """
    uptime = raw
    if state.uptime_s is not None and state.uptime_mono is not None and now >= state.uptime_mono:
        floor = state.uptime_s + (now - state.uptime_mono)
        if raw < floor:
            if raw < floor - MIN_S:
                notes.append(
                    f"/proc/uptime went back to {raw / 3600:.2f} h: counting from the earlier "
                    f"reading ({floor / 3600:.2f} h)"
                )
            uptime = floor
    state.uptime_s, state.uptime_mono = uptime, now
    return uptime


def observe(sys_: System, cfg: Config, state: State) -> Observation:
    """Read every signal; a failing probe adds a note and leaves its signal unknown."""
    notes: list[str] = []
    now = sys_.monotonic()
    raw, note = _probe("uptime", lambda: read_uptime(sys_))
    if raw is None:
        notes.append(f"{note}; using the monotonic clock")
        raw = now
    uptime = steady_uptime(state, raw, now, notes)
    if uptime >= cfg.max_hours * 3600:
        # Decided already: no probe (a hung nvidia-smi, a stuck journal) may delay the stop.
        notes.append("max_hours reached: other signals not read")
        return Observation(now_mono=now, uptime_s=uptime, notes=tuple(notes))

    log, note = _probe(
        "Ollama request log", lambda: read_request_log(sys_, cfg, state.journal_cursor)
    )
    if log is None:
        notes.append(note)
        last_request = None
        # A cursor journalctl cannot seek to (state damaged, journal rotated or vacuumed in a
        # way it cannot place) would fail every run: start over from this boot's latest lines.
        state.journal_cursor = None
    else:
        state.journal_cursor = log.cursor
        last_request = log.last_work_mono

    cpu_percent = io_mib_per_min = None
    usage, note = _probe("Ollama CPU", lambda: read_service_usage(sys_, cfg))
    if usage is None:
        notes.append(note)
        state.cpu_usec = state.cpu_mono = state.io_bytes = None
    else:
        same = state.cpu_invocation == usage.invocation and state.cpu_mono is not None
        if same and state.cpu_mono is not None and now > state.cpu_mono:
            elapsed = now - state.cpu_mono
            if state.cpu_usec is not None and usage.cpu_usec >= state.cpu_usec:
                cpu_percent = (usage.cpu_usec - state.cpu_usec) / 1e6 / elapsed * 100
            io_then, io_now = state.io_bytes, usage.io_bytes
            if io_then is not None and io_now is not None and io_now >= io_then:
                io_mib_per_min = (io_now - io_then) / MIB / elapsed * 60
        elif state.cpu_invocation and state.cpu_invocation != usage.invocation:
            notes.append(f"{cfg.ollama_unit} restarted: its counters start again")
        state.cpu_invocation, state.cpu_usec, state.cpu_mono = (
            usage.invocation,
            usage.cpu_usec,
            now,
        )
        state.io_bytes = usage.io_bytes

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
        ollama_io_mib_per_min=io_mib_per_min,
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
        # AWS: the instance's shutdown behaviour is stop (cdk/rehearsal_stack.py sets
        # InstanceInitiatedShutdownBehavior STOP), so an OS power-off stops the instance and its
        # compute billing. Azure: the deallocation above already stopped the billing.
        try:
            rc, out = self.run(["systemctl", "poweroff"])
        except Exception as exc:  # journaled, never raised
            self.log("poweroff-failed", level=3, error=f"{type(exc).__name__}: {exc}")
            return [*done, "poweroff-failed"]
        if rc != 0:
            # Refused (a shutdown inhibitor, systemd busy): the next run, a minute on, retries.
            self.log("poweroff-failed", level=3, rc=rc, output=out[-300:], next="retry in 1 min")
            return [*done, "poweroff-failed"]
        self.log("poweroff", rc=rc)
        done.append("poweroff")
        return done

    def alert(self, message: str) -> None:
        """Tell everyone logged in (wall) and journal it at "crit": the VM keeps billing."""
        self.log("still-billing", level=2, message=message)
        try:
            self.run(["wall", f"rehearsal-watchdog: {message}"])
        except Exception as exc:  # best effort
            self.log("wall-failed", level=4, error=f"{type(exc).__name__}: {exc}")

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
        # IMDS hands out a cached token that may expire while we poll (it is renewed only
        # shortly before its expiry): a 401 means "get a new token", not "forbidden".
        refreshes = 0
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
            if status == 401 and refreshes < 3:
                refreshes += 1
                auth = {"Authorization": f"Bearer {self._token()}"}
                self.log("token-refreshed", level=5, why="HTTP 401 while polling")
                last, wait = "HTTP 401 (token expired)", 0.0
                continue
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
    if decision.action != "stop":
        state.stop_failing_since_mono = state.alerted_mono = None
        return decision
    decision.acted = actor.stop(decision.reasons)
    failed = {"deallocate-failed", "poweroff-failed"} & set(decision.acted)
    if failed and "deallocated" not in decision.acted:  # deallocated: billing already stopped
        decision.acted.append("kept-running")
        escalate(obs.now_mono, state, cfg, actor, decision)
        with contextlib.suppress(OSError):  # journaled above if it failed; the alert went out
            state.save(state_path)
    return decision


# How often a stop that keeps failing is announced at "crit" and on every terminal.
ALERT_EVERY_S = 30 * 60


def escalate(now: float, state: State, cfg: Config, actor: Actor, decision: Decision) -> None:
    """A stop is due and did not happen: the VM keeps billing. Say so loudly and say what stops
    it then. The next run (1 min) tries again regardless."""
    if state.stop_failing_since_mono is None or state.stop_failing_since_mono > now:
        state.stop_failing_since_mono = now
    if state.alerted_mono is not None and now - state.alerted_mono < ALERT_EVERY_S:
        return
    state.alerted_mono = now
    failing = (now - state.stop_failing_since_mono) / 60
    if cfg.cloud == "azure":
        what = (
            "Azure has not confirmed the deallocation, so the VM is left running (an OS "
            "shutdown would leave it Stopped and still billing). Next stops: this watchdog "
            "every minute, the VM's auto-shutdown schedule (shutdown-computevm-<vm>), or "
            "deallocate it yourself (portal, `az vm deallocate`, `python -m rig destroy azure`)"
        )
    else:
        what = (
            "the OS power-off was refused. Next stops: this watchdog every minute, the "
            "CloudWatch low-CPU alarm and the max-hours schedule, or `sudo systemctl poweroff`"
        )
    actor.alert(
        f"STILL BILLING — a stop has been due for {failing:.0f} min "
        f"({decision.reasons[0] if decision.reasons else 'stop'}): {what}"
    )


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
        if args.check_config:
            journal("config-error", level=3, error=str(exc))
            return 2
        cfg, how = Config.salvage(args.config, System())
        journal("config-error", level=2, error=str(exc), next=how)
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
