"""Bench building blocks: nvidia-smi parsing, metrics, workloads and judging, store, targets."""

from __future__ import annotations

import json
import math

import pytest

from bench import gpu, workload
from bench.metrics import Stream, measure, percentile, summarize
from bench.schema import RequestResult
from bench.store import RunStore
from bench.targets import TargetError, from_state_file, parse_target

# nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu,power.draw
#            --format=csv,noheader,nounits   (one line per GPU per sample)
SMI_T4 = "0, Tesla T4, 5123, 15360, 87, 69.84\n"
SMI_NA = "0, NVIDIA A10G, 20480, 23028, 45, [N/A]\n"
SMI_UNITS = "0, NVIDIA L4, 1234 MiB, 23034 MiB, 12 %, 30.50 W\n"


def test_nvidia_smi_csv_parsing():
    (t4,) = gpu.parse_csv(SMI_T4)
    assert (t4.index, t4.name, t4.memory_used_mib, t4.memory_total_mib) == (
        0,
        "Tesla T4",
        5123,
        15360,
    )
    assert (t4.utilization_pct, t4.power_w) == (87, 69.84)
    (a10g,) = gpu.parse_csv(SMI_NA)
    assert a10g.power_w is None and a10g.memory_used_mib == 20480
    (l4,) = gpu.parse_csv(SMI_UNITS)
    assert (l4.memory_used_mib, l4.utilization_pct, l4.power_w) == (1234, 12, 30.5)
    assert gpu.parse_csv("index, name, memory.used [MiB]\nNo devices were found\n") == []


def test_gpu_stats_peak_vram_mean_util_and_missing_power():
    samples = gpu.parse_csv(SMI_T4 + "0, Tesla T4, 6000, 15360, 93, [N/A]\n")
    stats = gpu.stats(samples)
    assert stats.vram_used_mib == 6000 and stats.gpu_util_pct == 90
    assert stats.power_w == 69.84
    assert gpu.stats([]) == gpu.GpuStats(None, None, None)


def test_metrics_from_chunk_times():
    stream = Stream(
        sent_at=10.0,
        token_times=[10.5, 10.6, 10.7, 10.9],
        done_at=11.0,
        text="abcd",
        prompt_tokens=100,
        output_tokens=4,
    )
    m = measure(stream)
    assert m.ttft_s == pytest.approx(0.5)
    assert m.decode_tok_s == pytest.approx(3 / 0.4)
    assert m.prompt_tok_s == pytest.approx(200)  # no server timing: prompt tokens / TTFT
    assert m.itl_p50_ms == pytest.approx(100) and m.itl_p95_ms == pytest.approx(190)
    assert m.e2e_s == pytest.approx(1.0)
    single = measure(Stream(0.0, [0.2], 0.3, "a"))
    assert single.decode_tok_s is None and single.itl_p50_ms is None and single.output_tokens == 1


def test_percentile_and_summary():
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
    s = summarize([10.0, 12.0, None, 14.0])
    assert (s.n, s.mean, s.median) == (3, 12.0, 12.0) and math.isclose(s.sd, 2.0)


def test_workloads_are_deterministic_and_plant_the_fact():
    a = workload.requests("long-context")
    b = workload.requests("long-context")
    assert [r.messages for r in a] == [r.messages for r in b]
    assert [r.case for r in a] == ["ctx1k", "ctx4k", "ctx16k", "ctx32k"]
    for req in a:
        text = req.messages[0]["content"]
        assert text.count("7314") == 1 and req.temperature == 0.0 and req.seed == 42
        assert len(text) / workload.CHARS_PER_TOKEN < req.num_ctx
    quick = workload.requests("long-context", quick=True, max_ctx=2048)
    assert [r.case for r in quick] == ["ctx1k"] and quick[0].num_predict <= 64


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(ValueError, match="chat-en, chat-ja, code, long-context"):
        workload.load("poetry")


def test_japanese_share_spots_drift_into_english_or_romaji():
    assert workload.japanese_share("空が青いのは光の散乱のためです。") == 1.0
    assert workload.japanese_share("Sora ga aoi no wa, hikari no sanran no tame desu.") == 0.0
    assert workload.japanese_share("空が青いのは Rayleigh 散乱のため") == pytest.approx(11 / 19)
    assert workload.japanese_share("12345 !!") is None


def test_long_context_and_code_judging():
    (ctx,) = workload.requests("long-context", quick=True)
    assert workload.judge(ctx, "The code is 7314.").correct is True
    assert workload.judge(ctx, "I don't know.").correct is False
    code = workload.requests("code")[0]
    good = (
        "```python\ndef is_palindrome(s):\n    t = [c.lower() for c in s if c.isalnum()]\n"
        "    return t == t[::-1]\n```"
    )
    assert workload.judge(code, good).correct is True
    assert (
        workload.judge(code, "```python\ndef is_palindrome(s):\n    return True\n```").correct
        is False
    )
    ja = workload.requests("chat-ja")[0]
    assert workload.judge(ja, "はい、そうです。").ja_share == 1.0


def test_store_appends_resumes_and_survives_a_torn_line(tmp_path):
    store = RunStore.create(tmp_path, "r1")
    ok = RequestResult("t", "ollama", "m", "chat-en", "explain", 0, True, decode_tok_s=5.0)
    bad = RequestResult("t", "ollama", "m", "chat-en", "explain", 1, False, error="boom")
    store.append(ok)
    store.append(bad)
    with store.results_path.open("a") as fh:
        fh.write('{"target": "t", "ok": tr')  # a crash mid-write
    assert store.finished() == {("t", "m", "chat-en", "explain", 0)}
    assert len(store.results()) == 2
    with pytest.raises(FileNotFoundError, match="--resume nope: no run there"):
        RunStore.open(tmp_path, "nope")
    assert json.loads(store.results_path.read_text().splitlines()[0])["decode_tok_s"] == 5.0


def test_target_parsing_errors_name_the_fix():
    assert parse_target("local", "ollama").info.url == "http://127.0.0.1:11434"
    spec = parse_target("vm=http://127.0.0.1:8080@openai", "ollama")
    assert (spec.info.name, spec.info.url, spec.info.backend) == (
        "vm",
        "http://127.0.0.1:8080",
        "openai",
    )
    for text, hint in [
        ("http://x", "write NAME=URL"),
        ("vm=ftp://x", "is not an http:// URL"),
        ("vm=http://127.0.0.1:1@vllm", "use @ollama or @openai"),
        ("bad name=http://127.0.0.1:1", "letters, digits"),
    ]:
        with pytest.raises(TargetError, match=hint):
            parse_target(text, "ollama")


def test_state_file_becomes_a_tunnelled_target(tmp_path):
    from rig import state

    # Written by rig.state.write, the deploys' own writer, so the bench reads what they write.
    vm = state.VmState(
        name="aws-g4dn.2xlarge",
        cloud="aws",
        region="eu-west-1",
        instance_type="g4dn.2xlarge",
        gpu="t4",
        host="203.0.113.10",
        ssh_user="ubuntu",
        ssh_key=".state/id_ed25519",
        spot=True,
        price=state.Price(0.31, "spot", "describe_spot_price_history", "2026-11-28T10:00:00+00:00"),
        deployed_at="2026-11-28T10:00:00+00:00",
        deadline="2026-11-28T14:00:00+00:00",
    )
    path = state.write(vm, tmp_path)
    spec = from_state_file(path)
    assert spec.info.gpu == "t4" and spec.info.usd_per_hour == 0.31 and spec.remote.user == "ubuntu"
    assert spec.remote.ssh_argv()[-1] == "ubuntu@203.0.113.10"
    path.write_text("{}")
    with pytest.raises(TargetError, match=r"not a state file this version can use.*missing name"):
        from_state_file(path)


def test_plan_skips_cases_beyond_a_models_trained_context():
    from bench.runner import Plan, plan_work

    plan = Plan(
        ["llama3:8b", "qwen2:7b"],
        ["long-context"],
        1,
        model_ctx={"llama3:8b": 8192, "qwen2:7b": 32768},
    )
    cases = {(w.model, w.request.case) for w in plan_work(plan, plan.models)}
    assert cases == {
        ("llama3:8b", "ctx1k"),
        ("llama3:8b", "ctx4k"),
        ("qwen2:7b", "ctx1k"),
        ("qwen2:7b", "ctx4k"),
        ("qwen2:7b", "ctx16k"),
    }
