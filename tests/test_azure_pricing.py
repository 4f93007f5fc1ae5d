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


# Tier sizes: MicrosoftDocs/azure-docs includes/disk-storage-premium-ssd-sizes.md (P1 4 GiB ...
# P15 256 GiB ... P80 32,767 GiB), disk-storage-standard-ssd-sizes.md (E1-E80) and
# disk-storage-standard-hdd-sizes.md (S4-S80, no S1-S3); a disk bills as the next tier up
# (articles/virtual-machines/disks-understanding-billing.md: "a 58 GiB Premium SSD is billed as a
# P6 disk, and a 400 GiB Premium SSD is billed as a P20 disk").
@pytest.mark.parametrize(
    ("disk_type", "gb", "tier"),
    [
        ("Premium_LRS", 200, "P15"),  # the default: 200 GB bills as P15 (256 GiB)
        ("Premium_LRS", 30, "P4"),
        ("Premium_LRS", 58, "P6"),
        ("Premium_LRS", 256, "P15"),
        ("Premium_LRS", 257, "P20"),
        ("Premium_LRS", 400, "P20"),
        ("Premium_LRS", 4095, "P50"),
        ("Premium_LRS", 32767, "P80"),
        ("StandardSSD_LRS", 200, "E15"),
        ("Standard_LRS", 10, "S4"),
        ("Standard_LRS", 200, "S15"),
    ],
)
def test_disk_tier_rounds_the_size_up(disk_type, gb, tier):
    assert pricing.disk_tier(CAT, disk_type, gb).name == tier


def test_a_disk_larger_than_the_largest_tier_is_an_error_not_the_top_tier_price():
    # Billing it as P80 would understate nothing today, but there is no tier for it at all:
    # Azure refuses such a disk, so the deploy must not price it.
    with pytest.raises(CommandError) as err:
        pricing.disk_tier(CAT, "Premium_LRS", 40000)
    assert "azure.disk_gb = 40000" in str(err.value) and "\n" not in str(err.value)


def test_every_catalog_figure_names_its_region_and_a_dated_source():
    prices = CAT.azure_prices
    for key in prices.sources():
        assert CAT.sources[key].as_of and CAT.sources[key].url.startswith("https://")
    assert prices.hours_per_month == 730
    assert set(prices.disks) == {"Premium_LRS", "StandardSSD_LRS", "Standard_LRS"}
    # Only figures a source publishes for that region; the default 200 GB Premium disk in the
    # default westeurope has none (review of #10: no recalled figures).
    assert prices.disks["Premium_LRS"].prices["eastus"]["P15"].usd_per_month == 38.01
    assert "P15" not in prices.disks["Premium_LRS"].prices.get("westeurope", {})
    assert prices.public_ip["eastus"].usd_per_hour == 0.005
    # westeurope's static IP: infracost's nat_gateway golden test ("West Europe", Standard,
    # Static): IP address (static, regional) 730 hours $3.65 = $0.005/h.
    assert prices.public_ip["westeurope"].usd_per_hour == 0.005
    assert prices.public_ip["westeurope"].source == "infracost-golden-nat-gateway-westeurope"
    assert "northeurope" not in prices.public_ip


def test_live_vm_disk_and_ip_prices():
    http = Retail()
    quote = pricing.retail_price("westeurope", "Standard_NC8as_T4_v3", http, NOW)
    assert quote == pricing.PriceQuote(0.84, 0.1932, pricing.LIVE, NOW.isoformat())
    # The "P15 LRS Disk Mount" meter (shared disks) is not the disk's own price.
    assert pricing.retail_disk_month("westeurope", "Premium_LRS", "P15", CAT, http) == 41.82
    assert pricing.retail_public_ip_hour("westeurope", http) == 0.005
    assert any("skuName+eq+%27P15+LRS%27" in u for u in http.urls)
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


def test_without_live_prices_a_published_figure_for_the_region_stands_in_and_says_so(
    profile_file,
):
    profile = load_profile(
        profile_file(("azure", "location", '"eastus"'), ("azure", "spot", "false"))
    )
    quote = pricing.PriceQuote(0.526, None, pricing.LIVE, "t")
    cost = pricing.vm_cost(profile, "Standard_NC4as_T4_v3", quote, pricing.Extras(), NOW)
    assert cost.sources["disk"] == "catalog terrapod-pricegen-disks"
    assert cost.sources["public_ip"] == "catalog infracost-golden-public-ip"
    assert cost.now.disk == round(38.01 / 730, 5) and cost.now.public_ip == 0.005


def test_without_live_prices_and_no_figure_for_the_region_the_price_is_unknown(profile_file):
    # westeurope (the default) has no published P15 figure: never borrow eastus's.
    profile = load_profile(profile_file())
    with pytest.raises(pricing.PriceUnknown) as err:
        pricing.vm_cost(profile, "Standard_NC8as_T4_v3", None, pricing.Extras(), NOW)
    assert "P15" in str(err.value) and "westeurope" in str(err.value)
    assert "price unknown; live price needed" in str(err.value) and "\n" not in str(err.value)
    # Live disk but no IP figure: still unknown, named (northeurope has no published IP figure).
    north = load_profile(
        profile_file(("azure", "location", '"northeurope"'), ("azure", "spot_max_price", "0.5"))
    )
    with pytest.raises(pricing.PriceUnknown, match="public IP in northeurope"):
        pricing.vm_cost(north, "Standard_NC8as_T4_v3", None, pricing.Extras(41.82, None), NOW)
    # westeurope's IP is published: with the disk read live, the VM is priced.
    cost = pricing.vm_cost(profile, "Standard_NC8as_T4_v3", None, pricing.Extras(41.82), NOW)
    assert cost.sources["public_ip"] == "catalog infracost-golden-nat-gateway-westeurope"


def test_offline_unknown_names_the_rate_and_says_the_deploy_reads_it(profile_file):
    assert pricing.offline_unknown_text(load_profile(profile_file()), "Standard_NC8as_T4_v3") == (
        "OS disk P15 (Premium_LRS) in westeurope: price unknown offline; read live at deploy"
    )
    east = load_profile(profile_file(("azure", "location", '"eastus"')))
    assert pricing.offline_unknown_text(east, "Standard_NC8as_T4_v3") is None


def test_a_spot_cap_and_on_demand(profile_file):
    capped = load_profile(profile_file(("azure", "spot_max_price", "0.4")))
    cost = pricing.vm_cost(capped, "Standard_NC8as_T4_v3", None, pricing.Extras(41.82, 0.005), NOW)
    assert cost.worst.compute == 0.4
    regular = load_profile(profile_file(("azure", "spot", "false")))
    cost = pricing.vm_cost(
        regular,
        "Standard_NC8as_T4_v3",
        pricing.PriceQuote(0.9, 0.2, pricing.LIVE, "t"),
        pricing.Extras(41.82, 0.005),
        NOW,
    )
    assert (cost.price.kind, cost.now.compute, cost.worst.compute) == ("on-demand", 0.9, 0.9)


def test_no_price_at_all_is_a_one_line_error(profile_file):
    profile = load_profile(profile_file(("azure", "location", '"northeurope"')))
    with pytest.raises(CommandError) as err:
        pricing.vm_cost(profile, "Standard_NC8as_T4_v3", None, pricing.Extras(), NOW)
    assert "spot_max_price" in str(err.value) and "\n" not in str(err.value)


def test_offline_worst_case_for_rig_plan_is_unknown_without_a_published_figure(profile_file):
    # westeurope: no published P15 or IP figure -> no number rather than a made-up one.
    assert (
        pricing.offline_worst_case_usd(load_profile(profile_file()), "Standard_NC8as_T4_v3") is None
    )


def test_offline_worst_case_for_rig_plan_bounds_what_the_deploy_enforces(profile_file):
    # eastus on demand: catalog 0.526 (instances.toml) + P15 38.01/730 + IP 0.005, for
    # max_hours = 4 (the schedule's hours).
    east = (("azure", "location", '"eastus"'), ("azure", "spot", "false"))
    profile = load_profile(profile_file(*east))
    rate = 0.526 + round(38.01 / 730, 5) + 0.005
    assert pricing.offline_worst_case_usd(profile, "Standard_NC4as_T4_v3") == round(rate * 4, 2)
    short = load_profile(profile_file(*east, ("autostop", "max_hours", "0.25")))
    assert pricing.offline_worst_case_usd(short, "Standard_NC4as_T4_v3") == round(rate * 70 / 60, 2)
    # ^ the schedule cannot stop it before its 60 min lead + 10 min to answer the deploy


def _vm(sku: str, price: float, **extra: Any) -> dict[str, Any]:
    """One Virtual Machines item in the Retail Prices API's shape (Microsoft Learn, "Azure
    Retail Prices REST API", example response: skuName "D14 Spot", meterName "D14/DS14 Spot",
    productName "Virtual Machines Dv2 Series Windows", type "DevTestConsumption")."""
    item = {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": "westeurope",
        "effectiveStartDate": "2024-01-01T00:00:00Z",
        "meterName": sku,
        "productName": "Virtual Machines NCasT4_v3 Series",
        "skuName": sku,
        "serviceName": "Virtual Machines",
        "armSkuName": "Standard_NC8as_T4_v3",
        "unitOfMeasure": "1 Hour",
        "type": "Consumption",
    }
    return item | extra


def test_retail_parsing_keeps_linux_pay_as_you_go_and_spot_only():
    items = [
        _vm("NC8as T4 v3", 0.84),
        _vm("NC8as T4 v3 Spot", 0.19),
        _vm("NC8as T4 v3 Low Priority", 0.05),  # Batch low priority: not what Spot bills
        _vm("NC8as T4 v3", 0.01, meterName="NC8as T4 v3 Low Priority"),  # by meter name only
        _vm("NC8as T4 v3", 1.5, productName="Virtual Machines NCasT4_v3 Series Windows"),
        _vm("NC8as T4 v3 Spot", 0.5, productName="Virtual Machines NCasT4_v3 Series Windows"),
        _vm("NC8as T4 v3", 0.3, type="DevTestConsumption"),
        _vm("NC8as T4 v3", 0.2, type="Reservation", unitOfMeasure="1 Hour"),
        _vm("NC8as T4 v3", 0.7, currencyCode="EUR"),
        _vm("NC8as T4 v3", 9.9, unitOfMeasure="1/Month"),
        {"skuName": "NC8as T4 v3", "unitOfMeasure": "1 Hour"},  # no retailPrice: skipped
    ]
    assert pricing.parse_retail(items, NOW) == pricing.PriceQuote(
        0.84, 0.19, pricing.LIVE, NOW.isoformat()
    )
    assert pricing.parse_retail(items[2:], NOW) is None


def test_retail_parsing_takes_the_latest_price_in_effect_not_a_future_one():
    items = [
        _vm("NC8as T4 v3", 0.90, effectiveStartDate="2027-01-01T00:00:00Z"),  # announced
        _vm("NC8as T4 v3", 0.84, effectiveStartDate="2025-06-01T00:00:00Z"),
        _vm("NC8as T4 v3", 0.80, effectiveStartDate="2021-01-01T00:00:00Z"),  # superseded
        _vm("NC8as T4 v3 Spot", 0.25, effectiveStartDate="2026-11-01T00:00:00Z"),
        _vm("NC8as T4 v3 Spot", 0.19, effectiveStartDate="2024-01-01T00:00:00Z"),
    ]
    quote = pricing.parse_retail(items, NOW)
    assert quote is not None and (quote.on_demand, quote.spot) == (0.84, 0.25)


def test_retail_pages_are_followed_and_a_page_loop_gives_up():
    page2 = "https://prices.azure.com/api/retail/prices?$filter=x&$skip=1000"
    pages = {
        "first": Response(200, {"Items": [_vm("NC8as T4 v3", 0.84)], "NextPageLink": page2}),
        page2: Response(200, {"Items": [_vm("NC8as T4 v3 Spot", 0.19)], "NextPageLink": None}),
    }

    def http(method: str, url: str, headers: Any, form: Any) -> Response:
        return pages[url if url == page2 else "first"]

    quote = pricing.retail_price("westeurope", "Standard_NC8as_T4_v3", http, NOW)
    assert quote is not None and (quote.on_demand, quote.spot) == (0.84, 0.19)

    def looping(method: str, url: str, headers: Any, form: Any) -> Response:
        return Response(200, {"Items": [_vm("NC8as T4 v3", 0.84)], "NextPageLink": page2})

    assert pricing.retail_price("westeurope", "Standard_NC8as_T4_v3", looping, NOW) is None
    # A body that is not the documented shape: no price, not a crash.
    assert pricing.retail_price("westeurope", "x", lambda *a: Response(200, ["?"]), NOW) is None
    assert pricing.retail_price("westeurope", "x", lambda *a: Response(429, {}), NOW) is None


def test_disk_and_ip_meters_pick_the_price_in_effect():
    disk = fixture("retail_disk.json")
    later = dict(disk["Items"][0], retailPrice=99.0, effectiveStartDate="2027-03-01T00:00:00Z")
    disk["Items"].append(later)
    http = lambda *a: Response(200, disk)  # noqa: E731
    assert pricing.retail_disk_month("westeurope", "Premium_LRS", "P15", CAT, http, NOW) == 41.82
    ip = fixture("retail_ip.json")
    ip["Items"].append(dict(ip["Items"][0], retailPrice=0.004, type="DevTestConsumption"))
    assert pricing.retail_public_ip_hour("westeurope", lambda *a: Response(200, ip), NOW) == 0.005


def test_the_disk_meter_is_the_disk_itself_in_either_spelling():
    # infracost internal/resources/azure/managed_disk.go matches meterName
    # ^<tier> (<redundancy> )?Disk(s)?$ under skuName "<tier> LRS": "P15 LRS Disk" today,
    # "P15 Disks" on older meters; "P15 LRS Disk Mount" is the shared-disk meter.
    base = fixture("retail_disk.json")["Items"][0]
    for meter, price, want in [
        ("P15 Disks", 41.0, 41.0),
        ("P15 LRS Disk Mount", 12.55, None),
        ("P15 LRS Disk Operations", 0.1, None),
        ("P150 LRS Disk", 99.0, None),
    ]:
        body = {"Items": [dict(base, meterName=meter, retailPrice=price)]}
        http = lambda *a, b=body: Response(200, b)  # noqa: E731
        got = pricing.retail_disk_month("westeurope", "Premium_LRS", "P15", CAT, http, NOW)
        assert got == want, meter
