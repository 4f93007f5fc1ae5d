"""`destroy aws`, with boto3 only (no Node.js, no CDK CLI): in every region the state files
name plus the profile's regions, per stack: cancel its spot requests by id → terminate its
instances → delete the stack (DeleteStack, polled until gone: rig.aws.stacks.settle) →
sweep anything relaunched → the orphan scan. The order is what stops the billing: a persistent
request reopens when its instance is terminated (EC2 User Guide, "Terminate a Spot Instance"),
and a request cancelled before a failed stack delete must not leave a running VM behind that
nothing can stop ("You can't stop a Spot Instance if the associated Spot Instance request is
cancelled"), so the instance is terminated directly, not left to CloudFormation.

"0 left" is printed only for regions that were scanned; a region that could not be asked is
"could not verify" with the reason and the console link (exit 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import botocore.exceptions
from rich.console import Console

from rig.aws import scan, stacks
from rig.aws.errors import describe, translate
from rig.aws.names import PROJECT, console_link, stack_name, type_of_stack
from rig.aws.scan import Leftover
from rig.aws.session import Aws, AwsFactory, owner_of
from rig.problems import CommandError
from rig.profile import Profile
from rig.state import STATE_DIR, VmState, read_all, remove

INSTANCE = "AWS::EC2::Instance"
TERMINATE_WAIT_S = 600


@dataclass
class RegionResult:
    region: str
    stacks: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)
    error: str = ""  # set when the region could not be verified

    @property
    def verified(self) -> bool:
        return not self.error


@dataclass
class DestroyReport:
    regions: list[RegionResult] = field(default_factory=list)
    nothing_to_do: bool = False  # aws disabled and no AWS state: nothing was asked

    @property
    def leftovers(self) -> list[Leftover]:
        return [item for r in self.regions for item in r.leftovers]

    @property
    def unverified(self) -> list[RegionResult]:
        return [r for r in self.regions if not r.verified]

    @property
    def scanned(self) -> list[str]:
        return [r.region for r in self.regions if r.verified]


@dataclass
class Destroyer:
    profile: Profile
    console: Console
    aws_for: AwsFactory = Aws
    state_dir: Path = STATE_DIR
    wait_s: float = 1800
    poll_s: float = 10

    def _print(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def run(self) -> DestroyReport:
        recorded = [s for s in read_all(self.state_dir) if s.cloud == "aws"]
        section = self.profile.aws
        if not section.enabled and not recorded:
            # `make destroy` runs every cloud's part: an Azure-only user has no AWS credentials.
            return DestroyReport(nothing_to_do=True)
        placements = section.placements() if section.enabled else []
        regions = sorted({p.region for p in placements} | {s.region for s in recorded})
        report = DestroyReport()
        try:
            _, arn = self.aws_for(regions[0]).caller()
        except Exception as exc:  # no credentials: nothing in any region can be verified
            reason = describe(translate(exc, region=regions[0]))
            report.regions = [RegionResult(r, error=reason) for r in regions]
            return report
        owner = owner_of(arn)
        for region in regions:
            known = {stack_name(p.instance_type) for p in placements if p.region == region}
            here = [s for s in recorded if s.region == region]
            known |= {s.ids.get("stack") or stack_name(s.instance_type) for s in here}
            result = RegionResult(region)
            try:
                self._region(self.aws_for(region), owner, sorted(known), here, result)
            except Exception as exc:
                result.error = describe(translate(exc, region=region))
            report.regions.append(result)
        return report

    def _region(
        self,
        aws: Aws,
        owner: str,
        known: list[str],
        recorded: list[VmState],
        result: RegionResult,
    ) -> None:
        region = aws.region
        found = {s for s in known if stacks.status(aws, s) is not None}
        found |= set(stacks.project_stacks(aws, owner))
        result.stacks = sorted(found)
        if not found:
            self._print(f"no {PROJECT} stacks in {region}")
        for name in result.stacks:
            self._stack(aws, name, [s for s in recorded if _stack_of(s) == name], result)
        # Anything tagged ours that is still alive now is a stray (a reopened request, an
        # instance launched after its stack was gone): stop it billing before the scan.
        strays = scan.spot_requests(aws, owner=owner)
        result.cancelled += scan.cancel_spot_requests(
            aws, [r["SpotInstanceRequestId"] for r in strays]
        )
        loose = [i["InstanceId"] for i in scan.tagged_instances(aws, owner=owner)]
        if loose:
            self._terminate(aws, loose, result)
        left = [s for s in result.stacks if stacks.status(aws, s) is not None]
        result.leftovers += [
            Leftover(
                "stack",
                s,
                f"{stacks.status(aws, s)}: {stacks.failure(aws, s) or 'see its events'}",
                f"aws cloudformation delete-stack --region {region} --stack-name {s}",
                region,
            )
            for s in left
        ]
        result.leftovers += scan.orphans(aws, owner)
        for s in result.stacks:
            if s not in left:
                remove(f"aws-{type_of_stack(s)}", self.state_dir)
        for state in recorded:  # a state whose stack was already gone
            if _stack_of(state) not in left:
                remove(state.name, self.state_dir)

    def _stack(self, aws: Aws, name: str, recorded: list[VmState], result: RegionResult) -> None:
        """Requests by id → instances terminated → the stack deleted."""
        instance_ids = set(stacks.resource_ids(aws, name, INSTANCE))
        instance_ids |= {s.ids["instance"] for s in recorded if s.ids.get("instance")}
        instance_ids |= {i["InstanceId"] for i in scan.tagged_instances(aws, stacks=[name])}
        request_ids = {s.ids["spot_request"] for s in recorded if s.ids.get("spot_request")}
        live = scan.existing_instances(aws, instance_ids)
        request_ids |= {i["SpotInstanceRequestId"] for i in live if i.get("SpotInstanceRequestId")}
        # Requests by the recorded ids first, then any the stack's tag finds.
        open_ids = [r["SpotInstanceRequestId"] for r in scan.spot_requests(aws, ids=request_ids)]
        open_ids += [r["SpotInstanceRequestId"] for r in scan.spot_requests(aws, stacks=[name])]
        for rid in scan.cancel_spot_requests(aws, open_ids):
            self._print(f"cancelled spot request {rid} ({name})")
            result.cancelled.append(rid)
        alive = [i["InstanceId"] for i in live if i["State"]["Name"] != "terminated"]
        if alive:
            self._terminate(aws, alive, result)
        self._print(f"deleting stack {name} in {aws.region} (CloudFormation) ...")
        try:
            aws.client("cloudformation").delete_stack(StackName=name)
        except botocore.exceptions.ClientError as exc:
            # e.g. termination protection: "Stack [X] cannot be deleted while
            # TerminationProtection is enabled" (ValidationError). The instance is gone already;
            # the stack is reported below as left behind, with its reason.
            self._print(f"  could not delete {name}: {describe(translate(exc, region=aws.region))}")
            return
        try:
            final = stacks.settle(aws, name, self.wait_s, self.poll_s)
        except stacks.StackTimeout as exc:
            self._print(f"  {exc}")
            return
        if final is not None:
            reason = stacks.failure(aws, name) or "see the stack's events"
            self._print(f"  could not delete {name} ({final}): {reason}")

    def _terminate(self, aws: Aws, ids: list[str], result: RegionResult) -> None:
        """TerminateInstances, then poll until EC2 reports them terminated. Not botocore's
        InstanceTerminated waiter: it fails at once on a "pending" or "stopping" read, which an
        instance being terminated can still show (DescribeInstances is eventually consistent:
        EC2 API Reference, "Eventual consistency in the Amazon EC2 API")."""
        ec2 = aws.client("ec2")
        ec2.terminate_instances(InstanceIds=ids)
        self._print(f"terminating {', '.join(ids)} in {aws.region} ...")
        deadline = time.monotonic() + TERMINATE_WAIT_S
        while True:
            left = [
                i["InstanceId"]
                for i in scan.existing_instances(aws, ids)
                if i["State"]["Name"] != "terminated"
            ]
            if not left:
                break
            if time.monotonic() > deadline:
                self._print(f"  {', '.join(left)} not terminated yet: the scan below reports it")
                break
            time.sleep(self.poll_s)
        result.terminated += ids


def _stack_of(state: VmState) -> str:
    return state.ids.get("stack") or stack_name(state.instance_type)


def report_lines(report: DestroyReport) -> tuple[list[str], CommandError | None]:
    """What `destroy aws` prints at the end, and the error (exit 1) when not clean."""
    if report.nothing_to_do:
        return [
            "AWS: aws.enabled = false and no AWS state in .state/ — nothing to destroy "
            "(no scan ran)"
        ], None
    lines: list[str] = []
    for item in report.leftovers:
        lines.append(f"  {item.line()}")
    for r in report.unverified:
        lines.append(
            f"could not verify {r.region}: {r.error} — check by hand: {console_link(r.region)} "
            "(and the Spot Requests and CloudFormation pages)"
        )
    if report.leftovers:
        n = len(report.leftovers)
        return [f"{n} AWS resource(s) left behind:", *lines], CommandError(
            f"destroy aws: {n} resource(s) still exist and may bill — remove them with the "
            "commands above, then rerun make destroy"
        )
    if report.unverified:
        first = report.unverified[0]
        regions = ", ".join(r.region for r in report.unverified)
        return lines, CommandError(
            f"destroy aws: could not verify {regions} ({first.error}) — a VM may still be "
            f"billing there: check by hand at {console_link(first.region)}"
        )
    return [f"orphan scan in {', '.join(report.scanned)}: 0 left"], None
