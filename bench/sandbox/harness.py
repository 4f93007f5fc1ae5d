"""The program that runs inside the sandbox, before and around the model's code, and the value
codec it shares with the bench.

Inside the sandbox its source is handed to the interpreter with `-c` (stdlib only; it may run
on an older system Python than the bench's, >= 3.9). The bench imports this module only for
`encode` and `decode`: importing it runs nothing.

argv: mode ("run" or "serve"), the fd of the job pipe, the fd of the result pipe, and in serve
mode the fd of the call pipe.

1. Read the job (JSON: code, limits, and function or nonce) to EOF and close the pipe, so
   nothing the answer can open still holds it.
2. Lower the resource limits (hard and soft), then write "RUN" to the result pipe (the sandbox
   is up; a check that never got here is not judged). RLIMIT_NPROC is set here, inside
   bubblewrap's fresh user namespace, because since Linux 5.14 the kernel counts it per user
   namespace: the limit then caps this sandbox's tasks, not every process the bench's user has
   on the host.
3. Run the answer as module `answer` (so an `if __name__ == "__main__":` block stays off).
   A failure writes "FAIL <reason>" and exits.
4. run mode (bench.sandbox.run_python): write "PASS <nonce>" and leave with os._exit(0).
   serve mode (bench.sandbox.check_function): check that the answer defines the function,
   write "READY", then answer calls until the call pipe closes: each request is one JSON line
   of encoded arguments, each reply one line, "RET <encoded value>" or "RAISE <[type, text]>".
   The case's asserts never enter the sandbox: the bench runs them and compares what came back,
   so the answer can change nothing but the values it returns. It shares this process with
   the harness and may rewrite any of it; what it can forge is only a reply, and a reply is
   only data (see decode).
"""

import builtins
import contextlib
import json
import math
import os
import resource
import sys
import traceback

PLAIN = "None, bool, int, float, complex, str, bytes, list, tuple, dict, set or frozenset"
_BIG = 1 << 64  # larger ints travel as hex: decimal conversion is capped at 4300 digits


def encode(value, depth=0):
    """A JSON-ready form of a plain value (PLAIN); subclasses travel as their base type
    (a namedtuple as a tuple, an IntEnum as an int, a defaultdict as a dict)."""
    if depth > 100:
        raise ValueError("nested more than 100 levels deep")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -_BIG < value < _BIG else {"int": format(value, "x")}
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"tuple": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {kind.__name__: [encode(v, depth + 1) for v in value]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [encode(value.real), encode(value.imag)]}
    for base in (int, float, complex, str, bytes, tuple, list, dict, frozenset, set):
        if isinstance(value, base):
            plain = base(value)
            if type(plain) is base:
                return encode(plain, depth)
    raise TypeError(f"a {kind.__name__}, which is not plain data ({PLAIN})")


def decode(data, depth=0):
    """The value `encode` gave, built from JSON data and nothing else: only the builtin types
    of PLAIN come out, whatever the data says, so a reply cannot carry an object with its own
    __eq__, __bool__ or __hash__."""
    if depth > 100:
        raise ValueError("nested more than 100 levels deep")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(v, depth + 1) for v in data]
    if kind is dict and len(data) == 1:
        ((tag, inner),) = data.items()
        if type(inner) is list:
            items = [decode(v, depth + 1) for v in inner]
            if tag == "tuple":
                return tuple(items)
            if tag == "set":
                return set(items)
            if tag == "frozenset":
                return frozenset(items)
            if tag == "dict" and all(type(p) is list and len(p) == 2 for p in items):
                return {k: v for k, v in items}
            numbers = all(type(x) in (int, float) for x in items)
            if tag == "complex" and len(items) == 2 and numbers:
                return complex(items[0], items[1])
        if type(inner) is str:
            if tag == "int":
                return int(inner, 16)
            if tag == "float" and inner in ("nan", "inf", "-inf"):
                return float(inner)
            if tag == "bytes":
                return bytes.fromhex(inner)
    raise ValueError("not an encoded value")


def _reject_constant(name):
    raise ValueError(f"bare {name} in a reply")


def loads(text):
    """decode(json.loads(text)), refusing JSON's NaN and Infinity extensions."""
    return decode(json.loads(text, parse_constant=_reject_constant))


def _write(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _fail(result_fd, reason):
    _flush()
    line = "FAIL " + " ".join(str(reason).split())[:300] + "\n"
    with contextlib.suppress(OSError):
        _write(result_fd, line.encode("utf-8", "replace"))
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


def _describe(exc):
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _run(part, source, filename, namespace, result_fd):
    try:
        code = compile(source, filename, "exec")
        exec(code, namespace)
    except SystemExit as exc:
        _fail(result_fd, f"{part} called exit({exc.code!r}) before the check finished")
    except BaseException as exc:
        traceback.print_exc()
        _fail(result_fd, f"{part} raised {_describe(exc)}{_where(exc, filename, source)}")


def _raised(exc):
    """RAISE reply: the nearest builtin exception class's name (the bench re-raises that
    class, and only builtin ones) and the message."""
    kind = next(c for c in type(exc).__mro__ if getattr(builtins, c.__name__, None) is c)
    try:
        text = str(exc)[:300]
    except BaseException:
        text = ""
    return "RAISE " + json.dumps([kind.__name__, text])


def _serve(function, name, call_fd, result_fd):
    for line in os.fdopen(call_fd, "rb"):
        try:
            call = loads(line)
            value = function(*call["args"], **call["kwargs"])
        except SystemExit as exc:
            _fail(result_fd, f"the answer called exit({exc.code!r}) in {name}()")
        except BaseException as exc:
            traceback.print_exc()
            reply = _raised(exc)
        else:
            try:
                reply = "RET " + json.dumps(encode(value))
            except (TypeError, ValueError, RecursionError) as exc:
                reply = _raised(type(exc)(f"{name}() returned {exc}"))
        _flush()
        _write(result_fd, reply.encode() + b"\n")  # json.dumps writes ASCII only
    _flush()
    os._exit(0)


def main():
    mode, job_fd, result_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    call_fd = int(sys.argv[4]) if mode == "serve" else -1
    with os.fdopen(job_fd, "rb") as fh:
        job = json.loads(fh.read().decode("utf-8"))
    nonce = job.pop("nonce", "")
    keep = sorted(fd for fd in (result_fd, call_fd) if fd >= 0)
    bounds = [2, *keep, max(keep[-1] + 1, os.sysconf("SC_OPEN_MAX"))]
    for i in range(len(bounds) - 1):  # any other descriptor (a stray pass_fds): closed
        os.closerange(bounds[i] + 1, bounds[i + 1])  # (no zip(strict=): runs on Python 3.9)
    for fd in keep:
        os.set_inheritable(fd, False)  # not handed to what the answer starts
    for name, value in job["limits"].items():
        limit = getattr(resource, name)
        resource.setrlimit(limit, (value, value))
    _write(result_fd, b"RUN\n")  # the sandbox is up: what follows is the answer's doing
    namespace = {"__name__": "answer", "__builtins__": builtins}
    _run("the answer", job["code"], "<answer>", namespace, result_fd)
    if mode == "run":
        _flush()
        _write(result_fd, ("PASS " + nonce + "\n").encode())
        os._exit(0)
    name = job["function"]
    function = namespace.get(name)
    if not callable(function):
        _fail(result_fd, f"the answer defines no function {name}()")
    _flush()
    _write(result_fd, b"READY\n")
    _serve(function, name, call_fd, result_fd)


if __name__ == "__main__":  # `python -c` runs it as __main__; importing it does nothing
    main()
