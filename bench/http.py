"""A small streaming HTTP client on the standard library.

http.client keeps the harness's own CPU cost per token low and its timing honest: each line
is stamped as soon as it is read. Connection-level failures raise `TargetLost`; an HTTP error
status raises `RequestFailed` with the server's own message.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit


class TargetLost(Exception):
    """The server cannot be reached (refused, reset, timed out, tunnel gone)."""


class RequestFailed(Exception):
    """The server answered, with an error for this request (e.g. model not found)."""


class StreamStalled(TargetLost):
    """A stream sent nothing for the idle timeout, or outran the request deadline. Whether the
    target is lost or only this request failed is the health check's call."""


_LOST = (
    ConnectionError,
    socket.timeout,
    TimeoutError,
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    OSError,
)


def _error_text(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return f"HTTP {status}: {text[:200]}"
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):  # OpenAI style {"error": {"message": ...}}
        err = err.get("message", err)
    return f"HTTP {status}: {err}"


class Client:
    def __init__(self, base_url: str, timeout_s: float = 600.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http://host:port URL")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s

    def _open(
        self, method: str, path: str, payload: Any | None, timeout_s: float | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s or self.timeout_s)
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise StreamStalled(
                f"{self.base_url}: no answer within {timeout_s or self.timeout_s:g} s"
            ) from exc
        except _LOST as exc:
            conn.close()
            raise TargetLost(f"{self.base_url}: {exc.__class__.__name__}: {exc}") from exc
        if resp.status >= 400:
            text = _error_text(resp.status, resp.read())
            conn.close()
            raise RequestFailed(text)
        return conn, resp

    def json(
        self, method: str, path: str, payload: Any | None = None, timeout_s: float | None = None
    ) -> Any:
        conn, resp = self._open(method, path, payload, timeout_s)
        try:
            return json.loads(resp.read() or b"null")
        except ValueError as exc:
            raise RequestFailed(f"{self.base_url}{path}: the answer is not JSON ({exc})") from exc
        except _LOST as exc:
            raise TargetLost(f"{self.base_url}: {exc}") from exc
        finally:
            conn.close()

    def lines(
        self,
        path: str,
        payload: Any,
        timeout_s: float | None = None,
        idle_timeout_s: float | None = None,
        deadline_s: float | None = None,
    ) -> Iterator[bytes]:
        """POST and yield each non-empty response line as it arrives.

        idle_timeout_s bounds the wait between lines once the first one came (a stalled
        stream); deadline_s bounds the whole request, the wait for the first line included
        (a model load or a long prefill sends nothing until its first token)."""
        start = time.monotonic()
        end = start + deadline_s if deadline_s else None

        def left() -> float | None:
            return None if end is None else max(0.001, end - time.monotonic())

        try:
            conn, resp = self._open("POST", path, payload, left() or timeout_s)
        except StreamStalled as exc:
            if deadline_s is None:
                raise
            raise StreamStalled(
                f"{self.base_url}: no answer within the request deadline of {deadline_s:g} s "
                "(request_timeout_s)"
            ) from exc
        first = True
        try:
            while True:
                wait = left() if first else _min(idle_timeout_s, left())
                if conn.sock is not None and wait is not None:
                    conn.sock.settimeout(wait)
                try:
                    line = resp.readline()
                except TimeoutError as exc:
                    if end is not None and time.monotonic() >= end - 0.01:
                        raise StreamStalled(
                            f"{self.base_url}: no answer within the request deadline of "
                            f"{deadline_s:g} s (request_timeout_s)"
                        ) from exc
                    raise StreamStalled(
                        f"{self.base_url}: stream stalled: nothing for {wait:g} s (idle_timeout_s)"
                    ) from exc
                except _LOST as exc:
                    raise TargetLost(f"{self.base_url}: stream broke: {exc}") from exc
                if not line:
                    return
                line = line.strip()
                if line:
                    first = False
                    yield line
                if end is not None and time.monotonic() > end:
                    raise StreamStalled(
                        f"{self.base_url}: request outran its deadline of {deadline_s:g} s "
                        "(request_timeout_s)"
                    )
        finally:
            conn.close()


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
