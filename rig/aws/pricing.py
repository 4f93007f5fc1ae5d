"""What an AWS rehearsal VM costs: the catalog's rates, the live spot price, the worst case.

Every figure goes through rig.cost (HourlyRates / worst_case_usd / worst_case_text), the one
formula the README, `rig check`, `rig plan` and the deploy confirmation share. Disk and public
IPv4 rates come from the catalog (rig/catalog/regions.toml, cited per region), never from
constants here, and never guessed: a rate the catalog lacks is "price unknown; live price
needed" — the deploy reads it from the AWS Price List API (`live_region_rates`) or refuses.
No boto3 import: `rig check` and `rig plan` use this module too; the live lookups take a
region's clients (rig.aws.session.Aws) from their caller.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rig.catalog import Catalog
from rig.catalog.schema import Gp3Free, RegionRates
from rig.cost import HourlyRates, stopped_usd_per_day, worst_case_text, worst_case_usd
from rig.problems import CommandError
from rig.profile import AwsSection, Placement

if TYPE_CHECKING:
    from rig.aws.session import Aws

LINUX = "Linux/UNIX"
UNKNOWN = "price unknown; live price needed"
RATE_NAMES = {
    "gp3_gb_month": "gp3 storage per GB-month",
    "gp3_iops_month": "gp3 IOPS above 3000 per month",
    "gp3_mbs_month": "gp3 throughput above 125 MiB/s per month",
    "public_ipv4_hour": "public IPv4 per hour",
}


@dataclass(frozen=True)
class Rates:
    """A region's disk and IPv4 rates (a None field: not known) and where they came from."""

    rates: RegionRates
    free: Gp3Free

    @property
    def note(self) -> str:
        return "" if self.rates.source != LIVE_SOURCE else " (AWS Price List API, read now)"


def gp3_free(cat: Catalog) -> Gp3Free:
    aws = cat.regions["aws"]
    if aws.gp3_free is None:
        raise ValueError("rig/catalog/regions.toml has no [aws.gp3_free]")
    return aws.gp3_free


def region_rates(cat: Catalog, region: str, live: RegionRates | None = None) -> Rates:
    """The catalog's rates for the region; `live` (the Price List's) fills what it lacks.
    A region the catalog does not list has no rates: nothing is borrowed from another one."""
    listed = cat.regions["aws"].rates.get(region) or RegionRates(source="not in the catalog")
    if live is not None:
        merged = {k: getattr(listed, k) or getattr(live, k) for k in RATE_NAMES}
        used_live = any(getattr(listed, k) is None and merged[k] is not None for k in RATE_NAMES)
        listed = RegionRates(**merged, source=LIVE_SOURCE if used_live else listed.source)
    return Rates(listed, gp3_free(cat))


def needed_rates(section: AwsSection, cat: Catalog, placement: Placement) -> list[str]:
    """The rates this VM's bill uses: storage and IPv4 always, IOPS and throughput only above
    gp3's free baseline (3000 IOPS, 125 MiB/s)."""
    free = gp3_free(cat)
    out = ["gp3_gb_month", "public_ipv4_hour"]
    if section.disk_iops > free.iops:
        out.append("gp3_iops_month")
    if section.throughput_for(placement.instance_type, cat) > free.mbs:
        out.append("gp3_mbs_month")
    return out


def missing_rates(
    section: AwsSection, cat: Catalog, placement: Placement, live: RegionRates | None = None
) -> list[str]:
    r = region_rates(cat, placement.region, live).rates
    return [k for k in needed_rates(section, cat, placement) if getattr(r, k) is None]


def disk_usd_per_hour(
    section: AwsSection, cat: Catalog, placement: Placement, live: RegionRates | None = None
) -> float | None:
    """The encrypted gp3 root volume per hour: size + IOPS above 3000 + MiB/s above 125;
    None when a rate it needs is unknown."""
    if missing_rates(section, cat, placement, live):
        return None
    r = region_rates(cat, placement.region, live)
    mbs = section.throughput_for(placement.instance_type, cat)
    month = section.disk_gb * (r.rates.gp3_gb_month or 0.0)
    if section.disk_iops > r.free.iops:
        month += (section.disk_iops - r.free.iops) * (r.rates.gp3_iops_month or 0.0)
    if mbs > r.free.mbs:
        month += (mbs - r.free.mbs) * (r.rates.gp3_mbs_month or 0.0)
    return month / r.free.hours_per_month


def on_demand_price(cat: Catalog, placement: Placement) -> tuple[float | None, str]:
    """The catalog's on-demand $/h of the type in its region, and its source."""
    price = cat.instances[placement.instance_type].price_in(placement.region)
    return (price.usd_per_hour, price.source) if price else (None, "not in the catalog")


def compute_cap(section: AwsSection, on_demand: float | None) -> float | None:
    """The most compute can cost per hour: spot bills at most its cap (spot_max_price, else
    the on-demand price: EC2's default maximum for a spot request); on-demand is on-demand."""
    if section.spot and isinstance(section.spot_max_price, float):
        return section.spot_max_price
    return on_demand


def rates_for(
    section: AwsSection,
    cat: Catalog,
    placement: Placement,
    compute: float,
    live: RegionRates | None = None,
) -> HourlyRates | None:
    """One VM's hourly rates: compute, the gp3 disk, and one public IPv4 address; None when a
    disk or IPv4 rate is unknown."""
    disk = disk_usd_per_hour(section, cat, placement, live)
    ipv4 = region_rates(cat, placement.region, live).rates.public_ipv4_hour
    if disk is None or ipv4 is None:
        return None
    return HourlyRates(compute=compute, disk=disk, public_ip=ipv4)


def stopped_rates(rates: HourlyRates) -> HourlyRates:
    """What a stopped AWS VM still bills: the disk only. AWS releases the auto-assigned public
    IPv4 address when the instance stops (EC2 User Guide, "Public IPv4 addresses": "We release
    your instance's public IP address when it is stopped"), so the IPv4 charge stops too."""
    return HourlyRates(compute=0.0, disk=rates.disk)


def worst_case(
    section: AwsSection, cat: Catalog, placement: Placement, hours: float
) -> tuple[float | None, HourlyRates | None]:
    """(worst case $, rates) with compute at its cap, from the catalog alone; (None, None)
    when no cap or a needed disk/IPv4 rate is known (UNKNOWN: the deploy reads it live)."""
    od, _ = on_demand_price(cat, placement)
    cap = compute_cap(section, od)
    if cap is None:
        return None, None
    rates = rates_for(section, cat, placement, cap)
    if rates is None:
        return None, None
    return worst_case_usd(rates, hours), rates


def unknown_text(section: AwsSection, cat: Catalog, placement: Placement) -> str:
    """What `rig check`, `rig plan` and the README say when the catalog cannot price a VM."""
    od, _ = on_demand_price(cat, placement)
    if compute_cap(section, od) is None:
        return f"on-demand price in {placement.region}: {UNKNOWN}"
    names = [RATE_NAMES[k] for k in missing_rates(section, cat, placement)]
    return f"{', '.join(names)} in {placement.region}: {UNKNOWN} (read at deploy)"


def cost_summary(rates: HourlyRates, hours: float) -> str:
    """ "$0.838/h + disk $0.019/h + IPv4 $0.005/h, worst case 4 h, $3.45" — the README form."""
    return (
        f"${rates.compute:.3f}/h + disk ${rates.disk:.3f}/h + IPv4 ${rates.public_ip:.3f}/h, "
        f"{worst_case_text(rates, hours)}"
    )


def stopped_text(rates: HourlyRates) -> str:
    return f"${stopped_usd_per_day(stopped_rates(rates)):.2f}/day while stopped (the disk)"


# --- the AWS Price List (deploy only: the caller's clients) --------------------------------

LIVE_SOURCE = "AWS Price List API"
# Usage-type suffixes of the gp3 and public IPv4 prices in the Price List (the region's prefix,
# e.g. "EUN1-", comes before them; us-east-1 has none). Units as the Price List gives them.
PRICE_LIST_ITEMS = {
    "gp3_gb_month": ("AmazonEC2", "Storage", "EBS:VolumeUsage.gp3"),
    "gp3_iops_month": ("AmazonEC2", "System Operation", "EBS:VolumeP-IOPS.gp3"),
    "gp3_mbs_month": ("AmazonEC2", "Provisioned Throughput", "EBS:VolumeP-Throughput.gp3"),
    "public_ipv4_hour": ("AmazonVPC", None, "PublicIPv4:InUseAddress"),
}
# Per unit as listed → per the unit the catalog uses. gp3 throughput is listed per GiBps-month
# in the Price List (its us-east-1 figure, 40.96, is the pricing page's $0.04 per MiB/s x 1024).
UNITS = {
    "GB-Mo": 1.0,
    "GB-month": 1.0,
    "IOPS-Mo": 1.0,
    "MiBps-Mo": 1.0,
    "GiBps-mo": 1 / 1024,
    "GiBps-Mo": 1 / 1024,
    "Hrs": 1.0,
}


def _usd(item: dict[str, Any]) -> tuple[float, str] | None:
    """(USD per unit, unit) of a Price List product's single OnDemand price dimension."""
    terms = item.get("terms", {}).get("OnDemand", {})
    dims = [d for term in terms.values() for d in term.get("priceDimensions", {}).values()]
    usd = [
        (float(d["pricePerUnit"]["USD"]), d.get("unit", "")) for d in dims if d.get("pricePerUnit")
    ]
    usd = [u for u in usd if u[0] > 0]  # free tiers (e.g. idle IPv4 under the free tier) are 0
    return usd[0] if len(usd) == 1 else None


def live_region_rates(aws: Aws, region: str) -> RegionRates:
    """The region's gp3 and public IPv4 rates from the AWS Price List Query API (GetProducts,
    ServiceCode AmazonEC2 / AmazonVPC, regionCode). A rate the Price List does not give in a
    known unit stays None; the caller refuses then (CommandError from `require_rates`)."""
    client = aws.client("pricing")
    found: dict[str, float] = {}
    for key, (service, family, suffix) in PRICE_LIST_ITEMS.items():
        filters = [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]
        if family:
            filters.append({"Type": "TERM_MATCH", "Field": "productFamily", "Value": family})
        pages = client.get_paginator("get_products").paginate(
            ServiceCode=service, Filters=filters, FormatVersion="aws_v1"
        )
        prices = set()
        for page in pages:
            for raw in page.get("PriceList", []):
                item = json.loads(raw) if isinstance(raw, str) else raw
                usage = item.get("product", {}).get("attributes", {}).get("usagetype", "")
                if not (usage == suffix or usage.endswith("-" + suffix)):
                    continue
                priced = _usd(item)
                if priced is not None and priced[1] in UNITS:
                    prices.add(round(priced[0] * UNITS[priced[1]], 8))
        if len(prices) == 1:  # one product, one price: anything else is not trusted
            found[key] = prices.pop()
    return RegionRates(**found, source=LIVE_SOURCE)


def require_rates(
    aws: Aws, section: AwsSection, cat: Catalog, placement: Placement
) -> RegionRates | None:
    """The live rates when the catalog lacks one this VM needs (None when it lacks none);
    CommandError when the Price List cannot give them either: no deploy on a guessed price."""
    missing = missing_rates(section, cat, placement)
    if not missing:
        return None
    names = ", ".join(RATE_NAMES[k] for k in missing)
    try:
        live = live_region_rates(aws, placement.region)
    except CommandError:
        raise
    except Exception as exc:  # botocore's errors: the reason goes into the one line
        reason = f"{exc.__class__.__name__}: {str(exc)[:160]}"
    else:
        still = missing_rates(section, cat, placement, live)
        if not still:
            return live
        reason = "the Price List API has no single price for " + ", ".join(
            RATE_NAMES[k] for k in still
        )
    only_performance = set(missing) <= {"gp3_iops_month", "gp3_mbs_month"}
    fix = (
        "set aws.disk_throughput_mbs = 125 and aws.disk_iops = 3000 (gp3's free baseline), or "
        if only_performance
        else ""
    )
    raise CommandError(
        f"{placement.instance_type} in {placement.region}: {names}: {UNKNOWN}, and it could not "
        f"be read ({reason}) — allow pricing:GetProducts and retry, or {fix}add the rate with "
        "its source to rig/catalog/regions.toml"
    )


# --- live prices (the caller's clients) ----------------------------------------------------


def spot_prices_now(aws: Aws, instance_type: str, now: dt.datetime) -> dict[str, float]:
    """Current spot $/h per AZ. With StartTime = now, DescribeSpotPriceHistory returns the
    price in force now for each AZ (EC2 API Reference, DescribeSpotPriceHistory)."""
    pages = (
        aws.client("ec2")
        .get_paginator("describe_spot_price_history")
        .paginate(InstanceTypes=[instance_type], ProductDescriptions=[LINUX], StartTime=now)
    )
    latest: dict[str, tuple[dt.datetime, float]] = {}
    for page in pages:
        for item in page["SpotPriceHistory"]:
            az, ts, price = item["AvailabilityZone"], item["Timestamp"], float(item["SpotPrice"])
            if az not in latest or ts > latest[az][0]:
                latest[az] = (ts, price)
    return {az: price for az, (_, price) in latest.items()}


def spot_compute_usd(
    aws: Aws, instance_type: str, az: str, start: dt.datetime, end: dt.datetime
) -> tuple[float, float | None]:
    """($ billed for compute between start and end, the last price) from the spot price
    history of the AZ. The history between StartTime and EndTime also holds the last change
    before StartTime, the price in force at the start (EC2 API Reference,
    DescribeSpotPriceHistory), so each price counts from its timestamp to the next one."""
    if end <= start:
        return 0.0, None
    pages = (
        aws.client("ec2")
        .get_paginator("describe_spot_price_history")
        .paginate(
            InstanceTypes=[instance_type],
            ProductDescriptions=[LINUX],
            AvailabilityZone=az,
            StartTime=start,
            EndTime=end,
        )
    )
    points: list[tuple[dt.datetime, float]] = sorted(
        (item["Timestamp"], float(item["SpotPrice"]))
        for page in pages
        for item in page["SpotPriceHistory"]
        if item.get("AvailabilityZone", az) == az
    )
    if not points:
        return 0.0, None
    usd = 0.0
    for i, (ts, price) in enumerate(points):
        seg_start = max(ts, start)
        seg_end = points[i + 1][0] if i + 1 < len(points) else end
        seg_end = min(seg_end, end)
        if seg_end > seg_start:
            usd += price * (seg_end - seg_start).total_seconds() / 3600
    return usd, points[-1][1]
