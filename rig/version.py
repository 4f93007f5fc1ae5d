"""The tool's version, for `rig --version` and `bench --version`."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DIST = "gpu-rehearsal"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# How the README and every message write the two commands: the console scripts `make setup`
# puts in .venv, which work without activating it (one spelling everywhere, so a line copied
# from a message or the README runs as written from the project root).
RIG = ".venv/bin/rig"
BENCH = ".venv/bin/bench"


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
