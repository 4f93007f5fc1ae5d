"""The bubblewrap sandbox: its limits, its command line, and whether it works on this machine.

What the answer sees: a read-only root with /usr (and the lib/bin links to it) and the Python
installation (its executable and lib/ directory only), nothing else of the host — no /etc,
/home, /root, /run, /var, /sys, no $HOME, no host /tmp, and no /proc (see below); a private
size-limited /tmp and /dev/shm; a minimal /dev. New user, PID, network (loopback only, no
route out), IPC, UTS and cgroup namespaces; no further user namespaces; no capabilities; a
seccomp filter (seccomp.py); a new session (no terminal to inject into); it dies with the
bench. An empty environment, stdin from /dev/null.

Why no /proc: the sandbox's PID 1 is bwrap's init, running as the same uid as the answer and
dumpable (bubblewrap.c drop_privs sets PR_SET_DUMPABLE), so the answer could write into its
memory through /proc/1/mem (proc(5): access mode PTRACE_MODE_ATTACH, which the same uid
passes) and clear the parent-death signal that ties the sandbox to the bench. The seccomp
filter stops ptrace itself; without /proc there is no /proc/1/mem either (nor /proc/1/fd,
/proc/self/mountinfo and the rest). Python needs none of it.

Limits (per sandbox): wall time, CPU seconds, address space and file size per process, open
files, tasks (RLIMIT_NPROC, see below), /tmp and /dev/shm sizes, output bytes. Memory in all:
at most (PIDS_LIMIT - 1) processes of MEMORY_BYTES each plus the two tmpfs, about 1.8 GiB; the
seccomp filter closes the ways around RLIMIT_AS (memfd, System V shared memory, io_uring). A
cgroup would cap the total exactly, but it needs a systemd user manager with the memory
controller delegated (`systemd-run --user --scope -p MemoryMax=`): not there when the bench
runs as root, in CI containers, or on cgroup v1 hosts like this test machine, so the limit
would hold only where nobody tests it.

RLIMIT_NPROC is per user, not per process tree, and the kernel ignores it for root. So:
- the harness sets it inside bubblewrap's new user namespace: since Linux 5.14 the count is
  kept per user namespace (kernel/ucount.c, "rlimits in each user namespace"), so the limit
  caps this sandbox's tasks, not all of the bench user's processes on the host;
- when the bench runs as root, bwrap is started as `nobody` (uid 65534, by number: no passwd
  entry is needed), which also makes the sandbox an unprivileged user namespace exactly as a
  normal user's would be.
The availability probe proves it: it forks past the limit inside the real sandbox and accepts a
configuration only when the fork is refused. Where bwrap is missing, or cannot create its
namespaces (Ubuntu 24.04's default AppArmor policy restricts unprivileged user namespaces), or
the limit does not hold, or there is no seccomp filter for this CPU, there is no isolation and
code checks are skipped, never run bare.

Older bubblewrap (Ubuntu 22.04 ships 0.6.1, Debian 11 and RHEL 9 0.4.x): --clearenv (0.5.0),
--size (0.7.0) and --disable-userns (0.8.0) are used only when `bwrap --help` lists them.
Without --size, /tmp and /dev/shm are read-only (an unsized tmpfs could fill half the RAM);
without --disable-userns the seccomp filter alone refuses new namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bench.sandbox import seccomp, spawn

TIMEOUT_S = 10.0  # wall clock, from bwrap's start
CPU_S = 10  # per process
MEMORY_BYTES = 256 * 2**20  # address space per process
FILE_BYTES = 16 * 2**20  # largest file a process may write
TMP_BYTES = 16 * 2**20  # the private /tmp (tmpfs)
SHM_BYTES = 16 * 2**20  # the private /dev/shm (tmpfs)
PIDS_LIMIT = 8  # tasks (threads too) in the sandbox: bwrap's init, the harness, the answer's
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
        "RLIMIT_MSGQUEUE": 0,  # POSIX message queues (the seccomp filter refuses mq_open too)
        "RLIMIT_MEMLOCK": 0,
    }


@dataclass(frozen=True)
class Features:
    """Options of the installed bwrap that older releases lack (bubblewrap.c at each tag)."""

    clearenv: bool = True  # 0.5.0
    size: bool = True  # 0.7.0
    disable_userns: bool = True  # 0.8.0


def features(bwrap: str) -> Features:
    """What `bwrap --help` lists (it prints every option it parses)."""
    try:
        text = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    return Features(
        clearenv="--clearenv" in text,
        size="--size" in text,
        disable_userns="--disable-userns" in text,
    )


@dataclass(frozen=True)
class Sandbox:
    """One working configuration: bwrap, the interpreter inside, and who runs bwrap."""

    bwrap: str
    python: str  # host path of the interpreter, bound read-only at the same path
    binds: tuple[str, ...] = ()  # read-only binds besides /usr (the interpreter's files)
    run_as: int | None = None  # uid (and gid) bwrap is started as; None = the bench's own
    features: Features = Features()

    @property
    def filter(self) -> bytes:
        return seccomp.program()

    def argv(self, fds: spawn.Fds, mode: str = "run") -> list[str]:
        has = self.features
        argv = [
            self.bwrap,
            # --unshare-all would be --unshare-user-try: a sandbox without its own user
            # namespace must fail, not run (bwrap.xml)
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            *(["--disable-userns"] if has.disable_userns else []),
            "--die-with-parent",
            "--new-session",
            *(["--clearenv"] if has.clearenv else []),  # the environment is empty anyway
            # one malloc arena: glibc reserves 64 MiB of address space per thread arena, so
            # under RLIMIT_AS a few threads would fail at start (mallopt(3) M_ARENA_MAX)
            "--setenv",
            "MALLOC_ARENA_MAX",
            "1",
            "--cap-drop",
            "ALL",
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
        argv += ["--dev", "/dev"]
        if has.size:
            argv += ["--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
            argv += ["--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
        else:  # read-only: on the root, and the /dev/shm directory --dev makes
            argv += ["--dir", "/tmp"]
        argv += [
            "--remount-ro",
            "/dev",
            "--remount-ro",
            "/",
            "--chdir",
            "/tmp",
            "--seccomp",
            str(fds.seccomp),
            "--info-fd",
            str(fds.info),
            "--",
            self.python,
            "-I",  # isolated mode: no PYTHON* variables, no user site, no script dir on sys.path
            "-S",  # no site: no site-packages
            "-B",
            "-c",
            HARNESS,
            mode,
            str(fds.job),
            str(fds.result),
        ]
        if mode == "serve":
            argv.append(str(fds.call))
        return argv


@dataclass(frozen=True)
class Availability:
    sandbox: Sandbox | None
    reason: str = ""  # why there is no isolation, one line
    tried: list[str] = field(default_factory=list, compare=False)


def _homes() -> set[str]:
    homes = {os.environ.get("HOME", "")}
    with contextlib.suppress(KeyError):
        homes.add(pwd.getpwuid(os.geteuid()).pw_dir)
    return {os.path.realpath(h) for h in homes if h}


def exposes_home(path: str) -> bool:
    """Whether binding `path` would show a home directory (or all of /) to the answer."""
    real = os.path.realpath(path)
    return real == "/" or any(h == real or h.startswith(real.rstrip("/") + "/") for h in _homes())


def binds_for(executable: str, prefix: str, stdlib: str | None) -> tuple[str, ...] | None:
    """What the sandbox must bind to run `executable`: the file itself, `prefix`/lib (the
    standard library, libpython, what extension modules link to) and the standard library if
    it lies elsewhere; never the whole prefix, which may be a home directory (a Python built
    with --prefix=$HOME would show ~/.ssh). None when a bind would still show a home."""
    real = os.path.realpath(executable)
    wanted = [real, os.path.realpath(os.path.join(prefix, "lib"))]
    if stdlib:
        wanted.append(os.path.realpath(stdlib))
    binds: list[str] = []
    for path in wanted:
        if path == "/usr" or path.startswith("/usr/") or not os.path.exists(path):
            continue
        if any(path == b or path.startswith(b + "/") for b in binds):
            continue
        if exposes_home(path):
            return None
        binds.append(path)
    return tuple(binds)


def _interpreters() -> list[tuple[str, tuple[str, ...]]]:
    """Interpreters the sandbox may run, best first, each with the binds it needs: the bench's
    own, then the system's (the bench's may sit where `nobody` cannot reach, e.g. /root/.pyenv)."""
    found: list[tuple[str, tuple[str, ...]]] = []
    own = binds_for(sys.executable, sys.base_prefix, sysconfig.get_paths().get("stdlib"))
    if own is not None:
        found.append((os.path.realpath(sys.executable), own))
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        real = os.path.realpath(path)
        if not os.access(real, os.X_OK) or any(real == f[0] for f in found):
            continue
        binds = binds_for(real, os.path.dirname(os.path.dirname(real)), None)
        if binds is not None:
            found.append((real, binds))
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
            seccomp=sandbox.filter,
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
    has = features(bwrap)
    for run_as in users:
        for python, binds in _interpreters():
            sandbox = Sandbox(bwrap, python, binds, run_as, has)
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
    if not seccomp.supported():
        return Availability(
            None, f"no seccomp filter for this CPU ({seccomp.machine()}; x86_64 and aarch64 only)"
        )
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
