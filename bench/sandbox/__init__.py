"""Run untrusted, model-written code inside bubblewrap, or not at all.

`check_function(answer, function, test)` runs the answer, checks that it defines `function`,
runs the test's asserts against it, and passes only when the harness inside the sandbox wrote
this check's nonce after the asserts: an answer that exits early with status 0, prints
"passed", or prints anything it could guess does not pass. The nonce is fresh per check and
reaches the harness through a pipe that is drained and closed before the answer runs, so it is
in no file, argument, environment variable or open descriptor the answer can read. (Code
written to search the harness's own memory could find it; the sandbox still contains such code,
and the most it can do is mark its own answer correct.)

Where no isolation works (see isolation.py), nothing runs: the result says skipped, and why.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from bench.sandbox import spawn
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
    returncode: int | None  # None when it never ran, or was killed (timeout, output cap)
    output: str  # the last lines of stdout and stderr, decoded with replacement characters
    note: str | None = None  # one line: why not ok, or why it was skipped
    skipped: bool = False  # no isolation here: nothing ran


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]


def _run(code: str, function: str | None, test: str | None, timeout_s: float) -> SandboxResult:
    found = availability()
    if found.sandbox is None:
        return SandboxResult(False, None, "", f"skipped: no isolation — {found.reason}", True)
    nonce = secrets.token_hex(16)
    job = {"code": code, "function": function, "test": test, "nonce": nonce, "limits": limits()}
    try:
        done = spawn.run(
            found.sandbox.argv,
            job=json.dumps(job).encode(),
            run_as=found.sandbox.run_as,
            timeout_s=timeout_s,
            output_cap=OUTPUT_BYTES,
        )
    except ValueError as exc:  # the answer is too large to hand over
        return SandboxResult(False, None, "", str(exc))
    except OSError as exc:
        return SandboxResult(False, None, "", f"skipped: the sandbox could not start: {exc}", True)
    lines = done.result.decode("utf-8", "replace").splitlines()
    if done.returncode == 0 and f"PASS {nonce}" in lines:
        return SandboxResult(True, 0, _tail(done.output))
    if "RUN" not in lines:  # bwrap or the harness failed before the answer ran: not judged
        why = _tail(done.output).splitlines()[-1:] or [f"exit status {done.returncode}"]
        if done.timed_out:
            why = [f"timed out after {timeout_s:g} s"]
        note = f"skipped: the sandbox did not start: {why[0]}"[:300]
        return SandboxResult(False, done.returncode, _tail(done.output), note, True)
    if done.timed_out:
        note = f"timed out after {timeout_s:g} s"
    elif done.overflowed:
        note = f"printed more than {OUTPUT_BYTES // 1024} KiB: stopped"
    else:
        fails = [x[5:] for x in lines if x.startswith("FAIL ")]
        note = fails[-1] if fails else f"ended without passing (exit status {done.returncode})"
    return SandboxResult(False, done.returncode, _tail(done.output), note[:300])


def run_python(code: str, timeout_s: float = TIMEOUT_S) -> SandboxResult:
    """Run code in the sandbox; ok when it ran to its end without an exception or exit."""
    return _run(code, None, None, timeout_s)


def check_function(
    answer: str, function: str, test: str, timeout_s: float = TIMEOUT_S
) -> SandboxResult:
    """Run the answer, require it to define `function`, and run the test's asserts against it."""
    return _run(answer, function, test, timeout_s)
