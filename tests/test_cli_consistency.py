"""The commands behave alike (issue 17, item 4): `--help` for every option with its default,
`--json` that stays JSON when the command fails, `rig destroy all` with one exit status, and
terminal tables that fold long names instead of cutting them at 80 or 120 columns."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bench.cli import build_parser
from rig.catalog import load_catalog
from rig.cli import _parser, main
from rig.clihelp import walk
from rig.render import print_catalog

ROOT = Path(__file__).resolve().parent.parent
SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for tool, top in (("rig", _parser()), ("bench", build_parser())):
        out += [(" ".join((tool, *path)), p) for path, p in walk(top)]
    return out


def _option_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """One option's entry in `--help`, as the user reads it (wrapping undone)."""
    formatter = parser._get_formatter()
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def test_every_option_of_every_command_has_help_and_shows_its_default():
    seen = 0
    for command, parser in parsers():
        for action in parser._actions:
            if isinstance(action, SKIP) or action.help == argparse.SUPPRESS:
                continue  # hidden on purpose (test-only paths such as --state-dir of deploy aws)
            seen += 1
            name = "/".join(action.option_strings) or action.dest
            assert action.help, f"{command} {name}: no help text"
            default = action.default
            if action.option_strings and default not in (None, False, [], argparse.SUPPRESS):
                text = _option_help(parser, action)
                shown = str(default) in text or "default" in text.lower()
                assert shown, f"{command} {name}: default {default!r} not shown: {text}"
    assert seen > 60  # every command was walked, the extensions' included


def test_help_states_defaults_once():
    run = next(p for c, p in parsers() if c == "bench run")
    text = " ".join(run.format_help().split())
    assert (
        "--backend {ollama,openai} backend for --target URLs without @backend (default: ollama)"
        in text
    )
    assert "--results-dir RESULTS_DIR where runs are written (default: results)" in text
    check = next(p for c, p in parsers() if c == "rig check")
    assert "profile (rig.toml) (default" not in " ".join(check.format_help().split())


def test_a_default_merely_inside_the_help_text_is_still_stated():
    # "share of the model on the GPU, 0..1" holds "1" but does not say the default is 1, and
    # "f16 | q8_0 | q4_0" lists the choices without saying which one is taken.
    for argv, said in (
        (["project", "--help"], "share of the model on the GPU, 0..1 (default: 1)"),
        (["fit", "--help"], "KV cache type: f16 | q8_0 | q4_0 (default: f16)"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "bench", *argv],
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "400"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and said in " ".join(proc.stdout.split()), proc.stdout


def test_check_json_is_json_on_error_too(tmp_path, capsys):
    bad = tmp_path / "rig.toml"
    bad.write_text('[aws]\ninstance_types = ["g4dn.99xlarge"]\n[bench]\nrepetitions = 99\n')
    assert main(["check", "--config", str(bad), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert [p["field"] for p in out["problems"]] == ["aws.instance_types[0]", "bench.repetitions"]
    assert "'g4dn.99xlarge' is not a known instance type" in out["problems"][0]["message"]
    assert out["problems"][1]["line"] == (
        f"{bad}: bench.repetitions: 99 must be between 1 and 20 — e.g. repetitions = 3"
    )

    assert main(["check", "--config", str(tmp_path / "none.toml"), "--json"]) == 2
    (missing,) = json.loads(capsys.readouterr().out)["problems"]
    assert missing["field"] == "" and missing["message"].startswith("no such file")

    good = tmp_path / "good.toml"
    good.write_text("")
    assert main(["check", "--config", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def _no_cloud_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AZURE_CONFIG_DIR": str(tmp_path / "no-azure"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "ARM_CLIENT_ID"):
        env.pop(key, None)
    return env


def test_destroy_all_runs_both_clouds_with_one_exit_status(tmp_path):
    """AWS off and nothing recorded: its part is skipped (0); Azure cannot verify without
    credentials (1). `destroy all` runs both and exits 1 — nothing is claimed clean."""
    config = tmp_path / "rig.toml"
    config.write_text("[aws]\nenabled = false\n")
    argv = ["destroy", "all", "--config", str(config), "--state-dir", str(tmp_path / ".state")]
    proc = subprocess.run(
        [sys.executable, "-m", "rig", *argv],
        cwd=ROOT,
        env=_no_cloud_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert out.index("destroy aws") < out.index("nothing to destroy") < out.index("destroy azure")
    assert "Azure: could not verify that nothing is left" in proc.stderr
    assert "destroy: azure not verified clean" in out


def test_destroy_all_goes_on_to_azure_when_aws_fails(tmp_path, monkeypatch, capsys):
    from rig import aws_cli, azure_cli
    from rig.problems import CommandError

    ran = []

    def aws_fails(args, console):
        ran.append("aws")
        raise CommandError("AWS: 1 left: i-0abc (running) — make destroy again")

    def azure_ok(args, console):
        ran.append("azure")
        return 0

    monkeypatch.setattr(aws_cli, "cmd_destroy", aws_fails)
    monkeypatch.setattr(azure_cli, "cmd_destroy", azure_ok)
    monkeypatch.setattr("rig.cli.missing_modules", lambda modules: [])
    assert main(["destroy", "all", "--state-dir", str(tmp_path)]) == 1
    assert ran == ["aws", "azure"]
    assert "AWS: 1 left: i-0abc" in capsys.readouterr().err


def test_makefile_destroy_is_rig_destroy_all():
    dry = subprocess.run(
        ["make", "-n", "-B", "destroy"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "-m rig destroy all" in dry and "destroy aws" not in dry


@pytest.mark.parametrize("target", ["compare", "check", "plan", "status"])
def test_make_passes_args_through(target):
    dry = subprocess.run(
        ["make", "-n", target, "ARGS=--json"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"-m rig \w+ --json$", dry, re.M), dry


# ------------------------------------------------------------------------ narrow terminals


def columns_text(rendered: str) -> list[str]:
    """Each table column's text, its folded pieces joined, spaces dropped: a name folded over
    three lines reads whole again, a name cut to "Standard_N…" does not."""
    cols: dict[tuple[int, int], str] = {}
    table = 0
    for line in rendered.splitlines():
        if line.startswith(("┏", "┌")):
            table += 1
        if not line.startswith(("│", "┃")):
            continue
        for i, cell in enumerate(re.split(r"[│┃]", line)[1:-1]):
            cols[(table, i)] = cols.get((table, i), "") + cell.replace(" ", "")
    return list(cols.values())


@pytest.mark.parametrize("width", [80, 120])
def test_catalog_tables_fold_names_instead_of_cutting_them(width):
    cat = load_catalog()
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    print_catalog(console, cat, "rtx-4060-ti-16gb", {"aws": "eu-west-1", "azure": "westeurope"})
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    cols = columns_text(text)
    names = [g.name.replace("NVIDIA ", "").replace("GeForce ", "") for g in cat.gpus.values()]
    names += [i.key for i in cat.gpu_instances()]
    names += [g.source for g in cat.gpus.values()]
    names += [p.source for i in cat.gpu_instances() for p in i.prices]
    for name in names:
        assert any(name.replace(" ", "") in c for c in cols), (width, name)


@pytest.mark.parametrize("command", [["plan"], ["models", "list"], ["check"], ["catalog"]])
@pytest.mark.parametrize("width", ["80", "120"])
def test_no_table_cuts_a_name_at_80_or_120_columns(command, width, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rig", *command],
        cwd=ROOT,
        env={**_no_cloud_env(tmp_path), "COLUMNS": width},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "…" not in proc.stdout, proc.stdout
