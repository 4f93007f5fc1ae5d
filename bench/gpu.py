"""GPU facts during a run: nvidia-smi sampled on the target (locally or over SSH).

nvidia-smi --query-gpu=... --format=csv,noheader,nounits prints one line per GPU per sample;
fields the driver cannot report read "[N/A]" (e.g. power.draw on some boards) and become None.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

QUERY = "index,name,memory.used,memory.total,utilization.gpu,power.draw"
NVIDIA_SMI = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    memory_used_mib: float | None
    memory_total_mib: float | None
    utilization_pct: float | None
    power_w: float | None


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


def parse_csv(text: str) -> list[GpuSample]:
    samples = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6 or not parts[0].isdigit():
            continue
        samples.append(
            GpuSample(
                int(parts[0]),
                parts[1],
                _number(parts[2]),
                _number(parts[3]),
                _number(parts[4]),
                _number(parts[5]),
            )
        )
    return samples


@dataclass(frozen=True)
class GpuStats:
    vram_used_mib: float | None  # peak over the window
    gpu_util_pct: float | None  # mean
    power_w: float | None  # mean


class GpuSampler:
    """Runs `nvidia-smi -lms` (through `prefix`, e.g. an ssh command) and keeps the samples."""

    def __init__(self, prefix: list[str] | None = None, interval_ms: int = 500):
        self.argv = [*(prefix or []), *NVIDIA_SMI, f"-lms={interval_ms}"]
        self._samples: list[tuple[float, GpuSample]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def local(cls) -> GpuSampler | None:
        return cls() if shutil.which("nvidia-smi") else None

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError:
            self._proc = None
            return
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            for sample in parse_csv(line):
                with self._lock:
                    self._samples.append((time.monotonic(), sample))
                    del self._samples[:-10_000]  # bounded memory on long runs

    def mark(self) -> float:
        return time.monotonic()

    def stats_since(self, mark: float) -> GpuStats:
        with self._lock:
            window = [s for t, s in self._samples if t >= mark]
            if not window and self._samples:
                window = [self._samples[-1][1]]  # a request shorter than one interval
        return stats(window)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def stats(samples: list[GpuSample]) -> GpuStats:
    def values(attr: str) -> list[float]:
        return [v for s in samples if (v := getattr(s, attr)) is not None]

    used, util, power = values("memory_used_mib"), values("utilization_pct"), values("power_w")
    return GpuStats(
        max(used) if used else None,
        sum(util) / len(util) if util else None,
        sum(power) / len(power) if power else None,
    )
