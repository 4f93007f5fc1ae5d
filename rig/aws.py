"""AWS operations: preflight, deploy through the CDK CLI, verified destroy. The only boto3 user.

Deploy: preflight (credentials, offerings, G/VT vCPU quotas, live spot price per AZ, worst-case
cost) → `cdk deploy` of one stack per instance type (cdk/app.py) → wait for SSH → provisioning
→ `.state/aws-<type>.json`. Destroy: cancel the stacks' persistent spot requests (a persistent
request relaunches a terminated instance) → `cdk destroy` → cancel again → an orphan scan by
tag that must find nothing. Every AWS failure reaches the user as one line (`CommandError`).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import inspect
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
import botocore.exceptions
from rich.console import Console

from rig.catalog import Catalog
from rig.problems import CommandError
from rig.profile import Profile
from rig.state import STATE_DIR, Price, VmState, iso, read_all, remove, utc_now, write

ROOT = Path(__file__).resolve().parent.parent
CDK_DIR = ROOT / "cdk"
PROJECT = "gpu-rehearsal"
STACK_PREFIX = f"{PROJECT}-"

# Tags on every resource (the orphan scan finds leftovers by them).
TAG_PROJECT = "project"
TAG_PROFILE = "profile"
TAG_OWNER = "owner"
TAG_STACK = "rehearsal-stack"

# Context keys: what deploy resolves and hands to cdk/app.py (synth itself looks nothing up).
CTX_CONFIG = "rig:config"
CTX_SSH_CIDR = "rig:sshCidr"
CTX_PUBLIC_KEY = "rig:publicKey"
CTX_AZ_PREFIX = "rig:az:"  # + instance type
CTX_DEADLINE = "rig:deadline"
CTX_OWNER = "rig:owner"
CTX_PROFILE_NAME = "rig:profileName"
# Used by `synth-aws` and tests when "auto" is not resolved: TEST-NET-1 (RFC 5737) is routed
# nowhere, and nobody holds the placeholder key's private half, so a template synthesized with
# them and deployed by mistake fails closed.
PLACEHOLDER_SSH_CIDR = "192.0.2.1/32"
PLACEHOLDER_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2HLkoRwWMprcPPlIrvT4OvK6fwzYU6kw11zcUB0Sbj "
    "synth-placeholder-no-private-key"
)

# Service Quotas (service code ec2), both counted in vCPUs and often 0 on new accounts.
QUOTA_ON_DEMAND = "L-DB2E81BA"  # Running On-Demand G and VT instances
QUOTA_SPOT = "L-3819A6DF"  # All G and VT Spot Instance Requests
GPU_FAMILIES = ("g", "vt")  # instance families both quotas count

# Costs besides the instance, billed per hour (AWS price pages, eu-west-1, read 2026-11;
# other regions differ by about 10 %). The disk bills while the VM is stopped, too.
EBS_GP3_GB_MONTH = 0.088
EBS_GP3_IOPS_MONTH = 0.0055  # per provisioned IOPS above the free 3000
EBS_GP3_MBS_MONTH = 0.044  # per MB/s above the free 125
PUBLIC_IPV4_HOUR = 0.005
HOURS_PER_MONTH = 730

SPOT_ACTIVE_STATES = ("open", "active", "disabled")  # disabled = its instance is stopped
SSH_TIMEOUT_S = 900

# --- names ---------------------------------------------------------------------------------


def stack_name(instance_type: str) -> str:
    """CloudFormation stack of one instance type: "gpu-rehearsal-g4dn-2xlarge"."""
    return STACK_PREFIX + instance_type.replace(".", "-")


def target_name(instance_type: str) -> str:
    """The bench target / state file name: "aws-g4dn.2xlarge"."""
    return f"aws-{instance_type}"


def quota_link(region: str, code: str) -> str:
    return f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code}"


# --- errors --------------------------------------------------------------------------------

NO_CREDENTIALS = (
    "no AWS credentials found — run `aws configure` (or `aws sso login`), or export "
    "AWS_PROFILE / AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then retry"
)
BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestExpired",
}


def explain_code(code: str, message: str, *, region: str, what: str = "") -> str | None:
    """The one-line explanation of an AWS error code (also found in CloudFormation reasons)."""
    subject = what or "the instance"
    if code in BAD_CREDENTIALS:
        return (
            f"AWS rejected the credentials ({code}) — refresh them (`aws sso login`, "
            "`aws configure`) and retry"
        )
    if code == "VcpuLimitExceeded":
        return (
            f"{subject}: the on-demand G and VT vCPU quota ({QUOTA_ON_DEMAND}) in {region} is "
            f"too low — request an increase at {quota_link(region, QUOTA_ON_DEMAND)}"
        )
    if code == "MaxSpotInstanceCountExceeded":
        return (
            f"{subject}: the G and VT spot vCPU quota ({QUOTA_SPOT}) in {region} is too low — "
            f"request an increase at {quota_link(region, QUOTA_SPOT)}, or set aws.spot = false"
        )
    if code == "InsufficientInstanceCapacity":
        return (
            f"{subject}: AWS has no capacity for it in this availability zone right now "
            "(InsufficientInstanceCapacity) — retry later, or pick another instance type"
        )
    if code == "SpotMaxPriceTooLow":
        return (
            f"{subject}: the spot price is above aws.spot_max_price (SpotMaxPriceTooLow) — "
            'raise aws.spot_max_price, set it to "" (on-demand price as cap), or spot = false'
        )
    if code == "Unsupported" or "not supported in your requested Availability Zone" in message:
        return (
            f"{subject} is not offered here ({code}) — pick another instance type or "
            f"aws.region (see python -m rig catalog)"
        )
    if code in {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}:
        return (
            f"the AWS identity lacks a permission ({code}: {message[:160]}) — use credentials "
            "allowed to run CloudFormation, EC2, IAM, CloudWatch and Scheduler"
        )
    return None


KNOWN_CODES = (
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "InsufficientInstanceCapacity",
    "SpotMaxPriceTooLow",
    "Unsupported",
    "UnauthorizedOperation",
)


def code_in_text(text: str) -> str | None:
    """An EC2 error code named in free text, e.g. a CloudFormation resource status reason."""
    return next((c for c in KNOWN_CODES if c in text), None)


def translate(exc: Exception, *, region: str, what: str = "") -> CommandError:
    """Any boto3/botocore failure as one line with the fix."""
    if isinstance(
        exc,
        botocore.exceptions.NoCredentialsError
        | botocore.exceptions.PartialCredentialsError
        | botocore.exceptions.CredentialRetrievalError
        | botocore.exceptions.TokenRetrievalError
        | botocore.exceptions.SSOError,
    ):
        return CommandError(NO_CREDENTIALS)
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
    ):
        return CommandError(f"cannot reach AWS in {region} ({exc}) — check the network and retry")
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code, message = str(err.get("Code", "")), str(err.get("Message", ""))
        line = explain_code(code, message, region=region, what=what)
        return CommandError(line or f"AWS error {code}: {message} — see the AWS message above")
    return CommandError(f"AWS: {exc.__class__.__name__}: {exc}")


# --- preflight -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TypePlan:
    """What preflight found for one instance type."""

    instance_type: str
    gpu: str
    vcpu: int
    azs: list[str]  # offering AZs, best first (cheapest spot price, then name)
    spot_prices: dict[str, float]  # AZ → current spot $/h
    on_demand: float | None  # catalog on-demand $/h in the region
    on_demand_source: str
    spot: bool
    cap: float | None  # the spot bid cap ($/h): spot_max_price, else on-demand

    @property
    def az(self) -> str:
        return self.azs[0]

    @property
    def hourly(self) -> float:
        """What it bills now in the best AZ (spot) or on-demand."""
        if self.spot:
            return self.spot_prices[self.az]
        if self.on_demand is None:
            raise ValueError("no on-demand price")
        return self.on_demand


@dataclass(frozen=True)
class Preflight:
    account: str
    arn: str
    owner: str
    region: str
    plans: list[TypePlan]
    quota_vcpus: float
    used_vcpus: int
    at: str  # when prices were read (ISO UTC)


def owner_of(arn: str) -> str:
    """A stable owner tag from an STS ARN: the IAM user or role name (not the session)."""
    resource = arn.split(":", 5)[-1]  # user/alice, assumed-role/Admin/session, root
    parts = resource.split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def _tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


def _is_gpu_family(instance_type: str) -> bool:
    return instance_type.split(".")[0].startswith(GPU_FAMILIES)


class Aws:
    """The boto3 calls, region-bound. Tests pass a moto-backed or Stubber-backed session."""

    def __init__(self, region: str, session: boto3.Session | None = None):
        self.region = region
        self.session = session or boto3.Session(region_name=region)
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, region_name=self.region)
        return self._clients[service]

    # preflight pieces

    def caller(self) -> tuple[str, str]:
        ident = self.client("sts").get_caller_identity()
        return ident["Account"], ident["Arn"]

    def offered_azs(self, instance_type: str) -> list[str]:
        pages = (
            self.client("ec2")
            .get_paginator("describe_instance_type_offerings")
            .paginate(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            )
        )
        return sorted({o["Location"] for p in pages for o in p["InstanceTypeOfferings"]})

    def spot_prices(self, instance_type: str, now: dt.datetime) -> dict[str, float]:
        """Current spot $/h per AZ (StartTime = now returns the price in force now)."""
        pages = (
            self.client("ec2")
            .get_paginator("describe_spot_price_history")
            .paginate(
                InstanceTypes=[instance_type],
                ProductDescriptions=["Linux/UNIX"],
                StartTime=now,
            )
        )
        latest: dict[str, tuple[dt.datetime, float]] = {}
        for page in pages:
            for item in page["SpotPriceHistory"]:
                az, ts, price = (
                    item["AvailabilityZone"],
                    item["Timestamp"],
                    float(item["SpotPrice"]),
                )
                if az not in latest or ts > latest[az][0]:
                    latest[az] = (ts, price)
        return {az: price for az, (_, price) in latest.items()}

    def quota_vcpus(self, code: str) -> float:
        sq = self.client("service-quotas")
        try:
            return float(sq.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
                raise
            # An account that never touched the quota has only the default applied.
            return float(
                sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"][
                    "Value"
                ]
            )

    def used_gpu_vcpus(self, spot: bool, exclude_stacks: set[str]) -> int:
        """vCPUs of running G/VT instances counted by the same quota (spot or on-demand)."""
        pages = (
            self.client("ec2")
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
                    if _tags(inst.get("Tags")).get(TAG_STACK) in exclude_stacks:
                        continue  # a redeploy replaces nothing: its own VM is not extra
                    cpu = inst.get("CpuOptions", {})
                    used += int(cpu.get("CoreCount", 0)) * int(cpu.get("ThreadsPerCore", 1))
        return used

    # instance life

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        res = self.client("ec2").describe_instances(InstanceIds=[instance_id])
        return res["Reservations"][0]["Instances"][0]

    def ensure_running(self, instance_id: str, console: Console, wait_s: float = 600) -> dict:
        """Start the VM when the watchdog (or a spot interruption) stopped it; wait for running."""
        inst = self.describe_instance(instance_id)
        state = inst["State"]["Name"]
        if state in {"stopped", "stopping"}:
            if state == "stopping":
                self.client("ec2").get_waiter("instance_stopped").wait(InstanceIds=[instance_id])
            console.print(f"  {instance_id} was stopped: starting it")
            self.client("ec2").start_instances(InstanceIds=[instance_id])
        if state != "running":
            delay = 5
            self.client("ec2").get_waiter("instance_running").wait(
                InstanceIds=[instance_id],
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(wait_s // delay))},
            )
            inst = self.describe_instance(instance_id)
        return inst

    def stack_failure(self, name: str) -> str | None:
        """The first failure reason of the stack's latest operation, if any."""
        try:
            pages = (
                self.client("cloudformation")
                .get_paginator("describe_stack_events")
                .paginate(StackName=name)
            )
            events = [e for p in pages for e in p["StackEvents"]]
        except botocore.exceptions.ClientError:
            return None
        failed = [
            e
            for e in events
            if e.get("ResourceStatus", "").endswith("_FAILED") and e.get("ResourceStatusReason")
        ]
        # Events come newest first; the root cause is the oldest failure.
        return failed[-1]["ResourceStatusReason"] if failed else None

    def stack_outputs(self, name: str) -> dict[str, str]:
        """The outputs of a deployed stack ({} when it does not exist)."""
        try:
            stacks = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except botocore.exceptions.ClientError:
            return {}
        return {o["OutputKey"]: o["OutputValue"] for s in stacks for o in s.get("Outputs", [])}

    def delete_stack(self, name: str, wait_s: float = 1800) -> None:
        """Delete a stack that the current profile's CDK app no longer synthesizes."""
        cfn = self.client("cloudformation")
        cfn.delete_stack(StackName=name)
        delay = 10
        cfn.get_waiter("stack_delete_complete").wait(
            StackName=name, WaiterConfig={"Delay": delay, "MaxAttempts": int(wait_s // delay)}
        )

    def stack_exists(self, name: str) -> str | None:
        """The stack's status, or None when it does not exist (or is deleted)."""
        try:
            stacks = self.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
        except botocore.exceptions.ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        status = stacks[0]["StackStatus"] if stacks else None
        return None if status in (None, "DELETE_COMPLETE") else status

    def project_stacks(self, owner: str) -> list[str]:
        """Stacks of this project and owner in the region (CDK copies the tags to the stack)."""
        out = []
        for page in self.client("cloudformation").get_paginator("describe_stacks").paginate():
            for s in page["Stacks"]:
                tags = _tags(s.get("Tags"))
                if (
                    s["StackName"].startswith(STACK_PREFIX)
                    and tags.get(TAG_PROJECT) == PROJECT
                    and tags.get(TAG_OWNER) == owner
                    and s["StackStatus"] != "DELETE_COMPLETE"
                ):
                    out.append(s["StackName"])
        return out

    # spot requests and the orphan scan

    def spot_requests(self, stacks: Iterable[str] | None = None, owner: str | None = None) -> list:
        filters = [
            {"Name": "state", "Values": list(SPOT_ACTIVE_STATES)},
            {"Name": f"tag:{TAG_PROJECT}", "Values": [PROJECT]},
        ]
        if stacks is not None:
            filters.append({"Name": f"tag:{TAG_STACK}", "Values": list(stacks)})
        if owner is not None:
            filters.append({"Name": f"tag:{TAG_OWNER}", "Values": [owner]})
        reqs = self.client("ec2").describe_spot_instance_requests(Filters=filters)
        return [r for r in reqs["SpotInstanceRequests"] if r["State"] in SPOT_ACTIVE_STATES]

    def cancel_spot_requests(self, stacks: Iterable[str]) -> list[str]:
        """Cancel the stacks' open/active persistent requests; returns their ids."""
        ids = [r["SpotInstanceRequestId"] for r in self.spot_requests(list(stacks))]
        if ids:
            self.client("ec2").cancel_spot_instance_requests(SpotInstanceRequestIds=ids)
        return ids

    def orphans(self, owner: str) -> list[Leftover]:
        """Everything still tagged for this project and owner that bills or could relaunch."""
        ec2 = self.client("ec2")
        tag_filters = [
            {"Name": f"tag:{TAG_PROJECT}", "Values": [PROJECT]},
            {"Name": f"tag:{TAG_OWNER}", "Values": [owner]},
        ]

        def mine(tags: list[dict[str, str]] | None) -> bool:
            t = _tags(tags)
            return t.get(TAG_PROJECT) == PROJECT and t.get(TAG_OWNER) == owner

        out: list[Leftover] = []
        for res in ec2.describe_instances(Filters=tag_filters)["Reservations"]:
            for i in res["Instances"]:
                if i["State"]["Name"] != "terminated" and mine(i.get("Tags")):
                    out.append(
                        Leftover(
                            "instance",
                            i["InstanceId"],
                            i["State"]["Name"],
                            f"aws ec2 terminate-instances --instance-ids {i['InstanceId']}",
                        )
                    )
        for v in ec2.describe_volumes(Filters=tag_filters)["Volumes"]:
            if mine(v.get("Tags")):
                out.append(
                    Leftover(
                        "volume",
                        v["VolumeId"],
                        f"{v['Size']} GB {v['State']}",
                        f"aws ec2 delete-volume --volume-id {v['VolumeId']}",
                    )
                )
        for n in ec2.describe_network_interfaces(Filters=tag_filters)["NetworkInterfaces"]:
            if mine(n.get("TagSet")):
                nid = n["NetworkInterfaceId"]
                out.append(
                    Leftover(
                        "network interface",
                        nid,
                        n.get("Status", ""),
                        f"aws ec2 delete-network-interface --network-interface-id {nid}",
                    )
                )
        for a in ec2.describe_addresses(Filters=tag_filters)["Addresses"]:
            if mine(a.get("Tags")):
                out.append(
                    Leftover(
                        "elastic IP",
                        a.get("AllocationId", a.get("PublicIp", "?")),
                        a.get("PublicIp", ""),
                        f"aws ec2 release-address --allocation-id {a.get('AllocationId')}",
                    )
                )
        for r in self.spot_requests(owner=owner):
            rid = r["SpotInstanceRequestId"]
            out.append(
                Leftover(
                    "spot request",
                    rid,
                    f"{r['State']} {r.get('Type', '')}".strip(),
                    f"aws ec2 cancel-spot-instance-requests --spot-instance-request-ids {rid}",
                )
            )
        for k in ec2.describe_key_pairs(Filters=tag_filters)["KeyPairs"]:
            if mine(k.get("Tags")):
                out.append(
                    Leftover(
                        "key pair",
                        k["KeyName"],
                        "",
                        f"aws ec2 delete-key-pair --key-name {k['KeyName']}",
                    )
                )
        cw = self.client("cloudwatch")
        for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=STACK_PREFIX):
            for alarm in page["MetricAlarms"]:
                tags = cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
                if mine(tags):
                    name = alarm["AlarmName"]
                    out.append(
                        Leftover(
                            "alarm",
                            name,
                            alarm.get("StateValue", ""),
                            f"aws cloudwatch delete-alarms --alarm-names {name}",
                        )
                    )
        sched = self.client("scheduler")
        for page in sched.get_paginator("list_schedule_groups").paginate(NamePrefix=STACK_PREFIX):
            for group in page["ScheduleGroups"]:
                tags = sched.list_tags_for_resource(ResourceArn=group["Arn"])["Tags"]
                if not mine(tags):
                    continue
                name = group["Name"]
                schedules = [
                    s["Name"]
                    for p in sched.get_paginator("list_schedules").paginate(GroupName=name)
                    for s in p["Schedules"]
                ]
                out.append(
                    Leftover(
                        "schedule group",
                        name,
                        f"schedules: {', '.join(schedules) or 'none'}",
                        f"aws scheduler delete-schedule-group --name {name}",
                    )
                )
        return out


@dataclass(frozen=True)
class Leftover:
    kind: str
    id: str
    detail: str
    fix: str  # the AWS CLI command that removes it

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.id}{detail} — remove: {self.fix}"


def preflight(
    aws: Aws, profile: Profile, cat: Catalog, now: dt.datetime | None = None
) -> Preflight:
    """Everything checked before CloudFormation is touched; raises CommandError on the first
    problem, with the fix."""
    now = now or utc_now()
    section = profile.aws
    region = aws.region
    try:
        account, arn = aws.caller()
        owner = owner_of(arn)
        plans = [_plan_type(aws, profile, cat, t, now) for t in section.instance_types]
        code = QUOTA_SPOT if section.spot else QUOTA_ON_DEMAND
        quota = aws.quota_vcpus(code)
        used = aws.used_gpu_vcpus(section.spot, {stack_name(t) for t in section.instance_types})
    except CommandError:
        raise
    except Exception as exc:  # botocore's errors, all turned into one line
        raise translate(exc, region=region) from None
    need = sum(p.vcpu for p in plans)
    if used + need > quota:
        kind = "spot" if section.spot else "on-demand"
        code = QUOTA_SPOT if section.spot else QUOTA_ON_DEMAND
        types = ", ".join(f"{p.instance_type} ({p.vcpu})" for p in plans)
        raise CommandError(
            f"the {kind} G and VT vCPU quota ({code}) in {region} is {quota:g} vCPUs, "
            f"{used} in use, and {types} need {need} — request {used + need:g} or more at "
            f"{quota_link(region, code)}" + (" (or try spot = false)" if section.spot else "")
        )
    return Preflight(account, arn, owner, region, plans, quota, used, iso(now))


def _plan_type(aws: Aws, profile: Profile, cat: Catalog, itype: str, now: dt.datetime) -> TypePlan:
    section = profile.aws
    inst = cat.instances[itype]
    azs = aws.offered_azs(itype)
    if not azs:
        raise CommandError(
            f"{itype} is not offered in {aws.region} (describe_instance_type_offerings) — pick "
            "another aws.instance_types entry or aws.region (see python -m rig catalog)"
        )
    od = inst.price_in(aws.region)
    on_demand = od.usd_per_hour if od else None
    od_source = od.source if od else "not in the catalog"
    prices: dict[str, float] = {}
    cap: float | None = None
    if section.spot:
        prices = {az: p for az, p in aws.spot_prices(itype, now).items() if az in azs}
        if not prices:
            raise CommandError(
                f"{itype} has no spot price in {aws.region} (describe_spot_price_history) — "
                "spot may not be sold there: set aws.spot = false or pick another type"
            )
        azs = sorted(prices, key=lambda az: (prices[az], az))
        cap = section.spot_max_price if isinstance(section.spot_max_price, float) else on_demand
        if cap is not None and prices[azs[0]] > cap:
            raise CommandError(
                f"{itype}: the lowest spot price in {aws.region} is ${prices[azs[0]]:.4f}/h "
                f"({azs[0]}), above the cap ${cap:.4f}/h (SpotMaxPriceTooLow) — raise "
                'aws.spot_max_price, set it to "", or set spot = false'
            )
    elif on_demand is None:
        raise CommandError(
            f"{itype}: no on-demand price for {aws.region} in the catalog — add it to "
            "rig/catalog/instances.toml with a source, or use spot = true"
        )
    return TypePlan(
        instance_type=itype,
        gpu=inst.gpu or "",
        vcpu=inst.vcpu,
        azs=azs,
        spot_prices=prices,
        on_demand=on_demand,
        on_demand_source=od_source,
        spot=section.spot,
        cap=cap,
    )


def disk_usd_per_hour(profile: Profile) -> float:
    a = profile.aws
    month = (
        a.disk_gb * EBS_GP3_GB_MONTH
        + max(a.disk_iops - 3000, 0) * EBS_GP3_IOPS_MONTH
        + max(a.disk_throughput_mbs - 125, 0) * EBS_GP3_MBS_MONTH
    )
    return month / HOURS_PER_MONTH


def cost_lines(pre: Preflight, profile: Profile) -> list[str]:
    """What it costs per hour and at worst (until max_hours stops it), per type."""
    hours = profile.autostop.max_hours
    disk = disk_usd_per_hour(profile)
    lines = []
    for p in pre.plans:
        extra = disk + PUBLIC_IPV4_HOUR
        od = f"${p.on_demand:.3f}/h ({p.on_demand_source})" if p.on_demand else "unknown"
        if p.spot:
            now = p.spot_prices[p.az]
            worst = p.cap if p.cap is not None else now
            lines.append(
                f"{p.instance_type} in {p.az}: spot ${now:.4f}/h now (describe_spot_price_history"
                f", {pre.at}); on-demand {od}; + disk and IPv4 ${extra:.3f}/h"
            )
            lines.append(
                f"  worst case for max_hours = {hours:g}: ${(now + extra) * hours:.2f} at today's "
                f"spot price, ${(worst + extra) * hours:.2f} if spot rises to its cap"
                + (f", ${(p.on_demand + extra) * hours:.2f} on-demand" if p.on_demand else "")
            )
        else:
            assert p.on_demand is not None
            lines.append(
                f"{p.instance_type} in {p.az}: on-demand {od}; + disk and IPv4 ${extra:.3f}/h"
            )
            lines.append(
                f"  worst case for max_hours = {hours:g}: ${(p.on_demand + extra) * hours:.2f}"
            )
        lines.append(
            f"  while stopped the {profile.aws.disk_gb} GB gp3 disk still bills "
            f"${disk * 24:.2f}/day until `make destroy`"
        )
    return lines


# --- SSH source and key --------------------------------------------------------------------


def public_ip_lookup() -> str:
    """The caller's public IPv4 address, as AWS sees it."""
    with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=10) as resp:
        return resp.read().decode().strip()


def resolve_ssh_cidr(profile: Profile, lookup: Callable[[], str] = public_ip_lookup) -> str:
    net = profile.access.network()
    if net is not None:
        return str(net)
    try:
        addr = ipaddress.ip_address(lookup())
    except (OSError, ValueError) as exc:
        raise CommandError(
            f'access.ssh_source = "auto" could not find your public IP ({exc}) — set '
            'access.ssh_source to your address, e.g. "203.0.113.7/32"'
        ) from None
    return f"{addr}/{addr.max_prefixlen}"


def ensure_key(profile: Profile, state_dir: Path) -> tuple[str, Path | None]:
    """(public key material, private key path) — the profile's key, or one generated under
    .state/ once (ed25519, 0600) and reused by every later deploy."""
    if profile.access.ssh_public_key:
        pub = profile.access.key_path(profile.base_dir)
        private = pub.with_suffix("") if pub.suffix == ".pub" else None
        return pub.read_text(encoding="utf-8").strip(), private
    private = state_dir / "aws-rehearsal_ed25519"
    pub = private.with_name(private.name + ".pub")
    if not pub.is_file():
        if shutil.which("ssh-keygen") is None:
            raise CommandError(
                "ssh-keygen is missing — install OpenSSH (apt install openssh-client), or set "
                'access.ssh_public_key = "~/.ssh/id_ed25519.pub"'
            )
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", PROJECT, "-f", str(private)],
            check=True,
        )
    return pub.read_text(encoding="utf-8").strip(), private


# --- the CDK CLI ---------------------------------------------------------------------------


class CdkRunner(Protocol):
    def deploy(self, stack: str, context: dict[str, str], outputs: Path, region: str) -> int: ...

    def destroy(self, stacks: list[str], context: dict[str, str], region: str) -> int: ...


@dataclass
class CdkCli:
    """The pinned CDK CLI from cdk/node_modules (npm ci), offline-safe settings."""

    cdk_dir: Path = CDK_DIR
    python: str = sys.executable
    output: Path | None = None  # cloud assembly dir; default cdk/cdk.out

    @property
    def binary(self) -> Path:
        return self.cdk_dir / "node_modules" / ".bin" / "cdk"

    def env(self, region: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CDK_HOME=str(
                self.cdk_dir / ".cdk-home"
            ),  # not ~/.cdk: keep the workspace self-contained
            CDK_DISABLE_CLI_TELEMETRY="true",
            CDK_DISABLE_VERSION_CHECK="true",
            JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
            JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        )
        if region:
            env.update(AWS_REGION=region, AWS_DEFAULT_REGION=region, CDK_DEFAULT_REGION=region)
        return env

    def command(self, verb: str, *args: str, context: dict[str, str]) -> list[str]:
        if not self.binary.exists():
            raise CommandError(
                f"the CDK CLI is not installed in {self.cdk_dir}/node_modules — run "
                "`npm ci --prefix cdk` (Node.js 20 or newer), then retry"
            )
        cmd = [
            str(self.binary),
            verb,
            *args,
            "--app",
            f"{self.python} app.py",
            "--no-notices",
            "--no-version-reporting",
        ]
        if self.output is not None:
            cmd += ["--output", str(self.output)]
        for key, value in context.items():
            cmd += ["--context", f"{key}={value}"]
        return cmd

    def synth(self, context: dict[str, str], region: str | None = None, quiet: bool = True) -> int:
        args = ("--quiet",) if quiet else ()
        cmd = self.command("synth", *args, context=context)
        return subprocess.run(cmd, cwd=self.cdk_dir, env=self.env(region), check=False).returncode

    def deploy(self, stack: str, context: dict[str, str], outputs: Path, region: str) -> int:
        cmd = self.command(
            "deploy",
            stack,
            "--require-approval",
            "never",
            "--outputs-file",
            str(outputs),
            "--exclusively",
            context=context,
        )
        return subprocess.run(cmd, cwd=self.cdk_dir, env=self.env(region), check=False).returncode

    def destroy(self, stacks: list[str], context: dict[str, str], region: str) -> int:
        cmd = self.command("destroy", *stacks, "--force", "--exclusively", context=context)
        return subprocess.run(cmd, cwd=self.cdk_dir, env=self.env(region), check=False).returncode


def base_context(profile: Profile) -> dict[str, str]:
    return {
        CTX_CONFIG: str(profile.path.resolve()),
        CTX_PROFILE_NAME: profile.path.stem,
    }


# --- deploy --------------------------------------------------------------------------------


def wait_for_ssh(host: str, port: int = 22, timeout_s: float = SSH_TIMEOUT_S) -> None:
    """Until sshd answers with its banner (a TCP accept alone happens before sshd is up)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.settimeout(10)
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(5)
    raise CommandError(
        f"SSH on {host}:{port} did not answer within {timeout_s / 60:.0f} min ({last}) — check "
        "that your public IP has not changed since deploy (then redeploy), or see the EC2 "
        "console's system log"
    )


Provisioner = Callable[[VmState, Profile, Console], Any]


def find_provisioner() -> Provisioner | None:
    """rig.provision.provision (the Ansible part) when this checkout has it."""
    if importlib.util.find_spec("rig.provision") is None:
        return None
    return importlib.import_module("rig.provision").provision


def ask(question: str) -> bool:
    if not sys.stdin.isatty():
        raise CommandError("deploy needs a yes: run it in a terminal, or pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


@dataclass
class Deployer:
    """One `deploy aws`; every outside effect is a field so that tests can replace it."""

    profile: Profile
    cat: Catalog
    console: Console
    aws: Aws
    cdk: CdkRunner = field(default_factory=CdkCli)
    state_dir: Path = STATE_DIR
    confirm: Callable[[str], bool] = ask
    ip_lookup: Callable[[], str] = public_ip_lookup
    ssh_wait: Callable[[str], None] = wait_for_ssh
    provision: Provisioner | None = field(default_factory=find_provisioner)
    yes: bool = False

    def run(self) -> list[VmState]:
        profile, console = self.profile, self.console
        if not profile.aws.enabled:
            raise CommandError(f"{profile.path}: aws.enabled = false — set it to true to deploy")
        console.print(f"preflight in {self.aws.region} ...")
        pre = preflight(self.aws, profile, self.cat)
        console.print(f"  account {pre.account} as {pre.arn}")
        quota_kind = "spot" if profile.aws.spot else "on-demand"
        console.print(
            f"  {quota_kind} G and VT quota: {pre.quota_vcpus:g} vCPUs, {pre.used_vcpus} in use"
        )
        for line in cost_lines(pre, profile):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if not self.yes and not self.confirm("Deploy and start billing?"):
            raise CommandError("deploy cancelled — nothing was created")
        cidr = resolve_ssh_cidr(profile, self.ip_lookup)
        public_key, private_key = ensure_key(profile, self.state_dir)
        deployed_at = utc_now()
        deadline = deployed_at + dt.timedelta(hours=profile.autostop.max_hours)
        context = base_context(profile) | {
            CTX_SSH_CIDR: cidr,
            CTX_PUBLIC_KEY: public_key,
            CTX_OWNER: pre.owner,
            CTX_DEADLINE: deadline.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        console.print(f"  SSH allowed from {cidr} only")
        states = []
        for plan in pre.plans:
            outputs = self._deploy_stack(plan, context)
            state = self._state(plan, pre, outputs, private_key, deployed_at, deadline)
            states.append(self._provision(state))
        return states

    def _deploy_stack(self, plan: TypePlan, context: dict[str, str]) -> dict[str, str]:
        """cdk deploy in the best AZ; on InsufficientInstanceCapacity, the next AZ."""
        name = stack_name(plan.instance_type)
        azs = list(plan.azs)
        # A redeploy stays in the VM's AZ: moving would replace the subnet, the VM and its disk
        # with every model pulled on it.
        current = self.aws.stack_outputs(name).get("AvailabilityZone")
        if current in azs:
            azs.remove(current)
            azs.insert(0, current)
        tried = []
        for az in azs:
            tried.append(az)
            self.console.print(f"deploying {name} in {az} (cdk deploy) ...")
            with tempfile.TemporaryDirectory(prefix="rig-cdk-") as tmp:
                out_file = Path(tmp) / "outputs.json"
                ctx = context | {CTX_AZ_PREFIX + plan.instance_type: az}
                rc = self.cdk.deploy(name, ctx, out_file, self.aws.region)
                if rc == 0:
                    return json.loads(out_file.read_text(encoding="utf-8"))[name]
            reason = self.aws.stack_failure(name) or ""
            code = code_in_text(reason)
            if code == "InsufficientInstanceCapacity":
                self.console.print(f"  no capacity in {az}: trying the next availability zone")
                continue
            line = explain_code(code or "", reason, region=self.aws.region, what=plan.instance_type)
            raise CommandError(
                line
                or f"cdk deploy {name} failed ({reason or 'see the CDK output above'}) — fix "
                "that, then rerun make deploy-aws (it resumes), or make destroy"
            )
        raise CommandError(
            f"{plan.instance_type}: no capacity in any AZ of {self.aws.region} ("
            f"{', '.join(tried)}; InsufficientInstanceCapacity) — retry later, pick another "
            "type, or set spot = false; then make destroy removes what is left"
        )

    def _state(
        self,
        plan: TypePlan,
        pre: Preflight,
        outputs: dict[str, str],
        private_key: Path | None,
        deployed_at: dt.datetime,
        deadline: dt.datetime,
    ) -> VmState:
        instance_id = outputs["InstanceId"]
        try:
            inst = self.aws.ensure_running(instance_id, self.console)
        except Exception as exc:
            raise translate(exc, region=self.aws.region, what=plan.instance_type) from None
        # The address changes at every stop/start: read it now, not from the outputs.
        host = inst.get("PublicIpAddress") or outputs.get("PublicIp", "")
        az = inst.get("Placement", {}).get("AvailabilityZone", outputs.get("AvailabilityZone", ""))
        self.console.print(f"waiting for SSH on {host} ...")
        self.ssh_wait(host)
        hourly = plan.spot_prices.get(az, plan.hourly) if plan.spot else plan.hourly
        ids = {
            "instance": instance_id,
            "stack": stack_name(plan.instance_type),
            "launch_template": outputs.get("LaunchTemplateId", ""),
            "key_pair": outputs.get("KeyName", ""),
            "availability_zone": az,
        }
        if inst.get("SpotInstanceRequestId"):
            ids["spot_request"] = inst["SpotInstanceRequestId"]
        state = VmState(
            name=target_name(plan.instance_type),
            cloud="aws",
            region=self.aws.region,
            instance_type=plan.instance_type,
            gpu=plan.gpu,
            host=host,
            ssh_user=outputs.get("SshUser", "ubuntu"),
            ssh_key=str(private_key) if private_key else "",
            spot=plan.spot,
            price=Price(
                usd_per_hour=hourly,
                kind="spot" if plan.spot else "on-demand",
                source=f"describe_spot_price_history {az}" if plan.spot else plan.on_demand_source,
                at=pre.at,
                on_demand_usd_per_hour=plan.on_demand,
            ),
            deployed_at=iso(deployed_at),
            deadline=iso(deadline),
            ids=ids,
            provisioned=False,
            extra={
                "image": self.profile.aws.image,  # tells Ansible whether the driver is there
                "public_dns": inst.get("PublicDnsName") or outputs.get("PublicDnsName", ""),
                "owner": pre.owner,
                "disk_usd_per_hour": round(disk_usd_per_hour(self.profile), 4),
            },
        )
        write(state, self.state_dir)  # before provisioning: a failure there leaves a known VM
        return state

    def _provision(self, state: VmState) -> VmState:
        if self.provision is None:
            self.console.print(
                f"{state.name}: ready on {state.host}, NOT provisioned yet (no Ansible part in "
                "this checkout: driver, Ollama and the idle watchdog are missing; the cloud-side "
                "idle alarm and max_hours stop are active)",
                highlight=False,
            )
            return state
        kwargs: dict[str, Any] = {}
        if "state_dir" in inspect.signature(self.provision).parameters:
            kwargs["state_dir"] = self.state_dir  # keep its rewrite next to ours (--state-dir)
        result = self.provision(state, self.profile, self.console, **kwargs)
        # provision() may return the converged state or update ours in place (provisioned).
        if isinstance(result, VmState):
            state = result
        write(state, self.state_dir)
        return state


def ready_lines(state: VmState) -> list[str]:
    key = f" -i {state.ssh_key}" if state.ssh_key else ""
    return [
        f"{state.name}: {state.ssh_user}@{state.host} ({state.ids.get('availability_zone', '')}), "
        f"${state.price.usd_per_hour:.4f}/h {state.price.kind}, stops by {state.deadline}",
        f"  tunnel: ssh{key} -N -L 11434:127.0.0.1:11434 {state.ssh_user}@{state.host}",
    ]


# --- destroy -------------------------------------------------------------------------------


@dataclass
class DestroyReport:
    stacks: list[str]
    cancelled: list[str]
    leftovers: list[Leftover]


def destroy(
    profile: Profile,
    console: Console,
    aws: Aws,
    cdk: CdkRunner | None = None,
    state_dir: Path = STATE_DIR,
) -> DestroyReport:
    """cancel spot requests → cdk destroy → cancel again → orphan scan (must be empty)."""
    cdk = cdk or CdkCli()
    region = aws.region
    recorded = [s for s in read_all(state_dir) if s.cloud == "aws"]
    if not profile.aws.enabled and not recorded:
        # `make destroy` runs every cloud's part: an Azure-only user has no AWS credentials.
        console.print("aws.enabled = false and no AWS state in .state/: AWS part skipped")
        return DestroyReport([], [], [])
    try:
        _, arn = aws.caller()
        owner = owner_of(arn)
        known = {stack_name(t) for t in profile.aws.instance_types}
        known |= {
            s.ids.get("stack", stack_name(s.instance_type)) for s in recorded if s.region == region
        }
        stacks = sorted({s for s in known if aws.stack_exists(s)} | set(aws.project_stacks(owner)))
        # First, so that CloudFormation's terminate cannot make a persistent request relaunch.
        cancelled = aws.cancel_spot_requests(stacks) if stacks else []
    except CommandError:
        raise
    except Exception as exc:
        raise translate(exc, region=region) from None
    for rid in cancelled:
        console.print(f"cancelled spot request {rid}")
    in_app = [s for s in stacks if s in {stack_name(t) for t in profile.aws.instance_types}]
    if in_app:
        console.print(f"destroying {', '.join(in_app)} (cdk destroy) ...")
        rc = cdk.destroy(in_app, base_context(profile), region)
        if rc != 0:
            reasons = [r for s in in_app if (r := aws.stack_failure(s))]
            console.print(
                f"cdk destroy exited {rc}" + (f": {reasons[0]}" if reasons else ""),
                markup=False,
            )
    # Stacks of types since removed from the profile: the CDK app no longer knows them.
    for s in (s for s in stacks if s not in in_app):
        console.print(f"destroying {s} (not in the profile any more: CloudFormation delete) ...")
        try:
            aws.delete_stack(s)
        except Exception as exc:  # reported below as a leftover stack
            console.print(f"  {translate(exc, region=region)}", markup=False)
    if not stacks:
        console.print(f"no {PROJECT} stacks in {region}")
    try:
        # A request that relaunched in between is cancelled now; anything else is reported.
        again = aws.cancel_spot_requests(stacks) if stacks else []
        cancelled += again
        for rid in again:
            console.print(f"cancelled spot request {rid}")
        left = [s for s in stacks if aws.stack_exists(s)]
        leftovers = [
            Leftover("stack", s, str(aws.stack_exists(s)), f"cdk destroy {s}") for s in left
        ]
        leftovers += aws.orphans(owner)
    except Exception as exc:
        raise translate(exc, region=region) from None
    for s in stacks:
        if s not in left:
            remove(target_name(_type_of(s, profile, state_dir)), state_dir)
    return DestroyReport(stacks, cancelled, leftovers)


def _type_of(stack: str, profile: Profile, state_dir: Path) -> str:
    for t in profile.aws.instance_types:
        if stack_name(t) == stack:
            return t
    for s in read_all(state_dir):
        if s.cloud == "aws" and s.ids.get("stack") == stack:
            return s.instance_type
    # gpu-rehearsal-g4dn-2xlarge → g4dn.2xlarge (type names have exactly one dot)
    family, _, size = stack.removeprefix(STACK_PREFIX).partition("-")
    return f"{family}.{size}"
