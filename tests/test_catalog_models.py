"""The models a user asks about next are in the catalog with real tags and cited figures, and
the plan's list stays the default (issue 17, item 8)."""

from __future__ import annotations

import datetime as dt

import pytest

from rig.catalog import load_catalog
from rig.profile import DEFAULT_MODELS, Profile

CAT = load_catalog()


# Each row: tag, GB (ollama.com/library default tag), layers, KV heads, head dim, context
# (each model's config.json; sources in rig/catalog/sources.toml, read 2026-12-02).
@pytest.mark.parametrize(
    ("tag", "gb", "layers", "kv_heads", "head_dim", "ctx"),
    [
        ("qwen3:8b", 5.2, 36, 8, 128, 40960),
        ("qwen3:14b", 9.3, 40, 8, 128, 40960),
        ("gemma3:4b", 3.3, 34, 4, 256, 131072),
        ("gemma3:12b", 8.1, 48, 8, 256, 131072),
        ("llama3.1:8b", 4.9, 32, 8, 128, 131072),
        ("phi4:14b", 9.1, 40, 10, 128, 16384),
        ("gpt-oss:20b", 14.0, 24, 8, 64, 131072),
        ("deepseek-r1:8b", 5.2, 36, 8, 128, 131072),
        (
            "hf.co/mradermacher/Llama-3.1-Swallow-8B-Instruct-v0.3-GGUF:Q4_K_M",
            4.92,
            32,
            8,
            128,
            131072,
        ),
    ],
)
def test_current_models_carry_their_cited_figures(tag, gb, layers, kv_heads, head_dim, ctx):
    m = CAT.models[tag]
    assert (m.download_gb, m.block_count, m.head_count_kv) == (gb, layers, kv_heads)
    assert (m.key_length, m.value_length, m.context_length) == (head_dim, head_dim, ctx)
    for field in ("download_gb", "block_count", "context_length"):
        assert CAT.sources[m.source_of(field)].as_of >= dt.date(2026, 12, 2)


def test_a_current_japanese_model_is_offered_with_its_hf_co_tag():
    ja = [t for t, m in CAT.models.items() if "ja" in m.categories and t.startswith("hf.co/")]
    assert "hf.co/mradermacher/Llama-3.1-Swallow-8B-Instruct-v0.3-GGUF:Q4_K_M" in ja


def test_the_plans_models_stay_the_default():
    assert Profile().bench.models == list(DEFAULT_MODELS)
    assert "qwen3:8b" not in DEFAULT_MODELS and "llama3:8b" in DEFAULT_MODELS


def test_no_model_text_speaks_of_a_conversation_the_user_never_saw():
    for m in CAT.models.values():
        assert "conversation" not in m.remark.lower()
    for s in CAT.sources.values():
        assert "conversation" not in s.title.lower()
    # Source keys are printed too (rig catalog, make check, the plan's price lines).
    for key in CAT.sources:
        assert "conversation" not in key, key


def test_the_readme_and_rig_toml_speak_of_the_plan_not_a_conversation():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for name in ("README.md", "rig.toml"):
        text = (root / name).read_text(encoding="utf-8")
        assert "conversation" not in text.lower() and "会話" not in text, name
