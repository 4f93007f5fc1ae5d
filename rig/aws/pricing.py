"""What an AWS rehearsal VM costs: the catalog's rates, the live spot price, the worst case.

Every figure goes through rig.cost (HourlyRates / worst_case_usd / worst_case_text), the one
formula the README, `rig check`, `rig plan` and the deploy confirmation share. Disk and public
IPv4 rates come from the catalog (rig/catalog/regions.toml, cited per region), never from
constants here. No boto3 import: `rig check` and `rig plan` use this module too; the live
lookups take a region's clients (rig.aws.session.Aws) from their caller.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rig.catalog import Catalog
from rig.catalog.schema import Gp3Free, RegionRates
from rig.cost import HourlyRates, stopped_usd_per_day, worst_case_text, worst_case_usd
from rig.profile import AwsSection, Placement

if TYPE_CHECKING:
    from rig.aws.session import Aws

LINUX = "Linux/UNIX"


@dataclass(frozen=True)
class Rates:
    """A region's disk and IPv4 rates and whether they are the catalog's own for it."""

    rates: RegionRates
    free: Gp3Free
    exact: bool  # False: the region is not in the catalog, the highest listed rate is used

    @property
    def note(self) -> str:
        return "" if self.exact else " (no catalog rate for this region: the highest listed)"


def region_rates(cat: Catalog, region: str) -> Rates:
    aws = cat.regions["aws"]
    if aws.gp3_free is None or not aws.rates:
        raise ValueError("rig/catalog/regions.toml has no [aws] rates")
    if region in aws.rates:
        return Rates(aws.rates[region], aws.gp3_free, exact=True)
    # Unknown region: never guess low. Take the highest of every listed rate.
    listed = list(aws.rates.values())
    worst = RegionRates(
        gp3_gb_month=max(r.gp3_gb_month for r in listed),
        gp3_iops_month=max(r.gp3_iops_month for r in listed),
        gp3_mbs_month=max(r.gp3_mbs_month for r in listed),
        public_ipv4_hour=max(r.public_ipv4_hour for r in listed),
        source="highest listed rate",
    )
    return Rates(worst, aws.gp3_free, exact=False)


def disk_usd_per_hour(section: AwsSection, cat: Catalog, placement: Placement) -> float:
    """The encrypted gp3 root volume per hour: size + IOPS above 3000 + MB/s above 125."""
    r = region_rates(cat, placement.region)
    mbs = section.throughput_for(placement.instance_type, cat)
    month = (
        section.disk_gb * r.rates.gp3_gb_month
        + max(section.disk_iops - r.free.iops, 0) * r.rates.gp3_iops_month
        + max(mbs - r.free.mbs, 0) * r.rates.gp3_mbs_month
    )
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
    section: AwsSection, cat: Catalog, placement: Placement, compute: float
) -> HourlyRates:
    """One VM's hourly rates: compute, the gp3 disk, and one public IPv4 address."""
    r = region_rates(cat, placement.region)
    return HourlyRates(
        compute=compute,
        disk=disk_usd_per_hour(section, cat, placement),
        public_ip=r.rates.public_ipv4_hour,
    )


def stopped_rates(rates: HourlyRates) -> HourlyRates:
    """What a stopped AWS VM still bills: the disk only. AWS releases the auto-assigned public
    IPv4 address when the instance stops (EC2 User Guide, "Public IPv4 addresses": "We release
    your instance's public IP address when it is stopped"), so the IPv4 charge stops too."""
    return HourlyRates(compute=0.0, disk=rates.disk)


def worst_case(
    section: AwsSection, cat: Catalog, placement: Placement, hours: float
) -> tuple[float | None, HourlyRates | None]:
    """(worst case $, rates) with compute at its cap; (None, None) when no cap is known."""
    od, _ = on_demand_price(cat, placement)
    cap = compute_cap(section, od)
    if cap is None:
        return None, None
    rates = rates_for(section, cat, placement, cap)
    return worst_case_usd(rates, hours), rates


def cost_summary(rates: HourlyRates, hours: float) -> str:
    """ "$0.838/h + disk $0.019/h + IPv4 $0.005/h, worst case 4 h, $3.45" — the README form."""
    return (
        f"${rates.compute:.3f}/h + disk ${rates.disk:.3f}/h + IPv4 ${rates.public_ip:.3f}/h, "
        f"{worst_case_text(rates, hours)}"
    )


def stopped_text(rates: HourlyRates) -> str:
    return f"${stopped_usd_per_day(stopped_rates(rates)):.2f}/day while stopped (the disk)"


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
