"""The case's asserts, run by the bench against the answer's function in the sandbox.

The test is the workload's own code (trusted, like the rest of the bench) and runs here, in the
bench's process; the answer runs only in the sandbox and is never imported here. The test sees
the function as a stand-in that sends the arguments to the sandbox and returns what came back,
decoded into plain builtin values (harness.decode). So the verdict is computed where the answer
cannot reach: it can walk the harness's memory, patch builtins or assert, print or write
anything to any descriptor, and still it only chooses the values its function returns. A
returned object with its own __eq__ or __bool__ never gets here: only its plain-data form does.

The price: arguments and return values must be plain data (harness.PLAIN; a generator or a
custom class fails the check with that reason), and a function that mutates its arguments
does so on a copy.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from typing import Protocol

from bench.sandbox.harness import _describe, _where, encode, loads

# Exceptions the function may raise into the test by name: builtin Exception classes, except
# those that change control flow in the test's own code (StopIteration ends a loop early).
_NOT_RAISED = (StopIteration, StopAsyncIteration, Warning)


class Channel(Protocol):
    def send(self, data: bytes) -> bool: ...
    def line(self) -> bytes | None: ...
    def stopped(self) -> str | None: ...


class Stop(BaseException):
    """The check ends here (timeout, output cap, the sandbox gone, a reply that is no reply).
    A BaseException, so that a test's `except Exception` cannot swallow it."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


class AnswerError(Exception):
    """The function raised something that is not re-raised under its own name."""


def _raise_as(name: str, text: str) -> BaseException:
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, _NOT_RAISED):
        try:
            return kind(text)
        except Exception:
            pass
    return AnswerError(f"{name}: {text}" if text else name)


def stand_in(name: str, channel: Channel, why_gone: Callable[[], str]) -> Callable[..., object]:
    """A function that forwards each call to the answer's function in the sandbox."""

    def call(*args: object, **kwargs: object) -> object:
        request = json.dumps(encode({"args": list(args), "kwargs": kwargs})).encode() + b"\n"
        if not channel.send(request):
            raise Stop(channel.stopped() or why_gone())
        reply = channel.line()
        if reply is None:
            raise Stop(channel.stopped() or why_gone())
        kind, _, payload = reply.partition(b" ")
        if kind == b"FAIL":
            raise Stop(" ".join(payload.decode("utf-8", "replace").split()))
        raised: BaseException | None = None
        try:
            if kind == b"RET":
                return loads(payload)
            if kind == b"RAISE":
                exc_name, text = json.loads(payload)
                if type(exc_name) is str and type(text) is str:
                    raised = _raise_as(exc_name, text)
        except (ValueError, TypeError, RecursionError, MemoryError) as exc:
            raise Stop(f"the reply of {name}() could not be read: {_describe(exc)}") from None
        if raised is None:
            raise Stop(f"the reply of {name}() could not be read: {reply[:60]!r}")
        raise raised

    call.__name__ = call.__qualname__ = name
    return call


def run_test(test: str, function: Callable[..., object]) -> str | None:
    """Run the test's asserts against `function`; None when they all passed, else why not."""
    namespace = {"__name__": "test", "__builtins__": builtins, function.__name__: function}
    try:
        exec(compile(test, "<test>", "exec"), namespace)
    except Stop as stop:
        return stop.note
    except (Exception, SystemExit) as exc:
        return f"the test raised {_describe(exc)}{_where(exc, '<test>', test)}"
    return None
