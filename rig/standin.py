"""A cloud stand-in as the estimate needs it: hardware, disk speed, the max_hours window and
its rates — compute at a price handed in (live, from a state file) or the catalog's (with its
date), disk and public IP — priced through rig.aws.pricing / rig.azure.pricing and rig.cost,
never guessed: a rate with no published figure for the region stays unknown ("read live at
deploy"). No cloud SDK: the deploys, `rig plan` and the bench all build stand-ins here.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from rig.catalog import Catalog, load_catalog
from rig.cost import HourlyRates
from rig.profile import AutostopSection, Profile, mb_to_mib

Cloud = Literal["aws", "azure"]

# Boot + SSH + Ansible: minutes, by whether the image brings the NVIDIA driver (AWS DLAMI) or
# Ansible installs it (stock Ubuntu; a DKMS-free package install and maybe a reboot). An
# assumption, printed as one (`rig plan --setup-minutes` overrides it).
SETUP_MIN = {True: 10.0, False: 20.0}


def _mbs_from_mib(mib: float) -> float:
    return mib * 2**20 / 1e6


def next_daily_stop(autostop: AutostopSection, after: dt.datetime) -> dt.datetime | None:
    """When autostop.daily_shutdown next stops the VMs after `after` (both clouds stop them
    daily at that local time: AWS EventBridge Scheduler's cron in `timezone`, Azure's shutdown
    schedule); None when it is "off"."""
    if autostop.daily_shutdown == "off":
        return None
    zone = zoneinfo.ZoneInfo(autostop.timezone)
    hour, minute = (int(p) for p in autostop.daily_shutdown.split(":"))
    local = after.astimezone(zone)
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= local:
        day = (local + dt.timedelta(days=1)).date()
        at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    return at.astimezone(dt.UTC)


def window_from(autostop: AutostopSection, start: dt.datetime) -> float:
    """Hours a VM deployed at `start` can run: max_hours, or less when the daily_shutdown
    comes first (what a deploy's estimate line bills at most)."""
    daily = next_daily_stop(autostop, start)
    hours = autostop.max_hours
    if daily is not None:
        hours = min(hours, (daily - start).total_seconds() / 3600)
    return hours


# ------------------------------------------------------------------------------ the stand-in


@dataclass(frozen=True)
class DiskSpeed:
    """What the VM reads and writes its disk at: a sustained rate, and a faster one for the
    first `burst_min` minutes of I/O (AWS EBS-optimized burst, Azure Premium SSD credits)."""

    mbs: float
    burst_mbs: float | None = None
    burst_min: float = 0.0
    source: str = ""

    def text(self) -> str:
        burst = (
            f", {self.burst_mbs:g} MB/s for the first {self.burst_min:g} min"
            if self.burst_mbs and self.burst_mbs > self.mbs
            else ""
        )
        return f"{self.mbs:g} MB/s{burst} ({self.source})"


@dataclass(frozen=True)
class Standin:
    """One cloud VM as the estimate needs it: hardware, disk speed, window and rates."""

    cloud: Cloud
    instance_type: str
    region: str
    gpu: str
    vcpu: int
    ram_gib: float
    spot: bool
    disk_gb: float
    os_disk_gb: float
    disk: DiskSpeed | None
    window_h: float  # autostop.max_hours: the VM stops then, busy or not
    worst_h: float  # the hours the worst case is bounded by (rig.cost), per cloud
    setup_min: float
    now: HourlyRates | None  # the rates the estimate bills at (compute at the price given)
    worst: HourlyRates | None  # compute at its cap: what the worst case uses
    compute_source: str  # where `now.compute` came from: live, or catalog + date
    rate_sources: dict[str, str] = field(default_factory=dict)  # disk / public_ip -> source
    unknown: str | None = None  # why a rate is missing offline ("... read live at deploy")
    known: HourlyRates | None = None  # the known part of the rates when one is missing
    # The known part of `worst` when a rate is missing (compute at its cap, the IP): the worst
    # case shown as "at least" rather than not at all.
    worst_known: HourlyRates | None = None
    # What still bills once the VM is stopped or deallocated, until `make destroy`: AWS the
    # disk only (the auto-assigned IPv4 is released on stop), Azure the disk and the static IP.
    # `stopped_known`: its known part when a rate is missing.
    stopped: HourlyRates | None = None
    stopped_known: HourlyRates | None = None
    stopped_what: str = ""
    disk_type_note: str = ""  # a charge of the disk type that the rates leave out

    @property
    def name(self) -> str:
        return f"{self.cloud}-{self.instance_type}"


def _source_date(cat: Catalog, key: str) -> str:
    src = cat.sources.get(key)
    return f"catalog {key}, {src.as_of}" if src else f"catalog {key}"


def _aws_disk(profile: Profile, cat: Catalog, instance_type: str) -> DiskSpeed:
    """gp3 at the profile's throughput, capped by the instance's EBS bandwidth (catalog)."""
    inst = cat.instances[instance_type]
    gp3 = _mbs_from_mib(profile.aws.throughput_for(instance_type, cat))
    src = inst.source_of("ebs_burst_mbs") if inst.ebs_burst_mbs else None
    if inst.ebs_baseline_mbs is None:
        return DiskSpeed(round(gp3, 1), source=f"gp3 {mb_to_mib(gp3)} MiB/s")
    base = min(gp3, inst.ebs_baseline_mbs)
    burst = min(gp3, inst.ebs_burst_mbs or inst.ebs_baseline_mbs)
    where = f"gp3 {profile.aws.throughput_for(instance_type, cat)} MiB/s, EBS " + (
        f"{inst.ebs_baseline_mbs:g}/{inst.ebs_burst_mbs:g} MB/s, {_source_date(cat, src)}"
        if src
        else f"{inst.ebs_baseline_mbs:g} MB/s"
    )
    # EC2 User Guide, EBS-optimized instances: the smaller sizes reach their maximum
    # performance "for 30 minutes at least once every 24 hours", their baseline otherwise.
    return DiskSpeed(round(base, 2), round(burst, 2), 30.0, where)


def _azure_disk(profile: Profile, cat: Catalog) -> DiskSpeed | None:
    from rig.azure.pricing import disk_tier

    az = profile.azure
    tier = disk_tier(cat, az.disk_type, az.disk_gb)
    spec = next(t for t in cat.azure_prices.disks[az.disk_type].tiers if t.name == tier.name)
    if spec.mbs is None:
        return None
    src = _source_date(cat, cat.azure_prices.disks[az.disk_type].sizes_source)
    return DiskSpeed(
        spec.mbs, spec.burst_mbs, spec.burst_min or 0.0, f"{tier.name} {az.disk_type}, {src}"
    )


def aws_standin(
    profile: Profile,
    cat: Catalog,
    instance_type: str,
    region: str | None = None,
    compute_now: float | None = None,
    compute_source: str | None = None,
    live_rates: Any | None = None,
) -> Standin:
    """An AWS stand-in. `compute_now`: the $/h to estimate at (a live spot price); without it
    the compute cap stands in (the on-demand price unless spot_max_price is lower: a spot VM
    never bills more), from the catalog with its date. `live_rates`: the Price List's disk and
    IPv4 rates the deploy read where the catalog lacks one (rig.aws.pricing.require_rates)."""
    from rig.aws import pricing
    from rig.profile import Placement

    section = profile.aws
    region = region or (p.region if (p := section.placement_of(instance_type)) else section.region)
    place = Placement(instance_type, region)
    inst = cat.instances[instance_type]
    od, od_src = pricing.on_demand_price(cat, place)
    cap = pricing.compute_cap(section, od)
    worst = pricing.rates_for(section, cat, place, cap, live_rates) if cap is not None else None
    rates = pricing.region_rates(cat, region, live_rates).rates
    if compute_now is None:
        compute_now = cap
        if isinstance(section.spot_max_price, float) and section.spot:
            compute_source = "spot_max_price (the cap: the spot price is read live at deploy)"
        elif od is not None:
            compute_source = f"{_source_date(cat, od_src)}, on-demand" + (
                "; spot is read live at deploy and bills at most this" if section.spot else ""
            )
        else:
            compute_source = "no catalog price"
    now = pricing.rates_for(section, cat, place, compute_now) if compute_now is not None else None
    unknown = None if worst is not None else pricing.unknown_text(section, cat, place)
    rate_source = (
        "AWS Price List API, read now"
        if rates.source == pricing.LIVE_SOURCE
        else _source_date(cat, rates.source)
    )
    known = worst_known = None
    if now is None and compute_now is not None:
        known = HourlyRates(compute_now, 0.0, rates.public_ipv4_hour or 0.0)
    if worst is None and cap is not None:
        worst_known = HourlyRates(cap, 0.0, rates.public_ipv4_hour or 0.0)
    hours = profile.autostop.max_hours
    image = cat.images_of("aws")[section.image]
    return Standin(
        cloud="aws",
        instance_type=instance_type,
        region=region,
        gpu=inst.gpu or "",
        vcpu=inst.vcpu,
        ram_gib=inst.ram_gib,
        spot=section.spot,
        disk_gb=section.disk_gb,
        os_disk_gb=image.os_disk_gb,
        disk=_aws_disk(profile, cat, instance_type),
        window_h=hours,
        worst_h=hours,
        setup_min=SETUP_MIN[image.driver_preinstalled],
        now=now,
        worst=worst,
        compute_source=compute_source or "",
        rate_sources={"disk": f"gp3 rates, {rate_source}", "public_ip": f"IPv4, {rate_source}"},
        unknown=unknown,
        known=known,
        worst_known=worst_known,
        stopped=pricing.stopped_rates(worst) if worst is not None else None,
        stopped_what="the disk; the public IPv4 is released on stop",
    )


def azure_standin(
    profile: Profile,
    cat: Catalog,
    size: str,
    cost: Any | None = None,
    worst_h: float | None = None,
) -> Standin:
    """An Azure stand-in. `cost`: a rig.azure.pricing.VmCost read live (the deploy's, or
    `rig plan`'s); without it the catalog's figures for this very region, and where one is
    missing the rates stay unknown ("read live at deploy") instead of borrowed. `worst_h`: the
    hours until the shutdown schedule (the deploy's CloudStop.hours); default max_hours within
    the schedule's limits (at least its 60 min lead + 10 min to answer, at most 23 h 59 min)."""
    from rig.azure import pricing

    az = profile.azure
    inst = cat.instances[size]
    if worst_h is None:
        worst_h = pricing.offline_worst_case_hours(profile)
    image = cat.images_of("azure")[az.image]
    unknown = None
    known = None
    sources: dict[str, str] = {}
    if cost is None:
        unknown = pricing.offline_unknown_text(profile, size)
        if unknown is None:
            cost = pricing.catalog_cost(profile, size)
        else:
            known = _azure_known(profile, cat, size)
            if (ip := cat.azure_prices.public_ip.get(az.location)) is not None:
                sources["public_ip"] = f"static IP, {_source_date(cat, ip.source)}"
    stopped = None
    if cost is not None:
        now, worst = cost.now, cost.worst
        stopped = replace(worst, compute=0.0)
        compute_source = _azure_source(cat, cost.sources["compute"], cost.price.at)
        sources = {
            "disk": f"OS disk {cost.disk_tier}, {_azure_source(cat, cost.sources['disk'], '')}",
            "public_ip": f"static IP, {_azure_source(cat, cost.sources['public_ip'], '')}",
        }
    else:
        now = worst = None
        compute_source = known[1] if known else ""
    return Standin(
        cloud="azure",
        instance_type=size,
        region=az.location,
        gpu=inst.gpu or "",
        vcpu=inst.vcpu,
        ram_gib=inst.ram_gib,
        spot=az.spot,
        disk_gb=az.disk_gb,
        os_disk_gb=image.os_disk_gb,
        disk=_azure_disk(profile, cat),
        # The watchdog stops it at max_hours; the shutdown schedule at worst_h, which is never
        # more than 23 h 59 min (rig/azure/schedule.py): whichever comes first.
        window_h=min(profile.autostop.max_hours, worst_h),
        worst_h=worst_h,
        setup_min=SETUP_MIN[image.driver_preinstalled],
        now=now,
        worst=worst,
        compute_source=compute_source,
        rate_sources=sources,
        unknown=unknown,
        known=known[0] if known else None,
        # The known part of the rates is compute at its cap + the IP (_azure_known): it is
        # also the known part of the worst case and, less compute, of the stopped VM's bill.
        worst_known=known[0] if known else None,
        stopped=stopped,
        stopped_known=replace(known[0], compute=0.0) if known else None,
        stopped_what="the OS disk and the static public IP",
        disk_type_note=_transactions_note(az.disk_type),
    )


def _transactions_note(disk_type: str) -> str:
    """Standard SSD and HDD managed disks also bill per transaction (Microsoft Learn,
    "Understand Azure Disk Storage billing": "These transactions incur a billable cost";
    Premium SSD: "there are no transaction costs" unless on-demand bursting is enabled)."""
    if disk_type == "Premium_LRS":
        return ""
    return (
        f"azure.disk_type {disk_type} also bills per disk transaction (pulls and model loads), "
        "which this estimate does not count — Premium_LRS has no transaction charge"
    )


def _azure_source(cat: Catalog, source: str, at: str) -> str:
    if source.startswith("catalog "):
        return _source_date(cat, source.removeprefix("catalog "))
    return f"{source}, read {at}" if at else source


def _azure_known(profile: Profile, cat: Catalog, size: str) -> tuple[HourlyRates, str] | None:
    """Compute (its cap: spot bills at most on-demand) and the IP where the catalog has them,
    the disk left at 0: the plan shows this as a floor, never as the bill."""
    az = profile.azure
    listed = cat.instances[size].price_in(az.location)
    cap = float(az.spot_max_price) if az.spot and az.spot_max_price != "" else None
    if cap is None and listed is None:
        return None
    compute = cap if cap is not None else listed.usd_per_hour  # type: ignore[union-attr]
    source = (
        "spot_max_price"
        if cap is not None
        else f"{_source_date(cat, listed.source)}, on-demand"  # type: ignore[union-attr]
        + ("; spot is read live at deploy and bills at most this" if az.spot else "")
    )
    ip = cat.azure_prices.public_ip.get(az.location)
    return HourlyRates(compute, 0.0, ip.usd_per_hour if ip else 0.0), source


def standins(profile: Profile, cat: Catalog | None = None) -> list[Standin]:
    """Every enabled stand-in of the profile, priced offline (catalog)."""
    cat = cat or load_catalog()
    out: list[Standin] = []
    if profile.aws.enabled:
        out += [
            aws_standin(profile, cat, p.instance_type, p.region) for p in profile.aws.placements()
        ]
    if profile.azure.enabled:
        out += [azure_standin(profile, cat, size) for size in profile.azure.vm_sizes]
    return out


def standin(profile: Profile, cat: Catalog, target: str) -> Standin:
    """A stand-in by target name ("aws-g4dn.2xlarge"), instance type or VM size (any in the
    catalog, e.g. the smoke test's cheapest one), or "TYPE@REGION" for AWS."""
    for s in standins(profile, cat):
        if target in (s.name, s.instance_type):
            return s
    name = target.split("-", 1)[1] if target.startswith(("aws-", "azure-")) else target
    itype, _, region = name.partition("@")
    inst = cat.instances.get(itype)
    if inst is None or inst.gpu is None:
        raise ValueError(f"{target!r} is no GPU instance type or VM size in the catalog")
    if inst.cloud == "aws":
        return aws_standin(profile, cat, itype, region or None)
    return azure_standin(profile, cat, itype)


def deployed_standin(
    profile: Profile,
    cat: Catalog,
    *,
    cloud: str,
    instance_type: str,
    region: str | None = None,
    usd_per_hour: float | None = None,
    price_source: str | None = None,
    disk_usd_per_hour: float | None = None,
    public_ip_usd_per_hour: float | None = None,
) -> Standin | None:
    """A deployed VM as its state file describes it (what the bench hands over): its hardware
    from the catalog, and the prices the deploy recorded — compute, disk and IP — where given,
    the catalog's otherwise. None for a type the catalog does not know."""
    inst = cat.instances.get(instance_type)
    if inst is None or inst.gpu is None or cloud not in ("aws", "azure"):
        return None
    if cloud == "aws":
        base = aws_standin(profile, cat, instance_type, region)
    else:
        base = azure_standin(profile, cat, instance_type)
        if region and region != base.region:
            base = replace(base, region=region)
    if usd_per_hour is None:
        return base
    fallback = base.now or base.known or HourlyRates(0.0)
    disk = disk_usd_per_hour if disk_usd_per_hour is not None else fallback.disk
    ip = public_ip_usd_per_hour if public_ip_usd_per_hour is not None else fallback.public_ip
    rates = HourlyRates(usd_per_hour, disk, ip, fallback.other)
    complete = disk_usd_per_hour is not None or base.now is not None
    recorded = "the price the deploy recorded (.state)"
    return replace(
        base,
        now=rates if complete else None,
        known=None if complete else rates,
        compute_source=f"{price_source or 'state file'}: {recorded}",
        rate_sources={"disk": recorded, "public_ip": recorded}
        if disk_usd_per_hour is not None
        else base.rate_sources,
    )
