"""The README works as written (issue 17, Done-when): every command in a fenced block is either
run here — in a temporary copy of the repository, so nothing in the checkout changes — or named
in NOT_RUN / DRY_RUN with the reason; a new command fails this test until it is classified.
The English and Japanese quick starts hold the same commands and the same figures.

Commands run as a newcomer types them: `make check` through the Makefile, `.venv/bin/rig ...`
through the console script. The copy gets a `.venv` made of links to the real one (setup is
not what this test checks: CI runs `make setup` itself), with the setup stamps touched so no
`make` target reinstalls anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.cli import build_parser
from rig.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FIXTURE_RUN = ROOT / "tests" / "fixtures" / "run-mirror"
TOOLS = ("make ", ".venv/bin/", "aws ", "az ", "curl ", "export ")

# Commands that would spend money, need a network, your own files or machines, or take long,
# each with why it is not run here (and where it is tested instead, if anywhere).
NOT_RUN: dict[str, str] = {
    "make bench": "builds the engine once (~12 min) and benches; tests/test_bench_e2e.py runs "
    "the same `bench run --build-engine` end to end",
    "make setup && make test": "installs into .venv and runs this suite: what CI does (.ci/run)",
    ".venv/bin/bench run --resume RUN_ID --target pc=http://HOST:11434": "needs your PC on your "
    "network and a run of yours; tests/test_pc_target.py runs it against a loopback Ollama",
    ".venv/bin/rig models add ~/models/my-model.Q4_K_M.gguf --tag my-model:q4": "needs your own "
    "GGUF file; tests/test_models_add.py runs it on the engine's Gemma 3 270M GGUF",
    ".venv/bin/rig models add qwen3:30b": "needs an Ollama with the model pulled; "
    "tests/test_models_add.py reads a saved /api/show reply",
    ".venv/bin/rig models add qwen3:30b --target aws-g4dn.2xlarge": "needs a deployed VM",
    ".venv/bin/bench run --target local --yes": "benches (and pulls models onto) your Ollama",
    ".venv/bin/bench run --target vm=http://127.0.0.1:8080@openai": "needs a server on :8080; "
    "tests/test_bench_e2e.py benches a real llama.cpp server",
    ".venv/bin/bench run --resume latest": "finishes an interrupted run on its own targets (the "
    "demo engine or deployed VMs); tests/test_bench_run_dirs.py resumes `latest`",
    "curl -fsSL https://get.pulumi.com | sh -s -- --version 3.272.0": "downloads the Pulumi CLI",
    'export PATH="$HOME/.pulumi/bin:$PATH"': "changes your shell's PATH; nothing to check",
}
# Cloud targets: spending (or needing credentials); `make -n` shows what they would run.
DRY_RUN: dict[str, str] = {
    "make synth-aws": "-m rig synth-aws",
    "make deploy-aws": "-m rig deploy aws",
    "make deploy-azure": "-m rig deploy azure",
    "make destroy": "-m rig destroy all",
}


def _ok(*needles: str) -> Callable[[subprocess.CompletedProcess[str], Path], None]:
    def check(proc: subprocess.CompletedProcess[str], copy: Path) -> None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for needle in needles:
            assert needle in proc.stdout, (needle, proc.stdout[-2000:])

    return check


def _json(proc: subprocess.CompletedProcess[str], copy: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    body = proc.stdout[proc.stdout.index("\n{") + 1 :]  # after make's echo of the recipe
    data = json.loads(body)
    assert data["pc_gpu"] == "rtx-4060-ti-16gb" and data["gpus"] and data["sources"]


def _japanese_report(proc: subprocess.CompletedProcess[str], copy: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    md = (copy / "results" / "latest" / "report.md").read_text(encoding="utf-8")
    assert md.splitlines()[0].startswith("# gpu-rehearsal レポート") and "## 結論" in md


# Commands run here for real, with what their output must show.
RUN: dict[str, Callable[[subprocess.CompletedProcess[str], Path], None]] = {
    "make check": _ok("rig.toml: valid", "Planned PC"),
    ".venv/bin/rig check": _ok("rig.toml: valid"),
    "make plan": _ok("The planned PC and its cloud stand-ins"),
    ".venv/bin/rig plan": _ok("The planned PC and its cloud stand-ins"),
    "make compare": _ok("Closeness to the planned PC"),
    "make compare ARGS=--json": _json,
    "make status": _ok("Nothing deployed"),
    ".venv/bin/rig models list": _ok("llama3:8b", "qwen3:8b"),
    ".venv/bin/bench run --help": _ok("--resume RUN_ID", "(default: results)"),
    ".venv/bin/bench report results/latest --lang ja": _japanese_report,
}


# ------------------------------------------------------------------------------- extraction


def fences(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced block, list-item (indented) ones included."""
    out, lang, body = [], None, []
    for line in text.splitlines():
        fence = re.match(r"^\s{0,4}```(\S*)\s*$", line)
        if fence and lang is None:
            lang, body = fence.group(1), []
        elif fence:
            out.append((lang, body))
            lang = None
        elif lang is not None:
            body.append(line.strip())
    assert lang is None, "a fenced block is never closed"
    return out


def fenced_commands(text: str) -> list[str]:
    cmds = []
    for lang, lines in fences(text):
        if lang != "bash":
            continue
        for line in lines:
            cmd = re.split(r"\s{2,}#", line)[0].strip()  # "cmd   # comment"
            if cmd and not cmd.startswith("#"):
                cmds.append(cmd)
    return cmds


def inline_commands(text: str) -> list[str]:
    without_fences = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", without_fences)
    return [s.strip() for s in spans if s.startswith(TOOLS)]


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


# ---------------------------------------------------------------------------------- classify


def test_every_fenced_block_says_what_it_holds():
    """A block without a language could hide a command from the test below."""
    for lang, lines in fences(README):
        assert lang, f"a fenced block without a language: {lines[:2]}"


def test_every_readme_command_is_run_here_or_says_why_not():
    commands = set(fenced_commands(README))
    known = set(RUN) | set(NOT_RUN) | set(DRY_RUN)
    assert commands - known == set(), "classify these in RUN, DRY_RUN or NOT_RUN"
    assert known - commands == set(), "no longer in the README: remove them here"
    assert all(reason.strip() for reason in NOT_RUN.values())


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", makefile, re.M))


def _subcommands(parser) -> dict[str, object]:
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            return action.choices
    return {}


def test_every_command_in_the_readme_names_what_exists():
    """Inline or fenced: `make X` is a Makefile target, `.venv/bin/rig X Y` a real subcommand."""
    targets = _make_targets()
    tools = {"rig": _parser(), "bench": build_parser()}
    for cmd in {*fenced_commands(README), *inline_commands(README)}:
        for part in cmd.split("&&"):
            words = part.split()
            if words[0] == "make":
                for word in words[1:]:
                    if "=" not in word and not word.startswith("-"):
                        assert word in targets, (cmd, word)
            elif words[0].startswith(".venv/bin/"):
                tool = words[0].removeprefix(".venv/bin/")
                if tool == "python":
                    pytest.fail(f"{cmd}: write .venv/bin/rig or .venv/bin/bench")
                parser = tools[tool]
                for word in words[1:]:
                    subs = _subcommands(parser)
                    if not subs or word.startswith(("-", "<", "…")):
                        break
                    assert word in subs, (cmd, word)
                    parser = subs[word]


def test_the_two_quick_starts_hold_the_same_commands():
    english, japanese = section("Quick start"), section("日本語クイックスタート")

    def commands(text: str) -> set[str]:
        return set(fenced_commands(text)) | set(inline_commands(text))

    assert commands(english) == commands(japanese), commands(english) ^ commands(japanese)
    assert "make compare ARGS=--json" in commands(japanese)
    for text in (english, japanese):
        assert "make compare --json" not in text  # make would read --json as its own option


def test_the_quick_starts_quote_the_readme_s_own_figures():
    """The costs and links in both guides are the ones the sections below state (those are
    checked against the cost formula in tests/test_aws_profile.py)."""
    english, japanese = section("Quick start"), section("日本語クイックスタート")
    rest = README.replace(english, "").replace(japanese, "")

    def dollars(text: str) -> set[str]:
        return set(re.findall(r"\$\d+\.\d\d", text))

    # the worst cases the cost blocks give for the default g4dn.2xlarge and the eastus NC8as
    aws = re.search(r"- g4dn\.2xlarge \(eu-west-1\):.*worst case 4 h, (\$\d+\.\d\d)", README)
    azure = re.search(r"- Standard_NC8as_T4_v3 \(eastus\):.*worst case 4 h, (\$\d+\.\d\d)", README)
    assert aws and azure
    assert dollars(english) == dollars(japanese) >= {aws.group(1), azure.group(1)}
    assert dollars(english) <= dollars(rest), dollars(english) - dollars(rest)
    links = set(re.findall(r"https://\S+?(?=[)）\s,、]|$)", english))
    assert links == set(re.findall(r"https://\S+?(?=[)）\s,、]|$)", japanese)) and len(links) == 4
    for code in ("L-3819A6DF", "L-DB2E81BA"):
        assert code in english and code in japanese and code in rest


# --------------------------------------------------------------------------------- run them


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (tracked and new, not ignored) in a temporary directory, a
    `.venv` linking to the real one, and the fixture run as results/latest."""
    venv = (ROOT / ".venv").resolve()
    if not (venv / "bin" / "python").exists():
        pytest.skip("no .venv here: run make setup first")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    dest = tmp_path_factory.mktemp("readme") / "gpu-rehearsal"
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)  # mtimes kept: pyproject.toml stays older than stamps
    (dest / ".venv").mkdir()
    for entry in venv.iterdir():
        if not entry.name.startswith(".installed"):
            (dest / ".venv" / entry.name).symlink_to(entry)
    for stamp in ("stamp", "bench", "aws", "azure", "provision"):
        (dest / ".venv" / f".installed-{stamp}").touch()
    run = json.loads((FIXTURE_RUN / "meta.json").read_text())["run_id"]
    shutil.copytree(FIXTURE_RUN, dest / "results" / run)
    (dest / "results" / "latest").symlink_to(run)
    assert subprocess.run(["make", "-q", "setup-bench"], cwd=dest).returncode == 0
    return dest


def _env(copy: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),  # the copy's rig/ and bench/, whatever .venv was installed from
        "NO_COLOR": "1",
        "COLUMNS": "100",
        "AWS_CONFIG_FILE": str(copy / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(copy / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AZURE_CONFIG_DIR": str(copy / "no-azure"),
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "ARM_CLIENT_ID"):
        env.pop(key, None)
    # CI runs these tests under `make test`: without this, the README's make commands would run
    # as sub-makes and print "make[1]: Entering directory" lines no user's shell shows.
    for key in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
        env.pop(key, None)
    return env


def _sh(command: str, copy: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=copy, env=_env(copy), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def _needs_script(command: str, copy: Path) -> None:
    """A .venv made before pyproject.toml declared a console script lacks it (this checkout's
    shared .venv may); `make setup` installs it, as CI does."""
    script = re.match(r"\.venv/bin/(\S+)", command)
    if script and not (copy / ".venv" / "bin" / script.group(1)).exists():
        pytest.skip(f".venv has no {script.group(1)} script yet: run make setup")


@pytest.mark.parametrize("command", sorted(RUN))
def test_a_safe_readme_command_works_as_written(command, copy):
    _needs_script(command, copy)
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True)
    proc = _sh(command, copy)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    RUN[command](proc, copy)
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True)
    assert before.stdout == after.stdout  # the checkout itself is never touched


@pytest.mark.parametrize("command", sorted(DRY_RUN))
def test_a_cloud_target_would_run_the_documented_command(command, copy):
    proc = _sh(command.replace("make ", "make -n ", 1), copy)
    assert proc.returncode == 0, proc.stderr
    assert DRY_RUN[command] in proc.stdout, proc.stdout


def test_the_readme_s_example_error_is_what_check_prints(copy, tmp_path):
    block = next(lines for lang, lines in fences(README) if lang == "text" and any(
        "is not a known instance type" in line for line in lines))  # fmt: skip
    (tmp_path / "rig.toml").write_text('[aws]\ninstance_types = ["g4dn.99xlarge"]\n')
    proc = subprocess.run(
        [str(copy / ".venv" / "bin" / "rig"), "check"], cwd=tmp_path, env=_env(copy),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == block


@pytest.mark.parametrize("tool", ["rig", "bench"])
def test_the_console_scripts_are_what_the_readme_names(tool):
    script = ROOT / ".venv" / "bin" / tool
    if not script.exists():
        pytest.skip(f".venv has no {tool} script yet: run make setup")
    out = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip
    assert out.startswith(f"{tool} (gpu-rehearsal) ")
