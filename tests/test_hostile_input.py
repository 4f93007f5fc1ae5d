"""Hostile input through the real entry points (issue 17, "the newcomer's hour"): every bad
flag, damaged file or odd server reply ends in one line naming the flag or field, the bad value
and the fix, with exit status 2 — never a traceback, and nothing half-written.

Each case runs as a user runs it: `python -m rig ...` / `python -m bench ...` in the repo root,
with every path under the test's tmp_path. None reaches a cloud or a model server: each input
fails before that (the only socket, 127.0.0.1:9, refuses).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_FIXTURE = ROOT / "tests" / "fixtures" / "run-mirror"
SHOW_FIXTURE = ROOT / "tests" / "fixtures" / "ollama_api_show.json"
PROFILE = (ROOT / "rig.toml").read_text(encoding="utf-8")


def cli(
    tool: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "400", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Case:
    """`setup(tmp)` writes what the case needs and returns (tool, argv, env)."""

    setup: Callable[[Path], tuple[str, list[str], dict[str, str]]]
    said: tuple[str, ...]  # the flag or field, the bad value, the fix: all in the one line
    code: int = 2


def assert_one_line(proc: subprocess.CompletedProcess[str], case: Case) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == case.code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # argparse's own refusals print the usage block first; the error is the last line.
    if lines and lines[0].startswith("usage:"):
        lines = [lines[-1]]
    assert len(lines) == 1, proc.stderr
    for part in case.said:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# --- helpers that write damaged inputs --------------------------------------------------------


def run_copy(tmp: Path, edit: Callable[[Path], None]) -> Path:
    run = tmp / "results" / "r1"
    shutil.copytree(RUN_FIXTURE, run)
    edit(run)
    return run


def edit_line(n: int, change: Callable[[dict], str]) -> Callable[[Path], None]:
    def do(run: Path) -> None:
        path = run / "results.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        lines[n] = change(json.loads(lines[n]))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    return do


def edit_meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def do(run: Path) -> None:
        path = run / "meta.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))), encoding="utf-8")

    return do


def with_field(data: dict, key: str, value: object) -> str:
    return json.dumps({**data, key: value})


def target_url(meta: dict, url: object) -> dict:
    meta["targets"][0]["url"] = url
    return meta


def profile(tmp: Path, old: str, new: str) -> str:
    assert old in PROFILE
    path = tmp / "rig.toml"
    path.write_text(PROFILE.replace(old, new, 1), encoding="utf-8")
    return str(path)


def show(tmp: Path, key: str, value: object) -> str:
    data = json.loads(SHOW_FIXTURE.read_text(encoding="utf-8"))
    if value is None:
        del data["model_info"][key]
    else:
        data["model_info"][key] = value
    path = tmp / "show.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def user_models(tmp: Path, text: str | bytes) -> dict[str, str]:
    path = tmp / "rig.models.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return {"RIG_MODELS": str(path)}


USER_MODEL = """\
[sources.s]
title = "a model card"
url = "https://example.org/card"
as_of = 2026-01-01

[models."mine:1b"]
name = "Mine 1B"
family = "llama"
categories = ["general"]
parameters_b = 1.0
quantization = "Q4_0"
download_gb = DOWNLOAD
context_length = 8192
block_count = 16
head_count_kv = 8
key_length = 64
value_length = 64
source = "s"
"""


def add(tmp: Path, *args: str) -> tuple[str, list[str], dict[str, str]]:
    return "rig", ["models", "add", *args, "--file", str(tmp / "mine.toml")], {}


def bench_run(tmp: Path, *args: str) -> tuple[str, list[str], dict[str, str]]:
    state = tmp / "state"
    argv = ["run", *args, "--results-dir", str(tmp / "results"), "--state-dir", str(state)]
    return "bench", argv, {}


def a_file(tmp: Path) -> str:
    (tmp / "afile").write_text("not a directory", encoding="utf-8")
    return str(tmp / "afile")


def resume_damaged(tmp: Path, meta: str) -> tuple[str, list[str], dict[str, str]]:
    run = tmp / "results" / "r1"
    run.mkdir(parents=True)
    (run / "meta.json").write_text(meta, encoding="utf-8")
    (run / "results.jsonl").write_text("", encoding="utf-8")
    return bench_run(tmp, "--demo", "--resume", "r1")


# --- the cases ---------------------------------------------------------------------------------

CASES: dict[str, Case] = {
    # bench run: flags
    "bench-run-config-empty": Case(
        lambda t: bench_run(t, "--config", ""), ("--config", "''", "give a path")
    ),
    "bench-run-state-dir-empty": Case(
        lambda t: ("bench", ["run", "--state-dir", ""], {}), ("--state-dir", "''", "give a path")
    ),
    "bench-run-results-dir-empty": Case(
        lambda t: ("bench", ["run", "--results-dir", ""], {}),
        ("--results-dir", "''", "give a path"),
    ),
    "bench-run-results-dir-a-file": Case(
        lambda t: ("bench", ["run", "--demo", "--results-dir", a_file(t)], {}),
        ("--results-dir", "afile", "is a file", "pass --results-dir DIR"),
    ),
    "bench-run-idle-timeout-nan": Case(
        lambda t: bench_run(t, "--demo", "--idle-timeout", "nan"),
        ("--idle-timeout", "nan", "above 0, e.g. 60"),
    ),
    "bench-run-request-timeout-inf": Case(
        lambda t: bench_run(t, "--demo", "--request-timeout", "inf"),
        ("--request-timeout", "inf", "above 0, e.g. 60"),
    ),
    "bench-run-models-blank": Case(
        lambda t: bench_run(t, "--demo", "--models", " "),
        ("--models", "' '", "e.g. --models llama3:8b"),
    ),
    "bench-run-models-with-space": Case(
        lambda t: bench_run(t, "--demo", "--models", "llama3 8b"),
        ("--models", "'llama3 8b'", "e.g. --models llama3:8b"),
    ),
    "bench-run-models-twice": Case(
        lambda t: bench_run(t, "--demo", "--models", "llama3:8b", "qwen3:8b", "llama3:8b"),
        ("--models", "llama3:8b given twice", "name each model once"),
    ),
    "bench-run-target-name-twice": Case(
        lambda t: bench_run(
            t, "--target", "a=http://127.0.0.1:9", "--target", "a=http://127.0.0.1:10"
        ),
        ("--target", "'a'", "given twice", "give each target its own name"),
    ),
    "bench-run-target-port-too-big": Case(
        lambda t: bench_run(t, "--target", "a=http://127.0.0.1:99999"),
        ("--target", "http://127.0.0.1:99999", "1-65535", "e.g. http://127.0.0.1:11434"),
    ),
    "bench-run-target-port-zero": Case(
        lambda t: bench_run(t, "--target", "a=http://127.0.0.1:0"),
        ("--target", "http://127.0.0.1:0", "1-65535"),
    ),
    "bench-run-target-unclosed-ipv6": Case(
        lambda t: bench_run(t, "--target", "a=http://[::1"),
        ("--target", "http://[::1", "e.g. http://127.0.0.1:11434"),
    ),
    "bench-run-resume-empty": Case(
        lambda t: bench_run(t, "--demo", "--resume", ""),
        ("--resume", "''", "give a run id from results/, or latest"),
    ),
    "bench-run-resume-meta-not-json": Case(
        lambda t: resume_damaged(t, "[1"),
        ("--resume r1", "meta.json is damaged", "start a new run", "stays as it is"),
    ),
    "bench-run-resume-meta-lacks-started-at": Case(
        lambda t: resume_damaged(t, '{"run_id": "r1"}'),
        ("--resume r1", "meta.json is damaged", "started_at", "start a new run"),
    ),
    "bench-models-file-not-tables": Case(
        lambda t: ("bench", ["fit", "--model", "llama3:8b"], user_models(t, "models = 3\n")),
        ("rig.models.toml", "models", "use [models.KEY] headers"),
    ),
    # bench fit: --url / --show-json
    "bench-fit-url-empty": Case(
        lambda t: ("bench", ["fit", "--model", "llama3:8b", "--url", ""], {}),
        ("--url", "''", "e.g. --url http://127.0.0.1:11434"),
    ),
    "bench-fit-url-without-scheme": Case(
        lambda t: ("bench", ["fit", "--model", "llama3:8b", "--url", "localhost:11434"], {}),
        ("--url", "'localhost:11434'", "e.g. --url http://127.0.0.1:11434"),
    ),
    "bench-fit-url-refused": Case(
        lambda t: ("bench", ["fit", "--model", "llama3:8b", "--url", "http://127.0.0.1:9"], {}),
        ("--url", "http://127.0.0.1:9", "is Ollama running there"),
    ),
    "bench-fit-show-json-a-list": Case(
        lambda t: (
            "bench",
            ["fit", "--model", "x:1b", "--show-json", str(write(t / "s.json", "[]"))],
            {},
        ),
        ("--show-json", "s.json", "no model_info", "save the reply of a current Ollama"),
    ),
    "bench-fit-show-json-not-a-number": Case(
        lambda t: (
            "bench",
            ["fit", "--model", "x:1b", "--show-json", show(t, "llama.context_length", "lots")],
            {},
        ),
        ("--show-json", "show.json", "not a number", "save the reply again"),
    ),
    # bench report: damaged runs, unwritable report
    "report-meta-a-list": Case(
        lambda t: ("bench", ["report", str(run_copy(t, edit_meta(lambda m: [])))], {}),
        ("RUN_DIR", "meta.json is a JSON list", "restore meta.json from a copy"),
    ),
    "report-meta-target-url-a-number": Case(
        lambda t: (
            "bench",
            ["report", str(run_copy(t, edit_meta(lambda m: target_url(m, 5))))],
            {},
        ),
        ("RUN_DIR", "targets[0] url is 5, not str", "restore meta.json from a copy"),
    ),
    "report-result-wrong-type": Case(
        lambda t: (
            "bench",
            [
                "report",
                str(run_copy(t, edit_line(0, lambda d: with_field(d, "output_tokens", "many")))),
            ],
            {},
        ),
        ("results.jsonl line 1", 'output_tokens is "many"', "delete that line", "--resume r1"),
    ),
    "report-result-torn-mid-file": Case(
        lambda t: ("bench", ["report", str(run_copy(t, edit_line(1, lambda d: '{"tar')))], {}),
        ("results.jsonl line 2 is not JSON", "delete that line", "--resume r1"),
    ),
    "report-result-nan": Case(
        lambda t: (
            "bench",
            [
                "report",
                str(
                    run_copy(t, edit_line(2, lambda d: with_field(d, "decode_tok_s", float("nan"))))
                ),
            ],
            {},
        ),
        ("results.jsonl line 3", "decode_tok_s is nan", "delete that line"),
    ),
    "report-result-not-utf8": Case(
        lambda t: (
            "bench",
            ["report", str(run_copy(t, lambda r: append(r / "results.jsonl", b"\xff\xfe")))],
            {},
        ),
        ("RUN_DIR", "not UTF-8 text", "bench again"),
    ),
    "report-cannot-write": Case(
        lambda t: (
            "bench",
            ["report", str(run_copy(t, lambda r: (r / "report.md").mkdir()))],
            {},
        ),
        ("RUN_DIR", "report.md", "move that path out of the way"),
    ),
    # rig: empty paths on every command that takes one
    **{
        f"rig-{'-'.join(argv[:-2])}-{argv[-2].lstrip('-')}-empty": Case(
            lambda t, argv=argv: ("rig", argv, {}), (argv[-2], "''", "give a path")
        )
        for argv in (
            ["check", "--config", ""],
            ["catalog", "--config", ""],
            ["status", "--state-dir", ""],
            ["plan", "--config", ""],
            ["synth-aws", "--out", ""],
            ["deploy", "aws", "--config", ""],
            ["deploy", "azure", "--state-dir", ""],
            ["destroy", "all", "--state-dir", ""],
            ["provision", "all", "--config", ""],
            ["smoke", "aws", "--results-dir", ""],
            ["models", "add", "x:1b", "--file", ""],
        )
    },
    "rig-plan-download-mbs-too-small": Case(
        lambda t: ("rig", ["plan", "--download-mbs", "0.01"], {}),
        ("--download-mbs", "'0.01'", "0.1-12,500 MB/s", "e.g. 50"),
    ),
    "rig-plan-download-mbs-too-big": Case(
        lambda t: ("rig", ["plan", "--download-mbs", "1e9"], {}),
        ("--download-mbs", "'1e9'", "0.1-12,500 MB/s"),
    ),
    # rig: profile
    "profile-max-hours-nan": Case(
        lambda t: (
            "rig",
            ["check", "--config", profile(t, "max_hours = 4", "max_hours = nan")],
            {},
        ),
        ("autostop.max_hours", "nan", "not a finite number", "max_hours = 4"),
    ),
    "profile-spot-price-nan": Case(
        lambda t: (
            "rig",
            ["check", "--config", profile(t, 'spot_max_price = ""', "spot_max_price = nan")],
            {},
        ),
        (
            "aws.spot_max_price",
            "nan",
            "not a finite number or text in quotes",
            'spot_max_price = ""',
        ),
    ),
    "profile-spot-price-bool-is-one-line": Case(
        lambda t: (
            "rig",
            ["check", "--config", profile(t, 'spot_max_price = ""', "spot_max_price = true")],
            {},
        ),
        ("aws.spot_max_price", "true", "not a number or text in quotes", 'spot_max_price = ""'),
    ),
    "profile-utf16": Case(
        lambda t: (
            "rig",
            ["check", "--config", str(write(t / "rig.toml", PROFILE, "utf-16"))],
            {},
        ),
        ("rig.toml", "not UTF-8 text", "save it as UTF-8"),
    ),
    "profile-a-directory": Case(
        lambda t: ("rig", ["check", "--config", str(t)], {}),
        ("TMP", "is a directory", "pass --config with a rig.toml file"),
    ),
    "profile-ssh-key-a-directory": Case(
        lambda t: (
            "rig",
            ["check", "--config", profile(t, 'ssh_public_key = ""', f'ssh_public_key = "{t}"')],
            {},
        ),
        ("access.ssh_public_key", "TMP", "is a directory", "id_ed25519.pub"),
    ),
    # rig: the user's models file (RIG_MODELS) as every command reads it
    "models-file-negative-size": Case(
        lambda t: ("rig", ["check"], user_models(t, USER_MODEL.replace("DOWNLOAD", "-1.0"))),
        ("models.mine:1b.download_gb", "-1.0", "greater than 0", "run rig models add again"),
    ),
    "models-file-nan-size": Case(
        lambda t: ("rig", ["check"], user_models(t, USER_MODEL.replace("DOWNLOAD", "nan"))),
        ("models.mine:1b.download_gb", "nan", "finite number", "run rig models add again"),
    ),
    "models-file-not-utf8": Case(
        lambda t: ("rig", ["check"], user_models(t, b"\xff\xfe[")),
        ("rig.models.toml", "not UTF-8 text", "save it as UTF-8"),
    ),
    "models-file-a-directory": Case(
        lambda t: ("rig", ["check"], {"RIG_MODELS": str(t)}),
        ("TMP", "is a directory", "point RIG_MODELS / --file at a TOML file"),
    ),
    # rig models add / remove
    "models-add-empty-source": Case(
        lambda t: add(t, ""), ("TAG|GGUF_PATH", "''", "give an Ollama tag")
    ),
    "models-add-empty-tag": Case(
        lambda t: add(t, "llama3:8b", "--show-json", str(SHOW_FIXTURE), "--tag", ""),
        ("--tag", "''", "e.g. --tag my-model:q4"),
    ),
    "models-add-size-nan": Case(
        lambda t: add(
            t, "llama3:8b", "--show-json", str(SHOW_FIXTURE), "--tag", "z:1", "--size-gb", "nan"
        ),
        ("--size-gb", "nan", "e.g. --size-gb 4.9"),
    ),
    "models-add-size-negative": Case(
        lambda t: add(
            t, "llama3:8b", "--show-json", str(SHOW_FIXTURE), "--tag", "z:1", "--size-gb", "-1"
        ),
        ("--size-gb", "-1", "e.g. --size-gb 4.9"),
    ),
    "models-add-file-a-directory": Case(
        lambda t: (
            "rig",
            [
                "models",
                "add",
                "llama3:8b",
                "--show-json",
                str(SHOW_FIXTURE),
                "--tag",
                "z:1",
                "--file",
                str(t),
            ],
            {},
        ),
        ("--file", "TMP", "is a directory", "rig.models.toml"),
    ),
    "models-add-file-in-missing-dir": Case(
        lambda t: (
            "rig",
            [
                "models",
                "add",
                "llama3:8b",
                "--show-json",
                str(SHOW_FIXTURE),
                "--tag",
                "z:1",
                "--file",
                str(t / "no" / "m.toml"),
            ],
            {},
        ),
        ("--file", "does not exist", "create it first"),
    ),
    "models-add-source-a-directory": Case(
        lambda t: add(t, str(t)), ("TMP", "is a directory", "give the path of a .gguf")
    ),
    "models-add-gguf-cut-short": Case(
        lambda t: add(t, str(write(t / "cut.gguf", b"GGUF\x03\x00\x00\x00"))),
        ("cut.gguf", "cut short", "download it again"),
    ),
    "models-add-show-not-a-number": Case(
        lambda t: add(
            t, "llama3:8b", "--show-json", show(t, "llama.context_length", "lots"), "--tag", "z:1"
        ),
        ("z:1", "'lots'", "not a number", "add the entry by hand"),
    ),
    "models-add-show-negative-layers": Case(
        lambda t: add(
            t, "llama3:8b", "--show-json", show(t, "llama.block_count", -32), "--tag", "z:1"
        ),
        ("z:1", "block_count = -32", "greater than 0", "add the entry by hand"),
    ),
    "models-remove-odd-tag": Case(
        lambda t: ("rig", ["models", "remove", "a b", "--file", str(t / "mine.toml")], {}),
        ("'a b'", "is not in", "yours: none"),
    ),
    # rig provision / deploy / destroy
    "provision-tags-unknown": Case(
        lambda t: ("rig", ["provision", "all", "--state-dir", str(t), "--tags", "bogus"], {}),
        ("--tags", "'bogus'", "not a role tag", "nvidia_driver, ollama"),
    ),
    "provision-tags-none": Case(
        lambda t: ("rig", ["provision", "all", "--state-dir", str(t), "--tags", ","], {}),
        ("--tags", "','", "names no tag", "comma-separated"),
    ),
    "provision-nothing-deployed": Case(
        lambda t: ("rig", ["provision", "all", "--state-dir", str(t)], {}),
        ("nothing is deployed", "TMP", "make deploy-aws"),
        code=1,  # not bad input: the state says nothing runs
    ),
    "provision-unknown-target": Case(
        lambda t: ("rig", ["provision", "nope", "--state-dir", str(deployed(t))], {}),
        ("'nope'", "not a deployed target", "aws-g4dn.2xlarge, or all"),
    ),
    "deploy-azure-size-not-in-profile": Case(
        lambda t: (
            "rig",
            ["deploy", "azure", "--size", "Standard_X", "--yes", "--state-dir", str(t)],
            {},
        ),
        ("--size", "'Standard_X'", "vm_sizes", "add it there first, or drop --size"),
    ),
    "destroy-all-bad-profile-once": Case(
        lambda t: (
            "rig",
            [
                "destroy",
                "all",
                "--config",
                profile(t, "max_hours = 4", "max_hours = nan"),
                "--state-dir",
                str(t / "state"),
            ],
            {},
        ),
        ("autostop.max_hours", "nan", "max_hours = 4"),
    ),
}


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding=encoding)
    return path


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def deployed(tmp: Path) -> Path:
    """A state dir with one AWS VM in it (TEST-NET-3 address: never contacted)."""
    from test_state_files import vm

    from rig import state

    state.write(vm("aws"), tmp / "state")
    return tmp / "state"


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_input_is_one_line_with_the_field_the_value_and_the_fix(case, tmp_path):
    tool, argv, env = case.setup(tmp_path)
    proc = cli(tool, *argv, env=env)
    said = Case(case.setup, tuple(str(tmp_path) if s == "TMP" else s for s in case.said), case.code)
    assert_one_line(proc, said)
    # Nothing half-written: no models file, no run directory, no report from a refused command.
    assert not (tmp_path / "mine.toml").exists()
    assert not (tmp_path / "results" / "r1" / "report.html").exists()


def test_a_profile_saved_with_a_bom_reads_as_without(tmp_path):
    # Windows Notepad saved "UTF-8 with BOM" by default: U+FEFF first, else the same file.
    path = write(tmp_path / "rig.toml", "\ufeff" + PROFILE)
    proc = cli("rig", "check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr


def test_a_models_file_saved_with_a_bom_reads_as_without(tmp_path):
    env = user_models(tmp_path, ("\ufeff" + USER_MODEL.replace("DOWNLOAD", "0.8")).encode())
    proc = cli("rig", "models", "list", env=env)
    assert proc.returncode == 0 and "mine:1b" in proc.stdout, proc.stderr


def test_models_add_estimates_a_missing_parameter_count_from_the_size(tmp_path):
    # A saved /api/show without general.parameter_count: the size and the quantization's bits
    # per weight give it (4.7 GB x 8 / 4.5 bits = 8.356 B), marked as an estimate.
    mine = tmp_path / "mine.toml"
    proc = cli(
        "rig",
        "models",
        "add",
        "llama3:8b",
        "--show-json",
        show(tmp_path, "general.parameter_count", None),
        "--tag",
        "z:1",
        "--size-gb",
        "4.7",
        "--file",
        str(mine),
    )
    assert proc.returncode == 0, proc.stderr
    with mine.open("rb") as fh:
        entry = tomllib.load(fh)["models"]["z:1"]
    assert entry["parameters_b"] == 8.356
    assert entry["field_sources"] == {"parameters_b": "rehearsal-estimate"}


def test_provision_tags_are_the_playbooks_tags():
    from rig.provision import TAGS

    found: set[str] = set()
    for path in [ROOT / "ansible" / "site.yml", *(ROOT / "ansible" / "roles").rglob("*.yml")]:
        for group in re.findall(r"tags:\s*\[([^\]]*)\]", path.read_text(encoding="utf-8")):
            found |= {t.strip() for t in group.split(",")}
    assert set(TAGS) == found - {"always"}
