"""The run: every target gets the same work; targets run concurrently, and within a target the
requests run one at a time (one stream, as on the PC).

Each request's result is appended to the store as soon as it completes. A target that is lost
(refused, tunnel dropped, spot stop, server gone) gets its remaining work written as failed
with the reason, and the others carry on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.backends import Backend, PullProgress
from bench.gpu import GpuSampler, GpuStats
from bench.http import RequestFailed, TargetLost
from bench.metrics import Stream, measure
from bench.schema import RequestResult, TargetInfo
from bench.store import RunStore, WorkKey, utc_now
from bench.workload import Request, judge, requests

WARMUP_PREDICT = 8


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

    # -- one target --------------------------------------------------------------------------

    def _run_target(self, target: Target, outcome: TargetOutcome) -> None:
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
        try:
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
                load_s: float | None = None
                for i, w in enumerate(items):
                    if w.request.num_ctx != warm_ctx:
                        # A new context size reloads the model in Ollama: warm up again so the
                        # reload is never timed as part of a measured request.
                        try:
                            warm = self._warm_up(target, model, w.request)
                            load_s = warm.load_s
                        except RequestFailed as exc:
                            done += self._fail_all(
                                target, items[i:], pending, outcome, f"warm-up failed: {exc}"
                            )
                            break
                        warm_ctx = w.request.num_ctx
                    self.progress(
                        name,
                        done,
                        total,
                        f"{model} {w.request.workload}/{w.request.case} #{w.rep + 1}",
                    )
                    ok = self._measure(target, w, outcome, load_s)
                    pending.remove(w)
                    done += 1
                    outcome.measured += ok
                    outcome.failed += not ok
        except TargetLost as exc:
            reason = f"target lost: {exc}"
            outcome.lost = reason
            for w in pending:
                self._fail(target, w, reason)
                outcome.failed += 1
            done = total
        self.progress(name, done, total, "lost" if outcome.lost else "done")

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

    def _warm_up(self, target: Target, model: str, request: Request) -> Stream:
        """One unmeasured request: it loads the model, so load time never skews a measured
        request; the load time it reports is kept as the model's load time."""
        warm = Request(
            request.workload,
            "warm-up",
            request.messages[:1],
            request.seed,
            request.temperature,
            WARMUP_PREDICT,
            request.num_ctx,
        )
        return target.backend.chat(model, warm)

    def _measure(
        self, target: Target, work: Work, outcome: TargetOutcome, load_s: float | None = None
    ) -> bool:
        """Run one request; write its line. Returns ok. Raises TargetLost when the target is
        gone for good (after one retry, if the server still answers its health check)."""
        req = work.request
        mark = target.sampler.mark() if target.sampler else 0.0
        started = utc_now()
        try:
            try:
                stream = target.backend.chat(work.model, req)
            except TargetLost:
                if not target.backend.alive():
                    raise
                stream = target.backend.chat(work.model, req)  # a blip, not a loss
        except RequestFailed as exc:
            self._fail(target, work, str(exc), started)
            outcome.errors.append(str(exc))
            return False
        m = measure(stream)
        verdict = judge(req, stream.text)
        try:
            loaded = target.backend.loaded(work.model)
        except (RequestFailed, TargetLost):
            loaded = None
        gpu = target.sampler.stats_since(mark) if target.sampler else GpuStats(None, None, None)
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
                prompt_tokens=stream.prompt_tokens,
                prompt_tok_s=m.prompt_tok_s,
                output_tokens=m.output_tokens,
                decode_tok_s=m.decode_tok_s,
                server_decode_tok_s=stream.server_decode_tok_s,
                server_prompt_tok_s=stream.server_prompt_tok_s,
                itl_p50_ms=m.itl_p50_ms,
                itl_p95_ms=m.itl_p95_ms,
                e2e_s=m.e2e_s,
                load_s=load_s,  # from the warm-up that loaded the model (not mirrored to the PC)
                num_ctx=req.num_ctx,
                size_bytes=loaded.size if loaded else None,
                size_vram_bytes=loaded.size_vram if loaded else None,
                vram_used_mib=gpu.vram_used_mib,
                gpu_util_pct=gpu.gpu_util_pct,
                power_w=gpu.power_w,
                correct=verdict.correct,
                judge_note=verdict.note,
                ja_share=verdict.ja_share,
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
