"""What a bench run leaves in results/ (issue 17, items 3 and 4): nothing when it is refused or
stops before its first result line; `latest` at the last run that measured something, never at
itself; `--config PATH` read (and refused when it does not exist); one repetitions range.

The runs are real `bench run`s (bench.cli.main, in process) against the loopback Ollama stand-in
of tests/fake_ollama.py, a port nothing listens on, or a state file whose SSH tunnel cannot open.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_ollama import FakeOllama

from bench.cli import main
from rig import state
from rig.catalog import load_catalog
from rig.profile import REPETITIONS_RANGE, BenchSection

ROOT = Path(__file__).resolve().parent.parent
T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
QUICK = ["--workloads", "chat-en", "--repetitions", "1", "--quick", "--no-report"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no rig.toml and no .state/ (so nothing deployed is found)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    return tmp_path


def bench(*argv: str) -> int:
    return main(["run", "--results-dir", "results", *argv])


def run_dirs(home: Path) -> list[str]:
    results = home / "results"
    return sorted(p.name for p in results.iterdir()) if results.is_dir() else []


@pytest.mark.parametrize(
    "target", ["bogus", "ftp://host", "a=ftp://host:21", "a=http://127.0.0.1:9@grpc", "a="]
)
def test_a_refused_target_leaves_no_run_directory(home, target, capsys):
    assert bench("--target", target, "--models", "llama3:8b", *QUICK) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"--target {target!r}") and "\n" not in err
    assert run_dirs(home) == []


def test_no_models_is_refused_before_a_run_directory_exists(home, capsys):
    (home / "rig.toml").write_text("[bench]\nmodels = []\n")
    assert bench("--target", "a=http://127.0.0.1:9", *QUICK) == 2
    err = capsys.readouterr().err
    assert err.startswith("rig.toml: bench.models: is empty") and err.count("\n") == 1
    assert run_dirs(home) == []


def test_a_tunnel_that_does_not_open_leaves_no_run_directory(home, capsys):
    # A deployed VM on loopback port 22 with no key: ssh is refused (or, where an sshd runs,
    # denied in BatchMode) at once; the run stops before its first request.
    vm = state.VmState(
        name="aws-g4dn.2xlarge", cloud="aws", region="eu-west-1", instance_type="g4dn.2xlarge",
        gpu="t4", host="127.0.0.1", ssh_user="nobody-here", ssh_key=str(home / "no-key"),
        spot=True, price=state.Price(0.3, "spot", "test", state.iso(T0), 0.838),
        deployed_at=state.iso(T0), deadline=state.iso(T0 + dt.timedelta(hours=4)),
    )  # fmt: skip
    state.write(vm, home / ".state")
    assert bench("--models", "llama3:8b", *QUICK) == 2
    assert "SSH tunnel to nobody-here@127.0.0.1 did not open" in capsys.readouterr().err
    assert run_dirs(home) == []


def test_latest_points_at_the_last_run_that_measured_something(home, capsys):
    with FakeOllama() as ollama:
        ollama.models.add("llama3:8b")
        assert bench("--target", f"pc={ollama.url}", "--models", "llama3:8b", *QUICK) == 0
    (good,) = [d for d in run_dirs(home) if d != "latest"]
    latest = home / "results" / "latest"
    assert latest.is_symlink() and latest.readlink() == Path(good)

    # Nothing answers: the run keeps its failed rows (nothing measured is ever lost, and
    # --resume can finish it), but `latest` stays at the run that has results.
    assert bench("--target", "vm=http://127.0.0.1:9", "--models", "llama3:8b", *QUICK) == 1
    dirs = [d for d in run_dirs(home) if d != "latest"]
    assert len(dirs) == 2 and latest.readlink() == Path(good)
    failed = next(d for d in dirs if d != good)
    rows = (home / "results" / failed / "results.jsonl").read_text().splitlines()
    assert rows and not any(json.loads(r)["ok"] for r in rows)


def test_resume_latest_never_points_latest_at_itself(home, capsys):
    with FakeOllama() as ollama:
        ollama.models.add("llama3:8b")
        assert bench("--target", f"pc={ollama.url}", "--models", "llama3:8b", *QUICK) == 0
        (good,) = [d for d in run_dirs(home) if d != "latest"]
        # Finish (here: add a target to) the latest run by its link's name.
        url = f"pc2={ollama.url}"
        assert bench("--resume", "latest", "--target", url, "--models", "llama3:8b", *QUICK) == 0
    latest = home / "results" / "latest"
    assert latest.readlink() == Path(good)
    meta = json.loads((home / "results" / good / "meta.json").read_text())
    assert {t["name"] for t in meta["targets"]} == {"pc", "pc2"}


def test_config_path_is_read_and_a_missing_one_refused(home, capsys):
    config = home / "elsewhere" / "my-rig.toml"
    config.parent.mkdir()
    config.write_text('[bench]\nmodels = ["qwen2:7b"]\nworkloads = ["chat-en"]\nrepetitions = 1\n')
    with FakeOllama() as ollama:
        ollama.models.add("qwen2:7b")
        argv = ["--target", f"pc={ollama.url}", "--quick", "--no-report"]
        assert bench("--config", str(config), *argv) == 0
    (run,) = [d for d in run_dirs(home) if d != "latest"]
    lines = (home / "results" / run / "results.jsonl").read_text().splitlines()
    rows = [json.loads(r) for r in lines]
    assert {(r["model"], r["workload"]) for r in rows} == {("qwen2:7b", "chat-en")}
    meta = json.loads((home / "results" / run / "meta.json").read_text())
    assert meta["profile"]["bench"]["models"] == ["qwen2:7b"]

    capsys.readouterr()
    assert bench("--config", str(home / "missing.toml"), "--target", "pc=http://h:1", *QUICK) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{home / 'missing.toml'}: no such file") and "\n" not in err


def test_without_rig_toml_the_bench_uses_the_built_in_defaults(home, capsys):
    # No rig.toml here and no --config: the defaults (the plan's models), not "models is empty".
    assert bench("--target", "pc=http://127.0.0.1:9", "--workloads", "nope") == 2
    assert "--workloads: 'nope' is not a workload" in capsys.readouterr().err
    assert run_dirs(home) == []


@pytest.mark.parametrize("reps", [0, REPETITIONS_RANGE[1] + 1])
def test_one_repetitions_range_for_the_cli_and_rig_toml(home, reps, capsys):
    low, high = REPETITIONS_RANGE
    assert bench("--target", "pc=http://127.0.0.1:9", "--repetitions", str(reps)) == 2
    assert f"--repetitions: {reps} — use {low} to {high}" in capsys.readouterr().err
    problems = BenchSection(repetitions=reps).check(load_catalog(), home)
    assert [p.message for p in problems] == [
        f"{reps} must be between {low} and {high} — e.g. repetitions = 3"
    ]
    assert run_dirs(home) == []


def test_ctrl_c_mid_run_names_the_run_and_the_command_that_finishes_it(tmp_path):
    """Ctrl-C after the first result line: the run stays, and the line says how to finish it
    (the run's own id: `latest` may still point at an earlier run)."""
    with FakeOllama(token_delay_s=0.2) as ollama:
        ollama.models.add("llama3:8b")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", "run", "--target", f"vm={ollama.url}",
             "--models", "llama3:8b", "--workloads", "chat-en", "--repetitions", "3",
             "--no-report", "--results-dir", str(tmp_path / "results"),
             "--state-dir", str(tmp_path / "none")],
            cwd=ROOT, env={**os.environ, "NO_COLOR": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = list((tmp_path / "results").glob("*/results.jsonl"))
            if rows and rows[0].read_text().strip():
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (run,) = [p for p in (tmp_path / "results").iterdir() if p.name != "latest"]
    assert err.strip().splitlines()[-1] == (
        f"interrupted — everything measured so far is in {run}; finish it with "
        f".venv/bin/bench run --resume {run.name}"
    )
    assert "Traceback" not in err
