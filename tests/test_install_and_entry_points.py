"""What a newcomer types first: the console scripts, --version, the lean installs and what a
command says when its extra is missing; the setup steps' progress lines (issue 17, 1, 5, 6).

Missing extras are simulated without touching the shared .venv: a sitecustomize on PYTHONPATH
sets sys.modules[name] = None, which is how Python itself marks a module as not importable
(`import` raises ModuleNotFoundError and importlib.util.find_spec returns None).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rig import cli
from rig.version import tool_version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SHIM = "import os, sys\nfor n in os.environ['BLOCK'].split(','):\n    sys.modules[n] = None\n"
AWS = "boto3,botocore,aws_cdk,cdk_nag,constructs,jsii"
AZURE = "pulumi,pulumi_azure_native"
PROVISION = "ansible,ansible_collections"


def run(args: list[str], block: str = "", tmp_path: Path | None = None, **env: str):
    extra = {}
    if block:
        assert tmp_path is not None
        (tmp_path / "sitecustomize.py").write_text(SHIM, encoding="utf-8")
        # An empty PATH entry for tools: ansible-playbook must not be found elsewhere either.
        extra = {"PYTHONPATH": str(tmp_path), "BLOCK": block, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **extra, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("script", ["rig", "bench"])
def test_console_scripts_exist_and_print_the_version(script, capsys):
    target = PYPROJECT["project"]["scripts"][script]
    module, _, func = target.partition(":")
    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(
        rf".+ \(gpu-rehearsal\) {re.escape(tool_version())}\n", capsys.readouterr().out
    )


def test_the_version_comes_from_metadata_or_else_the_checkout(monkeypatch):
    from rig import version

    assert tool_version() == importlib.metadata.version("gpu-rehearsal")

    def not_installed(_name: str) -> str:
        raise importlib.metadata.PackageNotFoundError

    monkeypatch.setattr(version, "version", not_installed)
    assert (
        version.tool_version()
        == f"{PYPROJECT['project']['version']} (source checkout, not installed)"
    )


def test_the_base_install_holds_no_cloud_sdk_and_each_extra_holds_its_modules():
    base = {re.split(r"[=<>\[ ]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    assert not base & {"boto3", "aws-cdk-lib", "pulumi", "pulumi-azure-native", "ansible", "moto"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    pinned = {k: {re.split(r"[=<>\[ ]", d)[0].lower() for d in v} for k, v in extras.items()}
    dists = importlib.metadata.packages_distributions()
    for modules in cli.NEEDS.values():
        for module in modules:
            extra = cli.EXTRA_OF_MODULE[module]
            names = {d.lower().replace("_", "-") for d in dists[module]}
            assert names & pinned[extra], (module, extra, names)
    # make setup (the two-command promise) still installs everything, at the same pins.
    assert set(extras["dev"]) >= {*extras["aws"], *extras["azure"], *extras["provision"]}


@pytest.mark.parametrize(
    ("command", "block", "extra", "target"),
    [
        (["deploy", "aws"], AWS, "'aws' and 'provision' extras", "make setup-aws"),
        (["deploy", "aws"], PROVISION, "'aws' and 'provision' extras", "make setup-aws"),
        (["destroy", "aws"], AWS, "'aws' extra", "make setup-aws"),
        (["synth-aws"], AWS, "'aws' extra", "make setup-aws"),
        (["deploy", "azure"], AZURE, "'azure' and 'provision' extras", "make setup-azure"),
        (["provision", "all"], PROVISION, "'provision' extra", "make setup-provision"),
    ],
)
def test_a_command_whose_extra_is_missing_names_it_in_one_line(
    command, block, extra, target, tmp_path
):
    proc = run(["-m", "rig", *command], block=block, tmp_path=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert extra in lines[0] and target in lines[0] and "pip install -e" in lines[0]


def test_without_any_extra_every_command_is_still_listed_and_the_base_ones_work(tmp_path):
    block = ",".join((AWS, AZURE, PROVISION))
    helped = run(["-m", "rig", "--help"], block=block, tmp_path=tmp_path)
    for name in ("check", "catalog", "status", "deploy", "destroy", "plan", "provision", "models"):
        assert name in helped.stdout
    assert run(["-m", "rig", "catalog", "--json"], block=block, tmp_path=tmp_path).returncode == 0
    assert run(["-m", "rig", "check"], block=block, tmp_path=tmp_path).returncode == 0
    # The spending plan needs no extra: without boto3 it prices from the catalog and says so.
    planned = run(["-m", "rig", "plan"], block=block, tmp_path=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "AWS: boto3 is not installed (make setup-aws): catalog prices" in planned.stdout
    # Azure's destroy needs no extra: nobody is kept from deleting what bills.
    assert (
        "usage"
        in run(["-m", "rig", "destroy", "azure", "--help"], block=block, tmp_path=tmp_path).stdout
    )


def test_make_destroy_on_a_lean_azure_setup_skips_aws_instead_of_failing(tmp_path, profile_file):
    config = profile_file(("aws", "enabled", "false"))
    proc = run(
        [
            "-m",
            "rig",
            "destroy",
            "aws",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        block=AWS,
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0 and "AWS part skipped" in proc.stdout, proc.stderr


def test_a_part_whose_import_needs_a_missing_extra_still_shows_and_explains(monkeypatch):
    real = importlib.import_module

    def import_module(name: str, *a, **k):
        if name == "rig.aws_cli":
            raise ModuleNotFoundError("No module named 'boto3'", name="boto3")
        return real(name, *a, **k)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    monkeypatch.setattr(cli, "missing_modules", lambda modules: [])
    assert cli.main(["deploy", "aws"]) == 2  # the placeholder: one line naming the extra


def test_setup_targets_install_the_extras_their_commands_need():
    for target, spec in {
        "setup": "[dev]",
        "setup-bench": "'.'",
        "setup-aws": "[aws,provision]",
        "setup-azure": "[azure,provision]",
        "setup-provision": "[provision]",
    }.items():
        dry = subprocess.run(
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        install = next(line for line in dry.stdout.splitlines() if "-e '." in line)
        assert spec in install, (target, install)
        assert ". scripts/steps.sh" in dry.stdout  # each stage prints a line with the time


def test_long_steps_print_a_line_per_stage_and_a_heartbeat(tmp_path):
    script = (
        f". {ROOT / 'scripts' / 'steps.sh'} engine; step 'building'; "
        "heartbeat 1 'still compiling' sleep 2.5; step done"
    )
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    lines = proc.stdout.splitlines()
    # Elapsed times are wall clock on a shared machine: check the shape and the order, not exact
    # seconds (a loaded runner may start bash late).
    stamp = r"\[(\d+):(\d\d)\]"
    assert proc.returncode == 0 and re.fullmatch(rf"engine {stamp} building", lines[0]), lines
    beats = [x for x in lines if re.fullmatch(rf"engine {stamp} still working: still compiling", x)]
    assert beats, lines
    end = re.fullmatch(rf"engine {stamp} done", lines[-1])
    assert end and int(end[1]) * 60 + int(end[2]) >= 2, lines  # the step slept 2.5 s
    failed = subprocess.run(
        ["bash", "-c", f". {ROOT / 'scripts' / 'steps.sh'} x; heartbeat 1 h false"], timeout=30
    )
    assert failed.returncode != 0  # a failing step fails the make target
