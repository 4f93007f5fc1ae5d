"""README, rig.toml and the profile model describe the same keys, so they cannot drift."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from rig.profile import SECTIONS, toml_literal

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
RIG_TOML = (ROOT / "rig.toml").read_text(encoding="utf-8")


def model_keys() -> dict[str, object]:
    out = {}
    for name, cls in SECTIONS.items():
        for key, info in cls.model_fields.items():
            out[f"{name}.{key}"] = info.default_factory() if info.default_factory else info.default
    return out


def readme_reference() -> dict[str, str]:
    block = README.split("<!-- config-reference:start -->")[1].split(
        "<!-- config-reference:end -->"
    )[0]
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| (.+?) \| (.+?) \|$", block, re.M)
    assert all(meaning.strip() for _, _, meaning in rows)
    return {key: default for key, default, _ in rows}


def test_readme_reference_lists_exactly_the_profile_keys():
    assert set(readme_reference()) == set(model_keys())


def test_readme_defaults_match_the_model():
    for key, shown in readme_reference().items():
        default = model_keys()[key]
        if shown.startswith("`"):
            assert shown == f"`{toml_literal(default)}`", key
        else:  # a long list is summarised by its length
            assert isinstance(default, list) and shown.startswith(f"{len(default)} "), key


def test_rig_toml_holds_every_key_with_its_default():
    data = tomllib.loads(RIG_TOML)
    flat = {f"{s}.{k}": v for s, table in data.items() for k, v in table.items()}
    assert flat == model_keys()


def test_every_key_in_rig_toml_is_commented():
    lines = RIG_TOML.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[i - 1].startswith("#"), f"rig.toml line {i + 1} ({line!r}) has no comment"


def test_readme_shows_the_test_command_and_ci_runs_it():
    assert "make setup && make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make setup$", ci, re.M) and re.search(r"^make test$", ci, re.M)


def test_readme_has_a_japanese_quick_start():
    section = README.split("## 日本語クイックスタート")[1]
    assert "make setup && make test" in section and "make check" in section
    assert re.search(r"[\u3040-\u30ff]", section)  # kana: written in Japanese


def test_makefile_help_lists_only_existing_targets():
    makefile = (ROOT / "Makefile").read_text()
    documented = re.findall(r"^([a-z0-9-]+):.*## ", makefile, re.M)
    assert {"help", "setup", "test-deps", "test", "compare", "bench", "engine"} <= set(documented)
    # Every documented target resolves: make finds a rule for it and all its prerequisites.
    for target in documented:
        dry = subprocess.run(
            ["make", "-n", "-B", target],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert dry.returncode == 0 and dry.stdout.strip(), (target, dry.stderr)
