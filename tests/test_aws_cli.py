"""The AWS commands as the Makefile runs them: registered, one-line errors, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.aws import names
from rig.aws.cdk_cli import CDK_DIR, CdkCli
from rig.aws.errors import NO_CREDENTIALS
from rig.cli import main
from rig.problems import CommandError


@pytest.fixture(autouse=True)
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance role
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["deploy", "aws", "--help"], "--yes"),
        (["deploy", "aws", "--help"], "--replace"),
        (["destroy", "aws", "--help"], "--config"),
        (["synth-aws", "--help"], "--out"),
    ],
)
def test_commands_registered(argv: list[str], expect: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert expect in capsys.readouterr().out


@pytest.mark.parametrize("verb", ["deploy", "destroy"])
def test_without_credentials_one_line_exit_1(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "rig.toml"
    config.write_text("", encoding="utf-8")  # the defaults
    argv = [verb, "aws", "--config", str(config), "--state-dir", str(tmp_path / "state")]
    rc = main([*argv, "--yes"] if verb == "deploy" else argv)
    out, err = capsys.readouterr()
    assert rc == 1
    if verb == "deploy":
        assert err.strip() == NO_CREDENTIALS
    else:  # destroy cannot verify anything: it says so, never "0 left"
        assert err.strip().startswith("destroy aws: could not verify eu-west-1 (no AWS cred")
        assert names.console_link("eu-west-1") in err and "0 left" not in out + err
    assert err.strip().count("\n") == 0
    assert "Traceback" not in out + err
    assert not (tmp_path / "state").exists()  # nothing written before preflight passed


def test_deploy_refuses_when_aws_disabled(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "rig.toml"
    config.write_text("[aws]\nenabled = false\n", encoding="utf-8")
    assert main(["deploy", "aws", "--config", str(config), "--yes"]) == 1
    assert "aws.enabled = false" in capsys.readouterr().err


def test_invalid_profile_exits_2_before_any_aws_call(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "rig.toml"
    config.write_text('[aws]\ninstance_types = ["g4dn.99xlarge"]\n', encoding="utf-8")
    assert main(["deploy", "aws", "--config", str(config), "--yes"]) == 2
    assert "aws.instance_types[0]" in capsys.readouterr().err


def test_missing_cdk_cli_is_one_line(tmp_path: Path) -> None:
    cli = CdkCli(cdk_dir=tmp_path)
    with pytest.raises(CommandError, match=r"make cdk-cli"):
        cli.command("synth", context={})


def test_cdk_cli_runs_offline_settings() -> None:
    cli = CdkCli()
    env = cli.env("eu-west-1")
    assert env["CDK_DISABLE_CLI_TELEMETRY"] == "true"
    assert env["CDK_DISABLE_VERSION_CHECK"] == "true"
    assert env["CDK_HOME"] == str(CDK_DIR / ".cdk-home")
    assert env["AWS_REGION"] == "eu-west-1"
    cmd = cli.command("synth", context={names.CTX_OWNER: "me"})
    assert "--no-notices" in cmd and cmd[-2:] == ["--context", f"{names.CTX_OWNER}=me"]
    assert cmd[0].endswith("cdk/node_modules/.bin/cdk")


def test_the_exact_cdk_deploy_command_line() -> None:
    """What `make deploy-aws` runs for one stack: the pinned CLI, only preparing a change set
    (rig reads it before anything changes), no approval prompt, this stack only. With
    LegacyStackSynthesizer the cloud assembly names no role (tests/test_aws_cdk.py), so the CLI
    deploys with the caller's credentials on a never-bootstrapped account."""
    cli = CdkCli(python="/venv/bin/python")
    ctx = {names.CTX_OWNER: "alice", names.CTX_AMI_PREFIX + "g4dn.2xlarge": "ami-0a1b2c3d"}
    assert cli.deploy_command("gpu-rehearsal-g4dn-2xlarge", ctx) == [
        str(CDK_DIR / "node_modules" / ".bin" / "cdk"),
        "deploy",
        "gpu-rehearsal-g4dn-2xlarge",
        "--exclusively",
        "--require-approval",
        "never",
        "--method=prepare-change-set",
        "--change-set-name",
        "gpu-rehearsal-deploy",
        "--app",
        "/venv/bin/python app.py",
        "--no-notices",
        "--no-version-reporting",
        "--context",
        "rig:owner=alice",
        "--context",
        "rig:ami:g4dn.2xlarge=ami-0a1b2c3d",
    ]
    assert not any("role" in part.lower() for part in cli.deploy_command("s", ctx))


def test_the_pinned_cli_knows_the_options_deploy_uses() -> None:
    """--method=prepare-change-set and --change-set-name exist in the pinned CLI's own help."""
    import subprocess

    cli = CdkCli()
    proc = subprocess.run(
        [str(cli.binary), "deploy", "--help"],
        cwd=CDK_DIR,
        env=cli.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in (
        "prepare-change-set",
        "--change-set-name",
        "--require-approval",
        "--exclusively",
    ):
        assert option in proc.stdout


def test_pinned_cdk_cli_version() -> None:
    import json

    pkg = json.loads((CDK_DIR / "package.json").read_text())
    lock = json.loads((CDK_DIR / "package-lock.json").read_text())
    pinned = pkg["devDependencies"]["aws-cdk"]
    assert pinned[0].isdigit()  # exact, no ^ or ~
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == pinned


def test_destroy_skips_aws_when_disabled_and_nothing_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`make destroy` runs the AWS part for Azure-only users too: no credentials needed then,
    and no scan is claimed."""
    config = tmp_path / "rig.toml"
    config.write_text("[aws]\nenabled = false\n", encoding="utf-8")
    rc = main(["destroy", "aws", "--config", str(config), "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "nothing to destroy (no scan ran)" in out and "0 left" not in out


def test_only_the_aws_package_imports_boto3():
    """#15 Shape: AWS calls live in rig/aws/ (the lean install without the aws extra must import
    everything else; the one-line missing-extra messages depend on it)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("rig/**/*.py"), *root.glob("bench/**/*.py")]:
        if path.is_relative_to(root / "rig" / "aws"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )  # fmt: skip
            if any(n.split(".")[0] in ("boto3", "botocore") for n in names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
