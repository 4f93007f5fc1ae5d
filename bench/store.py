"""results/<run-id>/: results.jsonl appended and fsync'd per request, meta.json rewritten
atomically. A crash, a lost target or Ctrl-C loses nothing already measured."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

from bench.schema import RequestResult, RunMeta

RESULTS = "results.jsonl"
META = "meta.json"

# (target, model, workload, case, rep): one unit of work
WorkKey = tuple[str, str, str, str, int]


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class RunStore:
    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.results_path = run_dir / RESULTS
        self.meta_path = run_dir / META
        self.dropped_bytes = 0  # a torn last line cut on open (see _drop_torn_tail)
        self._lock = threading.Lock()

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunStore:
        """A new run directory; a second run started in the same second gets RUN_ID-2, -3, ...

        mkdir(exist_ok=False) is the claim, so two concurrent runs never share a directory.
        """
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            run_dir = root / (run_id if n == 1 else f"{run_id}-{n}")
            try:
                run_dir.mkdir()
            except FileExistsError:
                continue
            return cls(run_dir)
        raise FileExistsError(f"{root}/{run_id}: 999 runs with this id already exist")

    @classmethod
    def open(cls, root: Path, run_id: str) -> RunStore:
        run_dir = root / run_id
        if run_dir.is_symlink():  # --resume latest: the run it points at, not the link
            run_dir = run_dir.resolve()
        if not (run_dir / META).is_file():
            known = (
                sorted(p.name for p in root.glob("*") if (p / META).is_file())
                if root.is_dir()
                else []
            )
            raise FileNotFoundError(
                f"--resume {run_id}: no run there ({run_dir}/meta.json missing) — known runs: "
                f"{', '.join(known[-5:]) or 'none'}"
            )
        store = cls(run_dir)
        store.dropped_bytes = store._drop_torn_tail()
        return store

    def _drop_torn_tail(self) -> int:
        """Cut a last line torn by a crash mid-write (kill -9, power loss) back to the last
        newline, so the next appended line starts on a line of its own. Returns the bytes cut;
        the torn request was never complete and is simply redone."""
        if not self.results_path.is_file():
            return 0
        with self.results_path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            keep = size
            while keep > 0:
                step = min(keep, 64 * 1024)
                fh.seek(keep - step)
                block = fh.read(step)
                at = block.rfind(b"\n")
                if at >= 0:
                    keep = keep - step + at + 1
                    break
                keep -= step
            if keep == size:
                return 0
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep

    def append(self, result: RequestResult) -> None:
        line = json.dumps(result.to_json(), ensure_ascii=False) + "\n"
        with self._lock, self.results_path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def results(self) -> list[RequestResult]:
        if not self.results_path.is_file():
            return []
        out = []
        # errors="replace": a line torn by a crash can end inside a multi-byte character (an
        # error text in Japanese); it is skipped below, not a UnicodeDecodeError for the reader.
        text = self.results_path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                out.append(RequestResult.from_json(json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line torn by a crash mid-write: that request is simply redone
        return out

    def finished(self) -> set[WorkKey]:
        """Work measured successfully; failed work is tried again on --resume."""
        return {(r.target, r.model, r.workload, r.case, r.rep) for r in self.results() if r.ok}

    def write_meta(self, meta: RunMeta) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.meta_path)

    def read_meta(self) -> RunMeta:
        return RunMeta.from_json(json.loads(self.meta_path.read_text(encoding="utf-8")))
