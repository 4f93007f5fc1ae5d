"""The bubblewrap sandbox: its limits, its command line, and whether it works on this machine.

What the answer sees: a read-only root with /usr (and the lib/bin links to it) and the Python
installation, nothing else of the host — no /etc, /home, /root, /run, /var, no $HOME, no host
/tmp; a private size-limited /tmp and /dev/shm; a minimal /dev; its own /proc. New user, PID,
network (loopback only, no route out), IPC, UTS and cgroup namespaces; no further user
namespaces; a new session (no terminal to inject into); it dies with the bench. An empty
environment, stdin from /dev/null.

Limits (per sandbox): wall time, CPU seconds, address space and file size per process, open
files, tasks (RLIMIT_NPROC, see below), /tmp and /dev/shm sizes, output bytes.

RLIMIT_NPROC is per user, not per process tree, and the kernel ignores it for root. So:
- the harness sets it inside bubblewrap's new user namespace: since Linux 5.14 the count is
  kept per user namespace (kernel/ucount.c, "rlimits in each user namespace"), so the limit
  caps this sandbox's tasks, not all of the bench user's processes on the host;
- when the bench runs as root, bwrap is started as `nobody` (uid 65534), which also makes the
  sandbox an unprivileged user namespace exactly as a normal user's would be.
The availability probe proves it: it forks past the limit inside the real sandbox and accepts a
configuration only when the fork is refused. Where bwrap is missing, or cannot create its
namespaces (Ubuntu 24.04's default AppArmor policy restricts unprivileged user namespaces), or
the limit does not hold, there is no isolation and code checks are skipped, never run bare.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bench.sandbox import spawn

TIMEOUT_S = 10.0  # wall clock, from bwrap's start
CPU_S = 10  # per process
MEMORY_BYTES = 512 * 2**20  # address space per process
FILE_BYTES = 16 * 2**20  # largest file a process may write
TMP_BYTES = 16 * 2**20  # the private /tmp (tmpfs)
SHM_BYTES = 16 * 2**20  # the private /dev/shm (tmpfs)
PIDS_LIMIT = 16  # tasks in the sandbox: bwrap's init, the harness, all the answer starts
OPEN_FILES = 256
OUTPUT_BYTES = 64 * 2**10  # stdout + stderr kept; more and the sandbox is killed
NOBODY = 65534

HARNESS = (Path(__file__).with_name("harness.py")).read_text(encoding="utf-8")
_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def limits() -> dict[str, int]:
    """The rlimits the harness sets inside the sandbox (names of the resource module)."""
    return {
        "RLIMIT_NPROC": PIDS_LIMIT,
        "RLIMIT_AS": MEMORY_BYTES,
        "RLIMIT_CPU": CPU_S,
        "RLIMIT_FSIZE": FILE_BYTES,
        "RLIMIT_NOFILE": OPEN_FILES,
        "RLIMIT_CORE": 0,
    }


@dataclass(frozen=True)
class Sandbox:
    """One working configuration: bwrap, the interpreter inside, and who runs bwrap."""

    bwrap: str
    python: str  # host path of the interpreter, bound read-only at the same path
    binds: tuple[str, ...] = ()  # read-only binds besides /usr (the interpreter's prefix)
    run_as: int | None = None  # uid (and gid) bwrap is started as; None = the bench's own

    def argv(self, job_fd: int, result_fd: int, info_fd: int) -> list[str]:
        argv = [
            self.bwrap,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for top in _TOP_LEVEL:  # merged /usr: links; otherwise the directories, read-only
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for path in self.binds:
            argv += ["--ro-bind", path, path]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(TMP_BYTES),
            "--tmpfs",
            "/tmp",
            "--size",
            str(SHM_BYTES),
            "--tmpfs",
            "/dev/shm",
            "--remount-ro",
            "/dev",
            "--remount-ro",
            "/",
            "--chdir",
            "/tmp",
            "--info-fd",
            str(info_fd),
            "--",
            self.python,
            "-I",  # isolated mode: no PYTHON* variables, no user site, no script dir on sys.path
            "-S",  # no site: no site-packages
            "-B",
            "-c",
            HARNESS,
            str(job_fd),
            str(result_fd),
        ]
        return argv


@dataclass(frozen=True)
class Availability:
    sandbox: Sandbox | None
    reason: str = ""  # why there is no isolation, one line
    tried: list[str] = field(default_factory=list, compare=False)


def _interpreters() -> list[tuple[str, tuple[str, ...]]]:
    """Interpreters the sandbox may run, best first, each with the binds it needs: the bench's
    own, then the system's (the bench's may sit where `nobody` cannot reach, e.g. /root/.pyenv)."""
    found: list[tuple[str, tuple[str, ...]]] = []
    candidates = [(os.path.realpath(sys.executable), sys.base_prefix)]
    candidates += [
        (os.path.realpath(p), None) for p in ("/usr/bin/python3", "/usr/local/bin/python3")
    ]
    for real, prefix in candidates:
        if not os.access(real, os.X_OK) or any(real == f[0] for f in found):
            continue
        root = os.path.realpath(prefix or os.path.dirname(os.path.dirname(real)))
        binds: list[str] = []
        if root != "/usr" and not root.startswith("/usr/"):
            binds.append(root)
        if not real.startswith(root + "/"):
            binds.append(os.path.dirname(real))
        found.append((real, tuple(binds)))
    return found


def _probe_code() -> str:
    return f"""
import os, time
n = 0
try:
    for _ in range({PIDS_LIMIT + 4}):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        n += 1
except OSError:
    pass
print("forked", n)
"""


def _who(run_as: int | None) -> str:
    if run_as is not None:
        return f"uid {run_as}"
    return "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"


def probe(sandbox: Sandbox) -> str:
    """Run the sandbox once for real; "" when it works and its process limit holds, else why."""
    nonce = secrets.token_hex(16)
    job = {"code": _probe_code(), "nonce": nonce, "limits": limits()}
    try:
        done = spawn.run(
            sandbox.argv,
            job=json.dumps(job).encode(),
            run_as=sandbox.run_as,
            timeout_s=TIMEOUT_S,
            output_cap=OUTPUT_BYTES,
        )
    except OSError as exc:
        return f"cannot start bwrap as {_who(sandbox.run_as)}: {exc}"
    text = done.output.decode("utf-8", "replace")
    if done.returncode != 0 or f"PASS {nonce}" not in done.result.decode("utf-8", "replace"):
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        return f"bwrap failed as {_who(sandbox.run_as)} with {sandbox.python}: {why}"[:300]
    forked = [int(m) for m in re.findall(r"^forked (\d+)$", text, re.M)]
    if not forked or forked[-1] + 2 > PIDS_LIMIT:
        return (
            f"the process limit does not hold when bwrap runs as {_who(sandbox.run_as)}: "
            f"the probe forked {forked[-1] if forked else '?'} of {PIDS_LIMIT + 4} "
            f"(limit {PIDS_LIMIT})"
        )
    return ""


def _find(bwrap: str) -> Availability:
    users: list[int | None] = [NOBODY, None] if os.geteuid() == 0 else [None]
    tried: list[str] = []
    for run_as in users:
        for python, binds in _interpreters():
            sandbox = Sandbox(bwrap, python, binds, run_as)
            why = probe(sandbox)
            if not why:
                return Availability(sandbox, tried=tried)
            tried.append(why)
    ran = [t for t in tried if t.startswith(("bwrap failed", "the process limit"))]
    reason = (ran or tried or ["no Python interpreter found for the sandbox"])[0]
    if "Can't find source path" in reason and f"uid {NOBODY}" in reason:
        reason += (
            f" (the sandbox runs as uid {NOBODY} when the bench runs as root, and needs a Python"
            " it can read: install one outside private home directories, e.g. apt-get install"
            " python3)"
        )
    elif "namespace" in reason or "uid map" in reason:
        # Ubuntu 23.10+ prints "bwrap: setting up uid map: Permission denied" (AppArmor)
        reason += (
            " (unprivileged user namespaces are refused here, as Ubuntu 24.04's AppArmor policy"
            " does by default: see the README)"
        )
    return Availability(None, reason, tried)


_lock = threading.Lock()
_known: dict[str, Availability] = {}


def availability() -> Availability:
    """Whether model code can run isolated here, probed once per bwrap found on PATH."""
    if not sys.platform.startswith("linux"):
        return Availability(None, f"bubblewrap needs Linux (this is {sys.platform})")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Availability(
            None, "bwrap not found on PATH (install bubblewrap: apt-get install bubblewrap)"
        )
    with _lock:
        if bwrap not in _known:
            _known[bwrap] = _find(bwrap)
        return _known[bwrap]


def forget() -> None:
    """Probe again on the next call (tests change PATH and namespaces under it)."""
    with _lock:
        _known.clear()
