"""HTTP for ARM and the retail prices API: one small callable, easy to fake.

The Azure SDKs would add ~100 MB for a dozen REST calls. Everything goes through `Http`, a
function of (method, url, headers, form) returning a `Response`; `urllib_http` is the real one,
tests pass a fake that answers with Microsoft's documented payloads.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rig.problems import CommandError


@dataclass(frozen=True)
class Response:
    status: int
    body: Any = field(default_factory=dict)  # parsed JSON, {} when empty or not JSON
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def error(self) -> tuple[str, str]:
        """(code, message) of an ARM error body {"error": {"code", "message"}}."""
        err = self.body.get("error", {}) if isinstance(self.body, dict) else {}
        if isinstance(err, str):  # OAuth errors: {"error": "invalid_client", ...}
            return err, str(self.body.get("error_description", ""))
        return str(err.get("code", "")), str(err.get("message", ""))


# (method, url, headers, form body or None) -> Response
Http = Callable[[str, str, Mapping[str, str], Mapping[str, str] | None], Response]


def urllib_http(
    method: str, url: str, headers: Mapping[str, str], form: Mapping[str, str] | None = None
) -> Response:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, exc.headers
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CommandError(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {exc}") from None
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    return Response(status, body, {k.lower(): v for k, v in (hdrs or {}).items()})
