"""Run untrusted, model-written code inside bubblewrap, or not at all.

`check_function(answer, function, test)` loads the answer in the sandbox, checks that it
defines `function`, and runs the test's asserts here, in the bench, against a stand-in that
calls the function in the sandbox and gets back plain values (judge.py). The answer never runs
where the verdict is computed, so it cannot forge it: whatever it does to the harness, it only
chooses what its function returns. An answer that exits early with status 0, prints "passed",
or writes anything to any descriptor it finds does not pass.

`run_python(code)` just runs code in the sandbox (the probes use it); it is ok when the code
ran to its end, which the code itself can claim: it judges nothing.

Where no isolation works (see isolation.py), nothing runs: the result says skipped, and why.
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass

from bench.sandbox import judge, spawn
from bench.sandbox.isolation import (
    CPU_S,
    FILE_BYTES,
    MEMORY_BYTES,
    OUTPUT_BYTES,
    PIDS_LIMIT,
    SHM_BYTES,
    TIMEOUT_S,
    TMP_BYTES,
    Availability,
    Sandbox,
    availability,
    forget,
    limits,
)

__all__ = [
    "CPU_S",
    "FILE_BYTES",
    "MEMORY_BYTES",
    "OUTPUT_BYTES",
    "PIDS_LIMIT",
    "SHM_BYTES",
    "TIMEOUT_S",
    "TMP_BYTES",
    "Availability",
    "Sandbox",
    "SandboxResult",
    "availability",
    "check_function",
    "forget",
    "run_python",
]

TAIL_LINES = 20
TAIL_CHARS = 4000


@dataclass(frozen=True)
class SandboxResult:
    ok: bool  # ran to the end (and, for a check, every assert passed)
    returncode: int | None  # None when it never ran, or was killed (a check: at its end too)
    output: str  # the last lines of stdout and stderr, decoded with replacement characters
    note: str | None = None  # one line, printable: why not ok, or why it was skipped
    skipped: bool = False  # no isolation here: nothing ran


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]


def _printable(text: str, limit: int = 300) -> str:
    """One line without control characters: a note is model-chosen text that ends up in
    results.jsonl and on the terminal, where an escape sequence would act."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)[:limit]


def _skipped(why: str) -> SandboxResult:  # the whole reason, with its hint for the user
    return SandboxResult(False, None, "", _printable(f"skipped: {why}", 1000), True)


def _not_started(done: spawn.Finished, timeout_s: float) -> SandboxResult:
    """bwrap or the harness failed before the answer ran: not judged."""
    why = _tail(done.output).splitlines()[-1:] or [f"exit status {done.returncode}"]
    if done.timed_out:
        why = [f"timed out after {timeout_s:g} s"]
    return SandboxResult(
        False,
        done.returncode,
        _tail(done.output),
        _printable(f"skipped: the sandbox did not start: {why[0]}"),
        True,
    )


def _start(sandbox: Sandbox, mode: str, job: dict, timeout_s: float) -> spawn.Session:
    return spawn.Session(
        functools.partial(sandbox.argv, mode=mode),
        job=json.dumps(job).encode(),
        seccomp=sandbox.filter,
        run_as=sandbox.run_as,
        timeout_s=timeout_s,
        output_cap=OUTPUT_BYTES,
        calls=mode == "serve",
    )


def run_python(code: str, timeout_s: float = TIMEOUT_S) -> SandboxResult:
    """Run code in the sandbox; ok when it ran to its end without an exception or exit."""
    found = availability()
    if found.sandbox is None:
        return _skipped(f"no isolation — {found.reason}")
    nonce = secrets.token_hex(16)
    job = {"code": code, "nonce": nonce, "limits": limits()}
    try:
        with _start(found.sandbox, "run", job, timeout_s) as session:
            done = session.finish(kill=False)
    except ValueError as exc:  # the code is too large to hand over
        return SandboxResult(False, None, "", str(exc))
    except OSError as exc:
        return _skipped(f"the sandbox could not start: {exc}")
    lines = done.result.decode("utf-8", "replace").splitlines()
    if "RUN" not in lines:
        return _not_started(done, timeout_s)
    if done.returncode == 0 and f"PASS {nonce}" in lines:
        return SandboxResult(True, 0, _tail(done.output))
    if done.timed_out:
        note = f"timed out after {timeout_s:g} s"
    elif done.overflowed:
        note = f"printed more than {OUTPUT_BYTES // 1024} KiB: stopped"
    else:
        fails = [x[5:] for x in lines if x.startswith("FAIL ")]
        note = fails[-1] if fails else f"ended without passing (exit status {done.returncode})"
    return SandboxResult(False, done.returncode, _tail(done.output), _printable(note))


def check_function(
    answer: str, function: str, test: str, timeout_s: float = TIMEOUT_S
) -> SandboxResult:
    """Load the answer in the sandbox, require it to define `function`, and run the test's
    asserts here against that function (judge.py). ok only when every assert passed."""
    found = availability()
    if found.sandbox is None:
        return _skipped(f"no isolation — {found.reason}")
    job = {"code": answer, "function": function, "limits": limits()}
    try:
        session = _start(found.sandbox, "serve", job, timeout_s)
    except ValueError as exc:  # the answer is too large to hand over
        return SandboxResult(False, None, "", str(exc))
    except OSError as exc:
        return _skipped(f"the sandbox could not start: {exc}")
    with session:
        first = session.line()
        if first != b"RUN":  # written before the answer runs: nothing else can come first
            return _not_started(session.finish(kill=True), timeout_s)
        hello = session.line()
        note: str | None
        if hello == b"READY":

            def gone() -> str:
                return f"the answer's process ended during a call to {function}()"

            note = judge.run_test(test, judge.stand_in(function, session, gone))
        elif hello is not None and hello.startswith(b"FAIL "):
            note = hello[5:].decode("utf-8", "replace")
        elif hello is None:
            note = session.stopped() or "the answer ended before the check (no function to call)"
        else:
            note = f"the harness's pipe carried {hello[:60]!r} instead of READY"
        done = session.finish(kill=True)
    if note is None:
        return SandboxResult(True, None, _tail(done.output))
    return SandboxResult(False, done.returncode, _tail(done.output), _printable(note))
