"""The report from a hand-written run: every section, figures traceable to the fixture, and the
HTML opened in headless Chromium without console errors."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench import report
from bench.mirror_cli import add_commands
from bench.schema import RequestResult, RunMeta, TargetInfo

FIXTURE = Path(__file__).parent / "fixtures" / "run-mirror"
SECTIONS = {
    "en": ["Targets", "Speed per model", "16 GB fit", "Share of the model on the GPU", "Cost",
           "Verdict", "Best model per category",
           "Long-context correctness and Japanese-script share",
           "Model load times (not mirrored)", "Charts", "Method and assumptions"],
    "ja": ["ターゲット", "モデル別の速度", "16 GB に収まるか", "GPU に載ったモデルの割合", "コスト",
           "判定", "カテゴリ別のおすすめモデル", "長文脈の正答と日本語文字の割合",
           "モデルの読み込み時間（換算なし）", "グラフ", "手法と前提"],
}  # fmt: skip


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


def test_speed_figures_trace_to_the_fixture(run_dir):
    md, _ = write(run_dir)
    # T4 llama3:8b chat-en/chat-ja decode 34, 36, 35, 35: mean 35.0, sample sd 0.82;
    # prompt 800, 780, 820, 800: 800 ± 16; TTFT 0.50, 0.52, 0.55, 0.55: 0.53 ± 0.02.
    speed = md[md.index("## Speed") :]
    t4 = md_row(speed, "aws g4dn.2xlarge (Tesla T4)")
    assert t4[1:5] == ["35.0 ± 0.8", "800 ± 16", "0.53 ± 0.02", "4"]
    # Projected: 35.0 x (63.86 x 3.56) / (35.5 x 4.56) = 49.15 tok/s; prefill x 88.4 / 65.
    row = md_row(speed, "RTX 4060 Ti 16GB (projected from aws g4dn.2xlarge (Tesla T4))")
    assert row[1].startswith("49.2 (") and row[2] == f"{800 * 88.4 / 65:.0f}"
    low, high = (float(x) for x in row[1][6:-1].split("–"))
    assert low < 49.2 < high


def test_fit_share_cost_and_quality_figures(run_dir):
    md, _ = write(run_dir)
    mixtral = md_row(md, "mixtral:8x7b-instruct-v0.1-q4_K_M")  # first: the 16 GB fit table
    assert mixtral[6:8] == ["partial", "59%"]
    phi3 = md_row(md, "phi3:3.8b-mini-128k-instruct-q4_K_M")  # from the profile's model list
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


def test_verdict_uses_the_median_projection(run_dir):
    md, _ = write(run_dir)
    verdict = md[md.index("## Verdict") :]
    row = md_row(verdict, "llama3:8b")
    # median of the T4- and A10G-based projections for the 4060 Ti
    assert row[2] == "fits" and row[3].startswith("yes (") and row[3].endswith(" tok/s)")
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
    assert "(projected from" not in md


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
    assert row[1:6] == ["aws g4dn.2xlarge (Tesla T4)", "this PC (RTX 4060 Ti 16GB)", "49.2",
                        row[4], "53.0"]  # fmt: skip
    assert row[6] == f"{49.15 / 53 - 1:+.0%}" and row[7] == "yes"
    # the verdict now uses the PC's own measurement
    assert md_row(md[md.index("## Verdict") :], "llama3:8b")[3] == "yes (53.0 tok/s)"


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
         "document.querySelectorAll('section').length])", "returnByValue": True},
        session,
    )  # fmt: skip
    images, all_loaded, sections = json.loads(check["result"]["value"])
    assert (images, all_loaded) == (3, True)
    assert sections == len(SECTIONS[lang]) - 1  # "best model" is a subsection of the verdict
    shot = chromium.send("Page.captureScreenshot", {"format": "png"}, session)
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    artifact = run_dir / f"report-{lang}.screenshot.png"
    artifact.write_bytes(png)
    print(f"\nscreenshot: {artifact}")
