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
    # the cards the user might buy instead (issue 14)
    assert {k for k, r in roles.items() if r == "alternative"} == {
        "rtx-5070-ti-16gb",
        "rtx-4070-ti-super-16gb",
        "rtx-5080-16gb",
        "rtx-3090",
        "rtx-3070",
    }


def test_every_consumer_card_has_a_dated_cited_launch_price():
    for gpu in CAT.gpus.values():
        if gpu.segment != "consumer":
            continue
        assert gpu.launch_msrp_usd and gpu.launch_date, gpu.key
        for field in ("launch_msrp_usd", "launch_date"):
            assert CAT.sources[gpu.source_of(field)].as_of, (gpu.key, field)
    # NVIDIA's announced prices (sources.toml: nvidia-rtx-50-launch, -40-super-, -30-, ...)
    prices = {k: g.launch_msrp_usd for k, g in CAT.gpus.items() if g.segment == "consumer"}
    assert prices["rtx-5060-ti-16gb"] == 429 and prices["rtx-4060-ti-16gb"] == 499
    assert (prices["rtx-5070-ti-16gb"], prices["rtx-5080-16gb"]) == (749, 999)
    assert (prices["rtx-3090"], prices["rtx-3070"]) == (1499, 499)


def test_every_gpu_has_tensor_generation_and_int8_or_says_why_not():
    gens = {"turing": 2, "ampere": 3, "ada": 4, "blackwell": 5}
    for gpu in CAT.gpus.values():
        assert gpu.tensor_core_gen == gens[gpu.arch], gpu.key
        if gpu.int8_tops_dense is None or gpu.int8_tops_sparse is None:
            assert "INT8" in gpu.notes or "sparsity" in gpu.notes, gpu.key
        if gpu.int8_tops_dense and gpu.int8_tops_sparse:
            assert gpu.int8_tops_sparse == pytest.approx(2 * gpu.int8_tops_dense, rel=0.01)
    # Turing has no structured sparsity; the T4 datasheet gives 130 dense INT8 TOPS
    assert (CAT.gpus["t4"].int8_tops_dense, CAT.gpus["t4"].int8_tops_sparse) == (130, None)


def test_derived_figures_say_so():
    for gpu in CAT.gpus.values():
        for field, source in gpu.field_sources.items():
            if source == "rehearsal-estimate":
                assert "derived" in gpu.notes or "assumed" in gpu.notes, (gpu.key, field)


@pytest.mark.parametrize(
    ("gpu", "mib"),
    [("t4", 15360), ("a10g", 23028), ("l4", 23034), ("rtx-4060-ti-16gb", 16380),
     # GDDR7 cards report less than a GDDR6 16 GB GeForce: public nvidia-smi printouts show
     # "16311MiB" on an RTX 5060 Ti and "16303MiB" on an RTX 5070 Ti and an RTX 5080
     ("rtx-5060-ti-16gb", 16311), ("rtx-5070-ti-16gb", 16303), ("rtx-5080-16gb", 16303)],
)  # fmt: skip
def test_usable_vram_is_what_nvidia_smi_reports(gpu, mib):
    # REFERENCE.md, "Checked against vendor documents": nvidia-smi memory.total with ECC on
    assert CAT.gpus[gpu].usable_mib == mib
    for g in CAT.gpus.values():
        assert g.usable_mib <= g.vram_gb * 1024


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
    # REFERENCE.md: the llama.cpp CUDA scoreboard (Llama-2-7B Q4_0, tg128) and ollama issue 12770
    # (the reviewed catalog adds three rows of the same table: RTX 5080, 5070 Ti, 3090)
    board = {p.gpu: p.tok_s for p in CAT.calibration if p.source == "llamacpp-cuda-scoreboard"}
    assert board == {
        "rtx-4060-ti-16gb": 63.86, "rtx-5060-ti-16gb": 90.94, "rtx-4090": 186.21,
        "a100-80gb": 190.88, "rtx-5080-16gb": 181.99, "rtx-5070-ti-16gb": 176.85,
        "rtx-3090": 158.16,
    }  # fmt: skip
    t4 = next(p for p in CAT.calibration if p.source == "ollama-issue-12770")
    assert (t4.gpu, t4.engine, t4.tok_s, t4.build) == ("t4", "ollama", 35.54, "0.9.2")


def test_every_calibration_point_is_complete_and_cited():
    for p in CAT.calibration:
        assert p.gpu in CAT.gpus and p.source in CAT.sources
        assert CAT.sources[p.source].url.startswith("https://")
        assert p.model and p.quant and p.test and p.model_gib > 0 and p.series
        assert p.model_bytes == round(p.model_gib * 2**30)
        if not p.use:
            assert p.notes, "a point kept out of the fit says why"


def test_planned_and_cloud_gpus_have_two_usable_points_each():
    usable: dict[str, int] = {}
    for p in CAT.calibration:
        if p.use:
            usable[p.gpu] = usable.get(p.gpu, 0) + 1
    for gpu in ("t4", "a10g", "l4", "rtx-5060-ti-16gb"):
        assert usable.get(gpu, 0) >= 2, gpu
    # The RTX 4060 Ti has one checked point (LocalScore result 143, 49.6 tok/s). Its second,
    # the llama.cpp scoreboard's 63.86 quoted by REFERENCE.md, was found at no stored source,
    # so it stays unused: a known gap, not a reason to use an unchecked number.
    assert usable["rtx-4060-ti-16gb"] == 1
    gap = [p for p in CAT.calibration if p.gpu == "rtx-4060-ti-16gb" and not p.use]
    assert any("could not be checked" in p.notes for p in gap)


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
        env={"COLUMNS": "320", "PATH": "/usr/bin:/bin"},
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
        "INT8 TOPS (sparse, 2:4)",
        "Tensor cores (generation)",
        "Launch MSRP ($)",
        "RTX 5070 Ti 16GB",
    ):
        assert text in result.stdout


# ------------------------------------------------------------------ calibration provenance


def test_a_series_is_one_source_and_one_method():
    # A series pairs points for the back-test (held-out point projected from its partners), so
    # its points must share one source and one test: geerlingguy/ai-benchmarks' RTX 4090 on a
    # Ryzen 9 7900X was added by Jeff Geerling on 2024-11-07 (commit eba024d), not by pull
    # request 11 (commit 2230712, 2025-01-30), whose own RTX 4090 row is the 13900K's 216.48.
    series: dict[str, set[tuple[str, str]]] = {}
    for p in CAT.calibration:  # LocalScore's test names the result number: one test still
        series.setdefault(p.series, set()).add((p.source, p.test.split(", result")[0]))
    assert {s: v for s, v in series.items() if len(v) > 1} == {}
    pr11 = {(p.gpu, p.tok_s) for p in CAT.calibration if p.series == "geerlingguy-pr11"}
    assert pr11 == {("rtx-4070-ti-super-16gb", 198.95), ("rtx-4090", 216.48)}
    r7900x = next(p for p in CAT.calibration if p.tok_s == 237.05)
    assert r7900x.series != "geerlingguy-pr11" and r7900x.measured == "2024-11"


def test_xiongjiedai_llama2_figures_are_llama_cpp_main_not_llama_bench():
    # XiongjieDai/GPU-Benchmarks-on-LLM-Inference README (commit c795193, Dec 2023 snapshot):
    # "./main ... -n 1024 --ignore-eos" after a ~500-token prompt, "Run three times"; only the
    # May 2024 LLaMA 3 rows come from llama-bench (tg512).
    for p in CAT.calibration:
        if p.source == "xiongjiedai-gpu-benchmarks":
            assert p.engine == ("llama-cli" if p.measured == "2023-12" else "llama-bench")


def test_every_scoreboard_point_in_use_names_its_build():
    # ggml-org/llama.cpp discussion 15013 prints a build hash per row; the rows in use are the
    # ones found, with that hash, at a stored source (a research note quoting the table: RTX
    # 4090 2241453, A100 5143fa8, RTX 5060 Ti 89d1029, RTX 5080 8a4280c, RTX 5070 Ti 933414c,
    # RTX 3090 c76b420). The RTX 4060 Ti row was found nowhere and is not used.
    rows = [p for p in CAT.calibration if p.source == "llamacpp-cuda-scoreboard"]
    used = {p.gpu: p.build for p in rows if p.use}
    assert used == {
        "rtx-5060-ti-16gb": "89d1029", "rtx-4090": "2241453", "a100-80gb": "5143fa8",
        "rtx-5080-16gb": "8a4280c", "rtx-5070-ti-16gb": "933414c", "rtx-3090": "c76b420",
    }  # fmt: skip
    assert [p.gpu for p in rows if not p.use] == ["rtx-4060-ti-16gb"]


def test_mixture_of_experts_models_carry_their_active_parameters():
    # deepseek-ai/DeepSeek-Coder-V2 README: Lite 16B total, 2.4B active; Mistral AI,
    # "Mixtral of experts": 46.7B total, 12.9B per token. Dense models read all their weights.
    dsc = CAT.models["deepseek-coder-v2:16b"]
    assert dsc.active_parameters_b == 2.4 and dsc.read_fraction == pytest.approx(2.4 / 15.7)
    mix = CAT.models["mixtral:8x7b-instruct-v0.1-q4_K_M"]
    assert mix.read_fraction == pytest.approx(12.9 / 46.7)
    assert CAT.models["llama3:8b"].read_fraction == 1.0
