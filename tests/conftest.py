from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from chromium_driver import Chromium

pytest_plugins = ["ci_no_skips", "pytester"]

# The shipped catalog only: a developer's own rig.models.toml must not change what tests see.
os.environ["RIG_MODELS"] = ""

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TOML = (ROOT / "rig.toml").read_text(encoding="utf-8")


def edit_toml(text: str, section: str, key: str, value: str | None) -> str:
    """Set (or with None, delete) `key` in `[section]` of a rig.toml text, as a user would."""
    lines = text.splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if re.match(rf"{re.escape(key)}\s*=", lines[i]):
            # A multi-line array ends at the first line that closes it.
            stop = i
            if lines[i].rstrip().endswith("["):
                stop = next(j for j in range(i, end) if lines[j].strip() == "]")
            new = [] if value is None else [f"{key} = {value}"]
            return "\n".join(lines[:i] + new + lines[stop + 1 :]) + "\n"
    if value is None:
        return text
    return "\n".join([*lines[: start + 1], f"{key} = {value}", *lines[start + 1 :]]) + "\n"


@pytest.fixture
def profile_file(tmp_path: Path) -> Callable[..., Path]:
    """Write rig.toml with edits applied: profile_file(("aws", "disk_gb", "50"), ...)."""

    def make(*edits: tuple[str, str, str | None], text: str | None = None) -> Path:
        body = DEFAULT_TOML if text is None else text
        for section, key, value in edits:
            body = edit_toml(body, section, key, value)
        path = tmp_path / "rig.toml"
        path.write_text(body, encoding="utf-8")
        return path

    return make


@pytest.fixture
def chromium(tmp_path: Path):
    """A headless Chromium (Debian's package; make test-deps installs it)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; make test-deps)")
    browser = Chromium(binary, tmp_path / "chromium-profile")
    yield browser
    browser.close()
