"""The run: every target gets the same work; targets run concurrently, and within a target the
requests run one at a time (one stream, as on the PC).

Every prompt, warm-ups included, opens with its own nonce, so no server can serve its prefill
from a prefix cache: prompt figures are cold prefills, as llama-bench's pp is.

Each request's result is appended to the store as soon as it completes. A request that fails
(an error, a malformed stream line, a stalled stream) while the server still answers its health
check is written as failed and the target goes on. A target that is lost (refused, tunnel
dropped, spot stop, server gone), or hit by an unexpected error, gets its remaining work written
as failed with the reason, and the others carry on: every planned request gets a line.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.backends import Backend, PullProgress
from bench.gpu import GpuSampler, GpuStats
from bench.http import RequestFailed, TargetLost
from bench.metrics import Stream, measure
from bench.schema import RequestResult, TargetInfo
from bench.store import RunStore, WorkKey, utc_now
from bench.workload import Request, Verdict, judge, requests

WARMUP_PREDICT = 8
RTT_PINGS = 5
ERRORS_LOG = "errors.log"  # tracebacks of unexpected errors, beside results.jsonl


@dataclass(frozen=True)
class Plan:
    models: list[str]
    workloads: list[str]
    repetitions: int
    quick: bool = False
    max_ctx: int | None = None
    # A model's trained context (catalog): longer cases are skipped for it, not run degraded.
    model_ctx: dict[str, int] = field(default_factory=dict)

    def requests(self) -> list[Request]:
        return [r for w in self.workloads for r in requests(w, self.quick, self.max_ctx)]


@dataclass
class Target:
    info: TargetInfo
    backend: Backend
    sampler: GpuSampler | None = None
    models: list[str] | None = None  # overrides Plan.models (e.g. the demo engine's one model)


@dataclass
class Work:
    model: str
    request: Request
    rep: int

    def key(self, target: str) -> WorkKey:
        return (target, self.model, self.request.workload, self.request.case, self.rep)


@dataclass
class TargetOutcome:
    name: str
    measured: int = 0
    failed: int = 0
    skipped: int = 0  # finished in an earlier run (--resume)
    lost: str | None = None
    errors: list[str] = field(default_factory=list)
    started_at: str = ""  # this session's wall time on the target (meta.json spans)
    finished_at: str = ""


# Called after each unit of work: (target name, units done so far, units in total, status line)
Progress = Callable[[str, int, int, str], None]


def plan_work(plan: Plan, models: list[str]) -> list[Work]:
    reqs = plan.requests()
    return [
        Work(m, r, rep)
        for m in models
        for r in reqs
        if r.num_ctx <= plan.model_ctx.get(m, r.num_ctx)
        for rep in range(plan.repetitions)
    ]


class Nonces:
    """Per-target prompt nonces whose first character cycles through 16 letters, so each of the
    last 15 prompts sent to a server differs from the next at its very first token (a random
    hex tail alone would share a first character one time in 16)."""

    LEADS = "ghjkmnpqrstvwxyz"  # 16 letters that are not hex digits

    def __init__(self) -> None:
        self._i = secrets.randbelow(len(self.LEADS))

    def next(self) -> str:
        lead = self.LEADS[self._i % len(self.LEADS)]
        self._i += 1
        return lead + secrets.token_hex(4)


class Runner:
    def __init__(
        self, store: RunStore, targets: list[Target], plan: Plan, progress: Progress | None = None
    ):
        self.store = store
        self.targets = targets
        self.plan = plan
        self.progress = progress or (lambda *_: None)
        self.finished = store.finished()
        self.models: dict[str, dict[str, dict]] = {}  # target -> model -> describe()

    def run(self) -> list[TargetOutcome]:
        outcomes: dict[str, TargetOutcome] = {}
        threads = []
        for target in self.targets:
            outcome = outcomes[target.info.name] = TargetOutcome(target.info.name)
            thread = threading.Thread(
                target=self._run_target,
                args=(target, outcome),
                name=f"bench-{target.info.name}",
                daemon=True,
            )
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()
        return [outcomes[t.info.name] for t in self.targets]

    def planned(self) -> set[WorkKey]:
        return {
            w.key(t.info.name)
            for t in self.targets
            for w in plan_work(self.plan, t.models or self.plan.models)
        }

    def missing(self) -> set[WorkKey]:
        """Planned work with no line in results.jsonl (neither measured nor failed)."""
        have = {(r.target, r.model, r.workload, r.case, r.rep) for r in self.store.results()}
        return self.planned() - have

    # -- one target --------------------------------------------------------------------------

    def _run_target(self, target: Target, outcome: TargetOutcome) -> None:
        outcome.started_at = utc_now()
        try:
            self._run_target_work(target, outcome)
        finally:
            outcome.finished_at = utc_now()

    def _run_target_work(self, target: Target, outcome: TargetOutcome) -> None:
        name = target.info.name
        work = plan_work(self.plan, target.models or self.plan.models)
        todo = [w for w in work if w.key(name) not in self.finished]
        outcome.skipped = len(work) - len(todo)
        total, done = len(work), outcome.skipped
        self.progress(name, done, total, "starting")
        by_model: dict[str, list[Work]] = {}
        for w in todo:
            by_model.setdefault(w.model, []).append(w)
        pending = list(todo)
        nonces = Nonces()
        try:
            if todo:
                self._round_trip(target)
            for model, items in by_model.items():
                try:
                    self.progress(name, done, total, f"{model}: checking / pulling")
                    target.backend.ensure_model(model, self._pull_progress(name, done, total))
                    described = target.backend.describe(model)
                    if described:
                        self.models.setdefault(name, {})[model] = described
                except RequestFailed as exc:  # this model cannot run here; the next may
                    done += self._fail_all(
                        target, items, pending, outcome, f"model unavailable: {exc}"
                    )
                    continue
                warm_ctx: int | None = None
                warm_error: str | None = None
                load_s: float | None = None
                for w in items:
                    if w.request.num_ctx != warm_ctx:
                        # A new context size reloads the model in Ollama: warm up again so the
                        # reload is never timed as part of a measured request.
                        warm_ctx, warm_error = w.request.num_ctx, None
                        try:
                            load_s = self._warm_up(target, model, w.request, nonces).load_s
                        except RequestFailed as exc:
                            warm_error = f"warm-up failed: {exc}"
                        except TargetLost as exc:
                            if not target.backend.alive():
                                raise
                            warm_error = f"warm-up failed: {exc}"
                    if warm_error is not None:  # this context size cannot run; the next may
                        done += self._fail_all(target, [w], pending, outcome, warm_error)
                        continue
                    self.progress(
                        name,
                        done,
                        total,
                        f"{model} {w.request.workload}/{w.request.case} #{w.rep + 1}",
                    )
                    ok = self._measure(target, w, outcome, nonces, load_s)
                    pending.remove(w)
                    done += 1
                    outcome.measured += ok
                    outcome.failed += not ok
        except TargetLost as exc:
            self._lose(target, outcome, pending, f"target lost: {exc}")
            done = total
        except Exception as exc:  # a bug or a surprise: never a silent, row-less thread
            self._log_error(name, exc)
            self._lose(
                target,
                outcome,
                pending,
                f"internal error: {exc.__class__.__name__}: {exc} "
                f"(traceback in {self.store.dir / ERRORS_LOG})",
            )
            done = total
        self.progress(name, done, total, "lost" if outcome.lost else "done")

    def _lose(
        self, target: Target, outcome: TargetOutcome, pending: list[Work], reason: str
    ) -> None:
        outcome.lost = reason
        for w in list(pending):
            self._fail(target, w, reason)
            pending.remove(w)
            outcome.failed += 1

    def _log_error(self, name: str, exc: BaseException) -> None:
        with contextlib.suppress(OSError), (self.store.dir / ERRORS_LOG).open("a") as fh:
            fh.write(f"--- {utc_now()} target {name}\n")
            fh.write("".join(traceback.format_exception(exc)))

    def _round_trip(self, target: Target) -> None:
        """A few tiny requests before the work: the round trip through the tunnel, which the
        client's TTFT includes and the server's own durations do not."""
        pings = [t for _ in range(RTT_PINGS) if (t := target.backend.ping()) is not None]
        if pings:
            target.info.rtt_ms = round(statistics.median(pings) * 1000, 2)

    def _fail_all(
        self,
        target: Target,
        items: list[Work],
        pending: list[Work],
        outcome: TargetOutcome,
        reason: str,
    ) -> int:
        for w in items:
            self._fail(target, w, reason)
            pending.remove(w)
        outcome.failed += len(items)
        outcome.errors.append(reason)
        return len(items)

    def _pull_progress(self, name: str, done: int, total: int) -> PullProgress:
        def report(status: str, completed: int | None, size: int | None) -> None:
            share = f" {completed / size:.0%}" if completed is not None and size else ""
            self.progress(name, done, total, f"pull: {status}{share}")

        return report

    def _warm_up(self, target: Target, model: str, request: Request, nonces: Nonces) -> Stream:
        """One unmeasured request: it loads the model, so load time never skews a measured
        request; the load time it reports is kept as the model's load time. It carries its own
        nonce, so it leaves nothing in the prefix cache that a measured prompt could reuse."""
        warm = Request(
            request.workload,
            "warm-up",
            request.messages[:1],
            request.seed,
            request.temperature,
            WARMUP_PREDICT,
            request.num_ctx,
        )
        return target.backend.chat(model, warm.with_nonce(nonces.next()))

    def _measure(
        self,
        target: Target,
        work: Work,
        outcome: TargetOutcome,
        nonces: Nonces,
        load_s: float | None = None,
    ) -> bool:
        """Run one request; write its line. Returns ok. Raises TargetLost when the target is
        gone (it no longer answers its health check); a request that fails while the server
        still answers is written as failed and the target goes on."""
        nonce = nonces.next()
        req = work.request.with_nonce(nonce)
        start = target.sampler.mark() if target.sampler else 0.0
        started = utc_now()
        try:
            stream = target.backend.chat(work.model, req)
        except RequestFailed as exc:
            self._fail(target, work, str(exc), started)
            outcome.errors.append(str(exc))
            return False
        except TargetLost as exc:
            if not target.backend.alive():
                raise
            reason = f"request failed, server still up: {exc}"
            self._fail(target, work, reason, started)
            outcome.errors.append(reason)
            return False
        end = target.sampler.mark() if target.sampler else 0.0  # the stream's end, not later
        m = measure(stream)
        judge_note = None
        try:
            verdict = judge(work.request, stream.text)
        except Exception as exc:  # e.g. undecodable sandbox output: the measurement stands
            verdict = Verdict()
            judge_note = f"not judged: {exc.__class__.__name__}: {exc}"[:300]
        try:
            loaded = target.backend.loaded(work.model)
        except (RequestFailed, TargetLost):
            loaded = None
        gpu = target.sampler.window(start, end) if target.sampler else GpuStats(None, None, None)
        self.store.append(
            RequestResult(
                target=target.info.name,
                backend=target.info.backend,
                model=work.model,
                workload=req.workload,
                case=req.case,
                rep=work.rep,
                ok=True,
                ttft_s=m.ttft_s,
                answer_ttft_s=m.answer_ttft_s,
                prompt_tokens=stream.prompt_tokens,
                prompt_eval_tokens=stream.prompt_eval_tokens,
                cached_prompt_tokens=stream.cached_prompt_tokens,
                prefill_cold=m.prefill_cold,
                prefill_s=stream.prefill_s,
                server_ttft_s=m.server_ttft_s,
                prompt_tok_s=m.prompt_tok_s,
                output_tokens=m.output_tokens,
                decode_s=stream.decode_s,
                decode_tok_s=m.decode_tok_s,
                stop_reason=stream.stop_reason,
                decode_source=m.decode_source,
                client_decode_tok_s=m.client_decode_tok_s,
                server_decode_tok_s=m.server_decode_tok_s,
                server_prompt_tok_s=m.server_prompt_tok_s,
                itl_p50_ms=m.itl_p50_ms,
                itl_p95_ms=m.itl_p95_ms,
                e2e_s=m.e2e_s,
                thinking_chars=len(stream.thinking) if stream.thinking else None,
                nonce=nonce,
                load_s=load_s,  # from the warm-up that loaded the model (not mirrored to the PC)
                num_ctx=req.num_ctx,
                size_bytes=loaded.size if loaded else None,
                size_vram_bytes=loaded.size_vram if loaded else None,
                vram_used_mib=gpu.vram_used_mib,
                gpu_util_pct=gpu.gpu_util_pct,
                power_w=gpu.power_w,
                correct=verdict.correct,
                ja_share=verdict.ja_share,
                kana_share=verdict.kana_share,
                judge_note=judge_note or verdict.note,
                answer_chars=len(stream.text),
                started_at=started,
            )
        )
        return True

    def _fail(self, target: Target, work: Work, error: str, started: str | None = None) -> None:
        self.store.append(
            RequestResult(
                target=target.info.name,
                backend=target.info.backend,
                model=work.model,
                workload=work.request.workload,
                case=work.request.case,
                rep=work.rep,
                ok=False,
                error=" ".join(error.split())[:500],
                num_ctx=work.request.num_ctx,
                started_at=started or utc_now(),
            )
        )
