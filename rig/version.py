"""The tool's version, for `rig --version` and `bench --version`."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DIST = "gpu-rehearsal"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def tool_version() -> str:
    """From the installed package's metadata; a source checkout run without installing it
    (python -m rig from a clone) reads pyproject.toml instead."""
    try:
        return version(DIST)
    except PackageNotFoundError:
        pass
    try:
        with PYPROJECT.open("rb") as fh:
            return f"{tomllib.load(fh)['project']['version']} (source checkout, not installed)"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown (not installed — run make setup)"


def version_line(prog: str) -> str:
    return f"{prog} (gpu-rehearsal) {tool_version()}"
