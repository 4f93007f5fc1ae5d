"""Run untrusted, model-written code in a throwaway subprocess.

Limits: wall time, CPU time, address space and file size (rlimits), a fresh temporary
directory as cwd and HOME, an empty environment, Python in isolated mode, and no network:
a new network namespace (`unshare -rn`) where the kernel allows one, and a socket guard
inside the interpreter in any case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache

TIMEOUT_S = 10
MEMORY_BYTES = 512 * 2**20
FILE_BYTES = 16 * 2**20

# Runs before the untrusted code: any socket use fails even where no namespace could be made.
_GUARD = """
import socket as _s
def _no_network(*a, **k):
    raise OSError("network is disabled in the rehearsal sandbox")
_s.socket = _no_network
_s.create_connection = _no_network
_s.getaddrinfo = _no_network
del _s, _no_network
"""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    returncode: int | None
    output: str  # last lines of stdout+stderr, for diagnosis
    isolated_network: bool  # True when a separate network namespace was used


def _limits() -> None:  # runs in the child between fork and exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (TIMEOUT_S, TIMEOUT_S))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()


@cache
def netns_prefix() -> tuple[str, ...]:
    """`unshare -rn` when it works here (Linux with user namespaces), else nothing."""
    unshare = shutil.which("unshare")
    if not unshare or not sys.platform.startswith("linux"):
        return ()
    try:
        probe = subprocess.run(
            [unshare, "-rn", "true"], capture_output=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, "-rn") if probe.returncode == 0 else ()


def run_python(code: str, timeout_s: float = TIMEOUT_S) -> SandboxResult:
    prefix = netns_prefix()
    with tempfile.TemporaryDirectory(prefix="rehearsal-sandbox-") as tmp:
        script = os.path.join(tmp, "answer.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(_GUARD + "\n" + code)
        argv = [*prefix, sys.executable, "-I", "-S", script]
        env = {"HOME": tmp, "TMPDIR": tmp, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        try:
            proc = subprocess.run(
                argv,
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                preexec_fn=_limits,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return SandboxResult(False, None, f"timed out after {timeout_s:g} s", bool(prefix))
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        return SandboxResult(proc.returncode == 0, proc.returncode, tail, bool(prefix))
