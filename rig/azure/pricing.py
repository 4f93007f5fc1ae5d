"""What an Azure rehearsal VM costs: compute, OS disk and public IP, live when possible.

Live figures come from the public Azure retail prices API (prices.azure.com, no sign-in); the
catalog (rig/catalog/instances.toml, azure_prices.toml) stands in when it cannot be reached,
and every figure carries its source. A disk or IP figure stands in only for the region it was
published for; without one the rate is unknown (PriceUnknown: "price unknown; live price
needed") and the deploy stops rather than print a borrowed or remembered figure. The
arithmetic lives in rig/cost.py: this module only supplies the rates.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rig.azure.http import Http, urllib_http
from rig.catalog import Catalog, load_catalog
from rig.cost import HourlyRates, worst_case_usd
from rig.problems import CommandError
from rig.profile import Profile
from rig.state import Price, iso

RETAIL_PRICES = "https://prices.azure.com/api/retail/prices"
LIVE = "azure retail prices API"
# Retail API meter name of the Standard SKU static public IPv4 address (serviceName
# "Virtual Network", productName "IP Addresses"; infracost prices azurerm_public_ip Standard
# static from the same meter: testdata/public_ip_test, $0.005/h in eastus).
PUBLIC_IP_METER = "Standard IPv4 Static Public IP"


@dataclass(frozen=True)
class PriceQuote:
    on_demand: float | None
    spot: float | None
    source: str
    at: str


class PriceUnknown(CommandError):
    """A rate neither the live API nor a published figure for this region gives."""


MAX_PAGES = 20  # a filtered query is one or two pages; a NextPageLink loop must not hang us


def _retail(filt: str, http: Http) -> list[Mapping[str, Any]] | None:
    """Items matching an OData filter; None when the API cannot be reached or refuses."""
    url = f"{RETAIL_PRICES}?{urllib.parse.urlencode({'$filter': filt})}"
    items: list[Mapping[str, Any]] = []
    for _ in range(MAX_PAGES):
        try:
            resp = http("GET", url, {}, None)
        except CommandError:
            return None  # offline: the catalog stands in, and says so
        body = resp.body if isinstance(resp.body, dict) else {}
        page = body.get("Items")
        if resp.status != 200 or not isinstance(page, list):
            return None
        items += [i for i in page if isinstance(i, Mapping)]
        url = str(body.get("NextPageLink") or "")
        if not url:
            return items
    return None  # still paging: do not price from a partial list


def _usable(item: Mapping[str, Any], now: dt.datetime) -> float | None:
    """The item's USD pay-as-you-go price if it applies now, else None.

    Retail Prices API items (Microsoft Learn, "Azure Retail Prices REST API"): `type` is
    Consumption / Reservation / DevTestConsumption, `currencyCode` USD unless asked otherwise,
    `effectiveStartDate` when the price took effect (a meter may list a future price too)."""
    if item.get("type", "Consumption") != "Consumption":
        return None
    if item.get("currencyCode", "USD") != "USD":
        return None
    try:
        price = float(item["retailPrice"])
    except (KeyError, TypeError, ValueError):
        return None
    start = str(item.get("effectiveStartDate") or "")
    if start:
        try:
            begins = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            return None
        if begins.tzinfo is None:
            begins = begins.replace(tzinfo=dt.UTC)
        if begins > now:
            return None
    return price if price >= 0 else None


def _latest(candidates: list[tuple[str, float]]) -> float | None:
    """The price with the latest effectiveStartDate (ISO strings sort by time)."""
    return max(candidates)[1] if candidates else None


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
    """Linux on-demand and Spot $/h from the items of one VM size.

    Meters of one size (Retail Prices API examples): "<size>" (pay as you go), "<size> Spot",
    "<size> Low Priority" (Batch / the retired low-priority VMs: not what a Spot VM bills),
    each once for Linux and once with productName "... Windows" (licence included: excluded).
    When a meter lists several effective dates, the latest one in effect wins."""
    on_demand: list[tuple[str, float]] = []
    spot: list[tuple[str, float]] = []
    for item in items:
        if item.get("unitOfMeasure") != "1 Hour" or "Windows" in str(item.get("productName", "")):
            continue
        price = _usable(item, now)
        if price is None:
            continue
        sku = str(item.get("skuName", ""))
        meter = str(item.get("meterName", ""))
        when = str(item.get("effectiveStartDate") or "")
        if "Low Priority" in sku or "Low Priority" in meter:
            continue
        if sku.endswith(" Spot") or meter.endswith(" Spot"):
            spot.append((when, price))
        else:
            on_demand.append((when, price))
    od, sp = _latest(on_demand), _latest(spot)
    if od is None and sp is None:
        return None
    return PriceQuote(od, sp, LIVE, now.isoformat(timespec="seconds"))


@dataclass(frozen=True)
class DiskTier:
    name: str
    size_gib: int


def disk_tier(cat: Catalog, disk_type: str, disk_gb: int) -> DiskTier:
    """The billing tier of an OS disk: the smallest tier at least as large as the disk."""
    for tier in cat.azure_prices.disks[disk_type].tiers:
        if tier.size_gib >= disk_gb:
            return DiskTier(tier.name, tier.size_gib)
    largest = cat.azure_prices.disks[disk_type].tiers[-1]
    raise CommandError(
        f"rig.toml: azure.disk_gb = {disk_gb} is larger than Azure's largest {disk_type} disk "
        f"({largest.name}, {largest.size_gib} GiB) — set a smaller azure.disk_gb"
    )


def catalog_disk_month(cat: Catalog, disk_type: str, tier: str, region: str) -> tuple[float, str]:
    """A published monthly figure for this tier in this region, with its source."""
    figure = cat.azure_prices.disks[disk_type].prices.get(region, {}).get(tier)
    if figure is None:
        raise PriceUnknown(
            f"OS disk {tier} ({disk_type}) in {region}: price unknown; live price needed — "
            "prices.azure.com did not answer and no published figure for this region is in "
            "rig/catalog/azure_prices.toml; try again when prices.azure.com answers"
        )
    return figure.usd_per_month, f"catalog {figure.source}"


def catalog_ip_hour(cat: Catalog, region: str) -> tuple[float, str]:
    figure = cat.azure_prices.public_ip.get(region)
    if figure is None:
        raise PriceUnknown(
            f"public IP in {region}: price unknown; live price needed — prices.azure.com did "
            "not answer and no published figure for this region is in "
            "rig/catalog/azure_prices.toml; try again when prices.azure.com answers"
        )
    return figure.usd_per_hour, f"catalog {figure.source}"


def retail_disk_month(
    location: str,
    disk_type: str,
    tier: str,
    cat: Catalog,
    http: Http = urllib_http,
    now: dt.datetime | None = None,
) -> float | None:
    """Live USD per month of one managed disk tier: productName "Premium SSD Managed Disks",
    skuName "P15 LRS", unit "1/Month", and the disk's own meter — "P15 LRS Disk" (Microsoft
    Learn, "Understand Azure Disk Storage billing": meter "P20 LRS Disk"), older meters "P15
    Disks" — never "P15 LRS Disk Mount" (shared disks), "Disk Operations" or bursting. The same
    selection as infracost's managed disk pricing (internal/resources/azure/managed_disk.go:
    skuName "<tier> <redundancy>", meterName ^<tier> (<redundancy> )?Disk(s)?$)."""
    product = cat.azure_prices.disks[disk_type].product
    items = _retail(
        f"serviceName eq 'Storage' and priceType eq 'Consumption' and armRegionName eq "
        f"'{location}' and skuName eq '{tier} LRS'",
        http,
    )
    meter = re.compile(rf"{re.escape(tier)} (LRS )?Disks?")
    now = now or dt.datetime.now(dt.UTC)
    found = [
        (str(item.get("effectiveStartDate") or ""), price)
        for item in items or []
        if meter.fullmatch(str(item.get("meterName", "")))
        and item.get("productName") == product
        and item.get("unitOfMeasure") == "1/Month"
        and (price := _usable(item, now)) is not None
    ]
    return _latest(found)


def retail_public_ip_hour(
    location: str, http: Http = urllib_http, now: dt.datetime | None = None
) -> float | None:
    items = _retail(
        f"serviceName eq 'Virtual Network' and priceType eq 'Consumption' and armRegionName "
        f"eq '{location}' and meterName eq '{PUBLIC_IP_METER}'",
        http,
    )
    now = now or dt.datetime.now(dt.UTC)
    found = [
        (str(item.get("effectiveStartDate") or ""), price)
        for item in items or []
        if item.get("meterName") == PUBLIC_IP_METER
        and item.get("unitOfMeasure") == "1 Hour"
        and float(item.get("tierMinimumUnits") or 0) == 0
        and (price := _usable(item, now)) is not None
    ]
    return _latest(found)


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
            raise PriceUnknown(
                f"on-demand price of {size} in {az.location}: price unknown; live price needed "
                '(the Spot cap with spot_max_price = "") — try again when prices.azure.com '
                "answers, or set [azure] spot_max_price = 0.5 (USD/h)"
            )
        # Without a live spot price the cap is the honest upper bound.
        hourly = live if live is not None else cap
        source = LIVE if live is not None else f"spot price unknown: its cap ({od_source})"
        price = Price(hourly, "spot", source, at, on_demand)
        worst_compute = cap
    else:
        if on_demand is None:
            raise PriceUnknown(
                f"{size} in {az.location}: price unknown; live price needed — try again when "
                "prices.azure.com answers"
            )
        price = Price(on_demand, "on-demand", od_source, at, on_demand)
        worst_compute = on_demand
    prices = cat.azure_prices
    tier = disk_tier(cat, az.disk_type, az.disk_gb)
    if extras.disk_usd_per_month is not None:
        disk_month, disk_source = extras.disk_usd_per_month, LIVE
    else:
        disk_month, disk_source = catalog_disk_month(cat, az.disk_type, tier.name, az.location)
    if extras.public_ip_usd_per_hour is not None:
        ip, ip_source = extras.public_ip_usd_per_hour, LIVE
    else:
        ip, ip_source = catalog_ip_hour(cat, az.location)
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


def offline_worst_case_usd(profile: Profile, size: str) -> float | None:
    """The worst case `rig plan` / `rig check` can show without a clock or a network: catalog
    rates (compute at its cap, disk, IP) for the hours the shutdown schedule allows —
    max_hours, at least the schedule's earliest (lead + answer window), at most 23 h 59 min
    (rig/azure/schedule.py).
    Before a deploy the daily_shutdown can only shorten that, so this is an upper bound.
    None when a rate has no published figure for the region (price unknown; live price needed)."""
    try:
        worst = catalog_cost(profile, size).worst
    except PriceUnknown:
        return None
    return worst_case_usd(worst, offline_worst_case_hours(profile))


OFFLINE_UNKNOWN = "price unknown offline; read live at deploy"


def offline_unknown_text(profile: Profile, size: str) -> str | None:
    """What `rig check`, `rig plan` and the README say when the catalog cannot price a VM in
    its region (None when it can): the rate, the region, and that the deploy reads it live —
    e.g. "OS disk P15 (Premium_LRS) in westeurope: price unknown offline; read live at deploy"."""
    try:
        catalog_cost(profile, size)
    except PriceUnknown as exc:
        what = str(exc).split(": price unknown", 1)[0]
        return f"{what}: {OFFLINE_UNKNOWN}"
    return None


def cost_summary(profile: Profile, size: str) -> str:
    """The README form, from the catalog alone: "$0.752/h + disk $0.052/h + IP $0.005/h, worst
    case 4 h, $3.24" — or, where a rate has no published figure for the region, what is known
    and what the deploy reads live."""
    from rig.cost import worst_case_text

    unknown = offline_unknown_text(profile, size)
    if unknown is None:
        worst = catalog_cost(profile, size).worst
        hours = offline_worst_case_hours(profile)
        return (
            f"${worst.compute:.3f}/h + disk ${worst.disk:.3f}/h + IP ${worst.public_ip:.3f}/h, "
            f"{worst_case_text(worst, hours)}"
        )
    cat = load_catalog()
    az = profile.azure
    listed = cat.instances[size].price_in(az.location)
    ip = cat.azure_prices.public_ip.get(az.location)
    known = [f"${listed.usd_per_hour:.3f}/h"] if listed else []
    known += [f"IP ${ip.usd_per_hour:.3f}/h"] if ip else []
    return " + ".join(known) + ("; " if known else "") + unknown


def offline_worst_case_hours(profile: Profile) -> float:
    """max_hours within what the shutdown schedule can hold: at least its earliest (lead +
    answer window), at most 23 h 59 min (rig/azure/schedule.py) — the hours every offline
    worst case counts."""
    from rig.azure.schedule import DAY, EARLIEST, MINUTE

    lead, cap = EARLIEST.total_seconds() / 3600, (DAY - MINUTE).total_seconds() / 3600
    return round(min(max(profile.autostop.max_hours, lead), cap), 2)
