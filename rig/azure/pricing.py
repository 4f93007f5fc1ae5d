"""What an Azure rehearsal VM costs: compute, OS disk and public IP, live when possible.

Live figures come from the public Azure retail prices API (prices.azure.com, no sign-in); the
catalog (rig/catalog/instances.toml, azure_prices.toml) stands in when it cannot be reached,
and every figure carries its source. The arithmetic lives in rig/cost.py: this module only
supplies the rates.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rig.azure.http import Http, urllib_http
from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import AzureDiskTier
from rig.cost import HourlyRates, worst_case_usd
from rig.problems import CommandError
from rig.profile import Profile
from rig.state import Price, iso

RETAIL_PRICES = "https://prices.azure.com/api/retail/prices"
LIVE = "azure retail prices API"
# Retail API meter name of the Standard SKU static public IPv4 address (serviceName
# "Virtual Network", productName "IP Addresses").
PUBLIC_IP_METER = "Standard IPv4 Static Public IP"


@dataclass(frozen=True)
class PriceQuote:
    on_demand: float | None
    spot: float | None
    source: str
    at: str


def _retail(filt: str, http: Http) -> list[Mapping[str, Any]] | None:
    """Items matching an OData filter; None when the API cannot be reached or refuses."""
    url = f"{RETAIL_PRICES}?{urllib.parse.urlencode({'$filter': filt})}"
    items: list[Mapping[str, Any]] = []
    while url:
        try:
            resp = http("GET", url, {}, None)
        except CommandError:
            return None  # offline: the catalog stands in, and says so
        if resp.status != 200:
            return None
        items += resp.body.get("Items", [])
        url = resp.body.get("NextPageLink") or ""
    return items


def retail_price(
    location: str, size: str, http: Http = urllib_http, now: dt.datetime | None = None
) -> PriceQuote | None:
    """Live Linux on-demand and spot $/h of a VM size."""
    items = _retail(
        "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and "
        f"armRegionName eq '{location}' and armSkuName eq '{size}'",
        http,
    )
    return None if items is None else parse_retail(items, now or dt.datetime.now(dt.UTC))


def parse_retail(items: list[Mapping[str, Any]], now: dt.datetime) -> PriceQuote | None:
    on_demand = spot = None
    for item in items:
        if item.get("unitOfMeasure") != "1 Hour" or "Windows" in item.get("productName", ""):
            continue
        sku = str(item.get("skuName", ""))
        price = float(item["retailPrice"])
        if sku.endswith(" Spot"):
            spot = price
        elif not sku.endswith(" Low Priority"):
            on_demand = price
    if on_demand is None and spot is None:
        return None
    return PriceQuote(on_demand, spot, LIVE, now.isoformat(timespec="seconds"))


def disk_tier(cat: Catalog, disk_type: str, disk_gb: int) -> AzureDiskTier:
    """The billing tier of an OS disk: the smallest tier at least as large as the disk."""
    tiers = cat.azure_prices.disks[disk_type].tiers
    for tier in tiers:
        if tier.size_gib >= disk_gb:
            return tier
    return tiers[-1]


def retail_disk_month(
    location: str, disk_type: str, tier: str, cat: Catalog, http: Http = urllib_http
) -> float | None:
    """Live USD per month of one managed disk tier (e.g. "P15 LRS Disk")."""
    product = cat.azure_prices.disks[disk_type].product
    items = _retail(
        f"serviceName eq 'Storage' and priceType eq 'Consumption' and armRegionName eq "
        f"'{location}' and meterName eq '{tier} LRS Disk'",
        http,
    )
    for item in items or []:
        if (
            item.get("meterName") == f"{tier} LRS Disk"  # not "... Disk Mount" (shared disks)
            and item.get("productName") == product
            and item.get("unitOfMeasure") == "1/Month"
        ):
            return float(item["retailPrice"])
    return None


def retail_public_ip_hour(location: str, http: Http = urllib_http) -> float | None:
    items = _retail(
        f"serviceName eq 'Virtual Network' and priceType eq 'Consumption' and armRegionName "
        f"eq '{location}' and meterName eq '{PUBLIC_IP_METER}'",
        http,
    )
    for item in items or []:
        if (
            item.get("meterName") == PUBLIC_IP_METER
            and item.get("unitOfMeasure") == "1 Hour"
            and float(item.get("tierMinimumUnits", 0)) == 0
        ):
            return float(item["retailPrice"])
    return None


@dataclass(frozen=True)
class Extras:
    """Live disk and IP figures (None = not read: the catalog's stands in)."""

    disk_usd_per_month: float | None = None
    public_ip_usd_per_hour: float | None = None


def live_extras(
    location: str,
    disk_type: str,
    disk_gb: int,
    cat: Catalog | None = None,
    http: Http = urllib_http,
) -> Extras:
    cat = cat or load_catalog()
    tier = disk_tier(cat, disk_type, disk_gb)
    return Extras(
        retail_disk_month(location, disk_type, tier.name, cat, http),
        retail_public_ip_hour(location, http),
    )


@dataclass(frozen=True)
class VmCost:
    """One VM's rates: `now` at today's price, `worst` with compute at its cap."""

    price: Price  # what the state file records (compute)
    now: HourlyRates
    worst: HourlyRates
    disk_tier: str
    sources: dict[str, str]  # "compute" / "disk" / "public_ip" -> where the figure came from

    def as_json(self) -> dict[str, Any]:
        return {
            "compute_usd_per_hour": self.now.compute,
            "compute_cap_usd_per_hour": self.worst.compute,
            "disk_usd_per_hour": self.now.disk,
            "public_ip_usd_per_hour": self.now.public_ip,
            "disk_tier": self.disk_tier,
            "sources": self.sources,
        }


def vm_cost(
    profile: Profile,
    size: str,
    quote: PriceQuote | None,
    extras: Extras,
    now: dt.datetime,
    cat: Catalog | None = None,
) -> VmCost:
    """Compute (live spot or on-demand, else the catalog), disk tier and IP for one size."""
    cat = cat or load_catalog()
    az = profile.azure
    listed = cat.instances[size].price_in(az.location)
    on_demand = quote.on_demand if quote and quote.on_demand else None
    od_source = LIVE if on_demand is not None else ""
    if on_demand is None and listed is not None:
        on_demand, od_source = listed.usd_per_hour, f"catalog {listed.source}"
    at = quote.at if quote else iso(now)
    if az.spot:
        cap = float(az.spot_max_price) if az.spot_max_price != "" else on_demand
        live = quote.spot if quote else None
        if cap is None:
            raise CommandError(
                f"no on-demand price known for {size} in {az.location} (the Spot cap with "
                'spot_max_price = "") — try again when prices.azure.com answers, or set [azure] '
                "spot_max_price = 0.5 (USD/h)"
            )
        # Without a live spot price the cap is the honest upper bound.
        hourly = live if live is not None else cap
        source = LIVE if live is not None else f"spot price unknown: its cap ({od_source})"
        price = Price(hourly, "spot", source, at, on_demand)
        worst_compute = cap
    else:
        if on_demand is None:
            raise CommandError(
                f"no price known for {size} in {az.location} — try again when "
                "prices.azure.com answers"
            )
        price = Price(on_demand, "on-demand", od_source, at, on_demand)
        worst_compute = on_demand
    prices = cat.azure_prices
    tier = disk_tier(cat, az.disk_type, az.disk_gb)
    if extras.disk_usd_per_month is not None:
        disk_month, disk_source = extras.disk_usd_per_month, LIVE
    else:
        disk_month = tier.usd_per_month
        disk_source = f"catalog {prices.disks[az.disk_type].source}"
    if extras.public_ip_usd_per_hour is not None:
        ip, ip_source = extras.public_ip_usd_per_hour, LIVE
    else:
        ip, ip_source = prices.public_ip_usd_per_hour, f"catalog {prices.public_ip_source}"
    disk = round(disk_month / prices.hours_per_month, 5)
    return VmCost(
        price=price,
        now=HourlyRates(compute=price.usd_per_hour, disk=disk, public_ip=ip),
        worst=HourlyRates(compute=worst_compute, disk=disk, public_ip=ip),
        disk_tier=f"{tier.name} ({az.disk_type}, {tier.size_gib} GiB)",
        sources={"compute": price.source, "disk": disk_source, "public_ip": ip_source},
    )


def catalog_cost(profile: Profile, size: str, now: dt.datetime | None = None) -> VmCost:
    """The same figures offline (catalog only): for `rig plan` / `rig check`."""
    return vm_cost(profile, size, None, Extras(), now or dt.datetime.now(dt.UTC))


def offline_worst_case_usd(profile: Profile, size: str) -> float:
    """The worst case `rig plan` / `rig check` can show without a clock or a network: catalog
    rates (compute at its cap, disk, IP) for the hours the shutdown schedule allows —
    max_hours, at least the schedule's lead, at most 23 h 59 min (rig/azure/schedule.py).
    Before a deploy the daily_shutdown can only shorten that, so this is an upper bound."""
    from rig.azure.schedule import DAY, MINUTE, SCHEDULE_LEAD

    lead, cap = SCHEDULE_LEAD.total_seconds() / 3600, (DAY - MINUTE).total_seconds() / 3600
    hours = min(max(profile.autostop.max_hours, lead), cap)
    return worst_case_usd(catalog_cost(profile, size).worst, round(hours, 2))
