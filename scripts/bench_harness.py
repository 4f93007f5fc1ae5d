"""Benchmark of the bench harness itself (a script that prints figures, not a timed test).

Prints:
1. client-vs-server decode difference in %, on the real llama.cpp server (make engine), and its
   cold prefill per prompt length (prompt tokens evaluated, cached, TTFT, prefill tok/s);
2. harness CPU seconds per 1,000 generated tokens (this process only; the server runs apart);
3. wall time of N concurrent targets vs the slowest target alone (loopback Ollama stand-ins
   with different token rates, so the engine's CPU use does not blur the harness's).

Run: .venv/bin/python scripts/bench_harness.py [--reps 3] [--targets 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_ollama import FakeOllama  # noqa: E402

from bench import engine  # noqa: E402
from bench.backends import OllamaBackend, OpenAIBackend  # noqa: E402
from bench.runner import Plan, Runner, Target  # noqa: E402
from bench.schema import TargetInfo  # noqa: E402
from bench.store import RunStore  # noqa: E402


def real_engine(reps: int) -> None:
    plan = Plan(
        [engine.MODEL_NAME], ["chat-en", "chat-ja", "code", "long-context"], reps, quick=True
    )
    with engine.LocalEngine(threads=2) as eng, tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(Path(tmp), "perf")
        info = TargetInfo(name="llama", url=eng.url, backend="openai")
        cpu0 = time.process_time()
        Runner(store, [Target(info, OpenAIBackend(eng.url), None, [engine.MODEL_NAME])], plan).run()
        cpu = time.process_time() - cpu0
        results = [r for r in store.results() if r.ok]
    diffs = [
        (r.client_decode_tok_s - r.server_decode_tok_s) / r.server_decode_tok_s * 100
        for r in results
        if r.client_decode_tok_s and r.server_decode_tok_s
    ]
    tokens = sum(r.output_tokens or 0 for r in results)
    print(f"requests measured: {len(results)}, output tokens: {tokens}")
    print(
        f"client vs server decode: median {statistics.median(diffs):+.2f} %, "
        f"min {min(diffs):+.2f} %, max {max(diffs):+.2f} %"
    )
    print(
        f"harness CPU: {cpu:.3f} s in all = {cpu / tokens * 1000:.3f} s per 1,000 tokens "
        "(includes the warm-up and the sandboxed code checks' process start-up)"
    )
    # Cold prefill per prompt length (medians over the repetitions): TTFT must grow with it.
    print("prompt tokens | evaluated | cached | server TTFT s | client TTFT s | prefill tok/s")
    by_case: dict[str, list] = {}
    for r in results:
        by_case.setdefault(f"{r.workload}/{r.case}", []).append(r)

    def med(rs: list, attr: str) -> float:
        return statistics.median(getattr(r, attr) or 0 for r in rs)

    for case, rs in sorted(by_case.items(), key=lambda kv: kv[1][0].prompt_tokens or 0):
        print(
            f"{med(rs, 'prompt_tokens'):>13.0f} | {med(rs, 'prompt_eval_tokens'):>9.0f} | "
            f"{med(rs, 'cached_prompt_tokens'):>6.0f} | {med(rs, 'server_ttft_s'):>13.3f} | "
            f"{med(rs, 'ttft_s'):>13.3f} | {med(rs, 'prompt_tok_s'):>13.0f}   {case}"
        )


def concurrency(n: int, reps: int) -> None:
    delays = [0.004 * (i + 1) for i in range(n)]  # target i streams at 1 / delay tokens/s
    fakes = [FakeOllama(tokens=["tok"] * 64, token_delay_s=d) for d in delays]
    for f in fakes:
        f.thread.start()
    plan = Plan(["mistral:latest"], ["chat-en"], reps, quick=True)

    def wall(subset: list[FakeOllama]) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore.create(Path(tmp), "perf")
            targets = [
                Target(TargetInfo(name=f"t{i}", url=f.url, backend="ollama"), OllamaBackend(f.url))
                for i, f in enumerate(subset)
            ]
            start = time.perf_counter()
            Runner(store, targets, plan).run()
            return time.perf_counter() - start

    try:
        slowest = wall([fakes[-1]])
        together = wall(fakes)
    finally:
        for f in fakes:
            f.stop()
    print(
        f"{n} concurrent targets: {together:.2f} s wall vs slowest alone {slowest:.2f} s "
        f"({(together / slowest - 1) * 100:+.1f} %)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--targets", type=int, default=3)
    args = parser.parse_args()
    concurrency(args.targets, args.reps)
    try:
        real_engine(args.reps)
    except engine.EngineMissing as exc:
        print(f"real engine part skipped: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
