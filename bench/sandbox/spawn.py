"""Start one bubblewrap sandbox and collect what it says, within a deadline and an output cap.

Safe from the bench's threads: no preexec_fn (dropping to another uid, the new session and the
fd hand-over are done by subprocess's own C code between fork and exec). The output is read
as it comes with a cap: the sandbox is killed when it prints more, so a flood never reaches the
bench's memory. On timeout or overflow the sandbox's PID-namespace init is killed through a
pidfd (the kernel then kills every process in the namespace) and so is bwrap itself
(--die-with-parent does the same from the other side); the call returns only once the
namespace's init has exited, so nothing the answer started is left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

RESULT_CAP = 4096  # the harness writes one short line
JOB_CAP = 1 << 20  # a pipe can be grown to 1 MiB without privileges (fs.pipe-max-size)


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # bwrap's exit status (the harness's); None when killed by us
    output: bytes  # stdout and stderr together, at most the cap
    result: bytes  # what the harness wrote to the result pipe
    timed_out: bool = False
    overflowed: bool = False  # printed more than the cap: killed


# (job fd, result fd, info fd) -> the bwrap command line
Argv = Callable[[int, int, int], list[str]]


def _write_job(job: bytes) -> int:
    """A pipe holding the whole job, write end closed: returns the read end."""
    if len(job) > JOB_CAP:
        raise ValueError(f"the job is {len(job):,} bytes; the sandbox takes at most {JOB_CAP:,}")
    read_end, write_end = os.pipe()
    try:
        if len(job) > 60_000:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, JOB_CAP)
        view = memoryview(job)
        while view:
            view = view[os.write(write_end, view) :]
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end


def _pidfd_of(info: bytes) -> int | None:
    """A pidfd for the namespace's init, from bwrap's --info-fd JSON once it is complete, checked
    to be that process (in the sandbox's PID namespace) and not a later one with its pid."""
    try:
        facts = json.loads(info)
        pid, pid_ns = int(facts["child-pid"]), int(facts["pid-namespace"])
    except (ValueError, KeyError, TypeError):
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # gone already, or a kernel older than 5.3
        return None
    try:
        if os.stat(f"/proc/{pid}/ns/pid").st_ino == pid_ns:
            signal.pidfd_send_signal(pidfd, 0)  # still alive: the pid was not reused
            return pidfd
    except OSError:
        pass
    os.close(pidfd)
    return None


def _kill(proc: subprocess.Popen[bytes], pidfd: int | None) -> None:
    if pidfd is not None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def run(
    argv: Argv, *, job: bytes, run_as: int | None, timeout_s: float, output_cap: int
) -> Finished:
    job_r = _write_job(job)
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    info_r, info_w = os.pipe()
    extra: dict = {}
    if run_as is not None:  # the bench runs as root: the sandbox must not (see isolation.py)
        extra = {"user": run_as, "group": run_as, "extra_groups": []}
    try:
        proc = subprocess.Popen(
            argv(job_r, result_w, info_w),
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=out_w,
            env={},  # bwrap needs none, and its /proc/<pid>/environ shows it to the sandbox
            cwd="/",
            close_fds=True,
            pass_fds=(job_r, result_w, info_w),
            start_new_session=True,
            **extra,
        )
    finally:
        for fd in (job_r, result_w, out_w, info_w):
            os.close(fd)

    output = bytearray()
    result = bytearray()
    info = bytearray()
    pidfd: int | None = None
    timed_out = overflowed = False
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    for fd, name in ((out_r, "out"), (result_r, "result"), (info_r, "info")):
        sel.register(fd, selectors.EVENT_READ, name)
    try:
        while sel.get_map() and not (timed_out or overflowed):
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                elif key.data == "out":
                    room = output_cap - len(output)
                    output += data[:room]
                    overflowed = len(data) > room
                elif key.data == "result":
                    result += data[: RESULT_CAP - len(result)]
                elif pidfd is None:
                    info += data[:4096]
                    pidfd = _pidfd_of(bytes(info))
        if timed_out or overflowed:
            _kill(proc, pidfd)
        try:
            returncode: int | None = proc.wait(timeout=max(deadline - time.monotonic(), 0) + 1)
        except subprocess.TimeoutExpired:
            _kill(proc, pidfd)
            returncode = proc.wait()
        if timed_out or overflowed:
            returncode = None
    except BaseException:  # interrupted: never leave the sandbox running
        _kill(proc, pidfd)
        proc.wait()
        raise
    finally:
        if pidfd is not None:  # readable once init has exited, which the kernel lets happen
            select.select([pidfd], [], [], 5)  # only after every process in its namespace
            os.close(pidfd)
        sel.close()
        for fd in (out_r, result_r, info_r):
            os.close(fd)
    return Finished(returncode, bytes(output), bytes(result), timed_out, overflowed)
