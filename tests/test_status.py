"""`python -m rig status` from the state files: uptime, $ so far (upper bound), time to stop."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from rig import state
from rig.status import status_rows

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


def sample(name: str = "aws-g4dn.2xlarge") -> state.VmState:
    return state.VmState(
        name=name,
        cloud="aws",
        region="eu-west-1",
        instance_type="g4dn.2xlarge",
        gpu="t4",
        host="203.0.113.10",
        ssh_user="ubuntu",
        ssh_key=".state/keys/id_ed25519",
        spot=True,
        price=state.Price(0.30, "spot", "describe_spot_price_history", state.iso(T0), 0.838),
        deployed_at=state.iso(T0),
        deadline=state.iso(T0 + dt.timedelta(hours=4)),
        ids={"instance_id": "i-0123456789abcdef0"},
    )


def test_state_files_round_trip_with_private_permissions(tmp_path):
    path = state.write(sample(), tmp_path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    (back,) = state.read_all(tmp_path)
    assert back == sample()
    state.remove(back.name, tmp_path)
    assert state.read_all(tmp_path) == []


def test_status_rows_count_cost_and_time_to_the_deadline():
    (row,) = status_rows([sample()], T0 + dt.timedelta(hours=1, minutes=30), ask_cloud=False)
    assert row["hours_up"] == 1.5 and row["usd_so_far_at_most"] == 0.45
    assert row["minutes_to_deadline"] == 150 and row["provisioned"] is False
    assert row["verified"] is False and "state file only" in row["note"]


def test_a_cloud_that_cannot_be_asked_is_reported_not_guessed(monkeypatch):
    from rig import status
    from rig.problems import CommandError

    def no_credentials(s, now):
        raise CommandError("no AWS credentials — run aws configure")

    monkeypatch.setattr(status, "_provider", lambda cloud: no_credentials)
    (row,) = status_rows([sample()], T0)
    assert row["verified"] is False and row["state"] == "unknown"
    assert "could not ask aws: no AWS credentials" in row["note"]

    monkeypatch.setattr(status, "_provider", lambda cloud: lambda s, now: {"state": "stopped"})
    (row,) = status_rows([sample()], T0)
    assert row["verified"] is True and row["state"] == "stopped"


def test_status_command_reads_the_state_dir(tmp_path):
    state.write(sample(), tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rig",
            "status",
            "--state-dir",
            str(tmp_path),
            "--json",
            "--offline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    (row,) = json.loads(out)
    assert row["name"] == "aws-g4dn.2xlarge" and row["usd_per_hour"] == 0.30
    empty = subprocess.run(
        [sys.executable, "-m", "rig", "status", "--state-dir", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Nothing deployed" in empty


def test_bench_reads_what_the_deploy_writes(tmp_path):
    from bench.targets import from_state_dir

    state.write(sample(), tmp_path)
    (spec,) = from_state_dir(tmp_path)
    assert (spec.info.name, spec.info.gpu, spec.info.usd_per_hour) == (
        "aws-g4dn.2xlarge",
        "t4",
        0.30,
    )
    assert spec.remote.host == "203.0.113.10" and spec.remote.key == ".state/keys/id_ed25519"
