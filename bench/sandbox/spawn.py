"""Start one bubblewrap sandbox and talk to it, within a deadline and an output cap.

Safe from the bench's threads: no preexec_fn (dropping to another uid, the new session and the
fd hand-over are done by subprocess's own C code between fork and exec). The sandbox gets
exactly the pipes below (close_fds=True, pass_fds), each of this process's ends is
close-on-exec (PEP 446), so a sandbox started from another thread at the same time inherits
none of them.

- job: the whole job, written before bwrap starts, write end closed (the harness reads it to
  EOF and closes it before the answer runs);
- seccomp: the filter program, likewise (bwrap reads it and closes it, bubblewrap.c
  seccomp_program_new);
- info: bwrap's --info-fd, for the PID of the namespace's init (bwrap closes it on both sides);
- result: the harness's lines to us; call: our requests to the harness (check mode);
- stdout and stderr together: read as they come with a cap, the sandbox is killed when it
  prints more, so a flood never reaches the bench's memory.

Stopping: the namespace's init is killed through a pidfd (the kernel then kills every process
in the PID namespace, pid_namespaces(7)) and so is bwrap itself; we return only once init has
exited, so nothing the answer started is left running. If the bench itself dies, bwrap's
--die-with-parent takes everything down: bwrap sets PR_SET_PDEATHSIG to SIGKILL on itself and
on the namespace's init (bubblewrap.c handle_die_with_parent, called in both).
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

# What the harness may have written that we have not read yet (one reply, an encoded return
# value, at most). Small on purpose: decoding is ours, and a set or dict of ints chosen to
# share one hash costs quadratic time to build: measured 0.07 s for the 3,000 that fit in
# 64 KiB, 2 s for 20,000 (500 KB).
RESULT_CAP = 64 << 10
JOB_CAP = 1 << 20  # a pipe can be grown to 1 MiB without privileges (fs.pipe-max-size)
DRAIN_S = 1.0  # after a kill: how long to collect what is still in the output pipe


@dataclass(frozen=True)
class Fds:
    """The sandbox's ends of its pipes, as numbered in bwrap's (and the harness's) process."""

    job: int
    result: int
    call: int  # -1: none (run mode)
    info: int
    seccomp: int


# the fds -> the bwrap command line
Argv = Callable[[Fds], list[str]]


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # bwrap's exit status (the harness's); None when killed by us
    output: bytes  # stdout and stderr together, at most the cap
    result: bytes  # what the harness wrote to the result pipe and nobody read as a line
    timed_out: bool = False
    overflowed: bool = False  # printed more than the cap: killed


def _filled_pipe(data: bytes) -> int:
    """A pipe holding all of data, write end closed: returns the read end."""
    if len(data) > JOB_CAP:
        raise ValueError(f"the job is {len(data):,} bytes; the sandbox takes at most {JOB_CAP:,}")
    read_end, write_end = os.pipe()
    try:
        if len(data) > 60_000:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, JOB_CAP)
        view = memoryview(data)
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


class Session:
    """One running sandbox. Use as a context manager: leaving it kills what is left."""

    def __init__(
        self,
        argv: Argv,
        *,
        job: bytes,
        seccomp: bytes,
        run_as: int | None,
        timeout_s: float,
        output_cap: int,
        calls: bool = False,
    ) -> None:
        self.timeout_s = timeout_s
        self.output_cap = output_cap
        self.output = bytearray()
        self.timed_out = self.overflowed = self.flooded = False
        self.pidfd: int | None = None
        self._result = bytearray()
        self._info = bytearray()
        self._pending = b""
        opened: list[int] = []
        try:
            job_r = _filled_pipe(job)
            opened.append(job_r)
            seccomp_r = _filled_pipe(seccomp)
            opened.append(seccomp_r)
            result_r, result_w = os.pipe()
            opened += [result_r, result_w]
            call_r, call_w = os.pipe() if calls else (-1, -1)
            opened += [call_r, call_w] if calls else []
            out_r, out_w = os.pipe()
            info_r, info_w = os.pipe()
            opened += [out_r, out_w, info_r, info_w]
            theirs = Fds(job_r, result_w, call_r, info_w, seccomp_r)
            extra: dict = {}
            if run_as is not None:  # the bench runs as root: the sandbox must not
                extra = {"user": run_as, "group": run_as, "extra_groups": []}
            self.proc = subprocess.Popen(
                argv(theirs),
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                env={},  # bwrap needs none
                cwd="/",
                close_fds=True,
                pass_fds=tuple(fd for fd in theirs.__dict__.values() if fd >= 0),
                start_new_session=True,
                **extra,
            )
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        for fd in (job_r, seccomp_r, result_w, call_r, out_w, info_w):
            if fd >= 0:
                os.close(fd)
        self.deadline = time.monotonic() + timeout_s
        self._call: int | None = call_w if calls else None
        if self._call is not None:
            os.set_blocking(self._call, False)
        self._fds = [out_r, result_r, info_r]
        self._sel = selectors.DefaultSelector()
        for fd, name in ((out_r, "out"), (result_r, "result"), (info_r, "info")):
            self._sel.register(fd, selectors.EVENT_READ, name)

    # --- talking ---

    def stopped(self) -> str | None:
        """Why the sandbox was stopped by us, if it was."""
        if self.timed_out:
            return f"timed out after {self.timeout_s:g} s"
        if self.overflowed:
            return f"printed more than {self.output_cap // 1024} KiB: stopped"
        if self.flooded:
            return f"wrote more than {RESULT_CAP // 1024} KiB in one reply: stopped"
        return None

    def line(self) -> bytes | None:
        """The harness's next line on the result pipe; None when there is none (the pipe closed,
        or the sandbox was stopped: see stopped())."""
        self._pump(lambda: b"\n" in self._result)
        if b"\n" not in self._result:
            return None
        line, _, rest = bytes(self._result).partition(b"\n")
        self._result = bytearray(rest)
        return line

    def send(self, data: bytes) -> bool:
        """Hand data to the harness; False when it was not all taken (pipe closed, stopped)."""
        if self._call is None:
            return False
        self._pending += data
        if not self._sel.get_map().get(self._call):
            self._sel.register(self._call, selectors.EVENT_WRITE, "call")
        return self._pump(lambda: not self._pending)

    def close_calls(self) -> None:
        if self._call is not None:
            with contextlib.suppress(KeyError):
                self._sel.unregister(self._call)
            os.close(self._call)
            self._call = None
            self._pending = b""

    def _pump(self, done: Callable[[], bool], *, draining: bool = False) -> bool:
        """Move data until done() holds (True), or every pipe is closed, the deadline passes or
        a cap is hit (False; the last two kill the sandbox). Draining after a kill, the
        deadline only ends the wait."""
        while not done():
            if self.stopped() or not any(k.data != "call" for k in self._sel.get_map().values()):
                return False
            left = self.deadline - time.monotonic()
            if left <= 0:
                if not draining:
                    self.timed_out = True
                    self.kill()
                return False
            for key, _ in self._sel.select(left):
                if key.data == "call":
                    try:
                        self._pending = self._pending[os.write(key.fd, self._pending) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the harness closed its end
                        self.close_calls()
                        return False
                    if not self._pending:
                        self._sel.unregister(key.fd)
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    self._sel.unregister(key.fd)
                elif key.data == "out":
                    room = self.output_cap - len(self.output)
                    self.output += data[:room]
                    if len(data) > room:
                        self.overflowed = True
                        self.kill()
                elif key.data == "result":
                    self._result += data
                    if len(self._result) > RESULT_CAP:
                        self.flooded = True
                        self.kill()
                elif self.pidfd is None:
                    self._info += data[:4096]
                    self.pidfd = _pidfd_of(bytes(self._info))
        return True

    # --- ending ---

    def kill(self) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.kill()

    def finish(self, *, kill: bool) -> Finished:
        """End the sandbox: wait for it to end by itself (until the deadline), or kill it now;
        then collect what is left of its output."""
        self.close_calls()
        killed = kill or self.stopped() is not None
        if kill:
            self.kill()
            self.deadline = min(self.deadline, time.monotonic() + DRAIN_S)
        self._pump(lambda: False, draining=kill)  # to EOF on every pipe, or the deadline
        try:
            returncode: int | None = self.proc.wait(
                timeout=max(self.deadline - time.monotonic(), 0) + 1
            )
        except subprocess.TimeoutExpired:
            killed = True
            self.kill()
            returncode = self.proc.wait()
        if self.stopped() is not None or killed:
            returncode = None
        return Finished(
            returncode, bytes(self.output), bytes(self._result), self.timed_out, self.overflowed
        )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_calls()
        if self.proc.poll() is None:
            self.kill()
            self.proc.wait()
        if self.pidfd is not None:  # readable once init has exited, which the kernel lets
            select.select([self.pidfd], [], [], 5)  # happen only after every process in its
            os.close(self.pidfd)  # namespace has
            self.pidfd = None
        self._sel.close()
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def run(
    argv: Argv,
    *,
    job: bytes,
    seccomp: bytes,
    run_as: int | None,
    timeout_s: float,
    output_cap: int,
) -> Finished:
    """Run the sandbox to its end (or the deadline, or the output cap) and collect it all."""
    with Session(
        argv, job=job, seccomp=seccomp, run_as=run_as, timeout_s=timeout_s, output_cap=output_cap
    ) as session:
        return session.finish(kill=False)
