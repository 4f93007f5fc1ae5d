"""The catalog's data: complete, consistent and cited — every number traceable to a source."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rig.catalog import load_catalog
from rig.catalog.schema import Cited

ROOT = Path(__file__).resolve().parent.parent
CAT = load_catalog()


def cited_entries() -> list[Cited]:
    return [
        *CAT.gpus.values(),
        *CAT.instances.values(),
        *CAT.cpus.values(),
        *CAT.ram.values(),
        *CAT.images.values(),
        *CAT.models.values(),
    ]


def test_every_numeric_field_resolves_to_a_dated_source():
    checked = 0
    for entry in cited_entries():
        for field, value in entry:
            if isinstance(value, int | float) and not isinstance(value, bool):
                source = CAT.sources[entry.source_of(field)]
                assert source.title and source.as_of, (entry, field)
                checked += 1
    for inst in CAT.instances.values():
        for price in inst.prices:
            assert CAT.sources[price.source].as_of
            checked += 1
    assert checked > 200


def test_every_source_is_used_and_has_a_date():
    assert CAT.cited_sources() == set(CAT.sources)
    for src in CAT.sources.values():
        assert src.as_of.year >= 2025
        assert src.url.startswith("https://") or src.key == "rehearsal-estimate"


def test_the_five_rehearsal_gpus_are_present_with_their_roles():
    roles = {k: g.role for k, g in CAT.gpus.items()}
    assert {k for k, r in roles.items() if r == "planned"} == {
        "rtx-4060-ti-16gb",
        "rtx-5060-ti-16gb",
    }
    assert {k for k, r in roles.items() if r == "cloud"} == {"t4", "a10g", "l4"}


def test_rtx_5060_ti_uses_the_launched_specs_not_the_prelaunch_estimate():
    card = CAT.gpus["rtx-5060-ti-16gb"]
    assert (card.bandwidth_gbs, card.cuda_cores, card.fp32_tflops) == (448, 4608, 23.7)
    assert (card.vram_gb, card.bus_width_bits, card.compute_capability) == (16, 128, "12.0")
    # The one derived figure says so.
    assert CAT.sources[card.source_of("tensor_fp16_tflops")].key == "rehearsal-estimate"


@pytest.mark.parametrize(
    ("gpu", "bandwidth", "vram"),
    [("rtx-4060-ti-16gb", 288, 16), ("t4", 320, 16), ("a10g", 600, 24), ("l4", 300, 24)],
)
def test_reference_md_gpu_figures(gpu, bandwidth, vram):
    assert (CAT.gpus[gpu].bandwidth_gbs, CAT.gpus[gpu].vram_gb) == (bandwidth, vram)


@pytest.mark.parametrize(
    ("instance", "region", "price"),
    [
        ("g4dn.xlarge", "eu-west-1", 0.587),
        ("g4dn.2xlarge", "eu-west-1", 0.838),
        ("g5.xlarge", "eu-west-1", 1.123),
        ("g5.2xlarge", "eu-west-1", 1.353),
        ("g6.xlarge", "us-east-1", 0.805),
        ("g6.2xlarge", "us-east-1", 0.978),
        ("Standard_NC8as_T4_v3", "westeurope", 0.84),
    ],
)
def test_prices_match_the_cited_data(instance, region, price):
    found = CAT.instances[instance].price_in(region)
    assert found is not None and found.usd_per_hour == price


def test_g6_is_not_assumed_in_eu_west_1():
    for key in ("g6.xlarge", "g6.2xlarge"):
        assert "eu-west-1" not in CAT.instances[key].regions


def test_ram_bandwidth_is_the_ddr_arithmetic():
    assert CAT.ram["ddr5-5600"].bandwidth_gbs == 89.6


def test_models_have_architecture_for_the_kv_cache():
    for model in CAT.models.values():
        assert model.block_count > 0 and model.head_count_kv > 0
        assert model.download_gb > 0 and model.context_length >= 4096
    # phi3 mini 128k: 32 layers x 32 KV heads x (96 + 96) x 131072 tokens x 2 bytes = 48 GiB
    m = CAT.models["phi3:3.8b-mini-128k-instruct-q4_K_M"]
    kv = m.block_count * m.head_count_kv * (m.key_length + m.value_length) * m.context_length * 2
    assert kv == 48 * 2**30


def test_conversation_tags_that_do_not_exist_have_real_replacements():
    assert set(CAT.unavailable) >= {
        "phi3:small",
        "japanese-stablelm-instruct-gamma-7b",
        "rinna/youri-7b-chat",
    }
    for gone in CAT.unavailable.values():
        assert gone.replacement in CAT.models


def test_calibration_points_reproduce_reference_md():
    points = {(p.gpu, p.engine): p.tok_s for p in CAT.calibration}
    assert points[("rtx-4060-ti-16gb", "llama.cpp")] == 63.86
    assert points[("rtx-5060-ti-16gb", "llama.cpp")] == 90.94
    assert points[("rtx-4090", "llama.cpp")] == 186.21
    assert points[("a100-80gb", "llama.cpp")] == 190.88
    assert points[("t4", "ollama")] == 35.5


def test_catalog_json_lists_gpus_and_priced_instances_with_sources():
    out = subprocess.run(
        [sys.executable, "-m", "rig", "catalog", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    data = json.loads(out)
    assert len(data["gpus"]) >= 5
    gpu_instances = [i for i in data["instances"] if i["gpu"] and i["prices"]]
    assert sum(i["cloud"] == "aws" for i in gpu_instances) >= 6
    assert sum(i["cloud"] == "azure" for i in gpu_instances) >= 2
    for inst in gpu_instances:
        for price in inst["prices"]:
            assert price["source"] in data["sources"]
            assert data["sources"][price["source"]]["as_of"]
    t4 = next(c for c in data["closeness"] if c["gpu"] == "t4")
    assert t4["cheapest"]["instance"] == "g4dn.xlarge"
    assert math.isclose(t4["cheapest"]["usd_per_vram_gb_hour"], round(0.587 / 16, 5))


def test_catalog_tables_render_without_a_profile(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rig", "catalog", "--config", str(tmp_path / "none.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    for text in (
        "RTX 4060 Ti 16GB",
        "Tesla T4",
        "g4dn.2xlarge",
        "Standard_NC8as_T4_v3",
        "0.838 (eu-west-1)",
        "per GB VRAM per hour",
        "vantage-2026-01-21",
    ):
        assert text in result.stdout
