"""rig/azure/pricing.py: compute, OS disk and public IP rates, live first, catalog otherwise.

Retail prices payloads follow the Azure Retail Prices REST API documentation
(tests/fixtures/azure/retail_*.json); the worst case itself is rig/cost.py's one formula.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "azure"))

from fake_arm import fixture

from rig.azure import pricing
from rig.azure.http import Response
from rig.catalog import load_catalog
from rig.cost import worst_case_usd
from rig.problems import CommandError
from rig.profile import load_profile

NOW = dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC)
CAT = load_catalog()


class Retail:
    """prices.azure.com: answers by the meter the filter asks for; records the URLs."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, method: str, url: str, headers: Any, form: Any) -> Response:
        self.urls.append(url)
        if "Virtual+Machines" in url:
            return Response(200, fixture("retail_prices.json"))
        if "Storage" in url:
            return Response(200, fixture("retail_disk.json"))
        if "Virtual+Network" in url:
            return Response(200, fixture("retail_ip.json"))
        return Response(200, {"Items": []})


def offline(*_a: Any) -> Response:
    raise CommandError("cannot reach prices.azure.com")


@pytest.mark.parametrize(
    ("disk_type", "gb", "tier"),
    [
        ("Premium_LRS", 200, "P15"),  # the default: 200 GB bills as P15 (256 GiB)
        ("Premium_LRS", 30, "P4"),
        ("Premium_LRS", 256, "P15"),
        ("Premium_LRS", 257, "P20"),
        ("Premium_LRS", 4095, "P50"),
        ("StandardSSD_LRS", 200, "E15"),
        ("Standard_LRS", 200, "S15"),
    ],
)
def test_disk_tier_rounds_the_size_up(disk_type, gb, tier):
    assert pricing.disk_tier(CAT, disk_type, gb).name == tier


def test_catalog_figures_are_cited_and_say_they_are_not_reverified():
    prices = CAT.azure_prices
    for key in prices.sources():
        assert "NOT re-verified" in CAT.sources[key].title and CAT.sources[key].as_of
    assert prices.hours_per_month == 730 and prices.public_ip_usd_per_hour == 0.005
    assert set(prices.disks) == {"Premium_LRS", "StandardSSD_LRS", "Standard_LRS"}


def test_live_vm_disk_and_ip_prices():
    http = Retail()
    quote = pricing.retail_price("westeurope", "Standard_NC8as_T4_v3", http, NOW)
    assert quote == pricing.PriceQuote(0.84, 0.1932, pricing.LIVE, NOW.isoformat())
    # The "P15 LRS Disk Mount" meter (shared disks) is not the disk's own price.
    assert pricing.retail_disk_month("westeurope", "Premium_LRS", "P15", CAT, http) == 41.82
    assert pricing.retail_public_ip_hour("westeurope", http) == 0.005
    assert any("meterName+eq+%27P15+LRS+Disk%27" in u for u in http.urls)
    assert any("Standard+IPv4+Static+Public+IP" in u for u in http.urls)


def test_offline_everything_is_none():
    assert pricing.retail_price("westeurope", "Standard_NC8as_T4_v3", offline) is None
    assert pricing.live_extras("westeurope", "Premium_LRS", 200, CAT, offline) == pricing.Extras()


def test_spot_cost_now_and_at_its_cap(profile_file):
    profile = load_profile(profile_file())
    quote = pricing.PriceQuote(0.84, 0.19, pricing.LIVE, "t")
    cost = pricing.vm_cost(
        profile, "Standard_NC8as_T4_v3", quote, pricing.Extras(41.82, 0.005), NOW
    )
    assert (cost.price.usd_per_hour, cost.price.kind, cost.price.on_demand_usd_per_hour) == (
        0.19,
        "spot",
        0.84,
    )
    assert cost.now.compute == 0.19 and cost.worst.compute == 0.84  # max_price -1: up to on-demand
    assert cost.now.disk == round(41.82 / 730, 5) and cost.now.public_ip == 0.005
    assert cost.disk_tier.startswith("P15")
    # The worst case is the shared formula over compute cap + disk + IP.
    assert worst_case_usd(cost.worst, 4.0) == round((0.84 + 41.82 / 730 + 0.005) * 4, 2) == 3.61


def test_without_live_prices_the_catalog_stands_in_and_says_so(profile_file):
    cost = pricing.vm_cost(
        load_profile(profile_file()), "Standard_NC8as_T4_v3", None, pricing.Extras(), NOW
    )
    assert cost.price.usd_per_hour == 0.84  # the cap as upper bound
    assert cost.sources["compute"].startswith("spot price unknown: its cap (catalog")
    assert cost.sources["disk"] == "catalog azure-managed-disk-prices"
    assert cost.now.disk == round(38.02 / 730, 5)


def test_a_spot_cap_and_on_demand(profile_file):
    capped = load_profile(profile_file(("azure", "spot_max_price", "0.4")))
    cost = pricing.vm_cost(capped, "Standard_NC8as_T4_v3", None, pricing.Extras(), NOW)
    assert cost.worst.compute == 0.4
    regular = load_profile(profile_file(("azure", "spot", "false")))
    cost = pricing.vm_cost(
        regular,
        "Standard_NC8as_T4_v3",
        pricing.PriceQuote(0.9, 0.2, pricing.LIVE, "t"),
        pricing.Extras(),
        NOW,
    )
    assert (cost.price.kind, cost.now.compute, cost.worst.compute) == ("on-demand", 0.9, 0.9)


def test_no_price_at_all_is_a_one_line_error(profile_file):
    profile = load_profile(profile_file(("azure", "location", '"northeurope"')))
    with pytest.raises(CommandError) as err:
        pricing.vm_cost(profile, "Standard_NC8as_T4_v3", None, pricing.Extras(), NOW)
    assert "spot_max_price" in str(err.value) and "\n" not in str(err.value)


def test_offline_worst_case_for_rig_plan_bounds_what_the_deploy_enforces(profile_file):
    # Catalog: 0.84 cap + P15 38.02/730 + IP 0.005, for max_hours = 4 (the schedule's hours).
    profile = load_profile(profile_file())
    assert pricing.offline_worst_case_usd(profile, "Standard_NC8as_T4_v3") == round(
        (0.84 + round(38.02 / 730, 5) + 0.005) * 4, 2
    )
    short = load_profile(profile_file(("autostop", "max_hours", "0.25")))
    assert pricing.offline_worst_case_usd(short, "Standard_NC8as_T4_v3") == round(
        (0.84 + round(38.02 / 730, 5) + 0.005) * 1, 2
    )  # the schedule cannot stop it before its 60 min lead
