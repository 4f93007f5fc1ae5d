"""Hostile "model answers" against bench.sandbox, each with the host-side evidence that decides
whether the sandbox blocked it (issue #12). Used by tests/test_sandbox.py; run directly to print
the probe table for the current implementation:

    .venv/bin/python tests/sandbox_probes.py

Each probe only needs `sandbox.run_python(code, timeout_s=...)` returning an object with
`.output` (the old and the new sandbox both have it), so the same probes give the before and
the after table. Nothing a probe plants outside the sandbox outlives it: files are under a
temporary directory or removed, and processes a probe finds left behind are killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROCESS_CEILING = 32  # "fork past the limit" is blocked when the answer cannot reach this many
SHM_PROBE_BYTES = 40 * 2**20  # the /dev/shm probe stops here by itself


@dataclass(frozen=True)
class Outcome:
    blocked: bool
    evidence: str  # one line: what the answer managed to do, seen from the host
    output: str = ""  # what the answer printed (shows that it really ran and tried)


Run = Callable[..., Any]  # sandbox.run_python


@dataclass(frozen=True)
class Probe:
    name: str
    what: str
    check: Callable[[Run, Path], Outcome]


def _token() -> str:
    return secrets.token_hex(8)


def _output(result: Any) -> str:
    return getattr(result, "output", "") or ""


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains marker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _in_child_python(
    code: str, env_extra: dict[str, str], timeout_s: float = 120, prelude: str = ""
) -> dict:
    """Run sandbox.run_python(code) in a fresh interpreter (the bench's role; `prelude` runs
    first in it) and report its peak RSS, the output length and any exception, as JSON."""
    driver = f"""
import json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
from bench import sandbox
{prelude}
try:
    r = sandbox.run_python({code!r})
    out = {{"output": r.output[-4000:], "chars": len(r.output), "error": None,
           "note": getattr(r, "note", None)}}
except BaseException as exc:
    out = {{"output": "", "chars": 0, "error": type(exc).__name__ + ": " + str(exc)[:200]}}
# VmHWM is this process image's own peak (reset by execve). ru_maxrss is not: Linux keeps the
# forked copy's high-water mark across execve, so a big parent (a long pytest run) leaks into it.
try:
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["maxrss_mib"] = hwm / 1024
print(json.dumps(out))
"""
    proc = subprocess.run(
        [sys.executable, "-c", driver],
        env={**os.environ, **env_extra},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"output": "", "chars": 0, "maxrss_mib": 0, "error": proc.stderr[-300:]}
    return json.loads(lines[-1])


def decoy_key(run: Run, tmp: Path) -> Outcome:
    token = _token()
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\nDECOY-{token}\n")
    code = f"""
import os
for path in (os.path.expanduser("~/.ssh/id_ed25519"), {str(key)!r}):
    try:
        print("read:", open(path).read())
    except OSError as exc:
        print("blocked:", path, exc)
"""
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # the bench's own HOME is the fake one
    try:
        out = _output(run(code))
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
    leaked = f"DECOY-{token}" in out
    return Outcome(not leaked, "read the decoy key" if leaked else "key not readable", out)


def write_outside(run: Run, tmp: Path) -> Outcome:
    outside = tmp / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    target = outside / "written-by-the-answer.txt"
    code = f"""
try:
    open({str(target)!r}, "w").write("pwned")
    print("wrote")
except OSError as exc:
    print("blocked:", exc)
"""
    out = _output(run(code))
    written = target.exists()
    return Outcome(not written, f"{target} created" if written else "no file", out)


def _listen_and_probe(run: Run, family: int, address: Any, code: str) -> Outcome:
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.bind(address)
        srv.listen(8)
        out = _output(run(code))
        srv.settimeout(0.3)
        try:
            conn, _ = srv.accept()  # a connect() that succeeded waits in the backlog
        except TimeoutError:
            return Outcome(True, "no connection reached the listener", out)
        with conn:
            conn.settimeout(0.3)
            try:
                data = conn.recv(64)
            except OSError:
                data = b""
        return Outcome(False, f"connected to the host listener (sent {data!r})", out)


def loopback_tcp(run: Run, tmp: Path) -> Outcome:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # _socket directly: an interpreter-level guard on socket.socket does not stop this.
    code = f"""
import _socket
s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect(("127.0.0.1", {port}))
    s.send(b"GET /api/tags")
    print("connected")
except OSError as exc:
    print("blocked:", exc)
"""
    return _listen_and_probe(run, socket.AF_INET, ("127.0.0.1", port), code)


def host_unix_socket(run: Run, tmp: Path) -> Outcome:
    path = str(tmp / "agent.sock")  # stands in for ssh-agent's or docker's socket
    code = f"""
import _socket
s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect({path!r})
    s.send(b"list keys")
    print("connected")
except OSError as exc:
    print("blocked:", exc)
"""
    return _listen_and_probe(run, socket.AF_UNIX, path, code)


def fork_past_limit(run: Run, tmp: Path) -> Outcome:
    code = """
import os, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        n += 1
except OSError as exc:
    print("fork refused:", exc)
print("PROBE forked", n)
"""
    out = _output(run(code, timeout_s=20))
    forked = [int(x.split()[-1]) for x in out.splitlines() if x.startswith("PROBE forked")]
    n = forked[-1] if forked else None
    if n is None:
        return Outcome(True, "the answer did not get to report a count", out)
    return Outcome(n < PROCESS_CEILING, f"{n} processes forked", out)


def _leftover(run: Run, hang: bool) -> Outcome:
    marker = f"rehearsal-probe-{_token()}"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", {marker!r}],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=True)
print("spawned", flush=True)
{"while True: pass" if hang else ""}
"""
    result = run(code, timeout_s=3)
    out = _output(result) + f"\nnote: {getattr(result, 'note', None)}"
    left = _processes_with(marker)
    _kill(left)
    if left:
        return Outcome(False, f"{len(left)} process(es) still running after the check", out)
    return Outcome(True, "nothing left running", out)


def leftover_process(run: Run, tmp: Path) -> Outcome:
    return _leftover(run, hang=False)


def leftover_after_timeout(run: Run, tmp: Path) -> Outcome:
    return _leftover(run, hang=True)


def fill_dev_shm(run: Run, tmp: Path) -> Outcome:
    prefix = f"rehearsal-probe-{_token()}"
    code = f"""
total = 0
try:
    for i in range({SHM_PROBE_BYTES // (8 * 2**20)}):
        with open("/dev/shm/{prefix}-%d" % i, "wb") as fh:
            for _ in range(8):
                fh.write(b"x" * 2**20)
                fh.flush()
                total += 2**20
except OSError as exc:
    print("stopped:", exc)
print("PROBE wrote", total)
"""
    out = _output(run(code))
    on_host = [p for p in Path("/dev/shm").glob(f"{prefix}-*")]
    for p in on_host:
        p.unlink()
    wrote = [int(x.split()[-1]) for x in out.splitlines() if x.startswith("PROBE wrote")]
    total = wrote[-1] if wrote else 0
    if on_host:
        evidence = f"{len(on_host)} file(s) in the host's /dev/shm, {total >> 20} MiB"
        return Outcome(False, evidence, out)
    if total >= SHM_PROBE_BYTES:
        return Outcome(False, f"wrote {total >> 20} MiB to /dev/shm without a limit", out)
    return Outcome(True, f"host /dev/shm untouched; {total >> 20} MiB before the cap", out)


def read_stdin(run: Run, tmp: Path) -> Outcome:
    token = _token()
    r, w = os.pipe()
    os.write(w, f"STDIN-{token}\n".encode())
    os.close(w)
    saved = os.dup(0)
    os.dup2(r, 0)  # the bench's stdin holds something the answer must not see
    os.close(r)
    try:
        out = _output(run("import sys\nprint('stdin:', sys.stdin.read()[:100])"))
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    leaked = f"STDIN-{token}" in out
    return Outcome(not leaked, "read the bench's stdin" if leaked else "stdin was empty", out)


def print_200mb(run: Run, tmp: Path) -> Outcome:
    code = """
import sys
chunk = b"y" * 2**20
for _ in range(200):
    sys.stdout.buffer.write(chunk)
sys.stdout.flush()
"""
    got = _in_child_python(code, {})
    if got["error"]:
        return Outcome(False, f"the bench raised {got['error']}")
    blocked = got["maxrss_mib"] < 150 and got["chars"] < 2**20
    evidence = f"bench peak RSS {got['maxrss_mib']:.0f} MiB, kept {got['chars']:,} chars"
    return Outcome(blocked, evidence, got["output"][-200:] + f"\nnote: {got.get('note')}")


def parent_environ(run: Run, tmp: Path) -> Outcome:
    token = _token()
    code = f"""
import os
found = []
try:
    pids = os.listdir("/proc")
except OSError as exc:
    print("no /proc:", exc)
    pids = []
for pid in pids:
    if pid.isdigit():
        try:
            if b"{token}" in open("/proc/%s/environ" % pid, "rb").read():
                found.append(pid)
        except OSError:
            pass
print("PROBE environ of", found)
"""
    got = _in_child_python(code, {"REHEARSAL_PROBE_SECRET": token})
    lines = [x for x in got["output"].splitlines() if x.startswith("PROBE environ of")]
    leaked = bool(lines) and lines[-1] != "PROBE environ of []"
    if got["error"]:
        return Outcome(False, f"the bench raised {got['error']}")
    evidence = f"read the secret in {lines[-1][17:]}" if leaked else "secret not visible"
    return Outcome(not leaked, evidence, got["output"])


def invalid_utf8(run: Run, tmp: Path) -> Outcome:
    code = """
import sys
sys.stdout.buffer.write(b"\\xff\\xfe not utf-8 \\x80\\n")
sys.stderr.buffer.write(b"\\xc3\\x28\\n")
"""
    try:
        out = _output(run(code))
    except Exception as exc:  # what the old sandbox does: the bench's thread dies
        return Outcome(False, f"the bench raised {type(exc).__name__}")
    if "\ufffd" not in out:
        return Outcome(False, "the output was not decoded with replacement", out)
    return Outcome(True, "decoded with replacement characters", out)


# --- red team, second round: what the first sandbox did not think of ---------------------------


def _readable_dir() -> tempfile.TemporaryDirectory:
    """A directory the sandbox's user (nobody, when the bench is root) could read if it were
    visible: so "not readable" means "not there", not "permission denied"."""
    tmp = tempfile.TemporaryDirectory(prefix="rehearsal-probe-", dir="/tmp")
    os.chmod(tmp.name, 0o755)
    return tmp


_SYSCALLS = (
    '{"x86_64": {"add_key": 248, "keyctl": 250}, "aarch64": {"add_key": 217, "keyctl": 219}}'
)


def session_keyring(run: Run, tmp: Path) -> Outcome:
    """keyrings(7): the session keyring is inherited across fork and execve, and a process that
    possesses a keyring may read its keys whatever its uid (security/keys/permission.c)."""
    token = _token()
    secret = f"KEYRING-{token}"
    prelude = f"""
import ctypes, platform
_libc = ctypes.CDLL(None, use_errno=True)
_nr = {_SYSCALLS}[platform.machine()]
_libc.syscall(_nr["keyctl"], 1, None)  # KEYCTL_JOIN_SESSION_KEYRING: a fresh one for this bench
_planted = _libc.syscall(_nr["add_key"], b"user", b"rehearsal-probe", {secret.encode()!r},
                         {len(secret)}, -3)  # KEY_SPEC_SESSION_KEYRING
print("planted", _planted, file=sys.stderr)
"""
    code = f"""
import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
nr = {_SYSCALLS}[platform.machine()]
key = libc.syscall(nr["keyctl"], 10, -3, b"user", b"rehearsal-probe", 0)  # KEYCTL_SEARCH
if key < 0:
    print("blocked: keyctl search:", os.strerror(ctypes.get_errno()))
else:
    buf = ctypes.create_string_buffer(256)
    n = libc.syscall(nr["keyctl"], 11, key, buf, 256)  # KEYCTL_READ
    print("read:", buf.raw[:max(n, 0)])
"""
    got = _in_child_python(code, {}, prelude=prelude)
    if got["error"]:
        return Outcome(False, f"the bench raised {got['error']}")
    leaked = secret in got["output"]
    evidence = "read the key from the bench's session keyring" if leaked else "keyring refused"
    return Outcome(not leaked, evidence, got["output"])


def ptrace_init(run: Run, tmp: Path) -> Outcome:
    """The sandbox's PID 1 is bwrap's init, same uid, dumpable: attaching to it (ptrace, or
    writing /proc/1/mem) lets the answer clear the parent-death signal that ties the sandbox to
    the bench (bubblewrap.c drop_privs: PR_SET_DUMPABLE 1; proc(5) /proc/pid/mem)."""
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, 1, 0, 0) == 0:  # PTRACE_ATTACH
    print("attached to init")
    os.waitpid(1, 0x40000000)  # __WALL: wait for the attach stop
    libc.ptrace(17, 1, 0, 0)  # PTRACE_DETACH
else:
    print("blocked: ptrace:", os.strerror(ctypes.get_errno()))
try:
    with open("/proc/1/maps") as fh:
        start = int(fh.readline().split("-")[0], 16)
    with open("/proc/1/mem", "r+b") as mem:
        mem.seek(start)
        print("init memory writable, starts with", mem.read(4))
except OSError as exc:
    print("blocked: /proc/1/mem:", exc)
"""
    out = _output(run(code))
    hit = "attached to init" in out or "init memory writable" in out
    return Outcome(not hit, "reached init's memory" if hit else "init out of reach", out)


def bench_process(run: Run, tmp: Path) -> Outcome:
    pid = os.getpid()  # the bench's role here: the process that runs the sandbox
    code = f"""
import os
try:
    os.kill({pid}, 0)
    print("signalled the bench")
except OSError as exc:
    print("blocked: kill:", exc)
for path in ("/proc/{pid}/environ", "/proc/{pid}/cmdline", "/proc/{pid}/root/etc/hostname"):
    try:
        print("read:", path, open(path, "rb").read()[:80])
    except OSError as exc:
        print("blocked:", path, exc)
try:
    print("PROBE pids", sorted(p for p in os.listdir("/proc") if p.isdigit()))
except OSError as exc:
    print("PROBE pids [] (no /proc:", exc, ")")
"""
    out = _output(run(code))
    hit = "signalled the bench" in out or "read:" in out
    return Outcome(not hit, "reached the bench's process" if hit else "bench not visible", out)


def inherited_fds(run: Run, tmp: Path) -> Outcome:
    code = """
import os, stat
kinds = {}
for fd in range(1024):
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        continue
    kinds[fd] = ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else
                 "socket" if stat.S_ISSOCK(mode) else "pipe" if stat.S_ISFIFO(mode) else "char")
print("PROBE fds", kinds)
for fd in kinds:
    if fd > 2:
        try:
            os.set_blocking(fd, False)
            data = os.read(fd, 4096)
            print("read:", fd, data[:60])
        except OSError as exc:
            print("blocked: read", fd, exc)
"""
    out = _output(run(code))
    line = next((x for x in out.splitlines() if x.startswith("PROBE fds")), "")
    risky = any(k in line for k in ("'dir'", "'file'", "'socket'")) or "read:" in out
    return Outcome(not risky, line[6:] or "no report", out)


def many_threads(run: Run, tmp: Path) -> Outcome:
    code = """
import threading
gate = threading.Event()
n = 0
try:
    for _ in range(1000):
        threading.Thread(target=gate.wait, daemon=True).start()
        n += 1
except RuntimeError as exc:
    print("thread refused:", exc)
print("PROBE threads", n)
gate.set()
"""
    out = _output(run(code))
    counts = [int(x.split()[-1]) for x in out.splitlines() if x.startswith("PROBE threads")]
    n = counts[-1] if counts else 0
    return Outcome(n < PROCESS_CEILING, f"{n} threads started", out)


MEMORY_PROBE_BYTES = 640 * 2**20  # above RLIMIT_AS, old (512 MiB) and new


def memory_beside_rlimit(run: Run, tmp: Path) -> Outcome:
    """RLIMIT_AS counts mappings; memfd pages and System V segments not mapped any more are not
    (setrlimit(2): RLIMIT_AS "the maximum size of the process's virtual memory")."""
    code = f"""
import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
chunk = b"m" * 2**20
fds, held = [], 0
while held < {MEMORY_PROBE_BYTES}:
    fd = libc.memfd_create(b"probe", 0)
    if fd < 0:
        print("blocked: memfd_create:", os.strerror(ctypes.get_errno()))
        break
    try:
        for _ in range(16):
            os.write(fd, chunk)
            held += len(chunk)
    except OSError as exc:
        print("memfd stopped:", exc)
        break
    fds.append(fd)
print("PROBE memfd", held)
for fd in fds:
    os.close(fd)
shm = 0
while shm < {MEMORY_PROBE_BYTES}:
    sid = libc.shmget(0, 64 * 2**20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    if sid < 0:
        print("blocked: shmget:", os.strerror(ctypes.get_errno()))
        break
    addr = libc.shmat(sid, None, 0)
    ctypes.memset(addr, 1, 64 * 2**20)
    libc.shmdt(ctypes.c_void_p(addr))
    libc.shmctl(sid, 0, None)  # IPC_RMID: freed when the probe ends
    shm += 64 * 2**20
print("PROBE shm", shm)
"""
    out = _output(run(code))
    got = {x.split()[1]: int(x.split()[2]) for x in out.splitlines() if x.startswith("PROBE ")}
    worst = max(got.values(), default=0)
    return Outcome(worst < MEMORY_PROBE_BYTES, f"held {worst >> 20} MiB beside RLIMIT_AS", out)


MEMORY_CEILING = 2 * 2**30  # what one sandbox may hold in all, over every process it forks


def memory_in_every_process(run: Run, tmp: Path) -> Outcome:
    code = """
import os, time
r, w = os.pipe()
kids = 0
for _ in range(32):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        held, blocks = 0, []
        try:
            while held < 512 * 2**20:
                blocks.append(bytearray(32 * 2**20))
                held += 32 * 2**20
        except MemoryError:
            pass
        os.write(w, b"%d\\n" % held)
        time.sleep(3)
        os._exit(0)
    kids += 1
os.close(w)
total = sum(int(x) for x in os.fdopen(r).read().split())
print("PROBE processes", kids, "held", total)
"""
    out = _output(run(code, timeout_s=20))
    got = [x.split() for x in out.splitlines() if x.startswith("PROBE processes")]
    total = int(got[-1][-1]) if got else 0
    kids = got[-1][2] if got else "?"
    return Outcome(total < MEMORY_CEILING, f"{kids} processes held {total >> 20} MiB", out)


def symlink_escape(run: Run, tmp: Path) -> Outcome:
    token = _token()
    with _readable_dir() as where:
        decoy = Path(where) / "decoy.txt"
        decoy.write_text(f"DECOY-{token}\n")
        decoy.chmod(0o644)
        code = f"""
import os, sys
decoy = {str(decoy)!r}
ways = [decoy, "/.." * 8 + decoy, "/proc/1/root" + decoy, "/proc/self/root" + decoy,
        "/proc/1/cwd/" + "../" * 8 + decoy.lstrip("/"),
        os.path.join(sys.base_prefix, "../" * 8, decoy.lstrip("/"))]
for i, target in enumerate(ways):
    link = "/tmp/link%d" % i
    try:
        os.symlink(target, link)
        print("read:", open(link).read().strip())
    except OSError as exc:
        print("blocked:", target, exc)
"""
        out = _output(run(code))
    leaked = f"DECOY-{token}" in out
    return Outcome(not leaked, "followed a link out" if leaked else "no link led out", out)


def nested_userns(run: Run, tmp: Path) -> Outcome:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER: full capabilities in a new namespace
    print("created a user namespace")
else:
    print("blocked: unshare:", os.strerror(ctypes.get_errno()))
"""
    out = _output(run(code))
    hit = "created a user namespace" in out
    return Outcome(not hit, "new user namespace" if hit else "refused", out)


def outlive_bench_sigkill(run: Run, tmp: Path) -> Outcome:
    """The bench killed with SIGKILL mid-check: nothing it started may keep running
    (bwrap.xml --die-with-parent; prctl(2) PR_SET_PDEATHSIG)."""
    marker = f"rehearsal-probe-{_token()}"
    code = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", {marker!r}],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=True)
time.sleep(60)
"""
    driver = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from bench import sandbox
sandbox.run_python({code!r}, timeout_s=60)
"""
    bench = subprocess.Popen([sys.executable, "-c", driver], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _processes_with(marker):
            time.sleep(0.1)
        if not _processes_with(marker):
            return Outcome(True, "the answer never got to start its process")
        bench.kill()
        bench.wait()
        time.sleep(2)
        left = _processes_with(marker)
    finally:
        bench.kill()
        bench.wait()
    _kill(left)
    if left:
        return Outcome(False, f"{len(left)} process(es) outlived the bench", "spawned")
    return Outcome(True, "everything died with the bench", "spawned")


def _timed(run: Run, code: str, timeout_s: float) -> tuple[float, Any]:
    started = time.monotonic()
    result = run(code, timeout_s=timeout_s)
    return time.monotonic() - started, result


def clock_games(run: Run, tmp: Path) -> Outcome:
    code = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
for clock in (0, 1):  # CLOCK_REALTIME, CLOCK_MONOTONIC
    if libc.clock_settime(clock, ctypes.byref(timespec(1, 0))) == 0:
        print("moved clock", clock)
    else:
        print("blocked: clock_settime", clock, os.strerror(ctypes.get_errno()))
print("sleeping", flush=True)
time.sleep(3600)
"""
    took, result = _timed(run, code, 2)
    out = _output(result) + f"\nnote: {getattr(result, 'note', None)}"
    moved = "moved clock" in out
    blocked = not moved and took < 2 + 3
    return Outcome(blocked, f"the check ended after {took:.1f} s (limit 2 s)", out)


def trickle_forever(run: Run, tmp: Path) -> Outcome:
    code = """
import sys, time
sys.stdout.write("t" * 60000)
while True:
    sys.stdout.write("t")
    sys.stdout.flush()
    time.sleep(0.05)
"""
    took, result = _timed(run, code, 2)
    out = _output(result)
    note = getattr(result, "note", None)
    blocked = took < 2 + 3 and len(out) <= 64 * 2**10
    return Outcome(blocked, f"ended after {took:.1f} s: {note}", out[-200:] + f"\nnote: {note}")


def no_newline(run: Run, tmp: Path) -> Outcome:
    code = """
import sys
sys.stdout.write("n" * 2**20)
"""
    got = _in_child_python(code, {})
    if got["error"]:
        return Outcome(False, f"the bench raised {got['error']}")
    blocked = got["chars"] <= 4000 and got["maxrss_mib"] < 150
    evidence = f"kept {got['chars']:,} chars, bench peak RSS {got['maxrss_mib']:.0f} MiB"
    return Outcome(blocked, evidence, got["output"][-200:] + f"\nnote: {got.get('note')}")


def terminal_escapes(run: Run, tmp: Path) -> Outcome:
    code = r"""
import sys
sys.stdout.buffer.write(b"\x00\x1b[2J\x1b]0;pwned\x07 binary \xff\n")
raise ValueError("\x1b[2J\x1b]0;owned\x07\r\x00")
"""
    result = run(code)
    note = getattr(result, "note", None) or ""
    bad = [c for c in note if not c.isprintable()]
    evidence = f"note {note!r}" if bad else "note printable"
    return Outcome(not bad, evidence, _output(result) + f"\nnote: {note}")


PROBES = [
    Probe("decoy-key", "read a decoy key in a fake HOME", decoy_key),
    Probe("write-outside", "write a file outside the sandbox", write_outside),
    Probe("loopback-tcp", "connect to a loopback TCP listener", loopback_tcp),
    Probe("host-unix-socket", "connect to a host Unix socket", host_unix_socket),
    Probe("fork", f"fork {PROCESS_CEILING}+ processes", fork_past_limit),
    Probe("leftover", "leave a process running after the check", leftover_process),
    Probe("leftover-timeout", "leave a process running after a timeout", leftover_after_timeout),
    Probe("dev-shm", "fill /dev/shm", fill_dev_shm),
    Probe("stdin", "read the bench's stdin", read_stdin),
    Probe("print-200mb", "print 200 MB", print_200mb),
    Probe("proc-environ", "read a parent's environment through /proc", parent_environ),
    Probe("invalid-utf8", "print invalid UTF-8", invalid_utf8),
    Probe("keyring", "read a key from the bench's session keyring", session_keyring),
    Probe("ptrace-init", "attach to the sandbox's init (ptrace, /proc/1/mem)", ptrace_init),
    Probe("bench-pid", "signal or read /proc of the bench's process", bench_process),
    Probe("inherited-fds", "use descriptors inherited from the bench", inherited_fds),
    Probe("threads", f"start {PROCESS_CEILING}+ threads", many_threads),
    Probe("memory-beside-rlimit", "hold 640 MiB in memfds / SysV shm", memory_beside_rlimit),
    Probe(
        "memory-per-process", "fill memory in every process it can fork", memory_in_every_process
    ),
    Probe("symlink-escape", "follow symlinks to a host file", symlink_escape),
    Probe("nested-userns", "create a user namespace", nested_userns),
    Probe("bench-sigkill", "outlive the bench killed with SIGKILL", outlive_bench_sigkill),
    Probe("clock", "set the clock, sleep past the limit", clock_games),
    Probe("trickle", "print just under the cap, forever", trickle_forever),
    Probe("no-newline", "print 1 MiB without a newline", no_newline),
    Probe("escapes", "put terminal escapes in the note", terminal_escapes),
]


def run_all(run: Run) -> list[tuple[Probe, Outcome]]:
    rows = []
    for probe in PROBES:
        with tempfile.TemporaryDirectory(prefix="rehearsal-probe-") as tmp:
            os.chmod(tmp, 0o755)
            try:
                outcome = probe.check(run, Path(tmp))
            except Exception as exc:
                outcome = Outcome(False, f"probe error: {type(exc).__name__}: {exc}")
        rows.append((probe, outcome))
    return rows


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench import sandbox

    print("| probe | hostile answer | blocked | evidence |")
    print("|---|---|---|---|")
    for probe, outcome in run_all(sandbox.run_python):
        mark = "yes" if outcome.blocked else "**no**"
        print(f"| {probe.name} | {probe.what} | {mark} | {outcome.evidence} |", flush=True)


if __name__ == "__main__":
    main()
