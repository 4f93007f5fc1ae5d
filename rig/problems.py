"""One-line problems: every user-facing error names the field, the bad value and the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. "aws.instance_types[0]"; "" for the file as a whole
    message: str  # names the bad value and says how to fix it

    def render(self, filename: str) -> str:
        return (
            f"{filename}: {self.path}: {self.message}"
            if self.path
            else f"{filename}: {self.message}"
        )


class ProfileError(Exception):
    """The profile cannot be used; `problems` holds one line per problem."""

    def __init__(self, filename: str, problems: list[Problem]):
        self.filename = filename
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [p.render(self.filename) for p in self.problems]


def show(value: Any) -> str:
    """A value as the user would write it in TOML, for quoting it back in a message."""
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, float):
        return f"{value:g}"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def path_of(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def known(names: list[str] | set[str], limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


class CommandError(Exception):
    """A command cannot go on (no credentials, no quota, ...): one line saying what and the fix.

    Raised by deploy/destroy/provision; `python -m rig` prints it without a traceback and exits
    with `exit_code` (1 by default; 2 is kept for invalid input).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
