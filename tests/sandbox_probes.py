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


def _in_child_python(code: str, env_extra: dict[str, str], timeout_s: float = 120) -> dict:
    """Run sandbox.run_python(code) in a fresh interpreter (the bench's role) and report its
    peak RSS, the output length and any exception, as JSON."""
    driver = f"""
import json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
from bench import sandbox
try:
    r = sandbox.run_python({code!r})
    out = {{"output": r.output[-4000:], "chars": len(r.output), "error": None,
           "note": getattr(r, "note", None)}}
except BaseException as exc:
    out = {{"output": "", "chars": 0, "error": type(exc).__name__ + ": " + str(exc)[:200]}}
out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
for pid in os.listdir("/proc"):
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
