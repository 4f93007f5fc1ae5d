"""`deploy aws`: preflight → the cost and a yes → per stack: the CDK CLI prepares a change set,
rig reads it and executes it (or refuses one that would replace the VM) → wait for SSH →
provisioning → `.state/aws-<type>.json`. Every outside effect is a field of `Deployer`, so the
tests replace the cloud (moto and documented payloads) and nothing else.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import inspect
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
from rich.console import Console

from rig.aws import changeset, scan, stacks
from rig.aws.access import ensure_key, public_ip_lookup, resolve_ssh_cidr
from rig.aws.cdk_cli import CdkCli, CdkRunner
from rig.aws.errors import code_in_text, explain_code, is_capacity_failure, translate
from rig.aws.names import (
    CHANGE_SET_NAME,
    CTX_AMI_PREFIX,
    CTX_AZ_PREFIX,
    CTX_CONFIG,
    CTX_DEADLINE,
    CTX_OWNER,
    CTX_PROFILE_NAME,
    CTX_PUBLIC_KEY,
    CTX_SSH_CIDR,
    CTX_VALID_UNTIL_PREFIX,
    key_fingerprint,
    stack_name,
    target_name,
)
from rig.aws.preflight import Preflight, TypePlan, confirmation_lines, preflight
from rig.aws.session import Aws, AwsFactory
from rig.catalog import Catalog
from rig.cost import worst_case_usd
from rig.problems import CommandError
from rig.profile import Profile
from rig.state import STATE_DIR, Price, VmState, ensure_writable, iso, read_all, utc_now, write

SSH_TIMEOUT_S = 900
# An instance AWS stopped (rig.aws.scan.INTERRUPTED_CODES) can be restarted by EC2 only ("Stop
# interrupted Spot Instances": "Only Amazon EC2 can restart an interrupted stopped Spot
# Instance"): StartInstances will not.
INTERRUPTED_CODES = scan.INTERRUPTED_CODES
INTERRUPTED_REASON = scan.INTERRUPTED_REASON
# Creation failures the CDK CLI deletes before it creates the stack again (a new stack: the
# CLI's StackStatus.isCreationFailure), and a stack that has a change set but no resources yet.
CREATION_FAILED = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS")
DEPLOYED = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
# Stack states no change set can start from (CreateChangeSet answers "... is in <state> state
# and can not be updated"); the VM they hold may still bill.
STUCK = ("UPDATE_ROLLBACK_FAILED", "DELETE_FAILED", "CREATE_FAILED", "UPDATE_FAILED")
INSTANCE = "AWS::EC2::Instance"


def base_context(profile: Profile) -> dict[str, str]:
    return {CTX_CONFIG: str(profile.path.resolve()), CTX_PROFILE_NAME: profile.path.stem}


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
        "console's system log; the VM bills until make destroy"
    )


Provisioner = Callable[..., Any]


def find_provisioner() -> Provisioner | None:
    """rig.provision.provision (the Ansible part) when this checkout has it."""
    if importlib.util.find_spec("rig.provision") is None:
        return None
    return importlib.import_module("rig.provision").provision


def ask(question: str) -> bool:
    """A yes from a terminal; without one, refuse: a deploy never spends without a yes."""
    if not sys.stdin.isatty():
        raise CommandError(
            "deploy needs a yes: run it in a terminal, or pass --yes (make deploy-aws YES=1) "
            "after reading the cost above — nothing was created"
        )
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def ask_or_no(question: str) -> bool:
    """A yes from a terminal; without a terminal the answer is no (replacements need --replace)."""
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


@dataclass
class Deployer:
    """One `deploy aws`."""

    profile: Profile
    cat: Catalog
    console: Console
    aws_for: AwsFactory = Aws
    cdk: CdkRunner = field(default_factory=CdkCli)
    state_dir: Path = STATE_DIR
    confirm: Callable[[str], bool] = ask
    confirm_replace: Callable[[str], bool] = ask_or_no
    ip_lookup: Callable[[], str] = public_ip_lookup
    ssh_wait: Callable[[str], None] = wait_for_ssh
    provision: Provisioner | None = field(default_factory=find_provisioner)
    yes: bool = False
    replace: bool = False
    stack_wait_s: float = 1800
    poll_s: float = 10
    interrupted_wait_s: float = 600

    def _print(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def run(self) -> list[VmState]:
        profile = self.profile
        if not profile.aws.enabled:
            raise CommandError(f"{profile.path}: aws.enabled = false — set it to true to deploy")
        ensure_writable(self.state_dir)
        regions = sorted({p.region for p in profile.aws.placements()})
        self._print(f"preflight in {', '.join(regions)} ...")
        pre = preflight(self.aws_for, profile, self.cat, read_all(self.state_dir))
        for region, q in pre.quotas.items():
            kind = "spot" if profile.aws.spot else "on-demand"
            self._print(
                f"  {region}: {kind} G and VT quota {q.vcpus:g} vCPUs, {q.used} in use, "
                f"{q.need} needed"
            )
        for line in confirmation_lines(pre, profile, self.cat):
            self._print(line)
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
        self._print(f"SSH allowed from {cidr} only")
        states = []
        for plan in pre.plans:
            aws = self.aws_for(plan.region)
            try:
                outputs = self._deploy_stack(aws, plan, context)
                state = self._state(aws, plan, pre, outputs, public_key, private_key)
                state.deployed_at, state.deadline = iso(deployed_at), iso(deadline)
            except CommandError:
                raise
            except Exception as exc:
                raise translate(exc, region=plan.region, what=plan.instance_type) from None
            write(state, self.state_dir)  # before provisioning: a failure there leaves a known VM
            self._print(f"waiting for SSH on {state.host} ...")
            self.ssh_wait(state.host)
            states.append(self._provision(state))
        return states

    # --- one stack --------------------------------------------------------------------------

    def _deploy_stack(self, aws: Aws, plan: TypePlan, context: dict[str, str]) -> dict[str, str]:
        """Change set → read it → execute (or refuse); for a new stack, the next AZ on a
        capacity failure."""
        name = stack_name(plan.instance_type)
        found = stacks.describe(aws, name)
        if found is not None:
            blocked_by(name, str(found["StackStatus"]), plan.region)
        existing = found is not None and found["StackStatus"] not in CREATION_FAILED
        azs = list(plan.azs)
        if existing:
            # A redeploy stays in the VM's AZ: moving would replace the subnet, the VM and its
            # disk with every model pulled on it.
            current = stacks.outputs(aws, name).get("AvailabilityZone")
            azs = [current] if current else azs[:1]
        tried: list[str] = []
        for az in azs:
            tried.append(az)
            ctx = context | {
                CTX_AZ_PREFIX + plan.instance_type: az,
                CTX_AMI_PREFIX + plan.instance_type: plan.pins.ami,
                CTX_VALID_UNTIL_PREFIX + plan.instance_type: plan.pins.valid_until,
            }
            self._print(f"{name} in {plan.region} ({az}): cdk deploy, prepare change set ...")
            rc = self.cdk.prepare(name, ctx, plan.region)
            if rc != 0:
                raise CommandError(
                    f"cdk deploy {name} could not prepare its change set (exit {rc}) — see the "
                    "CDK output above; nothing was changed by this run"
                )
            cfn = aws.client("cloudformation")
            cs = changeset.read(cfn, name, timeout_s=self.stack_wait_s, poll_s=self.poll_s)
            if existing and (cs is None or cs.empty):
                if cs is not None:
                    changeset.delete(cfn, name)
                self._print(f"  {name}: no changes")
                return stacks.outputs(aws, name)
            if cs is None or not cs.ready:
                # A failed plan, one still being computed after the wait, or (for a new stack)
                # none at all: nothing may be executed, and a change set not yet computed lists
                # no changes for the replacement guard to see.
                if cs is not None:
                    changeset.delete(cfn, name)
                why = (
                    "no change set was created"
                    if cs is None
                    else f"{cs.status}/{cs.execution_status}: {cs.reason or 'no reason given'}"
                )
                raise CommandError(
                    f"CloudFormation could not plan {name} ({why}) — fix that, then rerun "
                    "make deploy-aws; nothing was changed"
                )
            cancelled: list[str] = []
            if existing:
                cancelled = self._guard_replacement(aws, plan, cs)
            cfn.execute_change_set(ChangeSetName=CHANGE_SET_NAME, StackName=name)
            try:
                ends = stacks.UPDATE_ENDS if existing else stacks.CREATE_ENDS
                final = stacks.settle(aws, name, self.stack_wait_s, self.poll_s, ends)
            except stacks.StackTimeout as exc:
                raise CommandError(
                    f"{exc} — the VM may be billing: watch it in the CloudFormation console, "
                    "then rerun make deploy-aws, or make destroy"
                ) from None
            if final in DEPLOYED:
                self._sweep(aws, name)
                return stacks.outputs(aws, name)
            reason = stacks.failure(aws, name) or f"stack {final}"
            self._sweep(aws, name)
            if not existing and is_capacity_failure(reason):
                self._print(f"  no capacity in {az}: trying the next availability zone")
                continue
            code = code_in_text(reason) or ""
            line = explain_code(code, reason, region=plan.region, what=plan.instance_type)
            unstoppable = self._unstoppable(aws, cancelled)
            raise CommandError(
                (
                    line
                    or f"deploying {name} failed ({reason}) — fix that, then rerun make "
                    "deploy-aws (it resumes), or make destroy"
                )
                + unstoppable
            ) from None
        raise CommandError(
            f"{plan.instance_type}: no capacity in any AZ of {plan.region} ({', '.join(tried)}; "
            "InsufficientInstanceCapacity) — retry later, pick another type or region, or set "
            "spot = false; make destroy removes what is left"
        )

    def _unstoppable(self, aws: Aws, instance_ids: list[str]) -> str:
        """What a failed replacement left behind: the old VM, kept by the rollback, whose spot
        request was cancelled before the update — it can no longer be stopped (EC2 User Guide,
        "Stop a Spot Instance": "You can't stop a Spot Instance if the associated Spot Instance
        request is cancelled"), so only terminating it ends its billing."""
        alive = [
            i["InstanceId"]
            for i in scan.existing_instances(aws, instance_ids)
            if i["State"]["Name"] in ("pending", "running", "stopping", "stopped")
        ]
        if not alive:
            return ""
        return (
            f"; the old VM {', '.join(alive)} is still running and can no longer be stopped "
            "(its spot request was cancelled for the replacement) — run make destroy now"
        )

    def _guard_replacement(self, aws: Aws, plan: TypePlan, cs: changeset.ChangeSet) -> list[str]:
        """Refuse a change set that replaces the VM unless confirmed; when confirmed, cancel
        the old persistent request first, so that terminating the old VM cannot relaunch it.
        Returns the instances whose request was cancelled."""
        replaced = cs.replacements()
        if not replaced:
            return []
        what = "; ".join(r.describe() for r in replaced)
        question = (
            f"{plan.instance_type}: this deploy replaces the VM ({what}); the new one starts "
            "with an empty disk. Replace it?"
        )
        if not (self.replace or self.confirm_replace(question)):
            changeset.delete(aws.client("cloudformation"), cs.stack)
            raise CommandError(
                f"{plan.instance_type}: this deploy would replace the VM ({what}) — the new VM "
                "starts with an empty disk (models pulled again). Nothing was changed. To "
                "replace it: make deploy-aws REPLACE=1 (--replace); to keep it, undo the "
                "profile change (key, disk, image and instance settings replace the VM)"
            )
        # The change names the old instance; when it does not (a "Dynamic" action), the stack's
        # current instance is the one that goes.
        old = sorted({r.physical_id for r in replaced if r.physical_id}) or stacks.resource_ids(
            aws, cs.stack, INSTANCE
        )
        reqs = [
            i["SpotInstanceRequestId"]
            for i in scan.existing_instances(aws, old)
            if i.get("SpotInstanceRequestId")
        ]
        for rid in scan.cancel_spot_requests(aws, reqs):
            self._print(f"  cancelled spot request {rid} of {', '.join(old)} before replacing")
        return old if reqs else []

    def _sweep(self, aws: Aws, name: str) -> None:
        """After any stack operation: a spot request or instance of this stack that is not the
        stack's current VM is a stray (a reopened persistent request, a rolled-back launch):
        cancel it and terminate its instance, so that nothing bills untracked."""
        current = set(stacks.resource_ids(aws, name, INSTANCE))
        stray_reqs = [
            r["SpotInstanceRequestId"]
            for r in scan.spot_requests(aws, stacks=[name])
            if r.get("InstanceId") not in current
        ]
        for rid in scan.cancel_spot_requests(aws, stray_reqs):
            self._print(f"  cancelled stray spot request {rid} of {name}")
        stray = [
            i["InstanceId"]
            for i in scan.tagged_instances(aws, stacks=[name])
            if i["InstanceId"] not in current
        ]
        if stray:
            aws.client("ec2").terminate_instances(InstanceIds=stray)
            self._print(f"  terminated stray instance(s) of {name}: {', '.join(stray)}")

    # --- the VM -----------------------------------------------------------------------------

    def _ensure_running(self, aws: Aws, instance_id: str, spot: bool) -> dict[str, Any]:
        """Start the VM when the watchdog or a schedule stopped it; wait when AWS interrupted
        it (only EC2 restarts an interrupted spot instance); say why when it cannot run."""
        ec2 = aws.client("ec2")
        inst = describe_instance(aws, instance_id)
        state = inst["State"]["Name"]
        if state == "stopping":
            ec2.get_waiter("instance_stopped").wait(
                InstanceIds=[instance_id], WaiterConfig={"Delay": self.poll_s, "MaxAttempts": 60}
            )
            inst = describe_instance(aws, instance_id)
            state = inst["State"]["Name"]
        if state in ("terminated", "shutting-down"):
            raise CommandError(
                f"{instance_id} is {state} but its stack remains — run make destroy, then "
                "make deploy-aws for a new VM"
            )
        if spot and state in ("pending", "running"):
            # A request past its ValidUntil is cancelled while the VM runs on (EC2 User Guide,
            # "State changes for a Spot request": request-canceled-and-instance-running); such
            # a VM can no longer be stopped, so the idle alarm, the max_hours stop and the
            # watchdog all fail ("Stop a Spot Instance"): never hand it over as ready.
            request = spot_request_of(aws, inst)
            if (ended := _ended(request)) is not None:
                raise CommandError(
                    f"{instance_id} runs but its spot request {ended}: nothing can stop it now "
                    "(EC2 User Guide, Stop a Spot Instance) and it bills until terminated — run "
                    "make destroy, then make deploy-aws"
                )
        if state == "stopped":
            request = spot_request_of(aws, inst) if spot else None
            if (ended := _ended(request)) is not None:
                raise CommandError(
                    f"{instance_id}: its spot request {ended}, so the VM cannot be started or "
                    "stopped again (EC2 User Guide, Stop a Spot Instance) — run make destroy, "
                    "then make deploy-aws"
                )
            if interrupted(inst, request):
                code = (request or {}).get("Status", {}).get("Code", INTERRUPTED_REASON)
                self._print(
                    f"  {instance_id} was interrupted by AWS ({code}): only EC2 can restart an "
                    "interrupted spot instance, when capacity returns — waiting up to "
                    f"{self.interrupted_wait_s / 60:.0f} min"
                )
                try:
                    ec2.get_waiter("instance_running").wait(
                        InstanceIds=[instance_id],
                        WaiterConfig={
                            "Delay": self.poll_s,
                            "MaxAttempts": max(1, int(self.interrupted_wait_s // self.poll_s)),
                        },
                    )
                except botocore.exceptions.WaiterError:
                    raise CommandError(
                        f"{instance_id} is still stopped after an interruption ({code}): AWS has "
                        "no spot capacity for it yet and only EC2 can restart it — rerun make "
                        "deploy-aws later, or make destroy (its disk bills while it waits)"
                    ) from None
                return describe_instance(aws, instance_id)
            self._print(f"  {instance_id} was stopped: starting it")
            ec2.start_instances(InstanceIds=[instance_id])
        if state != "running":
            ec2.get_waiter("instance_running").wait(
                InstanceIds=[instance_id],
                WaiterConfig={
                    "Delay": self.poll_s,
                    "MaxAttempts": max(1, int(600 // max(self.poll_s, 1))),
                },
            )
            inst = describe_instance(aws, instance_id)
        return inst

    def _state(
        self,
        aws: Aws,
        plan: TypePlan,
        pre: Preflight,
        outputs: dict[str, str],
        public_key: str,
        private_key: Path | None,
    ) -> VmState:
        instance_id = outputs["InstanceId"]
        inst = self._ensure_running(aws, instance_id, plan.spot)
        # The address changes at every stop/start: read it now, not from the outputs.
        host = inst.get("PublicIpAddress") or outputs.get("PublicIp", "")
        az = inst.get("Placement", {}).get("AvailabilityZone", outputs.get("AvailabilityZone", ""))
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
        section = self.profile.aws
        return VmState(
            name=target_name(plan.instance_type),
            cloud="aws",
            region=plan.region,
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
            deployed_at="",
            deadline="",
            ids=ids,
            provisioned=False,
            extra={
                "image": section.image,  # tells Ansible whether the driver is there
                "public_dns": inst.get("PublicDnsName") or outputs.get("PublicDnsName", ""),
                "owner": pre.owner,
                "account": pre.account,
                # Pinned at the first deploy and handed to every later one (rig.aws.preflight).
                "ami": plan.pins.ami,
                "spot_valid_until": plan.pins.valid_until if plan.spot else "",
                "key_fingerprint": key_fingerprint(public_key),
                "disk_throughput_mbs": plan.throughput_mbs,
                "disk_usd_per_hour": round(plan.worst.disk, 5),
                "public_ipv4_usd_per_hour": plan.worst.public_ip,
                "worst_case_usd": worst_case_usd(plan.worst, self.profile.autostop.max_hours),
            },
        )

    def _provision(self, state: VmState) -> VmState:
        if self.provision is None:
            self._print(
                f"{state.name}: ready on {state.host}, NOT provisioned yet (no Ansible part in "
                "this checkout: driver, Ollama and the idle watchdog are missing; the cloud-side "
                "idle alarm and max_hours stop are active)"
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


def blocked_by(name: str, status: str, region: str) -> None:
    """Refuse before the CDK CLI runs when the stack cannot take a change set now."""
    if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise CommandError(
            f"{name} in {region} is {status}: another operation is still running on it — wait "
            "until it ends (CloudFormation console), then rerun make deploy-aws"
        )
    if status in STUCK:
        fix = (
            f"aws cloudformation continue-update-rollback --region {region} --stack-name {name}"
            if status == "UPDATE_ROLLBACK_FAILED"
            else "make destroy"
        )
        raise CommandError(
            f"{name} in {region} is {status} and cannot be updated; its VM may still bill — "
            f"run {fix}, then make deploy-aws (make destroy removes everything)"
        )


def describe_instance(aws: Aws, instance_id: str) -> dict[str, Any]:
    res = aws.client("ec2").describe_instances(InstanceIds=[instance_id])
    return res["Reservations"][0]["Instances"][0]


def spot_request_of(aws: Aws, inst: dict[str, Any]) -> dict[str, Any] | None:
    rid = inst.get("SpotInstanceRequestId")
    return next(iter(scan.requests_by_id(aws, [rid]) if rid else []), None)


def interrupted(inst: dict[str, Any], request: dict[str, Any] | None) -> bool:
    """Stopped by AWS (a spot interruption), not by the user or the watchdog."""
    if request is not None and request.get("Status", {}).get("Code") in INTERRUPTED_CODES:
        return True
    return inst.get("StateReason", {}).get("Code") == INTERRUPTED_REASON


def ready_lines(state: VmState) -> list[str]:
    key = f" -i {state.ssh_key}" if state.ssh_key else ""
    key += f" -p {state.ssh_port}" if state.ssh_port != 22 else ""
    return [
        f"{state.name}: {state.ssh_user}@{state.host} ({state.region}, "
        f"{state.ids.get('availability_zone', '')}), ${state.price.usd_per_hour:.4f}/h "
        f"{state.price.kind}, stops by {state.deadline}",
        f"  tunnel: ssh{key} -N -L 11434:127.0.0.1:11434 {state.ssh_user}@{state.host}",
    ]


def _ended(request: dict[str, Any] | None) -> str | None:
    """ "ID is STATE (CODE)" for a spot request that can no longer stop or start its VM (cancelled,
    closed or failed: EC2 User Guide, "State changes for a Spot request"), else None."""
    if request is None or request["State"] not in ("cancelled", "closed", "failed"):
        return None
    status = request.get("Status", {}).get("Code", "")
    return f"{request['SpotInstanceRequestId']} is {request['State']} ({status})"
