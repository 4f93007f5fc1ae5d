"""The program that runs inside the sandbox, before and around the model's code.

Not imported by the bench: its source is handed to the sandbox's interpreter with `-c` (stdlib
only; it may run on an older system Python than the bench's). argv: the fd of the job pipe and
the fd of the result pipe.

1. Read the job (JSON: code, function, test, nonce, limits) to EOF and close the pipe, so
   nothing the answer can open still holds it.
2. Lower the resource limits (hard and soft), then write "RUN" to the result pipe (the sandbox
   is up; a check that never got here is not judged). RLIMIT_NPROC is set here, inside
   bubblewrap's fresh user namespace, because since Linux 5.14 the kernel counts it per user
   namespace: the limit then caps this sandbox's tasks, not every process the bench's user has
   on the host.
3. Run the answer as module `answer` (so an `if __name__ == "__main__":` block stays off),
   check that it defines the named function, run the test's asserts in the same namespace.
4. Only then write "PASS <nonce>" to the result pipe and leave with os._exit(0) (no atexit
   handler of the answer runs after it). Any failure writes "FAIL <reason>" instead.
"""

import builtins
import contextlib
import json
import os
import resource
import sys
import traceback


def _fail(result_fd, reason):
    sys.stdout.flush()
    sys.stderr.flush()
    line = "FAIL " + " ".join(str(reason).split())[:300] + "\n"
    with contextlib.suppress(OSError):
        os.write(result_fd, line.encode("utf-8", "replace"))
    os._exit(1)


def _where(exc, filename, source):
    """The line of `source` (compiled as `filename`) where exc was raised, if any."""
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    if line is None:
        return ""
    lines = source.splitlines()
    return f" at line {line}: {lines[line - 1].strip()}" if line <= len(lines) else ""


def _run(part, source, filename, namespace, result_fd):
    try:
        code = compile(source, filename, "exec")
        exec(code, namespace)
    except SystemExit as exc:
        _fail(result_fd, f"{part} called exit({exc.code!r}) before the check finished")
    except BaseException as exc:
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        _fail(result_fd, f"{part} raised {message}{_where(exc, filename, source)}")


def main():
    job_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(job_fd, "rb") as fh:
        job = json.loads(fh.read().decode("utf-8"))
    nonce = job.pop("nonce")
    os.set_inheritable(result_fd, False)
    for name, value in job["limits"].items():
        limit = getattr(resource, name)
        resource.setrlimit(limit, (value, value))
    os.write(result_fd, b"RUN\n")  # the sandbox is up: what follows is the answer's doing
    namespace = {"__name__": "answer", "__builtins__": builtins}
    _run("the answer", job["code"], "<answer>", namespace, result_fd)
    function = job.get("function")
    if function and not callable(namespace.get(function)):
        _fail(result_fd, f"the answer defines no function {function}()")
    if job.get("test"):
        _run("the test", job["test"], "<test>", namespace, result_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(result_fd, ("PASS " + nonce + "\n").encode())
    os._exit(0)


if __name__ == "__main__":  # `python -c` runs it as __main__; importing it does nothing
    main()
