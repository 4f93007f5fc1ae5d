"""The Japanese report says everything in Japanese (issue 17, item 10), with or without a
Japanese font for the charts; a run where nothing succeeded recommends nothing and says why,
and a chart with no data is left out (item 9).

The English words a Japanese report may keep are data and names: model tags, card and GPU
family names, target labels, source keys, units and acronyms (GPU, RAM, tok/s, TFLOPS),
product names (Ollama, llama.cpp, nvidia-smi, EBS) and API fields (/api/ps size_vram).
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from bench import charts, report
from bench.report.sections import charts as chart_section
from rig.catalog import load_catalog

FIXTURE = Path(__file__).parent / "fixtures" / "run-mirror"
# Latin words that are names, units or API fields (see the module docstring), never sentences.
JA_ALLOWED = {
    "GPU", "CPU", "RAM", "VRAM", "tok", "TTFT", "GiB", "MiB", "TFLOPS", "TOPS", "INT", "CUDA",
    "NVMe", "SSD", "EBS", "Azure", "Ollama", "llama", "cpp", "nvidia", "smi", "memory", "total",
    "api", "size", "vram", "gpu", "rehearsal", "aws", "xlarge", "AWS",
    # NVIDIA's name for a card's feature level, which NVIDIA's Japanese documents keep as is
    "compute", "capability",
}  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture
def no_cjk_font(monkeypatch: pytest.MonkeyPatch):
    """A machine without any Japanese font: matplotlib's list, the known files and
    fontconfig all come back empty."""
    monkeypatch.setattr(charts, "_installed", lambda: set())
    monkeypatch.setattr(charts, "CJK_FILES", ())
    monkeypatch.setattr(charts, "_fontconfig_files", lambda: [])
    charts._discover.cache_clear()
    yield
    charts._discover.cache_clear()


@pytest.fixture
def chart_titles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The titles the charts are drawn with (the real drawing still runs)."""
    titles: list[str] = []
    bars, scatter = charts.grouped_bars, charts.scatter

    def spy_bars(categories, series, title, ylabel, lang="en"):
        titles.append(title)
        return bars(categories, series, title, ylabel, lang)

    def spy_scatter(points, title, xlabel, ylabel, lang="en"):
        titles.append(title)
        return scatter(points, title, xlabel, ylabel, lang)

    monkeypatch.setattr(charts, "grouped_bars", spy_bars)
    monkeypatch.setattr(charts, "scatter", spy_scatter)
    return titles


def _rewrite(run_dir: Path, edit) -> None:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    rows = [edit(json.loads(line)) for line in lines if line.strip()]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r))


def _add_estimates(run_dir: Path) -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from bench import cli as bench_cli
    from bench.schema import RunMeta
    from rig.estimate import bench_plan
    from rig.profile import Profile

    meta = RunMeta.from_json(json.loads((run_dir / "meta.json").read_text()))
    plan = bench_plan(Profile.model_validate({"bench": meta.profile["bench"]}), load_catalog())
    targets = [SimpleNamespace(info=t) for t in meta.targets]
    meta.estimates = bench_cli._estimates(targets, plan, run_dir / "none.toml", Console())
    assert meta.estimates
    (run_dir / "meta.json").write_text(json.dumps(meta.to_json()))


def english_words(md: str, run_dir: Path) -> set[str]:
    """Latin words of 3+ letters left once the run's and the catalog's data are taken out."""
    cat = load_catalog()
    meta = json.loads((run_dir / "meta.json").read_text())
    rows = [json.loads(r) for r in (run_dir / "results.jsonl").read_text().splitlines() if r]
    # commands, modules, files and their keys the text names as they are written
    data = {meta["run_id"], ".venv/bin/bench backtest", "rig plan", "rig.estimate", "make status"}
    data |= {"meta.json", "results.jsonl", "spans"}
    data |= {r.get("error") or "" for r in rows} | {r["case"] for r in rows}
    data |= {r["model"] for r in rows} | set(cat.models)
    for t in meta["targets"]:
        data |= {t.get("label") or "", t.get("region") or "", t.get("price_source") or ""}
    for g in cat.gpus.values():
        data |= {g.name, g.name.replace("NVIDIA ", "").replace("GeForce ", "").split(" (")[0]}
        data |= {g.arch, f"{g.arch}-hbm"}
    data |= {p.engine for p in cat.calibration}
    data |= {"charts/decode.png", "charts/ttft.png", "charts/share.png"}
    text = md
    for item in sorted((d for d in data if d), key=len, reverse=True):
        text = text.replace(item, " ")
    return set(re.findall(r"[A-Za-z]{3,}", text))


def write(run_dir: Path, lang: str) -> str:
    report.write_report(run_dir, lang)
    return (run_dir / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("variant", ["fixture", "failed", "demo-only", "no-code", "estimates"])
def test_the_japanese_report_has_no_english_left(run_dir, variant, chart_titles):
    if not charts.cjk_font():
        pytest.skip("no Japanese font here (make test-deps installs fonts-noto-cjk)")
    if variant == "failed":
        _rewrite(run_dir, lambda r: {**r, "ok": False, "error": "HTTP 500 from the server",
                                     "decode_tok_s": None})  # fmt: skip
    if variant == "demo-only":
        _rewrite(run_dir, lambda r: r if r["target"] == "local-cpu-demo" else None)
    if variant == "no-code":
        _rewrite(run_dir, lambda r: None if r["workload"] == "code" else r)
    if variant == "estimates":  # as a bench stores them: the estimate-vs-actual section shows
        _add_estimates(run_dir)
    md = write(run_dir, "ja")
    if variant == "estimates":
        assert "## 見積もりと実績" in md
    words = english_words(md, run_dir)
    assert words <= JA_ALLOWED, sorted(words - JA_ALLOWED)
    # the charts are drawn in Japanese where a font can draw it (a run with nothing measured
    # has no chart at all)
    assert bool(chart_titles) == (variant != "failed")
    assert all(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", t) for t in chart_titles)


def test_without_a_japanese_font_one_warning_and_english_chart_labels(
    run_dir, no_cjk_font, chart_titles, capsys
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md = write(run_dir, "ja")
        write(run_dir, "ja")  # a second report in the same run does not warn again
    glyphs = [w for w in caught if "Glyph" in str(w.message) or "missing from" in str(w.message)]
    assert glyphs == []
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "no Japanese font found" in err
    assert "fonts-noto-cjk" in err
    # the charts fall back to English labels; the text stays Japanese
    assert chart_titles and all(t.isascii() for t in chart_titles), chart_titles
    assert "## 結論" in md and "## グラフ" in md
    words = english_words(md, run_dir)
    assert words <= JA_ALLOWED, sorted(words - JA_ALLOWED)
    assert len(list((run_dir / "charts").glob("*.png"))) == 3


def test_a_run_where_nothing_succeeded_recommends_nothing_and_says_why(run_dir):
    _rewrite(run_dir, lambda r: {**r, "ok": False, "error": "HTTP 500 from the server",
                                 "decode_tok_s": None})  # fmt: skip
    md = write(run_dir, "en")
    best = md[md.index("**Best model per category**") :].split("\n## ")[0]
    assert "No request succeeded in this run, so nothing is recommended" in best
    assert "HTTP 500 from the server" in best
    assert "| category |" not in best and "llama3:8b" not in best
    ja = write(run_dir, "ja")
    best_ja = ja[ja.index("**カテゴリ別のおすすめモデル**") :].split("\n## ")[0]
    assert "成功したリクエストが 1 件もないため、おすすめは示さない" in best_ja


def test_a_demo_only_run_recommends_nothing_for_the_pc(run_dir):
    _rewrite(run_dir, lambda r: r if r["target"] == "local-cpu-demo" else None)
    md = write(run_dir, "en")
    best = md[md.index("**Best model per category**") :].split("\n## ")[0]
    assert "Only the local CPU demo measured anything" in best
    assert "gemma-3-270m" not in best


def test_a_category_whose_requests_all_failed_has_no_best_model(run_dir):
    # Every code request fails: no model is the best coder, whatever its fit.
    _rewrite(run_dir, lambda r: {**r, "ok": False, "error": "timeout"}
             if r["workload"] == "code" else r)  # fmt: skip
    md = write(run_dir, "en")
    best = md[md.index("**Best model per category**") :].split("\n## ")[0]
    row = next(line for line in best.splitlines() if line.startswith("| code |"))
    assert row == "| code | — | no successful code request |"
    assert "| ja | llama3:8b |" in best  # the other categories are still answered


def test_a_chart_without_data_is_left_out(run_dir):
    # A CPU-only run: no GPU share was measured, so the share chart has nothing to show.
    _rewrite(run_dir, lambda r: r if r["target"] == "local-cpu-demo" else None)
    md = write(run_dir, "en")
    assert "charts/share.png" not in md and "charts/decode.png" in md
    assert sorted(p.name for p in (run_dir / "charts").glob("*.png")) == ["decode.png", "ttft.png"]
    # nothing measured at all: no chart, no Charts section, no empty charts/ left behind
    _rewrite(run_dir, lambda r: {**r, "ok": False, "decode_tok_s": None})
    md = write(run_dir, "en")
    assert "## Charts" not in md and not list((run_dir / "charts").glob("*.png"))


def test_every_speed_model_note_has_a_japanese_template():
    from bench.notes import EN
    from bench.report.text import TEXT

    assert set(EN) <= set(TEXT["ja"])
    for key in EN:
        assert TEXT["ja"][key] != EN[key], key
        assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", TEXT["ja"][key]), key
        # the same parameters in both languages (a template never drops a figure)
        assert set(re.findall(r"\{(\w+)", TEXT["ja"][key])) == set(re.findall(r"\{(\w+)", EN[key]))


def test_chart_files_match_the_section():
    assert set(chart_section.CHART_FILES) == {"decode.png", "ttft.png", "share.png"}
