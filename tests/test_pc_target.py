"""Benching the real PC later: `--target pc=http://HOST:11434` is the PC (kind local), never
"cloud", and `--resume RUN_ID` adds it to the earlier run keeping the earlier targets' kinds
(issue 17, item 13). The PC's Ollama is the loopback stand-in serving docs/api.md payloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fake_ollama import FakeOllama

from bench.schema import RunMeta, TargetInfo
from bench.store import RunStore
from bench.targets import parse_target

ROOT = Path(__file__).resolve().parent.parent


def test_pc_names_are_the_users_pc_and_other_names_are_not():
    for name in ("pc", "pc-wsl"):
        info = parse_target(f"{name}=http://192.0.2.5:11434", "ollama").info
        assert info.kind == "local" and info.label == f"your PC ({name})"
    assert parse_target("vm=http://127.0.0.1:8080@openai", "ollama").info.kind == "cloud"


def test_resume_adds_the_pc_and_keeps_the_earlier_cloud_target(tmp_path):
    results = tmp_path / "results"
    store = RunStore.create(results, "20261128T101500Z")
    cloud = TargetInfo(
        name="aws-g4dn.2xlarge",
        url="",
        backend="ollama",
        label="aws g4dn.2xlarge",
        kind="cloud",
        gpu="t4",
        usd_per_hour=0.31,
    )
    store.write_meta(
        RunMeta(run_id=store.dir.name, started_at="2026-11-28T10:15:00Z", targets=[cloud])
    )
    with FakeOllama() as pc:
        pc.models.add("llama3:8b")
        proc = subprocess.run(
            [
                sys.executable, "-m", "bench", "run", "--resume", store.dir.name,
                "--target", f"pc={pc.url}", "--models", "llama3:8b", "--workloads", "chat-en",
                "--repetitions", "1", "--quick", "--no-report", "--results-dir", str(results),
                "--state-dir", str(tmp_path / "none"),
            ],
            cwd=ROOT,
            env={**os.environ, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    meta = json.loads((store.dir / "meta.json").read_text(encoding="utf-8"))
    kinds = {t["name"]: (t["kind"], t.get("gpu")) for t in meta["targets"]}
    assert kinds == {"aws-g4dn.2xlarge": ("cloud", "t4"), "pc": ("local", None)}
    rows = [json.loads(line) for line in (store.dir / "results.jsonl").read_text().splitlines()]
    assert rows and {r["target"] for r in rows} == {"pc"}
