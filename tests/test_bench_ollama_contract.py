"""The `ollama` backend and the runner against Ollama's documented payloads (tests/fake_ollama.py
serves the examples of docs/api.md on loopback)."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import pytest
from fake_ollama import DOC_CHAT_FINAL, TEMPLATE_OPEN, FakeOllama, tokenize

from bench.backends import OllamaBackend
from bench.http import RequestFailed, TargetLost
from bench.metrics import measure
from bench.runner import Plan, Runner, Target
from bench.schema import RequestResult, TargetInfo
from bench.store import RunStore
from bench.workload import requests


@pytest.fixture
def fake():
    with FakeOllama() as server:
        yield server


def chat_request():
    return requests("chat-en")[0]


def test_chat_stream_reads_server_timings_in_nanoseconds(fake):
    # The documented final object's timings, field for field (docs/api.md "Chat Request
    # (Streaming)"): durations in nanoseconds.
    fake.final_fields = {
        k: DOC_CHAT_FINAL[k]
        for k in (
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
            "load_duration",
        )
    }
    stream = OllamaBackend(fake.url).chat("mistral:latest", chat_request())
    assert stream.text == "The sky is blue."
    assert len(stream.chunk_times) == 5 and stream.first_answer_at == stream.chunk_times[0]
    assert stream.output_tokens == 282 and stream.prompt_tokens == 26
    assert math.isclose(stream.decode_s, 4.535599) and math.isclose(stream.prefill_s, 0.342546)
    assert math.isclose(stream.load_s, 0.001334875)
    m = measure(stream)
    assert m.decode_source == "server"
    # eval_count tokens were sampled in eval_count - 1 forward passes: the runner starts
    # eval_duration at the first sample (runner/ollamarunner/runner.go:506-508, 701-702 at
    # v0.9.2), so the per-pass rate is (eval_count - 1) / eval_duration, as llama-bench's tg
    assert math.isclose(m.decode_tok_s, 281 / 4.535599)
    assert math.isclose(m.server_prompt_tok_s, 26 / 0.342546)
    assert math.isclose(m.server_ttft_s, 0.342546 + 0.001334875)  # prefill + this load
    assert m.prefill_cold is None  # Ollama does not say what it reused
    sent = fake.requests[-1][1]
    assert sent["stream"] is True and sent["options"]["temperature"] == 0.0
    assert sent["options"]["seed"] == 42 and sent["options"]["num_ctx"] == 4096
    assert sent["options"]["num_predict"] == 256


def test_thinking_counts_for_ttft_and_decode_but_not_the_answer(fake):
    """A thinking model streams message.thinking first (api/types.go Message.Thinking): TTFT is
    to the first token of either kind, the answer's own TTFT is later, and the client's decode
    rate counts thinking chunks too instead of mixing the server's count with answer chunks."""
    fake.thinking = ["Rayleigh", " scattering", " explains", " it", "."]
    stream = OllamaBackend(fake.url).chat("mistral:latest", chat_request())
    assert stream.thinking == "Rayleigh scattering explains it."
    assert stream.text == "The sky is blue."
    # eval_count counts every sampled token: 5 thinking + 5 answer + the end-of-sequence token
    # (runner.go:506 counts it before the EOS check at :517 ends the sequence unsent)
    assert len(stream.chunk_times) == 10 and stream.output_tokens == 11
    assert stream.stop_reason == "stop"
    m = measure(stream)
    assert m.answer_ttft_s > m.ttft_s + 4 * 0.01 * 0.9  # five thinking tokens 10 ms apart
    assert m.client_decode_tok_s == pytest.approx(
        9 / (stream.chunk_times[-1] - stream.chunk_times[0])
    )
    # the server's, thinking tokens included: 10 forward passes after the first sample, 10 ms each
    assert m.decode_tok_s == pytest.approx(10 / 0.1)


def test_reasoning_inside_content_is_split_from_the_answer(fake):
    """Ollama 0.9.x fills message.thinking only when the request says "think": true
    (server/routes.go:1518-1525 at v0.9.2), which a model without the capability refuses
    (server/images.go:158): the bench does not send it, so a thinking model's reasoning comes
    inside content, tags and all. It is split off as Ollama's thinking.Parser would."""
    fake.tokens = ["<think>", "\n", "Light", " scat", "ters", ".</", "think>", "\n\n", "Blue", "."]
    stream = OllamaBackend(fake.url).chat("mistral:latest", chat_request())
    assert stream.thinking == "Light scatters." and stream.text == "Blue."
    assert len(stream.chunk_times) == 10  # every token of either kind
    assert stream.first_answer_at == stream.chunk_times[8]  # "Blue", after the reasoning
    m = measure(stream)
    assert m.answer_ttft_s > m.ttft_s


def test_an_absent_prompt_eval_count_is_a_prefill_served_from_cache(fake):
    """Ollama before 0.2 counted evaluated prompt tokens only, and `omitempty` dropped the 0 of
    a prompt served whole from its cache (ollama/ollama#2068, #3427; fixed by #5371). Such a
    row is flagged, not given a prompt rate; eval_duration 0 (omitted too) gives no server
    decode rate and no division by zero."""
    fake.final_fields = {"prompt_eval_count": None, "eval_duration": None, "load_duration": None}
    stream = OllamaBackend(fake.url).chat("mistral:latest", chat_request())
    assert (stream.prompt_tokens, stream.prompt_eval_tokens, stream.load_s) == (None, 0, None)
    m = measure(stream)
    assert m.prefill_cold is False and m.prompt_tok_s is None and m.server_prompt_tok_s is None
    assert m.server_ttft_s == pytest.approx(stream.prefill_s)  # no load_duration: none counted
    assert m.server_decode_tok_s is None and m.decode_source == "client"


def test_model_not_found_is_a_request_failure_with_the_server_message(fake):
    # server/routes.go:1646 at v0.9.2: fmt.Sprintf("model %q not found, try pulling it first")
    with pytest.raises(
        RequestFailed, match='HTTP 404: model "nope:1b" not found, try pulling it first'
    ):
        OllamaBackend(fake.url).chat("nope:1b", chat_request())


def test_error_object_mid_stream_fails_the_request(fake):
    fake.fail_mid_stream = "an error was encountered while running the model: unexpected EOF"
    with pytest.raises(RequestFailed, match="unexpected EOF"):
        OllamaBackend(fake.url).chat("mistral:latest", chat_request())


def test_ps_gives_size_and_share_on_gpu(fake):
    backend = OllamaBackend(fake.url)
    assert backend.loaded("mistral:latest") is None  # /api/ps lists loaded models only
    backend.chat("mistral:latest", chat_request())
    loaded = backend.loaded("mistral:latest")
    assert (loaded.size, loaded.size_vram, loaded.gpu_share) == (5137025024, 5137025024, 1.0)
    fake.partial_vram = True
    assert backend.loaded("mistral:latest").gpu_share == pytest.approx(0.5)
    assert backend.loaded("absent:1b") is None
    # expires_at = the request's keep_alive from now (the backend sends "30m", so the model
    # stays loaded between a target's requests; docs/api.md "keep_alive", default 5m)
    (entry,) = backend.http.json_object("GET", "/api/ps")["models"]
    expires = dt.datetime.fromisoformat(entry["expires_at"]).timestamp()
    assert expires - time.time() == pytest.approx(30 * 60, abs=30)


def test_pull_reports_progress_including_chunks_without_completed(fake):
    seen = []
    backend = OllamaBackend(fake.url)
    backend.ensure_model("llama3:8b", lambda s, c, t: seen.append((s, c, t)))
    assert seen[0] == ("pulling manifest", None, None)
    assert ("downloading digestname", None, 2142590208) in seen
    assert ("downloading digestname", 241970, 2142590208) in seen
    assert seen[-1][0] == "success"
    assert backend.has_model("llama3:8b")
    pulls = [r for r in fake.requests if r[0] == "POST /api/pull"]
    backend.ensure_model("llama3:8b")  # present now: no second pull
    assert [r for r in fake.requests if r[0] == "POST /api/pull"] == pulls


def test_pull_error_in_stream_is_a_request_failure(fake):
    with pytest.raises(RequestFailed, match="file does not exist"):
        OllamaBackend(fake.url).pull("hf.co/nobody/nothing:Q4_K_M")


def test_unreachable_server_is_target_lost():
    backend = OllamaBackend("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(TargetLost):
        backend.chat("mistral:latest", chat_request())
    assert backend.alive() is False


def run(fake_url: str, tmp_path: Path, models: list[str], reps: int = 2) -> tuple[RunStore, Runner]:
    store = RunStore.create(tmp_path, "run")
    info = TargetInfo(name="fake", url=fake_url, backend="ollama", gpu="t4")
    plan = Plan(models=models, workloads=["chat-en"], repetitions=reps, quick=True)
    runner = Runner(store, [Target(info, OllamaBackend(fake_url))], plan)
    runner.run()
    return store, runner


def test_runner_writes_one_line_per_request_with_the_documented_metrics(fake, tmp_path):
    store, runner = run(fake.url, tmp_path, ["mistral:latest", "nope:1b"])
    lines = [json.loads(x) for x in store.results_path.read_text().splitlines()]
    ok = [x for x in lines if x["ok"]]
    failed = [x for x in lines if not x["ok"]]
    assert len(ok) == 2 and len(failed) == 2
    for line in ok:
        # The stand-in generates 5 tokens 10 ms apart and reports eval_count 5 and
        # eval_duration 50 ms: the server's rate is the primary decode figure.
        assert line["server_decode_tok_s"] == pytest.approx(100)
        assert line["decode_tok_s"] == line["server_decode_tok_s"]
        assert line["decode_source"] == "server"
        assert 40 < line["client_decode_tok_s"] < 110  # chunks over wall time, beside it
        assert line["size_bytes"] == line["size_vram_bytes"] == 5137025024
        assert line["ttft_s"] > 0 and line["decode_tok_s"] > 0 and line["e2e_s"] > 0
        assert line["itl_p50_ms"] >= 5  # the fixture spaces tokens 10 ms apart
        assert line["load_s"] == pytest.approx(fake.load_s)  # the warm-up's load_duration
    assert all(
        x["error"].startswith("model unavailable: ollama pull nope:1b")
        and "file does not exist" in x["error"]
        for x in failed
    )
    # /api/show's details and architecture are kept for the report; tokenizer arrays are not
    shown = runner.models["fake"]["mistral:latest"]
    assert shown["details"]["quantization_level"] == "Q4_0"
    assert shown["model_info"]["llama.attention.head_count_kv"] == 8
    assert shown["model_info"]["general.parameter_count"] == 8030261248
    assert not any(k.startswith("tokenizer.") for k in shown["model_info"])
    assert "nope:1b" not in runner.models["fake"]
    # the warm-up request is sent but never written
    chats = [r for r in fake.requests if r[0] == "POST /api/chat"]
    assert len([c for c in chats if c[1]["model"] == "mistral:latest"]) == 3


def test_a_lost_target_gets_its_remaining_work_marked_failed(tmp_path):
    fake = FakeOllama(token_delay_s=0.05)
    fake.thread.start()
    store = RunStore.create(tmp_path, "run")
    info = TargetInfo(name="fake", url=fake.url, backend="ollama")
    plan = Plan(
        models=["mistral:latest"], workloads=["chat-en", "chat-ja"], repetitions=3, quick=True
    )
    progress_seen: list[int] = []

    def progress(name: str, done: int, total: int, status: str) -> None:
        progress_seen.append(done)
        if done == 2 and fake.thread.is_alive():
            fake.stop()  # the VM disappears after two measured requests

    (outcome,) = Runner(store, [Target(info, OllamaBackend(fake.url))], plan, progress).run()
    results = store.results()
    assert len(results) == 6  # nothing measured is lost, nothing planned is forgotten
    assert [r.ok for r in results[:2]] == [True, True]
    assert all(not r.ok and r.error.startswith("target lost") for r in results[2:])
    assert outcome.lost and outcome.measured == 2 and outcome.failed == 4
    assert isinstance(results[0], RequestResult)


# -- prefix caching --------------------------------------------------------------------------


def test_the_stand_in_serves_a_repeated_prompt_from_its_cache_as_ollama_does(fake):
    """The control: without a nonce the second identical prompt is served from the cached
    prefix (all but one token), prompt_eval_count still says the whole prompt, and the prompt
    rate computed from it is inflated. This is what every measured row looked like before."""
    backend = OllamaBackend(fake.url)
    req = requests("long-context", quick=True)[0]
    first = measure(backend.chat("mistral:latest", req))
    again = measure(backend.chat("mistral:latest", req))
    cold, warm = fake.prefills[-2:]
    assert cold.reused == 0 and warm.reused == warm.prompt_tokens - 1
    assert again.server_prompt_tok_s > 50 * first.server_prompt_tok_s
    assert again.ttft_s < first.ttft_s / 5


def test_every_measured_prefill_is_cold(fake, tmp_path):
    """Warm-up and repetitions back to back, as a run sends them: each prompt opens with its
    own nonce, so the stand-in's cache can only reuse the chat template's opening tokens, and
    each row's prompt rate is the cold one (1 / prefill_s_per_token)."""
    store = RunStore.create(tmp_path, "run")
    info = TargetInfo(name="fake", url=fake.url, backend="ollama")
    plan = Plan(["mistral:latest"], ["chat-en", "long-context"], 3, quick=True)
    Runner(store, [Target(info, OllamaBackend(fake.url))], plan).run()
    rows = store.results()
    assert len(rows) == 6 and all(r.ok for r in rows)
    chats = [body for path, body in fake.requests if path == "POST /api/chat"]
    assert len(chats) == len(fake.prefills) == 2 + 6  # a warm-up per context size
    for prefill in fake.prefills:
        assert prefill.reused <= len(TEMPLATE_OPEN), prefill
    nonces = [body["messages"][0]["content"].split("\n", 1)[0] for body in chats]
    assert len(set(nonces)) == len(nonces)
    assert len({n[0] for n in nonces}) == len(nonces)  # they differ from their first letter
    cold_rate = 1 / fake.prefill_s_per_token
    for r in rows:
        assert r.nonce in nonces
        # at most the template's opening tokens came from the cache
        assert (
            cold_rate
            <= r.prompt_tok_s
            <= cold_rate * r.prompt_tokens / (r.prompt_tokens - len(TEMPLATE_OPEN))
        )
        # loaded by the warm-up: only the scheduler's own time is in the measured request
        assert r.server_ttft_s == pytest.approx(r.prefill_s + fake.SCHEDULER_NS / 1e9)
    long_rows = [r for r in rows if r.workload == "long-context"]
    short_rows = [r for r in rows if r.workload == "chat-en"]
    assert min(r.ttft_s for r in long_rows) > max(r.ttft_s for r in short_rows)
    # Each context size loaded the model once (a new num_ctx is a new runner), on its warm-up:
    # the load is in the warm-up's load_duration (kept as load_s), never in a measured request.
    assert [n for _, n in fake.loads] == sorted({r.num_ctx for r in rows}, reverse=True)
    assert all(r.load_s == pytest.approx(fake.load_s) for r in rows)


def test_the_nonce_leaves_only_the_prompts_fixed_head_to_the_cache(fake, tmp_path):
    """What no nonce in the user's message can defeat. /api/chat renders the model's template
    and, when the request has no system message, prepends the Modelfile's SYSTEM
    (server/routes.go:1505-1508 at v0.9.2); templates may carry a default system text of their
    own. Every prompt opens with that same head (BOS, the role header, the system text, the
    user's header), and findLongestCacheSlot reuses it (runner/ollamarunner/cache.go). Ollama
    has no switch to skip its cache (the llama runner passes cachePrompt true,
    runner/llamarunner/runner.go:601). prompt_eval_count counts the head, prompt_eval_duration
    does not (runner.go:699-700), so an Ollama row's prompt_tok_s is cold for everything after
    the head and overstates a cold prefill by prompt / (prompt - head): pinned here."""
    fake.system = "You are a helpful assistant. Answer briefly, precisely and in plain words."
    store = RunStore.create(tmp_path, "run")
    info = TargetInfo(name="fake", url=fake.url, backend="ollama")
    Runner(store, [Target(info, OllamaBackend(fake.url))], Plan(
        ["mistral:latest"], ["chat-en", "long-context"], 2, quick=True
    )).run()  # fmt: skip
    rows = store.results()
    marker = "NONCE"
    rendered = tokenize(
        [{"role": "system", "content": fake.system}, {"role": "user", "content": marker}]
    )
    head = rendered.index(marker)
    assert head > len(TEMPLATE_OPEN) + 10  # the system text is in it
    # A fresh runner (each load) starts empty; after that, exactly the head is reused each time.
    assert [p.reused for p in fake.prefills] == [0, head, head, 0, head, head]
    cold_rate = 1 / fake.prefill_s_per_token
    for r in rows:
        assert r.prefill_cold is None  # Ollama does not say what it reused
        overstated = r.prompt_tokens / (r.prompt_tokens - head)
        assert r.prompt_tok_s == pytest.approx(cold_rate * overstated, rel=0.02)
    long_rows = [r for r in rows if r.workload == "long-context"]
    assert all(r.prompt_tokens / (r.prompt_tokens - head) < 1.05 for r in long_rows)


class RecordingSampler:
    """A GpuSampler stand-in that records when the runner marks the GPU window (#13.4)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.windows: list[tuple[float, float]] = []

    def mark(self) -> float:
        self.events.append("mark")
        return time.monotonic()

    def window(self, start: float, end: float, wait_s: float | None = None):
        from bench.gpu import GpuStats

        self.windows.append((start, end))
        return GpuStats(None, None, None)


def test_the_gpu_window_ends_with_the_stream_not_after_the_code_check(fake, tmp_path, monkeypatch):
    """#13.4: the end mark is taken when the stream ends; the code check (up to seconds in the
    sandbox) runs after it, so its time is never averaged into the request's GPU figures."""
    import bench.runner

    events: list[str] = []

    def slow_judge(request, text):
        events.append("judge")
        time.sleep(0.3)  # a sandboxed code check takes this long and more
        return bench.runner.Verdict()

    monkeypatch.setattr(bench.runner, "judge", slow_judge)
    sampler = RecordingSampler(events)
    store = RunStore.create(tmp_path, "run")
    info = TargetInfo(name="fake", url=fake.url, backend="ollama", gpu="t4")
    plan = Plan(models=["mistral:latest"], workloads=["code"], repetitions=1, quick=True)
    Runner(store, [Target(info, OllamaBackend(fake.url), sampler)], plan).run()
    assert events.count("judge") >= 1
    # Every judge follows the request's two marks (start, end of stream), never falls between.
    for i, event in enumerate(events):
        if event == "judge":
            assert events[i - 2 : i] == ["mark", "mark"], events
    assert all(end - start < 0.3 for start, end in sampler.windows), sampler.windows


def test_the_reports_prefill_ttft_is_the_servers_when_it_has_one():
    """#13.3: TTFT over an SSH tunnel carries the round trip; the report's prefill figures use
    the server's own load + prefill (server_ttft_s) and fall back to the client's only where the
    server reports none; a prefill served from cache has no prefill TTFT at all."""
    from bench.report.context import prefill_ttft

    base = {
        "target": "aws", "backend": "ollama", "model": "m", "workload": "chat-en",
        "case": "c", "rep": 1, "ok": True,
    }  # fmt: skip
    tunnel = RequestResult.from_json({**base, "ttft_s": 0.42, "server_ttft_s": 0.12})
    assert prefill_ttft(tunnel) == 0.12
    assert prefill_ttft(RequestResult.from_json({**base, "ttft_s": 0.42})) == 0.42
    cached = {**base, "ttft_s": 0.05, "server_ttft_s": 0.01, "prefill_cold": False}
    assert prefill_ttft(RequestResult.from_json(cached)) is None


def test_deployed_targets_are_benched_side_by_side(tmp_path):
    """#15.11: three stand-ins from one deploy are benched at once (a thread per target), not
    one after another: each target's first request waits at a barrier the other two must reach,
    which a sequential runner never would (it would break after the timeout)."""
    import threading

    barrier = threading.Barrier(3, timeout=20)

    class Meeting(OllamaBackend):
        met = False

        def chat(self, model, request):
            if not self.met:
                self.met = True
                barrier.wait()
            return super().chat(model, request)

    with FakeOllama() as a, FakeOllama() as b, FakeOllama() as c:
        store = RunStore.create(tmp_path, "run")
        targets = [
            Target(TargetInfo(name=name, url=f.url, backend="ollama", gpu="t4"), Meeting(f.url))
            for name, f in (("aws-g4dn", a), ("aws-g5", b), ("aws-g6", c))
        ]
        plan = Plan(models=["mistral:latest"], workloads=["chat-en"], repetitions=1, quick=True)
        outcomes = Runner(store, targets, plan).run()
    assert not barrier.broken
    assert [o.lost for o in outcomes] == [None, None, None]
    rows = [json.loads(x) for x in store.results_path.read_text().splitlines()]
    assert {r["target"] for r in rows if r["ok"]} == {"aws-g4dn", "aws-g5", "aws-g6"}
