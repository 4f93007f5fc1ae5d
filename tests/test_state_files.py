"""State files a command cannot use end in one line with the fix, in every command that reads
them — never a traceback (issue 17, item 2).

Each command runs as a user runs it (`python -m rig ...`, `python -m bench run`), against a
temporary .state/ holding an empty file, a corrupt one, one written by a newer version and one
from the other cloud. None of these paths reaches a cloud: the files fail before any call, and
the other-cloud cases run with that cloud disabled in the profile.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rig import state

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


def vm(cloud: str = "aws") -> state.VmState:
    name, kind = (
        ("aws-g4dn.2xlarge", "g4dn.2xlarge")
        if cloud == "aws"
        else ("azure-Standard_NC8as_T4_v3", "Standard_NC8as_T4_v3")
    )
    return state.VmState(
        name=name,
        cloud=cloud,  # type: ignore[arg-type]
        region="eu-west-1" if cloud == "aws" else "westeurope",
        instance_type=kind,
        gpu="t4",
        host="203.0.113.10",  # TEST-NET-3: never contacted (these commands fail first)
        ssh_user="ubuntu",
        ssh_key=".state/id_ed25519",
        spot=True,
        price=state.Price(0.3, "spot", "test", state.iso(T0), 0.838),
        deployed_at=state.iso(T0),
        deadline=state.iso(T0 + dt.timedelta(hours=4)),
    )


BAD_FILES = {
    "empty": ("", "the state file is empty"),
    "corrupt": ('{"name": "aws-g4dn.2xlarge", "cloud": ', "not valid JSON (line 1"),
    "future": (
        json.dumps({**vm().to_json(), "schema": state.SCHEMA + 1, "new_field": 1}),
        f"newer gpu-rehearsal (state schema {state.SCHEMA + 1}",
    ),
    "old-format": (
        json.dumps({k: v for k, v in vm().to_json().items() if k not in ("deadline", "schema")}),
        "missing deadline",
    ),
    "bad-ssh-port": (
        json.dumps({**vm().to_json(), "extra": {"ssh_port": "2222"}}),
        "extra.ssh_port is '2222', not a TCP port (1-65535)",
    ),
    "wrong-type": (
        json.dumps({**vm().to_json(), "price": {"usd_per_hour": "cheap"}}),
        "price.usd_per_hour: input should be a valid number",
    ),
}

COMMANDS = {
    "status": ["-m", "rig", "status", "--offline"],
    "provision": ["-m", "rig", "provision", "all"],
    "destroy aws": ["-m", "rig", "destroy", "aws"],
    "destroy azure": ["-m", "rig", "destroy", "azure"],
}


def run(
    args: list[str], state_dir: Path, config: Path, tmp_path: Path
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        # No cloud is reachable or configured: a path that tried one would fail differently.
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AZURE_CONFIG_DIR": str(tmp_path / "no-azure"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "ARM_CLIENT_ID"):
        env.pop(key, None)
    extra = ["--state-dir", str(state_dir)]
    if args[1] == "rig":
        extra += [] if args[2] == "status" else ["--config", str(config)]
    else:
        extra += ["--results-dir", str(tmp_path / "results"), "--config", str(config)]
    return subprocess.run(
        [sys.executable, *args, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", [*COMMANDS, "bench run"])
def test_an_unusable_state_file_is_one_line_naming_it_and_the_fix(
    command, kind, tmp_path, profile_file
):
    text, said = BAD_FILES[kind]
    state_dir = tmp_path / ".state"
    state_dir.mkdir()
    path = state_dir / "aws-g4dn.2xlarge.json"
    path.write_text(text, encoding="utf-8")
    args = COMMANDS.get(command, ["-m", "bench", "run", "--models", "llama3:8b"])
    proc = run(args, state_dir, profile_file(), tmp_path)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and said in lines[0], lines[0]
    # ... and the fix: update for a newer file, set it aside otherwise.
    assert ("git pull" in lines[0]) if kind == "future" else ("_aws-g4dn.2xlarge.json" in lines[0])
    assert path.read_text(encoding="utf-8") == text  # nothing rewrote or removed it


@pytest.mark.parametrize(
    ("command", "other"),
    [
        ("status", "azure"),
        ("destroy aws", "azure"),
        ("destroy azure", "aws"),
        ("provision", "azure"),
    ],
)
def test_a_state_from_the_other_cloud_is_left_to_that_cloud(command, other, tmp_path, profile_file):
    state_dir = tmp_path / ".state"
    state.write(vm(other), state_dir)
    config = profile_file(("aws", "enabled", "false"), ("azure", "enabled", "false"))
    args = COMMANDS[command]
    if command == "provision":
        args = ["-m", "rig", "provision", "aws-g4dn.2xlarge"]
    proc = run(args, state_dir, config, tmp_path)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    if command == "status":
        assert proc.returncode == 0 and vm(other).name in out
    elif command == "provision":
        # A target that is not deployed is bad input (exit 2): the line names the VM it does
        # know about as the fix; nothing is provisioned.
        assert proc.returncode == 2 and f"use one of: {vm(other).name}, or all" in out
    else:
        assert proc.returncode == 0, out
        assert any(s in out for s in ("skipped", "not scanned", "no scan ran")), out
    assert state.read_all(state_dir) == [vm(other)]  # the other cloud's file is untouched


def test_a_file_named_for_another_vm_is_refused_before_it_can_be_removed(tmp_path):
    state_dir = tmp_path / ".state"
    path = state.write(vm(), state_dir)
    moved = path.with_name("aws-g5.2xlarge.json")
    path.rename(moved)
    with pytest.raises(state.StateError, match=r"rename it to aws-g4dn\.2xlarge\.json"):
        state.read_all(state_dir)


def test_files_written_before_the_schema_field_still_load(tmp_path):
    state_dir = tmp_path / ".state"
    state_dir.mkdir()
    old = {k: v for k, v in vm().to_json().items() if k != "schema"}
    (state_dir / "aws-g4dn.2xlarge.json").write_text(json.dumps(old), encoding="utf-8")
    (loaded,) = state.read_all(state_dir)
    assert loaded == vm() and loaded.schema == state.SCHEMA
    assert state.write(loaded, state_dir).read_text().count('"schema": 1') == 1


def test_two_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    from bench.store import RunStore

    first = RunStore.create(tmp_path, "20261128T101500Z")
    second = RunStore.create(tmp_path, "20261128T101500Z")
    assert first.dir.name == "20261128T101500Z" and second.dir.name == "20261128T101500Z-2"


@pytest.mark.parametrize("cloud", ["aws", "azure"])
@pytest.mark.parametrize("where", ["a-file", "under-a-file"])
def test_a_deploy_whose_state_dir_cannot_be_written_stops_before_anything(
    cloud: str, where: str, tmp_path: Path
) -> None:
    """The state file is written once the VM exists: before this check, a state dir that could
    not take it failed there — with the VM billing and no file naming it for make destroy. Now
    the deploy refuses before its preflight (no credentials are even asked for)."""
    blocker = tmp_path / "state"
    blocker.write_text("a file\n")
    state_dir = blocker if where == "a-file" else blocker / "sub"
    config = tmp_path / "rig.toml"
    config.write_text((ROOT / "rig.toml").read_text())
    proc = run(["-m", "rig", "deploy", cloud, "--yes"], state_dir, config, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and err.count("\n") == 0, err
    assert err.startswith(f"--state-dir {state_dir}: ") and "(nothing was created)" in err
    assert "preflight" not in proc.stdout and blocker.read_text() == "a file\n"
