"""Closeness of each stand-in to the planned PC, checked against hand-computed figures."""

from __future__ import annotations

import dataclasses
import math

from rig.catalog import load_catalog
from rig.compare import cheapest_offer, closeness, decode_efficiency

CAT = load_catalog()


def by_gpu(items):
    return {c.gpu.key: c for c in items}


def test_bandwidth_ratio_and_vram_delta():
    items = by_gpu(closeness(CAT, "rtx-4060-ti-16gb", {"aws": "eu-west-1", "azure": "westeurope"}))
    assert set(items) == {"t4", "a10g", "l4"}
    assert math.isclose(items["t4"].bandwidth_ratio, 320 / 288)
    assert items["t4"].vram_delta_gb == 0
    assert items["a10g"].vram_delta_gb == 8 and "OLLAMA_GPU_OVERHEAD" in items["a10g"].summary()
    five = by_gpu(closeness(CAT, "rtx-5060-ti-16gb"))
    assert math.isclose(five["l4"].bandwidth_ratio, 300 / 448)


def test_decode_efficiency_is_the_best_published_run():
    # 4060 Ti: LocalScore's 49.6 t/s x 4.58 GiB / 288 GB/s. The scoreboard's 63.86 (85 %) is
    # not used: it was found at no stored source (rig/catalog/calibration.toml, its notes).
    assert math.isclose(decode_efficiency(CAT, "rtx-4060-ti-16gb"), 49.6 * 4.58 * 2**30 / 1e9 / 288)
    # T4: codestral 22b at 14.36 t/s x 12.11 GiB / 320 GB/s is its best share
    assert math.isclose(decode_efficiency(CAT, "t4"), 14.36 * 12.11 * 2**30 / 1e9 / 320)
    # unused points do not count: the RTX 5070 Ti's LocalScore run (79.8, use = false) would
    # give 41 %; its scoreboard row (176.85 t/s x 3.56 GiB / 896 GB/s) gives 75 %
    assert math.isclose(
        decode_efficiency(CAT, "rtx-5070-ti-16gb"), 176.85 * 3.56 * 2**30 / 1e9 / 896
    )
    # and a card whose only point is unused has no figure at all
    only_unused = dataclasses.replace(
        CAT, calibration=[p for p in CAT.calibration if p.gpu != "rtx-5070-ti-16gb" or not p.use]
    )
    assert decode_efficiency(only_unused, "rtx-5070-ti-16gb") is None
    t4 = by_gpu(closeness(CAT, "rtx-4060-ti-16gb"))["t4"]
    assert "reaches up to 58% of it vs 85%" in t4.summary()  # 49.6 x 4.58 GiB / 288 = 85 %


def test_cheapest_offer_prefers_the_profile_region():
    here = cheapest_offer(CAT, "t4", {"aws": "eu-west-1", "azure": "westeurope"})
    assert (here.instance.key, here.price.region) == ("g4dn.xlarge", "eu-west-1")
    assert math.isclose(here.usd_per_vram_gb_hour, 0.587 / 16)
    anywhere = cheapest_offer(CAT, "t4")
    assert anywhere.price.usd_per_hour == 0.526
    # No L4 priced in eu-west-1: fall back to the cheapest listed anywhere, and say where.
    l4 = cheapest_offer(CAT, "l4", {"aws": "eu-west-1", "azure": "westeurope"})
    assert (l4.instance.key, l4.price.region) == ("g6.xlarge", "us-east-1")
    assert "us-east-1" in by_gpu(closeness(CAT, "rtx-4060-ti-16gb"))["l4"].summary()
