"""GPU facts during a run: nvidia-smi sampled on the target (locally or over SSH).

nvidia-smi --query-gpu=timestamp,... --format=csv,noheader,nounits prints one line per GPU per
sample; `timestamp` is when nvidia-smi took the sample, "YYYY/MM/DD HH:MM:SS.msec" in the
target's local time (nvidia-smi --help-query-gpu). Fields the driver cannot report read "[N/A]"
(e.g. power.draw on some boards) and become None.

Samples are placed in time by that timestamp, not by when they reach us: over SSH lines arrive
late and in bursts. The target's clock (and time zone) is mapped onto ours by the smallest
arrival-minus-timestamp difference seen so far, the sample that travelled fastest, as NTP
picks its best offset; what is left is that one sample's transit time. The zone is taken as
fixed for the run: a daylight-saving change on the target mid-run shifts its samples by an hour
(cloud images run in UTC, where this cannot happen).

Line buffering: nvidia-smi writes through C stdio, which is fully buffered when stdout is a pipe
(as under ssh or Popen), and its manual promises no flush per loop. Buffered, the samples of a
request would arrive kilobytes (a minute of lines) later, after the window() waiting for them
gave up. So it runs under coreutils' `stdbuf -oL` where the target has it (every Ubuntu/Debian
does): one line per sample, as it is taken.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

QUERY = "timestamp,index,name,memory.used,memory.total,utilization.gpu,power.draw"
NVIDIA_SMI = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"]


def smi_script(interval_ms: int) -> str:
    """The shell line that runs nvidia-smi's loop (`--loop-ms=`, as `nvidia-smi --help` and its
    manual spell it: "-lms, --loop-ms=time_in_milliseconds"), line-buffered where stdbuf is."""
    smi = shlex.join([*NVIDIA_SMI, f"--loop-ms={interval_ms}"])
    return f"if command -v stdbuf >/dev/null 2>&1; then exec stdbuf -oL {smi}; else exec {smi}; fi"


TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S.%f"


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    memory_used_mib: float | None
    memory_total_mib: float | None
    utilization_pct: float | None
    power_w: float | None
    taken_at: float | None = None  # nvidia-smi's timestamp, as seconds on the target's clock


def _number(field: str) -> float | None:
    field = field.strip()
    if not field or field.startswith("[") or field in {"N/A", "Not Supported"}:
        return None  # "[N/A]", "[Not Supported]", "[Unknown Error]"
    for unit in ("MiB", "%", "W"):  # present when queried without nounits
        field = field.removesuffix(unit).strip()
    try:
        return float(field)
    except ValueError:
        return None


def parse_timestamp(field: str) -> float | None:
    """ "2017/03/19 17:32:29.613" -> seconds. The zone is unknown (the target's local time): the
    value is read as if UTC, and the clock offset absorbs the difference."""
    try:
        stamp = dt.datetime.strptime(field.strip(), TIMESTAMP_FORMAT)
    except ValueError:
        return None
    return stamp.replace(tzinfo=dt.UTC).timestamp()


def parse_csv(text: str) -> list[GpuSample]:
    samples = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 7 or not parts[1].isdigit():
            continue
        samples.append(
            GpuSample(
                int(parts[1]),
                parts[2],
                _number(parts[3]),
                _number(parts[4]),
                _number(parts[5]),
                _number(parts[6]),
                parse_timestamp(parts[0]),
            )
        )
    return samples


@dataclass(frozen=True)
class GpuStats:
    vram_used_mib: float | None  # peak over the window
    gpu_util_pct: float | None  # mean
    power_w: float | None  # mean


class GpuSampler:
    """Runs nvidia-smi's loop (here, or through `ssh`: an ssh command line, whose last words
    the remote shell parses) and keeps the samples, each placed on this machine's wall clock
    (time.time()) by its own nvidia-smi timestamp."""

    def __init__(self, ssh: list[str] | None = None, interval_ms: int = 500):
        script = smi_script(interval_ms)
        # ssh joins its arguments into one line for the remote shell: quote the script as one
        # word there; here, sh gets it as its own argument.
        self.argv = [*ssh, shlex.join(["sh", "-c", script])] if ssh else ["sh", "-c", script]
        self.interval_s = interval_ms / 1000
        self._samples: list[tuple[float, GpuSample]] = []  # (target clock, sample)
        self._offset: float | None = None  # our clock - the target's, best seen so far
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def local(cls) -> GpuSampler | None:
        return cls() if shutil.which("nvidia-smi") else None

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                errors="replace",
                # its own process group: stop() ends nvidia-smi and whatever wraps it (sh, stdbuf)
                start_new_session=True,
            )
        except OSError:
            self._proc = None
            return
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.feed(line, time.time())

    def feed(self, line: str, arrived: float) -> None:
        """One line of nvidia-smi output that reached us at `arrived` (our wall clock)."""
        for sample in parse_csv(line):
            taken = sample.taken_at
            with self._arrived:
                if taken is None:  # no timestamp: fall back to when it arrived
                    taken = arrived - (self._offset or 0.0)
                offset = arrived - taken
                if self._offset is None or offset < self._offset:
                    self._offset = offset
                self._samples.append((taken, sample))
                del self._samples[:-10_000]  # bounded memory on long runs
                self._arrived.notify_all()

    def mark(self) -> float:
        """Now, on the clock the windows use."""
        return time.time()

    def window(self, start: float, end: float, wait_s: float | None = None) -> GpuStats:
        """Stats over the samples taken between start and end (our clock). Waits up to wait_s
        (default: one sampling interval and a little) for a sample taken at or after `end` to
        arrive, so a line still on its way over SSH counts; the wait is bounded because each
        request pays it."""
        wait_s = self.interval_s + 0.25 if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        with self._arrived:
            while not self._covers(end):
                left = deadline - time.monotonic()
                if left <= 0 or self._proc is None or self._proc.poll() is not None:
                    break
                self._arrived.wait(left)
            offset = self._offset or 0.0
            inside = [s for t, s in self._samples if start <= t + offset <= end]
            if not inside:
                # A request shorter than one interval: the sample nearest its middle.
                middle = (start + end) / 2
                near = [(abs(t + offset - middle), i) for i, (t, _) in enumerate(self._samples)]
                if near:
                    gap, i = min(near)
                    if gap <= self.interval_s * 2:
                        inside = [self._samples[i][1]]
        return stats(inside)

    def _covers(self, end: float) -> bool:
        if not self._samples or self._offset is None:
            return False
        return self._samples[-1][0] + self._offset >= end

    def stop(self) -> None:
        if self._proc is None:
            return
        # The whole group (nvidia-smi and what wraps it), while its leader is still ours: an
        # exited, reaped leader's number could belong to someone else by now.
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)  # it ends at the pipe's end of file
        if self._proc.stdout is not None and not (self._thread and self._thread.is_alive()):
            self._proc.stdout.close()


def stats(samples: list[GpuSample]) -> GpuStats:
    def values(attr: str) -> list[float]:
        return [v for s in samples if (v := getattr(s, attr)) is not None]

    used, util, power = values("memory_used_mib"), values("utilization_pct"), values("power_w")
    return GpuStats(
        max(used) if used else None,
        sum(util) / len(util) if util else None,
        sum(power) / len(power) if power else None,
    )
