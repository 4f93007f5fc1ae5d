"""Read a bench run: results/<run-id>/results.jsonl and meta.json, nothing else."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from bench.schema import RequestResult, RunMeta, TargetInfo, shape_problem
from rig.version import BENCH


@dataclass(frozen=True)
class Run:
    meta: RunMeta
    results: list[RequestResult]

    @property
    def ok(self) -> list[RequestResult]:
        return [r for r in self.results if r.ok]

    def target(self, name: str) -> TargetInfo:
        found = next((t for t in self.meta.targets if t.name == name), None)
        return found or TargetInfo(name=name, url="", backend="")

    def target_names(self) -> list[str]:
        names = [t.name for t in self.meta.targets]
        return names + sorted({r.target for r in self.results} - set(names))

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.results))


def check_run_dir(run_dir: Path) -> str | None:
    """None when RUN_DIR holds a run; else what is wrong and the fix, in one line."""
    if not run_dir.is_dir():
        return f"'{run_dir}' is not a directory — pass a results/<run-id> directory"
    for name in ("meta.json", "results.jsonl"):
        if not (run_dir / name).is_file():
            return f"'{run_dir}' has no {name} — pass a results/<run-id> directory of a bench run"
    try:
        load_run(run_dir)
    except UnicodeDecodeError:
        return f"'{run_dir}' holds a file that is not UTF-8 text — a damaged run: bench again"
    except (ValueError, TypeError, KeyError) as exc:
        return f"'{run_dir}' holds a malformed run: {exc}"
    return None


# meta.json is the run's plan, targets and prices: without it nothing can be reported or resumed.
_NO_META = " — a damaged run: restore meta.json from a copy, or run the bench again"


def load_run(run_dir: Path) -> Run:
    try:
        raw = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"meta.json is not JSON ({exc}){_NO_META}") from None
    if (problem := shape_problem(RunMeta, raw)) is not None:
        raise ValueError(f"meta.json {problem}{_NO_META}")
    meta = RunMeta.from_json(raw)
    lines = (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    results = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if n == len(lines):  # the last line cut short by a crash: what came before stands
                continue
            raise ValueError(
                f"results.jsonl line {n} is not JSON — delete that line ({BENCH} run --resume "
                f"{run_dir.name} measures that request again)"
            ) from None
        if (problem := shape_problem(RequestResult, data)) is not None:
            raise ValueError(
                f"results.jsonl line {n} {problem} — delete that line ({BENCH} run --resume "
                f"{run_dir.name} measures that request again)"
            )
        result = RequestResult.from_json(data)
        _check_numbers(result, n, run_dir)
        results.append(result)
    return Run(meta, results)


def _check_numbers(result: RequestResult, n: int, run_dir: Path) -> None:
    """A rate, a duration or a size is finite and not negative: Python's json reads NaN and
    Infinity, which no measurement can be, and a mean over them would poison every figure."""
    for f in fields(result):
        value = getattr(result, f.name)
        number = isinstance(value, float | int) and not isinstance(value, bool)
        if number and (not math.isfinite(value) or value < 0):
            raise ValueError(
                f"results.jsonl line {n}: {f.name} is {value} — delete that line ({BENCH} run "
                f"--resume {run_dir.name} measures that request again)"
            )
