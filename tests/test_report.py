"""The report from a hand-written run: every section, figures traceable to the fixture, and the
HTML opened in headless Chromium without console errors."""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench import mirror, report, speed
from bench.mirror_cli import add_commands
from bench.schema import RequestResult, RunMeta, TargetInfo

FIXTURE = Path(__file__).parent / "fixtures" / "run-mirror"
SECTIONS = {
    "en": ["Bottom line", "Targets", "GPUs compared", "Speed per model", "16 GB fit",
           "Share of the model on the GPU", "Cost", "Verdict", "Best model per category",
           "Long-context correctness and Japanese-script share",
           "Model load times (not mirrored)", "Charts", "Method and assumptions"],
    "ja": ["結論", "ターゲット", "比較した GPU", "モデル別の速度", "16 GB に収まるか",
           "GPU に載ったモデルの割合", "コスト", "判定", "カテゴリ別のおすすめモデル",
           "長文脈の正答と日本語文字の割合", "モデルの読み込み時間（換算なし）", "グラフ",
           "手法と前提"],
}  # fmt: skip
# Where test artifacts (the report screenshots) are kept: results/ is never committed.
ARTIFACTS = (
    Path(os.environ.get("REHEARSAL_ARTIFACTS", Path(__file__).resolve().parent.parent / "results"))
    / "test-artifacts"
)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(FIXTURE, target)
    return target


def write(run_dir: Path, lang: str = "en") -> tuple[str, str]:
    report.write_report(run_dir, lang)
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    return md, page


def md_row(md: str, first_cell: str) -> list[str]:
    """The cells of the first Markdown table row starting with `first_cell`."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r}")


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_every_section_is_present(run_dir, lang):
    md, page = write(run_dir, lang)
    for title in SECTIONS[lang]:
        assert f"## {title}" in md or f"**{title}**" in md, title
        assert title in page
    assert f'<html lang="{lang}">' in page


def section(md: str, title: str) -> str:
    """The Markdown of one section (from its heading to the next)."""
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 1)
    return md[start : end if end > 0 else None]


def projection(gpu: str, tok_s: float, to: str) -> speed.SpeedProjection:
    """What the report must show: the speed model's projection of a fixture measurement
    (llama3:8b: 4.7 GB in the catalog, fully on the GPU, the Ollama backend)."""
    return mirror.project(gpu, tok_s, 4.7e9 / 2**30, 1.0, to, None, 89.6, None, None, 1.0)


def test_speed_figures_trace_to_the_fixture(run_dir):
    md, _ = write(run_dir)
    # T4 llama3:8b chat-en/chat-ja decode 34, 36, 35, 35: mean 35.0, sample sd 0.82;
    # prompt 800, 780, 820, 800: 800 ± 16; TTFT 0.50, 0.52, 0.55, 0.55: 0.53 ± 0.02.
    speed_md = section(md, "Speed per model")
    t4 = md_row(speed_md, "aws g4dn.2xlarge (Tesla T4)")
    assert t4[1:5] == ["35.0 ± 0.8", "800 ± 16", "0.53 ± 0.02", "4"]
    # Each source's projection is listed under the combined figure; prefill x 88.4 / 65.
    p = projection("t4", 35.0, "rtx-4060-ti-16gb")
    row = md_row(speed_md, "from aws g4dn.2xlarge (Tesla T4)")
    assert row[1] == f"{p.projected_tok_s:.1f} ({p.low_tok_s:.1f}–{p.high_tok_s:.1f})"
    assert row[2] == f"{800 * 88.4 / 65:.0f}"


def test_two_cloud_runs_of_one_model_give_one_figure_per_card(run_dir):
    md, _ = write(run_dir)
    # T4 35.0 tok/s and A10G 89.0 tok/s on llama3:8b, each projected onto the RTX 4060 Ti:
    a = projection("t4", 35.0, "rtx-4060-ti-16gb")
    b = projection("a10g", 89.0, "rtx-4060-ti-16gb")
    assert b.low_tok_s <= a.projected_tok_s <= b.high_tok_s  # they agree
    combined = math.sqrt(a.projected_tok_s * b.projected_tok_s)  # geometric mean
    speed_md = section(md, "Speed per model")
    row = md_row(speed_md, "RTX 4060 Ti 16GB: combined (2 source(s))")
    assert row[1].startswith(f"{combined:.1f} (") and "disagree" not in row[1]
    # one answer per card in the bottom line, no flag
    bottom = section(md, "Bottom line")
    cell = md_row(bottom, "llama3:8b")[2]
    assert cell.startswith(f"interactive, {combined:.1f} tok/s (") and "⚠" not in cell
    assert "sources disagree" not in bottom


def test_diverging_cloud_runs_are_flagged(run_dir):
    # Make the A10G measure llama3:8b at a third of its speed: its projection for the PC now
    # falls far outside the T4's range (and the other way round).
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        row = json.loads(line)
        if row["target"] == "aws-g5.xlarge" and row["model"] == "llama3:8b" and row["ok"]:
            row["decode_tok_s"] = round(row["decode_tok_s"] / 3, 2)
        out.append(json.dumps(row))
    (run_dir / "results.jsonl").write_text("\n".join(out) + "\n")
    md, _ = write(run_dir)
    a = projection("t4", 35.0, "rtx-4060-ti-16gb")
    b = projection("a10g", 89.0 / 3, "rtx-4060-ti-16gb")
    row = md_row(section(md, "Speed per model"), "RTX 4060 Ti 16GB: combined (2 source(s))")
    assert row[1].endswith("— sources disagree")
    # the combined range spans both sources' ranges
    assert f"({b.low_tok_s:.1f}–{a.high_tok_s:.1f})" in row[1]
    bottom = section(md, "Bottom line")
    assert "⚠ sources disagree" in md_row(bottom, "llama3:8b")[2]
    assert (
        f"llama3:8b / RTX 4060 Ti 16GB: sources disagree: aws g4dn.2xlarge (Tesla T4) "
        f"{a.projected_tok_s:.1f}, aws g5.xlarge (A10G) {b.projected_tok_s:.1f}" in bottom
    )


def test_bottom_line_answers_the_question(run_dir):
    md, _ = write(run_dir)
    assert md.index("## Bottom line") < md.index("## Targets")  # it opens the report
    bottom = section(md, "Bottom line")
    assert md_row(bottom, "model")[1:] == ["fits 16 GB?", "RTX 4060 Ti 16GB", "RTX 5060 Ti 16GB"]
    assert md_row(bottom, "llama3:8b")[1] == "yes"
    assert md_row(bottom, "mixtral:8x7b-instruct-v0.1-q4_K_M")[1].startswith("partly (59%")
    # a profile model not benched: its fit is still answered, its speed is not
    assert md_row(bottom, "phi3:3.8b-mini-128k-instruct-q4_K_M")[1:] == ["yes", "—", "—"]
    assert "gemma-3-270m" not in bottom  # the CPU demo's model says nothing about the PC
    # the 5060 Ti is faster and $70 cheaper at launch MSRP ($429 vs $499): worth it
    assert "RTX 5060 Ti 16GB is" in bottom and "costs $70 less at launch MSRP" in bottom
    assert "yes — faster and cheaper" in bottom
    avoid = bottom[bottom.index("**Avoid on 16 GB**") :]
    assert "mixtral:8x7b-instruct-v0.1-q4_K_M: does not fit 16 GB" in avoid
    assert "llama3:8b" not in avoid


def test_bottom_line_in_japanese_has_no_english_left(run_dir):
    md, _ = write(run_dir, "ja")
    bottom = section(md, "結論")
    for english in ("fits", "interactive", "worth", "Avoid", "faster", "launch MSRP", "yes",
                    "sources", "combined"):  # fmt: skip
        assert english not in bottom, english
    assert "16 GB に収まるか" in bottom and "対話的" in bottom and "見合う" in bottom
    assert "16 GB では避けるべきモデル" in bottom


def test_gpu_table_shows_int8_tensor_generation_and_price(run_dir):
    md, _ = write(run_dir)
    gpus = section(md, "GPUs compared")
    assert md_row(gpus, "RTX 4060 Ti 16GB")[1:] == [
        "16", "16,380", "288", "4,352", "88.4", "176.8 / 353.6", "gen 4", "499",
    ]  # fmt: skip
    assert md_row(gpus, "Tesla T4")[6:8] == ["130.0 / —", "gen 2"]  # Turing: no sparsity
    for alt in ("RTX 5070 Ti 16GB", "RTX 4070 Ti SUPER 16GB", "RTX 5080 16GB", "RTX 3090 24GB",
                "RTX 3070 8GB"):  # fmt: skip
        assert md_row(gpus, alt)


def test_fit_share_cost_and_quality_figures(run_dir):
    md, _ = write(run_dir)
    fit = section(md, "16 GB fit")
    mixtral = md_row(fit, "mixtral:8x7b-instruct-v0.1-q4_K_M")
    assert mixtral[6:8] == ["partial", "59%"]
    phi3 = md_row(fit, "phi3:3.8b-mini-128k-instruct-q4_K_M")  # from the profile's model list
    assert phi3[-1] == "48.00 @ 131,072"
    # T4: 10:00:00 -> 10:10:00 at $0.838/h = $0.1397 for 1,160 tokens = $120.40 per 1M.
    # A10G: 10:00:00 -> 10:03:00 at $1.123/h = $0.0562, $48.41 per 1M.
    cost = md[md.index("## Cost") :]
    assert md_row(cost, "aws g4dn.2xlarge (Tesla T4)")[1:] == [
        "0.838", "0:10:00", "0.1397", "1,160", "120.40"
    ]  # fmt: skip
    assert md_row(cost, "aws g5.xlarge (A10G)")[3:] == ["0.0562", "1,160", "48.41"]
    assert md_row(cost, "local CPU demo")[1] == "no hourly price"
    quality = md[md.index("## Long-context") :]
    assert "| llama3:8b | aws g4dn.2xlarge (Tesla T4) | ctx4k 1/2 | 90% |" in quality
    assert "| llama3:8b | aws g5.xlarge (A10G) | ctx4k 2/2 | 90% |" in quality
    share = md[md.index("## Share") :]
    assert md_row(share, "mixtral:8x7b-instruct-v0.1-q4_K_M")[1:] == ["50%", "60%", "—", "59%"]
    load = md[md.index("## Model load") :]
    assert md_row(load, "mixtral:8x7b-instruct-v0.1-q4_K_M")[1:3] == ["40.0", "20.0"]
    assert "18 of 19 requests ok" in md


def test_max_context_on_gpu_never_exceeds_the_trained_context(run_dir):
    md, _ = write(run_dir)
    fit = md[md.index("## 16 GB fit") :]
    llama = md_row(fit, "llama3:8b")
    assert llama[-2:] == ["8,192", "1.00 @ 8,192"]  # KV room for 87k tokens, trained for 8k
    phi = md_row(fit, "phi3:3.8b-mini-128k-instruct-q4_K_M")
    assert phi[-2] == "34,816"  # here VRAM is the limit, well below 128k


def test_verdict_uses_the_combined_figure(run_dir):
    md, _ = write(run_dir)
    verdict = section(md, "Verdict")
    row = md_row(verdict, "llama3:8b")
    # the combined figure of the T4- and A10G-based projections for the 4060 Ti
    a = projection("t4", 35.0, "rtx-4060-ti-16gb")
    b = projection("a10g", 89.0, "rtx-4060-ti-16gb")
    combined = math.sqrt(a.projected_tok_s * b.projected_tok_s)
    assert row[2] == "fits" and row[3] == f"yes ({combined:.1f} tok/s)"
    assert "| ja | llama3:8b |" in verdict


def test_the_demo_is_labelled_and_never_projected(run_dir):
    md, page = write(run_dir)
    assert "local CPU demo" in md and "local CPU demo" in page
    assert "projected from local CPU demo" not in md
    assert "local-cpu-demo" not in md  # never its raw target name
    assert md_row(md[md.index("## Speed") :], "local CPU demo")[1] == "59.0 ± 1.4"


def test_a_demo_only_run_says_nothing_is_projected(run_dir):
    keep = [line for line in (run_dir / "results.jsonl").read_text().splitlines()
            if '"local-cpu-demo"' in line]  # fmt: skip
    (run_dir / "results.jsonl").write_text("\n".join(keep) + "\n")
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["targets"] = [t for t in meta["targets"] if t["kind"] == "demo"]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    md, _ = write(run_dir)
    assert "No GPU target in this run: nothing is projected" in md
    assert ": combined (" not in md and "from aws" not in md
    bottom = section(md, "Bottom line")
    assert "No GPU measurement in this run" in bottom
    # the 16 GB fit is still answered for the profile's models, from their architecture
    assert md_row(bottom, "llama3:8b")[1:] == ["yes", "—", "—"]


def test_projected_vs_measured_with_a_local_pc(run_dir):
    meta = RunMeta.from_json(json.loads((run_dir / "meta.json").read_text()))
    pc = TargetInfo(name="local", url="", backend="ollama", label="this PC", kind="local",
                    gpu="rtx-4060-ti-16gb")  # fmt: skip
    meta.targets.append(pc)
    (run_dir / "meta.json").write_text(json.dumps(meta.to_json()))
    with (run_dir / "results.jsonl").open("a") as fh:
        for rep, tok_s in enumerate((52.0, 54.0)):
            row = RequestResult(target="local", backend="ollama", model="llama3:8b",
                                workload="chat-en", case="p1", rep=rep, ok=True,
                                decode_tok_s=tok_s, output_tokens=200)  # fmt: skip
            fh.write(json.dumps(row.to_json()) + "\n")
    md, _ = write(run_dir)
    pvm = md[md.index("## Projected vs measured") :]
    row = md_row(pvm, "llama3:8b")
    p = projection("t4", 35.0, "rtx-4060-ti-16gb")
    assert row[1:6] == ["aws g4dn.2xlarge (Tesla T4)", "this PC (RTX 4060 Ti 16GB)",
                        f"{p.projected_tok_s:.1f}", row[4], "53.0"]  # fmt: skip
    assert row[6] == f"{p.projected_tok_s / 53 - 1:+.0%}" and row[7] == "yes"
    # the verdict and the bottom line now use the PC's own measurement
    assert md_row(section(md, "Verdict"), "llama3:8b")[3] == "yes (53.0 tok/s)"
    assert (
        md_row(section(md, "Bottom line"), "llama3:8b")[2] == "interactive, 53.0 tok/s (measured)"
    )


def test_a_truncated_last_line_is_skipped(run_dir):
    with (run_dir / "results.jsonl").open("a") as fh:
        fh.write('{"target": "aws-g4dn.2xlarge", "mod')
    assert len(report.load_run(run_dir).results) == 19


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag in ("script", "link", "iframe"):
            self.refs.append(f"<{tag}>")


def test_html_is_self_contained_with_three_png_charts(run_dir):
    _, page = write(run_dir)
    parser = _Refs()
    parser.feed(page)
    assert len(parser.refs) == 3
    for ref in parser.refs:
        assert ref.startswith("data:image/png;base64,")
        assert base64.b64decode(ref.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("decode.png", "ttft.png", "share.png"):
        assert (run_dir / "charts" / name).stat().st_size > 5000
        assert f"](charts/{name})" in (run_dir / "report.md").read_text()


def test_report_command(run_dir, capsys):
    parser = argparse.ArgumentParser(prog="bench")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(["report", str(run_dir), "--lang", "ja"])
    assert args.func(args) == 0
    assert str(run_dir / "report.html") in capsys.readouterr().out
    args = parser.parse_args(["report", str(run_dir), "--lang", "fr"])
    assert args.func(args) == 2
    assert capsys.readouterr().err.strip() == (
        "bench report: --lang: 'fr' is not a report language — use en or ja"
    )
    (run_dir / "meta.json").unlink()
    args = parser.parse_args(["report", str(run_dir)])
    assert args.func(args) == 2
    assert "has no meta.json" in capsys.readouterr().err


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_report_html_opens_in_chromium_without_console_errors(run_dir, chromium, lang):
    # The detector itself must see an error when there is one.
    bad = run_dir / "bad.html"
    bad.write_text("<script>console.error('planted')</script><img src='missing.png'>")
    _, planted = chromium.open(bad.as_uri())
    assert any("planted" in e for e in planted), planted

    write(run_dir, lang)
    session, errors = chromium.open((run_dir / "report.html").as_uri())
    assert errors == []
    check = chromium.send(
        "Runtime.evaluate",
        {"expression": "JSON.stringify([document.images.length, "
         "[...document.images].every(i => i.complete && i.naturalWidth > 600), "
         "[...document.querySelectorAll('section')].map(s => s.id), "
         "document.querySelector('section h2').textContent, "
         "document.querySelector('#bottom-line').getBoundingClientRect().top])",
         "returnByValue": True},
        session,
    )  # fmt: skip
    images, all_loaded, ids, first_title, bottom_top = json.loads(check["result"]["value"])
    assert (images, all_loaded) == (3, True)
    assert len(ids) == len(SECTIONS[lang]) - 1  # "best model" is a subsection of the verdict
    # the report opens with the bottom line, on the first screen
    assert ids[0] == "bottom-line" and first_title == SECTIONS[lang][0]
    assert 0 < bottom_top < 300
    shot = chromium.send("Page.captureScreenshot", {"format": "png"}, session)
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    artifact = ARTIFACTS / f"report-bottom-line-{lang}.png"
    artifact.write_bytes(png)
    print(f"\nscreenshot: {artifact}")


# ------------------------------------------------------------ reviewed: hostile runs


def _rewrite(run_dir: Path, edit) -> None:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    rows = [edit(json.loads(line)) for line in lines if line.strip()]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r))


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_a_run_where_every_request_failed_keeps_the_fit_and_says_why(run_dir, lang):
    _rewrite(run_dir, lambda r: {**r, "ok": False, "error": "HTTP 500 from the server",
                                 "decode_tok_s": None})  # fmt: skip
    md, _ = write(run_dir, lang)
    bottom = section(md, "Bottom line" if lang == "en" else "結論")
    # every model stays with its fit verdict (no measurement needed), and no speed is given
    assert md_row(bottom, "llama3:8b")[2:] == ["—", "—"]
    assert md_row(bottom, "mixtral:8x7b-instruct-v0.1-q4_K_M")[2:] == ["—", "—"]
    assert "HTTP 500 from the server" in bottom  # the first error, as the run recorded it
    if lang == "en":
        assert "No GPU measurement in this run" in bottom
        assert "Every GPU request failed for llama3:8b" in bottom


@pytest.mark.parametrize(
    ("field", "value"), [("decode_tok_s", float("nan")), ("decode_tok_s", -5.0),
                         ("ttft_s", float("inf"))],
)  # fmt: skip
def test_impossible_numbers_in_a_run_are_one_line_errors(run_dir, field, value, capsys):
    # Python's json writes and reads NaN and Infinity; no rate or time can be one, and a mean
    # over one poisons every figure (statistics.fmean raised a traceback before this check).
    _rewrite(run_dir, lambda r: {**r, field: value} if r["rep"] == 0 else r)
    parser = argparse.ArgumentParser(prog="bench")
    add_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(["report", str(run_dir)])
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"results.jsonl line 1: {field} is" in err and "\n" not in err
    assert "Traceback" not in err and not (run_dir / "report.md").exists()


def test_one_cloud_target_gives_one_source_and_no_disagreement(run_dir):
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["targets"] = [t for t in meta["targets"] if t["name"] == "aws-g4dn.2xlarge"]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    _rewrite(run_dir, lambda r: r if r["target"] == "aws-g4dn.2xlarge" else None)
    md, _ = write(run_dir)
    bottom = section(md, "Bottom line")
    p = projection("t4", 35.0, "rtx-4060-ti-16gb")
    cell = md_row(bottom, "llama3:8b")[2]
    assert cell.startswith(f"interactive, {p.projected_tok_s:.1f} tok/s") and "⚠" not in cell
    assert "sources disagree" not in bottom


# Latin words a Japanese bottom line may keep: units and acronyms the Japanese text uses, and
# data (model tags, card names, target labels, a server's own error message) shown as is.
JA_ALLOWED = {"GPU", "RAM", "tok", "aws", "xlarge", "HTTP", "from", "the", "server"}


@pytest.mark.parametrize("variant", ["fixture", "disagree", "failed"])
def test_the_japanese_bottom_line_has_no_english_sentence(run_dir, variant):
    import re

    from rig.catalog import load_catalog

    if variant == "disagree":  # the T4 run at 30 % speed: the sources disagree, flagged
        _rewrite(run_dir, lambda r: {**r, "decode_tok_s": r["decode_tok_s"] * 0.3}
                 if r["target"] == "aws-g4dn.2xlarge" and r["decode_tok_s"] else r)  # fmt: skip
    if variant == "failed":
        _rewrite(run_dir, lambda r: {**r, "ok": False, "error": "HTTP 500 from the server",
                                     "decode_tok_s": None})  # fmt: skip
    md, _ = write(run_dir, "ja")
    text = section(md, "結論")
    cat = load_catalog()
    for tag in sorted(cat.models, key=len, reverse=True):
        text = text.replace(tag, "")
    for g in cat.gpus.values():
        text = text.replace(
            g.name.replace("NVIDIA ", "").replace("GeForce ", "").split(" (")[0], ""
        )
    words = set(re.findall(r"[A-Za-z]{3,}", text))
    assert words <= JA_ALLOWED, sorted(words - JA_ALLOWED)
    if variant == "disagree":
        assert "計測元が食い違う" in text
