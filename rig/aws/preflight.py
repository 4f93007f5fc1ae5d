"""Everything checked before CloudFormation is touched: credentials, offerings, G/VT vCPU
quotas, the live spot price per AZ, the worst case, and the pins a redeploy must keep.

Pins: the AMI and the spot request's ValidUntil are resolved once, at the first deploy, and
recorded in the state; every later deploy hands the same values to the stack. A new DLAMI (one
every one to two weeks) or a new ValidUntil would change the launch template, and a new
launch-template version replaces the instance (CloudFormation, AWS::EC2::Instance
LaunchTemplate: "Update requires: Replacement").
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import botocore.exceptions

from rig.aws import pricing
from rig.aws.errors import translate
from rig.aws.names import (
    QUOTA_ON_DEMAND,
    QUOTA_SPOT,
    TAG_STACK,
    quota_link,
    stack_name,
    target_name,
)
from rig.aws.session import Aws, AwsFactory, owner_of, tags_of
from rig.catalog import Catalog
from rig.catalog.schema import RegionRates
from rig.cost import HourlyRates, worst_case_text, worst_case_usd
from rig.estimate import estimate
from rig.problems import CommandError
from rig.profile import Placement, Profile
from rig.standin import aws_standin, window_from
from rig.state import VmState, iso, utc_now

GPU_FAMILIES = ("g", "vt")  # instance families both G and VT quotas count
# The persistent spot request's end. EC2's default is 7 days from the request (botocore
# LaunchTemplateSpotMarketOptionsRequest.ValidUntil: "Default: 7 days from the current date");
# after that the request is cancelled and the instance can no longer be stopped (EC2 User Guide,
# "Stop a Spot Instance": "You can't stop a Spot Instance if the associated Spot Instance request
# is cancelled"), so the idle alarm, the max-hours schedule and the watchdog would all fail. A
# year covers any rehearsal; it is fixed at the first deploy and kept, so redeploys never change
# the launch template for it. `make status` warns two weeks before it ends.
SPOT_VALID_DAYS = 365


def valid_until_from(now: dt.datetime) -> str:
    """ValidUntil in the form the EC2 API documents (YYYY-MM-DDTHH:MM:SSZ), a day boundary."""
    end = (now + dt.timedelta(days=SPOT_VALID_DAYS)).astimezone(dt.UTC)
    return end.strftime("%Y-%m-%dT00:00:00Z")


@dataclass(frozen=True)
class Pins:
    """What a redeploy must hand the stack unchanged (see the module docstring)."""

    ami: str
    valid_until: str
    source: str  # "state", "stack" (read from the live launch template) or "new"


@dataclass(frozen=True)
class TypePlan:
    """What preflight found for one instance type in its region."""

    placement: Placement
    gpu: str
    vcpu: int
    azs: list[str]  # offering AZs, best first (cheapest spot price, then name)
    spot_prices: dict[str, float]  # AZ → current spot $/h
    on_demand: float | None  # catalog on-demand $/h in the region
    on_demand_source: str
    spot: bool
    cap: float  # the most compute can bill per hour (spot cap, or on-demand)
    worst: HourlyRates  # compute at the cap + disk + IPv4: what the worst case uses
    throughput_mbs: int
    pins: Pins
    live_rates: RegionRates | None = None  # Price List rates the catalog lacked, if any

    @property
    def instance_type(self) -> str:
        return self.placement.instance_type

    @property
    def region(self) -> str:
        return self.placement.region

    @property
    def az(self) -> str:
        return self.azs[0]

    @property
    def hourly(self) -> float:
        """Compute $/h now in the best AZ (spot) or on demand."""
        return self.spot_prices[self.az] if self.spot else self.cap


@dataclass(frozen=True)
class Quota:
    code: str
    vcpus: float
    used: int
    need: int


@dataclass(frozen=True)
class Preflight:
    account: str
    arn: str
    owner: str
    plans: list[TypePlan]
    quotas: dict[str, Quota] = field(default_factory=dict)  # region → quota
    at: str = ""  # when prices were read (ISO UTC)

    @property
    def regions(self) -> list[str]:
        return sorted({p.region for p in self.plans})


def _is_gpu_family(instance_type: str) -> bool:
    return instance_type.split(".")[0].startswith(GPU_FAMILIES)


def offered_azs(aws: Aws, instance_type: str) -> list[str]:
    pages = (
        aws.client("ec2")
        .get_paginator("describe_instance_type_offerings")
        .paginate(
            LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [instance_type]}],
        )
    )
    return sorted({o["Location"] for p in pages for o in p["InstanceTypeOfferings"]})


def quota_vcpus(aws: Aws, code: str) -> float:
    sq = aws.client("service-quotas")
    try:
        return float(sq.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
            raise
        # An account that never touched the quota has only the default applied.
        answer = sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)
        return float(answer["Quota"]["Value"])


def used_gpu_vcpus(aws: Aws, spot: bool, exclude_stacks: set[str]) -> int:
    """vCPUs of running G/VT instances counted by the same quota (spot or on-demand)."""
    pages = (
        aws.client("ec2")
        .get_paginator("describe_instances")
        .paginate(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    )
    used = 0
    for page in pages:
        for res in page["Reservations"]:
            for inst in res["Instances"]:
                if not _is_gpu_family(inst["InstanceType"]):
                    continue
                if (inst.get("InstanceLifecycle") == "spot") != spot:
                    continue
                if tags_of(inst.get("Tags")).get(TAG_STACK) in exclude_stacks:
                    continue  # a redeploy adds nothing: its own VM is not extra
                cpu = inst.get("CpuOptions", {})
                used += int(cpu.get("CoreCount", 0)) * int(cpu.get("ThreadsPerCore", 1))
    return used


def resolve_ami(aws: Aws, parameter: str) -> str:
    """The AMI id a public SSM parameter names today (SSM API Reference, GetParameter)."""
    return str(aws.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"])


def pins_from_stack(aws: Aws, stack: str) -> Pins | None:
    """The AMI and ValidUntil of a deployed stack's launch template (when the state is lost)."""
    cfn = aws.client("cloudformation")
    try:
        resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    except botocore.exceptions.ClientError:
        return None
    lt = next(
        (
            r.get("PhysicalResourceId")
            for r in resources
            if r["ResourceType"] == "AWS::EC2::LaunchTemplate"
        ),
        None,
    )
    if not lt:
        return None
    versions = aws.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=lt, Versions=["$Latest"]
    )["LaunchTemplateVersions"]
    if not versions:
        return None
    data = versions[0]["LaunchTemplateData"]
    ami = data.get("ImageId", "")
    until = data.get("InstanceMarketOptions", {}).get("SpotOptions", {}).get("ValidUntil")
    if isinstance(until, dt.datetime):
        until = until.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not ami:
        return None
    return Pins(ami=ami, valid_until=str(until or ""), source="stack")


def pins_for(
    aws: Aws,
    profile: Profile,
    cat: Catalog,
    placement: Placement,
    recorded: dict[str, VmState],
    now: dt.datetime,
) -> Pins:
    """The state's pins, else the live stack's, else new ones (the first deploy)."""
    state = recorded.get(target_name(placement.instance_type))
    new_until = valid_until_from(now)
    if state is not None and state.region == placement.region and state.extra.get("ami"):
        return Pins(
            ami=str(state.extra["ami"]),
            valid_until=str(state.extra.get("spot_valid_until") or new_until),
            source="state",
        )
    live = pins_from_stack(aws, stack_name(placement.instance_type))
    if live is not None:
        return Pins(live.ami, live.valid_until or new_until, "stack")
    image = cat.images_of("aws")[profile.aws.image]
    return Pins(ami=resolve_ami(aws, image.ssm_parameter), valid_until=new_until, source="new")


def plan_type(
    aws: Aws,
    profile: Profile,
    cat: Catalog,
    placement: Placement,
    recorded: dict[str, VmState],
    now: dt.datetime,
) -> TypePlan:
    section = profile.aws
    itype, region = placement.instance_type, placement.region
    inst = cat.instances[itype]
    azs = offered_azs(aws, itype)
    if not azs:
        raise CommandError(
            f"{itype} is not offered in {region} (describe_instance_type_offerings) — pick "
            'another region ("TYPE@REGION" in aws.instance_types) or type (python -m rig catalog)'
        )
    od, od_source = pricing.on_demand_price(cat, placement)
    cap = pricing.compute_cap(section, od)
    if cap is None:
        # A spot request without MaxPrice is capped at the on-demand price, which the catalog
        # does not hold for this region: the worst case could not be printed honestly.
        raise CommandError(
            f"{itype}: no on-demand price for {region} in the catalog, so the worst case cannot "
            "be bounded — set aws.spot_max_price (USD/h), or add the price with its source to "
            "rig/catalog/instances.toml"
        )
    prices: dict[str, float] = {}
    if section.spot:
        prices = {az: p for az, p in pricing.spot_prices_now(aws, itype, now).items() if az in azs}
        if not prices:
            raise CommandError(
                f"{itype} has no spot price in {region} (describe_spot_price_history) — "
                "spot may not be sold there: set aws.spot = false or pick another type"
            )
        azs = sorted(prices, key=lambda az: (prices[az], az))
        if prices[azs[0]] > cap:
            raise CommandError(
                f"{itype}: the lowest spot price in {region} is ${prices[azs[0]]:.4f}/h "
                f"({azs[0]}), above the cap ${cap:.4f}/h (SpotMaxPriceTooLow) — raise "
                'aws.spot_max_price, set it to "", or set spot = false'
            )
    # Disk and IPv4 rates the catalog lacks are read from the Price List, or the deploy stops
    # here: the worst case is never printed from a guessed price.
    live = pricing.require_rates(aws, section, cat, placement)
    worst = pricing.rates_for(section, cat, placement, cap, live)
    if worst is None:  # require_rates returned every needed rate: cannot happen
        raise CommandError(f"{itype} in {region}: disk or IPv4 {pricing.UNKNOWN}")
    return TypePlan(
        placement=placement,
        gpu=inst.gpu or "",
        vcpu=inst.vcpu,
        azs=azs,
        spot_prices=prices,
        on_demand=od,
        on_demand_source=od_source,
        spot=section.spot,
        cap=cap,
        worst=worst,
        throughput_mbs=section.throughput_for(itype, cat),
        pins=pins_for(aws, profile, cat, placement, recorded, now),
        live_rates=live,
    )


def preflight(
    aws_for: AwsFactory,
    profile: Profile,
    cat: Catalog,
    recorded: list[VmState] | None = None,
    now: dt.datetime | None = None,
) -> Preflight:
    """Raises CommandError on the first problem, with the fix; nothing is created."""
    now = now or utc_now()
    section = profile.aws
    placements = section.placements()
    by_name = {s.name: s for s in recorded or [] if s.cloud == "aws"}
    for p in placements:
        old = by_name.get(target_name(p.instance_type))
        if old is not None and old.region != p.region:
            raise CommandError(
                f"{old.name} is deployed in {old.region} (.state/{old.name}.json) but the "
                f"profile now puts {p.instance_type} in {p.region} — run make destroy first "
                f"(it removes the one in {old.region}), then deploy"
            )
    regions = sorted({p.region for p in placements})
    first = aws_for(regions[0])
    try:
        account, arn = first.caller()
    except Exception as exc:
        raise translate(exc, region=regions[0]) from None
    plans: list[TypePlan] = []
    quotas: dict[str, Quota] = {}
    code = QUOTA_SPOT if section.spot else QUOTA_ON_DEMAND
    for region in regions:
        aws = aws_for(region)
        here = [p for p in placements if p.region == region]
        try:
            region_plans = [plan_type(aws, profile, cat, p, by_name, now) for p in here]
            quota = quota_vcpus(aws, code)
            used = used_gpu_vcpus(aws, section.spot, {stack_name(p.instance_type) for p in here})
        except CommandError:
            raise
        except Exception as exc:  # botocore's errors, all turned into one line
            raise translate(exc, region=region) from None
        need = sum(p.vcpu for p in region_plans)
        if used + need > quota:
            kind = "spot" if section.spot else "on-demand"
            types = ", ".join(f"{p.instance_type} ({p.vcpu})" for p in region_plans)
            raise CommandError(
                f"the {kind} G and VT vCPU quota ({code}) in {region} is {quota:g} vCPUs, "
                f"{used} in use, and {types} need {need} — request {used + need:g} or more at "
                f"{quota_link(region, code)}" + (" (or try spot = false)" if section.spot else "")
            )
        plans += region_plans
        quotas[region] = Quota(code, quota, used, need)
    order = {p: i for i, p in enumerate(placements)}
    plans.sort(key=lambda p: order[p.placement])
    return Preflight(account, arn, owner_of(arn), plans, quotas, iso(now))


def plan_line(pre: Preflight, p: TypePlan, profile: Profile, cat: Catalog) -> str:
    """ "estimated 2 h 21 min, $0.71; worst case 4 h, $3.54": rig plan's estimate for this VM
    at the price just read (rig.estimate), the worst case from the same rates as above."""
    source = (
        f"live: describe_spot_price_history {pre.at}, {p.az}"
        if p.spot
        else f"on-demand ({p.on_demand_source})"
    )
    target = aws_standin(
        profile, cat, p.instance_type, p.region, p.hourly, source, live_rates=p.live_rates
    )
    # The VM runs until max_hours, or until the daily_shutdown when that comes first (the
    # stack's DailyStop schedule): the estimate bills at most that window.
    try:
        start = dt.datetime.fromisoformat(pre.at)
    except ValueError:
        start = None
    if start is not None and start.tzinfo is not None:
        target = replace(target, window_h=window_from(profile.autostop, start))
    return estimate(profile, cat, target).line()


def confirmation_lines(pre: Preflight, profile: Profile, cat: Catalog) -> list[str]:
    """What the deploy prints before asking: the account, and per stack its region, type,
    $/h now and at its cap, disk and IPv4, and the worst case (rig.cost's one formula) until
    the cloud-side max_hours stop (EventBridge Scheduler) ends it."""
    hours = profile.autostop.max_hours
    section = profile.aws
    lines = [f"AWS account {pre.account} ({pre.arn})"]
    for p in pre.plans:
        od = (
            f"on-demand ${p.on_demand:.3f}/h ({p.on_demand_source})"
            if p.on_demand is not None
            else "on-demand price not in the catalog"
        )
        if p.spot:
            capped = "spot_max_price" if isinstance(section.spot_max_price, float) else "on-demand"
            compute = (
                f"spot ${p.hourly:.4f}/h now (describe_spot_price_history, {pre.at}), capped at "
                f"${p.cap:.3f}/h ({capped}); {od}"
            )
        else:
            compute = od
        rates = pricing.region_rates(cat, p.region, p.live_rates)
        lines.append(
            f"{p.instance_type} in {p.region} ({p.az}): {compute}; disk ${p.worst.disk:.3f}/h "
            f"({section.disk_gb} GB gp3, {section.disk_iops} IOPS, {p.throughput_mbs} MiB/s)"
            f"{rates.note}; public IPv4 ${p.worst.public_ip:.3f}/h"
        )
        now_rates = HourlyRates(p.hourly, p.worst.disk, p.worst.public_ip)
        lines.append(
            f"  {worst_case_text(p.worst, hours)} (compute at its cap until the max_hours stop)"
            + (f"; at today's spot price ${worst_case_usd(now_rates, hours):.2f}" if p.spot else "")
        )
        lines.append(f"  {plan_line(pre, p, profile, cat)}")
        lines.append(
            f"  stopped, it still costs {pricing.stopped_text(p.worst)} until make destroy"
        )
    if len(pre.plans) > 1:
        total = sum(worst_case_usd(p.worst, hours) for p in pre.plans)
        lines.append(f"all {len(pre.plans)} together: worst case {hours:g} h, ${total:.2f}")
    return lines
