"""The orphan scan: everything tagged for this project and owner in a region that bills or
could relaunch, each with the AWS CLI command that removes it. Also the spot-request and
instance look-ups that deploy and destroy use to find what a stack launched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from rig.aws.errors import client_code
from rig.aws.names import PROJECT, STACK_PREFIX, TAG_OWNER, TAG_PROJECT, TAG_STACK
from rig.aws.session import Aws, tags_of

# Request states that still hold (or can relaunch) an instance; "disabled" = its instance is
# stopped (EC2 User Guide, "Spot request status": State changes for a Spot request).
SPOT_LIVE_STATES = ("open", "active", "disabled")
# Status codes of a request whose instance AWS stopped, not the user (EC2 User Guide, "State
# changes for a Spot request": instance-stopped-by-price and instance-stopped-no-capacity under
# Fulfilled-terminal; instance-stopped-by-experiment under Interruption experiments, AWS FIS).
# Only EC2 restarts such an instance ("Stop interrupted Spot Instances").
INTERRUPTED_CODES = (
    "instance-stopped-by-price",
    "instance-stopped-no-capacity",
    "instance-stopped-by-experiment",
)
# The 2-minute interruption notice of a VM that runs still: EC2 stops it next (same table).
STOP_NOTICE_CODES = ("marked-for-stop", "marked-for-stop-by-experiment")
INTERRUPTED_REASON = "Server.SpotInstanceShutdown"  # the instance's StateReason code then
INSTANCE_LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")


@dataclass(frozen=True)
class Leftover:
    kind: str
    id: str
    detail: str
    fix: str  # the AWS CLI command that removes it
    region: str = ""

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        where = f" in {self.region}" if self.region else ""
        return f"{self.kind} {self.id}{where}{detail} — remove: {self.fix}"


def _project_filters(owner: str | None = None) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"Name": f"tag:{TAG_PROJECT}", "Values": [PROJECT]}]
    if owner is not None:
        filters.append({"Name": f"tag:{TAG_OWNER}", "Values": [owner]})
    return filters


def spot_requests(
    aws: Aws,
    stacks: Iterable[str] | None = None,
    owner: str | None = None,
    ids: Iterable[str] | None = None,
    states: Iterable[str] = SPOT_LIVE_STATES,
) -> list[dict[str, Any]]:
    """Spot requests by id, or by the project/stack/owner tags the launch template puts on them."""
    ec2 = aws.client("ec2")
    wanted = list(states)
    if ids is not None:
        return [r for r in requests_by_id(aws, ids) if r["State"] in wanted]
    filters = [{"Name": "state", "Values": wanted}, *_project_filters(owner)]
    if stacks is not None:
        filters.append({"Name": f"tag:{TAG_STACK}", "Values": list(stacks)})
    # Paginated (DescribeSpotInstanceRequests: NextToken): one page must not hide the rest.
    pages = ec2.get_paginator("describe_spot_instance_requests").paginate(Filters=filters)
    return [r for page in pages for r in page["SpotInstanceRequests"] if r["State"] in wanted]


def requests_by_id(aws: Aws, ids: Iterable[str]) -> list[dict[str, Any]]:
    """The requests that still exist: EC2 forgets closed and cancelled requests after a while,
    and one unknown id fails the whole call (InvalidSpotInstanceRequestID.NotFound)."""
    ec2 = aws.client("ec2")
    wanted = sorted(set(ids))
    if not wanted:
        return []
    try:
        return list(
            ec2.describe_spot_instance_requests(SpotInstanceRequestIds=wanted)[
                "SpotInstanceRequests"
            ]
        )
    except botocore.exceptions.ClientError as exc:
        if "NotFound" not in client_code(exc):
            raise
    out: list[dict[str, Any]] = []
    for rid in wanted:
        try:
            found = ec2.describe_spot_instance_requests(SpotInstanceRequestIds=[rid])
        except botocore.exceptions.ClientError as exc:
            if "NotFound" in client_code(exc):
                continue
            raise
        out += found["SpotInstanceRequests"]
    return out


def cancel_spot_requests(aws: Aws, ids: Iterable[str]) -> list[str]:
    """Cancel requests by id. Cancelling does not terminate a running instance; it terminates
    the stopped instance of a disabled request (EC2 User Guide, "Terminate a Spot Instance")."""
    ids = sorted(set(ids))
    if ids:
        aws.client("ec2").cancel_spot_instance_requests(SpotInstanceRequestIds=ids)
    return ids


def tagged_instances(
    aws: Aws, stacks: Iterable[str] | None = None, owner: str | None = None
) -> list[dict[str, Any]]:
    """Instances (not terminated) tagged for this project, optionally by stack and owner."""
    filters = [
        {"Name": "instance-state-name", "Values": list(INSTANCE_LIVE_STATES)},
        *_project_filters(owner),
    ]
    if stacks is not None:
        filters.append({"Name": f"tag:{TAG_STACK}", "Values": list(stacks)})
    pages = aws.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
    return [
        i
        for page in pages
        for res in page["Reservations"]
        for i in res["Instances"]
        if i["State"]["Name"] in INSTANCE_LIVE_STATES
    ]


def existing_instances(aws: Aws, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Describe the ids one by one: an id EC2 no longer knows must not hide the others
    (DescribeInstances fails the whole call with InvalidInstanceID.NotFound)."""
    out: list[dict[str, Any]] = []
    for iid in sorted(set(ids)):
        try:
            res = aws.client("ec2").describe_instances(InstanceIds=[iid])["Reservations"]
        except botocore.exceptions.ClientError as exc:
            if "InvalidInstanceID" in str(exc):
                continue
            raise
        out += [i for r in res for i in r["Instances"]]
    return out


def orphans(aws: Aws, owner: str) -> list[Leftover]:
    """Everything still tagged for this project and owner that bills or could relaunch
    (instances, volumes, network interfaces, Elastic IPs, spot requests), and what a stack
    leaves when its delete fails (key pairs, security groups, VPCs, launch templates, the
    idle alarm, the schedule group with its stop schedules)."""
    ec2 = aws.client("ec2")
    region = aws.region
    tag_filters = _project_filters(owner)

    def mine(tags: list[dict[str, str]] | None) -> bool:
        t = tags_of(tags)
        return t.get(TAG_PROJECT) == PROJECT and t.get(TAG_OWNER) == owner

    def named_mine(tags: list[dict[str, str]] | None) -> bool:
        """For resources found by this project's name prefix: ours unless tagged for another
        owner (an untagged one is reported rather than assumed to be someone else's)."""
        t = tags_of(tags)
        return t.get(TAG_OWNER, owner) == owner

    out: list[Leftover] = []

    def found(kind: str, rid: str, detail: str, command: str, target: str) -> None:
        """One leftover, removed by `aws COMMAND --region REGION TARGET`."""
        out.append(Leftover(kind, rid, detail, f"aws {command} --region {region} {target}", region))

    def tagged(operation: str, key: str, tags: str = "Tags") -> list[dict[str, Any]]:
        """A paginated EC2 listing by the project's tags, only what is this owner's."""
        pages = ec2.get_paginator(operation).paginate(Filters=tag_filters)
        return [x for page in pages for x in page[key] if mine(x.get(tags))]

    for i in tagged_instances(aws, owner=owner):
        if mine(i.get("Tags")):
            iid = i["InstanceId"]
            found(
                "instance",
                iid,
                i["State"]["Name"],
                "ec2 terminate-instances",
                f"--instance-ids {iid}",
            )
    for v in tagged("describe_volumes", "Volumes"):
        vid = v["VolumeId"]
        found(
            "volume", vid, f"{v['Size']} GB {v['State']}", "ec2 delete-volume", f"--volume-id {vid}"
        )
    for n in tagged("describe_network_interfaces", "NetworkInterfaces", tags="TagSet"):
        nid = n["NetworkInterfaceId"]
        found(
            "network interface",
            nid,
            n.get("Status", ""),
            "ec2 delete-network-interface",
            f"--network-interface-id {nid}",
        )
    for a in ec2.describe_addresses(Filters=tag_filters)["Addresses"]:
        if mine(a.get("Tags")):
            found(
                "elastic IP",
                a.get("AllocationId", a.get("PublicIp", "?")),
                a.get("PublicIp", ""),
                "ec2 release-address",
                f"--allocation-id {a.get('AllocationId')}",
            )
    for r in spot_requests(aws, owner=owner):
        rid = r["SpotInstanceRequestId"]
        found(
            "spot request",
            rid,
            f"{r['State']} {r.get('Type', '')}".strip(),
            "ec2 cancel-spot-instance-requests",
            f"--spot-instance-request-ids {rid}",
        )
    for k in ec2.describe_key_pairs(Filters=tag_filters)["KeyPairs"]:
        if mine(k.get("Tags")):
            found("key pair", k["KeyName"], "", "ec2 delete-key-pair", f"--key-name {k['KeyName']}")
    # Free, but a leftover after a failed stack delete (and a launch template holds the spot
    # settings): listed so that "0 left" means the stacks' resources are all gone.
    for g in tagged("describe_security_groups", "SecurityGroups"):
        gid = g["GroupId"]
        found(
            "security group",
            gid,
            g.get("GroupName", ""),
            "ec2 delete-security-group",
            f"--group-id {gid}",
        )
    for v in tagged("describe_vpcs", "Vpcs"):
        found("VPC", v["VpcId"], v.get("CidrBlock", ""), "ec2 delete-vpc", f"--vpc-id {v['VpcId']}")
    templates = ec2.get_paginator("describe_launch_templates").paginate()
    for lt in (lt for page in templates for lt in page["LaunchTemplates"]):
        if lt.get("LaunchTemplateName", "").startswith(STACK_PREFIX) and named_mine(lt.get("Tags")):
            lid = lt["LaunchTemplateId"]
            found(
                "launch template",
                lid,
                lt["LaunchTemplateName"],
                "ec2 delete-launch-template",
                f"--launch-template-id {lid}",
            )
    cw = aws.client("cloudwatch")
    for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=STACK_PREFIX):
        for alarm in page["MetricAlarms"]:
            tags = cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
            if named_mine(tags):
                name = alarm["AlarmName"]
                found(
                    "alarm",
                    name,
                    alarm.get("StateValue", ""),
                    "cloudwatch delete-alarms",
                    f"--alarm-names {name}",
                )
    sched = aws.client("scheduler")
    for page in sched.get_paginator("list_schedule_groups").paginate(NamePrefix=STACK_PREFIX):
        for group in page["ScheduleGroups"]:
            tags = sched.list_tags_for_resource(ResourceArn=group["Arn"])["Tags"]
            if not named_mine(tags):
                continue
            name = group["Name"]
            schedules = [
                s["Name"]
                for p in sched.get_paginator("list_schedules").paginate(GroupName=name)
                for s in p["Schedules"]
            ]
            found(
                "schedule group",
                name,
                f"schedules: {', '.join(schedules) or 'none'}",
                "scheduler delete-schedule-group",
                f"--name {name}",
            )
    return out
