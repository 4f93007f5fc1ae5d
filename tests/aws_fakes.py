"""Fakes for what moto does not model faithfully, on top of moto's EC2 (instances, volumes).

moto 5 is no CloudFormation engine (no change-set Replacement, no outputs after a change set)
and keeps no spot-request life cycle for launch-template instances (requests vanish on cancel,
terminating never reopens one). These fakes answer in the shapes of the AWS API Reference, with
the quirks that decide whether money leaks:

- CloudFormation (API Reference: CreateChangeSet, DescribeChangeSet, ExecuteChangeSet,
  DescribeStacks, DescribeStackResources, DescribeStackEvents, DeleteStack; User Guide,
  "Example change sets"): a launch-template change gives the instance Replacement "True"
  (AWS::EC2::Instance LaunchTemplate: "Update requires: Replacement"); an unchanged template
  gives a FAILED change set "The submitted information didn't contain changes."; a missing
  stack is ValidationError "Stack with id X does not exist"; replacing creates the new
  instance, then terminates the old one.
- EC2 spot requests (User Guide, "Spot request status" and "Terminate a Spot Instance"):
  terminating the instance of a persistent request that is not cancelled reopens it and EC2
  launches a new instance; cancelling an active request leaves its running instance running
  ("request-canceled-and-instance-running"); cancelling a disabled request terminates its
  stopped instance; stop → "disabled" / "instance-stopped-by-user"; an interruption →
  "instance-stopped-no-capacity", and StartInstances is refused ("Only Amazon EC2 can restart
  an interrupted stopped Spot Instance", "Stop interrupted Spot Instances").

- DescribeStacks is eventually consistent (`stale_reads`): right after ExecuteChangeSet or
  DeleteStack it may still show the status from before (the CDK CLI polls again on such reads:
  aws-cdk-cli toolkit-lib cfn-api.ts stabilizeStack, "may be a stale read").
- The Price List Query API (GetProducts), which moto does not implement: products in the shape
  of the API's own example (botocore pricing examples-1.json, "To retrieve a list of
  products"): PriceList holds JSON strings with product.attributes.usagetype and
  terms.OnDemand.*.priceDimensions.*.{unit, pricePerUnit.USD}; one product per page, so that
  NextToken paging is exercised; gp3 throughput priced per GiBps-mo.

They hook botocore's event system the way moto itself does (BUILTIN_HANDLERS), so every
session the code under test creates — `python -m rig ...` included — talks to them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.handlers
from botocore.awsrequest import AWSResponse

from rig.aws import names

NOW = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
MOTO_AMI = "ami-12c6146b"  # an image moto knows in every region
NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."  # noqa: E501
CAPACITY_REASON = (
    'Resource handler returned message: "We currently do not have sufficient g4dn.2xlarge '
    "capacity in the Availability Zone you requested ({az}). Our system will be working on "
    "provisioning additional capacity. (Service: Ec2, Status Code: 500, Error Code: "
    'InsufficientInstanceCapacity)"'
)
SPOT_CAPACITY_REASON = (
    'Resource handler returned message: "There is no Spot capacity available that matches your '
    'request. (Service: Ec2, Status Code: 500, Request ID: 5a1c9d2e)"'
)


def _response(status: int, parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse("https://fake.amazonaws.com/", status, {}, None), parsed


def _error(code: str, message: str, status: int = 400) -> tuple[AWSResponse, dict[str, Any]]:
    return _response(
        status,
        {"Error": {"Code": code, "Message": message, "Type": "Sender"}, "ResponseMetadata": {}},
    )


def _region(kwargs: dict[str, Any]) -> str:
    return str(kwargs["request_signer"].region_name)


def _tags(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}


@dataclass
class Request:
    """One spot instance request, as DescribeSpotInstanceRequests shows it."""

    id: str
    instance_id: str | None
    az: str
    instance_type: str
    tags: list[dict[str, str]]
    valid_until: str
    state: str = "active"
    code: str = "fulfilled"

    def shape(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "SpotInstanceRequestId": self.id,
            "State": self.state,
            "Status": {"Code": self.code, "Message": self.code, "UpdateTime": NOW},
            "Type": "persistent",
            "InstanceInterruptionBehavior": "stop",
            "ProductDescription": "Linux/UNIX",
            "LaunchSpecification": {"InstanceType": self.instance_type},
            "LaunchedAvailabilityZone": self.az,
            "CreateTime": NOW,
            "Tags": self.tags,
        }
        if self.valid_until:
            out["ValidUntil"] = dt.datetime.fromisoformat(self.valid_until.replace("Z", "+00:00"))
        if self.instance_id:
            out["InstanceId"] = self.instance_id
        return out


@dataclass
class Stack:
    name: str
    region: str
    template: dict[str, Any]
    status: str = "REVIEW_IN_PROGRESS"
    outputs: dict[str, str] = field(default_factory=dict)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)  # logical → type, id
    events: list[dict[str, Any]] = field(default_factory=list)  # newest first
    tags: list[dict[str, str]] = field(default_factory=list)
    change_set: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None  # the change set's template

    @property
    def id(self) -> str:
        return f"arn:aws:cloudformation:{self.region}:123456789012:stack/{self.name}/1a2345b6"


class FakeAws:
    """CloudFormation and spot requests per region, over moto's EC2."""

    def __init__(self) -> None:
        self.stacks: dict[tuple[str, str], Stack] = {}
        self.requests: dict[str, dict[str, Request]] = {}  # region → id → request
        self.interrupted: set[str] = set()
        self.no_capacity_azs: set[str] = set()
        self.spot_capacity_message = False  # the capacity failure without its error code
        self.fail_delete: set[str] = set()  # stacks whose deletion ends DELETE_FAILED
        self.calls: list[tuple[str, str]] = []  # (operation, region) for the order tests
        self.relaunched: list[str] = []
        # Public SSM parameters (the DLAMI id per region) and G/VT vCPU quotas: moto has neither.
        self.ssm: dict[str, str] = {}  # parameter name → value (every region)
        self.quota_vcpus = 64.0
        # Reads of a stack that still show the status from before its last operation.
        self.stale_reads = 0
        self._stale: dict[tuple[str, str], tuple[str, int]] = {}
        # Price List products per region: usage-type suffix → (family, unit, USD per unit).
        # Test figures, not real prices (the catalog holds the cited ones).
        self.price_list: dict[str, dict[str, tuple[str, str, float]]] = {
            "eu-north-1": {
                "EBS:VolumeUsage.gp3": ("Storage", "GB-Mo", 0.0836),
                "EBS:VolumeP-IOPS.gp3": ("System Operation", "IOPS-Mo", 0.0061),
                "EBS:VolumeP-Throughput.gp3": ("Provisioned Throughput", "GiBps-mo", 51.2),
                "PublicIPv4:InUseAddress": ("IP Address", "Hrs", 0.005),
            }
        }
        self.pricing_denied = False
        self.change_set_pending = False  # CloudFormation still computing the change set
        self.protected: set[str] = set()  # stacks with termination protection on
        # Regions that answer every EC2/CloudFormation call with an error code, as an opt-in
        # region not enabled (OptInRequired) or a denied identity (UnauthorizedOperation).
        self.denied_regions: dict[str, str] = {}
        self._seq = itertools.count(1)
        self._internal = False
        self._params: dict[int, dict[str, Any]] = {}

    # --- wiring ------------------------------------------------------------------------------

    @contextmanager
    def installed(self) -> Iterator[FakeAws]:
        handlers = [
            ("before-parameter-build.cloudformation", self._keep_params),
            ("before-parameter-build.ec2", self._keep_params),
            ("before-call.cloudformation", self._cloudformation),
            ("before-call.ec2", self._ec2_before),
            ("after-call.ec2", self._ec2_after),
            ("before-parameter-build.ssm", self._keep_params),
            ("before-call.ssm", self._ssm),
            ("before-parameter-build.service-quotas", self._keep_params),
            ("before-call.service-quotas", self._quotas),
            ("before-parameter-build.pricing", self._keep_params),
            ("before-call.pricing", self._pricing),
        ]
        botocore.handlers.BUILTIN_HANDLERS.extend(handlers)
        try:
            yield self
        finally:
            for h in handlers:
                botocore.handlers.BUILTIN_HANDLERS.remove(h)

    def _keep_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["fake_params"] = dict(params)

    def ec2(self, region: str) -> Any:
        """A client for the fake's own moto calls (its hooks step aside)."""
        return boto3.client("ec2", region_name=region)

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        before, self._internal = self._internal, True
        try:
            yield
        finally:
            self._internal = before

    def _ssm(self, model: Any, context: dict[str, Any], **kwargs: Any) -> Any:
        """GetParameter as the SSM API Reference shows it (a public AMI parameter)."""
        params = context.get("fake_params", {})
        assert model.name == "GetParameter", model.name
        name = params["Name"]
        if name not in self.ssm:
            return _error("ParameterNotFound", f"Parameter {name} not found")
        return _response(
            200,
            {
                "Parameter": {
                    "Name": name,
                    "Type": "String",
                    "Value": self.ssm[name],
                    "Version": 42,
                    "LastModifiedDate": NOW,
                    "ARN": f"arn:aws:ssm:{_region(kwargs)}::parameter{name}",
                    "DataType": "aws:ec2:image",
                }
            },
        )

    def _quotas(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        """GetServiceQuota (Service Quotas API Reference) for the G and VT vCPU quotas."""
        params = context.get("fake_params", {})
        assert model.name == "GetServiceQuota", model.name
        return _response(
            200,
            {
                "Quota": {
                    "ServiceCode": "ec2",
                    "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
                    "QuotaCode": params["QuotaCode"],
                    "QuotaName": "All G and VT Spot Instance Requests",
                    "Value": self.quota_vcpus,
                    "Unit": "None",
                    "Adjustable": True,
                    "GlobalQuota": False,
                }
            },
        )

    def _pricing(self, model: Any, context: dict[str, Any], **kwargs: Any) -> Any:
        """GetProducts (Price List Query API), answered from `price_list`."""
        params = context.get("fake_params", {})
        assert model.name == "GetProducts", model.name
        self.calls.append((model.name, _region(kwargs)))
        if self.pricing_denied:
            return _error(
                "AccessDeniedException", "User is not authorized to perform: pricing:GetProducts"
            )
        terms = {f["Field"]: f["Value"] for f in params.get("Filters", [])}
        region = terms.get("regionCode", "")
        prefix = {"eu-north-1": "EUN1-", "eu-west-1": "EU-", "us-east-1": ""}.get(region, "XX-")
        service = params["ServiceCode"]
        items = []
        for suffix, (family, unit, usd) in sorted(self.price_list.get(region, {}).items()):
            vpc = suffix.startswith("PublicIPv4")
            if (service == "AmazonVPC") != vpc:
                continue
            if "productFamily" in terms and terms["productFamily"] != family:
                continue
            sku = f"SKU{abs(hash((region, suffix))) % 10**8:08d}"
            items.append(
                json.dumps(
                    {
                        "product": {
                            "productFamily": family,
                            "attributes": {
                                "servicecode": service,
                                "usagetype": prefix + suffix,
                                "regionCode": region,
                                "locationType": "AWS Region",
                            },
                            "sku": sku,
                        },
                        "serviceCode": service,
                        "terms": {
                            "OnDemand": {
                                f"{sku}.JRTCKXETXF": {
                                    "priceDimensions": {
                                        f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                            "unit": unit,
                                            "endRange": "Inf",
                                            "description": f"${usd} per {unit}",
                                            "appliesTo": [],
                                            "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                            "beginRange": "0",
                                            "pricePerUnit": {"USD": f"{usd:.10f}"},
                                        }
                                    },
                                    "sku": sku,
                                    "effectiveDate": "2026-11-01T00:00:00Z",
                                    "offerTermCode": "JRTCKXETXF",
                                    "termAttributes": {},
                                }
                            }
                        },
                        "version": "20261101000000",
                        "publicationDate": "2026-11-01T00:00:00Z",
                    }
                )
            )
        start = int(params.get("NextToken") or 0)
        page: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": items[start : start + 1]}
        if start + 1 < len(items):
            page["NextToken"] = str(start + 1)
        return _response(200, page)

    # --- spot requests over moto ------------------------------------------------------------

    def launch(
        self,
        region: str,
        instance_type: str,
        az: str,
        tags: list[dict[str, str]],
        until: str,
        request: Request | None = None,
    ) -> tuple[str, str]:
        """RunInstances with a persistent spot market option: an instance and its request
        (or, for a reopened request, a new instance for the same request)."""
        with self._quiet():
            inst = self.ec2(region).run_instances(
                ImageId=MOTO_AMI,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                Placement={"AvailabilityZone": az},
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": tags},
                    {"ResourceType": "volume", "Tags": tags},
                ],
            )["Instances"][0]
        if request is not None:
            request.state, request.code = "active", "fulfilled"
            request.instance_id = inst["InstanceId"]
            return inst["InstanceId"], request.id
        rid = f"sir-{next(self._seq):08x}"
        self.requests.setdefault(region, {})[rid] = Request(
            rid, inst["InstanceId"], az, instance_type, tags, until
        )
        return inst["InstanceId"], rid

    def request_of(self, region: str, instance_id: str) -> Request | None:
        return next(
            (r for r in self.requests.get(region, {}).values() if r.instance_id == instance_id),
            None,
        )

    def interrupt(self, region: str, instance_id: str) -> None:
        """AWS reclaims the capacity: the instance stops, the request is disabled."""
        with self._quiet():
            self.ec2(region).stop_instances(InstanceIds=[instance_id])
        req = self.request_of(region, instance_id)
        assert req is not None
        req.state, req.code = "disabled", "instance-stopped-no-capacity"
        self.interrupted.add(instance_id)

    def _denied(self, region: str) -> Any:
        code = self.denied_regions.get(region)
        if code is None:
            return None
        return _error(code, f"{code}: you are not subscribed to this service in {region}", 403)

    def _ec2_before(self, model: Any, context: dict[str, Any], **kwargs: Any) -> Any:
        context["fake_region"] = _region(kwargs)  # after-call is not told the region
        if self._internal:
            return None
        region = _region(kwargs)
        if (denied := self._denied(region)) is not None:
            return denied
        params = context.get("fake_params", {})
        self.calls.append((model.name, region))
        reqs = self.requests.setdefault(region, {})
        if model.name == "DescribeSpotInstanceRequests":
            ids = params.get("SpotInstanceRequestIds")
            if ids:
                missing = [i for i in ids if i not in reqs]
                if missing:
                    return _error(
                        "InvalidSpotInstanceRequestID.NotFound",
                        f"The spot instance request ID '{missing[0]}' does not exist",
                    )
                found = [reqs[i] for i in ids]
            else:
                found = [r for r in reqs.values() if _matches(r, params.get("Filters", []))]
            return _response(200, {"SpotInstanceRequests": [r.shape() for r in found]})
        if model.name == "CancelSpotInstanceRequests":
            out = []
            for rid in params["SpotInstanceRequestIds"]:
                req = reqs[rid]
                if req.state == "disabled" and req.instance_id:
                    # A disabled request's stopped instance is terminated by EC2 on cancel.
                    with self._quiet():
                        self.ec2(region).terminate_instances(InstanceIds=[req.instance_id])
                    req.code = "instance-terminated-by-user"
                elif req.state in ("active", "open"):
                    req.code = (
                        "request-canceled-and-instance-running"
                        if req.instance_id
                        else "canceled-before-fulfillment"
                    )
                req.state = "cancelled"
                out.append({"SpotInstanceRequestId": rid, "State": "cancelled"})
            return _response(200, {"CancelledSpotInstanceRequests": out})
        if model.name == "StartInstances":
            for iid in params["InstanceIds"]:
                if iid in self.interrupted:
                    return _error(
                        "IncorrectSpotRequestState",
                        "Only Amazon EC2 can restart an interrupted stopped Spot Instance.",
                    )
        return None

    def _ec2_after(
        self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        if self._internal or "Error" in parsed:
            return
        region = context["fake_region"]
        if model.name == "DescribeInstances":
            for res in parsed.get("Reservations", []):
                for inst in res["Instances"]:
                    req = self.request_of(region, inst["InstanceId"])
                    if req is not None:
                        inst["SpotInstanceRequestId"] = req.id
                        inst["InstanceLifecycle"] = "spot"
                    if inst["InstanceId"] in self.interrupted:
                        inst["StateReason"] = {
                            "Code": "Server.SpotInstanceShutdown",
                            "Message": "Server.SpotInstanceShutdown: Spot Instance shutdown",
                        }
        elif model.name == "StopInstances":
            for change in parsed.get("StoppingInstances", []):
                req = self.request_of(region, change["InstanceId"])
                if req is not None and req.state == "active":
                    req.state, req.code = "disabled", "instance-stopped-by-user"
        elif model.name == "StartInstances":
            for change in parsed.get("StartingInstances", []):
                req = self.request_of(region, change["InstanceId"])
                if req is not None and req.state == "disabled":
                    req.state, req.code = "active", "fulfilled"
        elif model.name == "TerminateInstances":
            for change in parsed.get("TerminatingInstances", []):
                self._terminated(region, change["InstanceId"])

    def _terminated(self, region: str, instance_id: str) -> None:
        """A persistent request that is not cancelled reopens and EC2 launches a new instance."""
        req = self.request_of(region, instance_id)
        if req is None or req.state in ("cancelled", "closed", "failed"):
            return
        req.state, req.code, req.instance_id = "open", "pending-evaluation", None
        new, _ = self.launch(region, req.instance_type, req.az, req.tags, req.valid_until, req)
        self.relaunched.append(new)

    # --- CloudFormation ---------------------------------------------------------------------

    def _cloudformation(self, model: Any, context: dict[str, Any], **kwargs: Any) -> Any:
        region = _region(kwargs)
        if (denied := self._denied(region)) is not None:
            return denied
        params = context.get("fake_params", {})
        name = params.get("StackName", "")
        self.calls.append((model.name, region))
        stack = self.stacks.get((region, name))
        op = model.name
        if op == "DescribeStacks":
            if not name:
                live = [s for (r, _), s in self.stacks.items() if r == region]
                return _response(200, {"Stacks": [self._stack_shape(s) for s in live]})
            stale = self._stale.get((region, name))
            if stale is not None and stale[1] > 0:
                # An eventually consistent read: the status from before the last operation.
                self._stale[(region, name)] = (stale[0], stale[1] - 1)
                shown = Stack(name, region, {}, status=stale[0], tags=stack.tags if stack else [])
                if stack is not None:
                    shown.outputs = stack.outputs
                return _response(200, {"Stacks": [self._stack_shape(shown)]})
            if stack is None or stack.status == "DELETE_COMPLETE":
                return _error("ValidationError", f"Stack with id {name} does not exist")
            return _response(200, {"Stacks": [self._stack_shape(stack)]})
        if op == "CreateChangeSet":
            return self._create_change_set(region, params)
        if stack is None or (stack.status == "DELETE_COMPLETE" and op != "DeleteStack"):
            if op == "DeleteStack":
                return _response(200, {})
            if op == "DescribeChangeSet":
                return _error("ChangeSetNotFound", f"ChangeSet [{name}] does not exist", 404)
            return _error("ValidationError", f"Stack with id {name} does not exist")
        if op == "DescribeChangeSet":
            if stack.change_set is None:
                return _error("ChangeSetNotFound", "ChangeSet does not exist", 404)
            return _response(200, stack.change_set)
        if op == "DeleteChangeSet":
            stack.change_set, stack.pending = None, None
            if stack.status == "REVIEW_IN_PROGRESS":
                del self.stacks[(region, name)]
            return _response(200, {})
        if op == "ExecuteChangeSet":
            before = stack.status
            self._execute(stack)
            if self.stale_reads:
                self._stale[(region, name)] = (before, self.stale_reads)
            return _response(200, {})
        if op == "DescribeStackResources":
            return _response(
                200,
                {
                    "StackResources": [
                        {
                            "StackName": stack.name,
                            "StackId": stack.id,
                            "LogicalResourceId": logical,
                            "PhysicalResourceId": physical,
                            "ResourceType": rtype,
                            "Timestamp": NOW,
                            "ResourceStatus": "CREATE_COMPLETE",
                        }
                        for logical, (rtype, physical) in stack.resources.items()
                    ]
                },
            )
        if op == "DescribeStackEvents":
            return _response(200, {"StackEvents": stack.events})
        if op == "DeleteStack" and name in self.protected:
            # DeleteStack on a protected stack (CloudFormation User Guide, "Protect a stack
            # from being deleted"): refused, nothing changes.
            return _error(
                "ValidationError",
                f"Stack [{name}] cannot be deleted while TerminationProtection is enabled",
            )
        if op == "DeleteStack":
            before = stack.status
            self._delete(stack)
            if self.stale_reads and before != "DELETE_COMPLETE":
                self._stale[(region, name)] = (before, self.stale_reads)
            return _response(200, {})
        raise AssertionError(f"fake CloudFormation has no {op}")

    def _stack_shape(self, s: Stack) -> dict[str, Any]:
        out: dict[str, Any] = {
            "StackId": s.id,
            "StackName": s.name,
            "CreationTime": NOW,
            "StackStatus": s.status,
            "Tags": s.tags,
        }
        if s.outputs:
            out["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in s.outputs.items()]
        return out

    def _event(self, s: Stack, logical: str, rtype: str, status: str, reason: str = "") -> None:
        event = {
            "StackId": s.id,
            "EventId": f"ev-{next(self._seq)}",
            "StackName": s.name,
            "LogicalResourceId": logical,
            "ResourceType": rtype,
            "Timestamp": NOW,
            "ResourceStatus": status,
        }
        if reason:
            event["ResourceStatusReason"] = reason
        s.events.insert(0, event)

    def _create_change_set(self, region: str, params: dict[str, Any]) -> Any:
        name = params["StackName"]
        template = json.loads(params["TemplateBody"])
        stack = self.stacks.get((region, name))
        creating = params.get("ChangeSetType") == "CREATE"
        if creating:
            if stack is not None and stack.status not in ("DELETE_COMPLETE",):
                return _error("AlreadyExistsException", f"Stack [{name}] already exists")
            stack = Stack(name, region, {}, tags=params.get("Tags", []))
            self.stacks[(region, name)] = stack
        elif stack is None:
            return _error("ValidationError", f"Stack [{name}] does not exist")
        stack.pending = template
        changes = _diff(stack.template, template, stack.resources)
        cs_id = (
            f"arn:aws:cloudformation:{region}:123456789012:changeSet/{params['ChangeSetName']}/x"
        )
        stack.change_set = {
            "ChangeSetName": params["ChangeSetName"],
            "ChangeSetId": cs_id,
            "StackId": stack.id,
            "StackName": name,
            "CreationTime": NOW,
            "ExecutionStatus": "AVAILABLE" if changes else "UNAVAILABLE",
            "Status": "CREATE_COMPLETE" if changes else "FAILED",
            "Changes": changes,
        }
        if not changes:
            stack.change_set["StatusReason"] = NO_CHANGES
        if self.change_set_pending:
            stack.change_set.update(
                Status="CREATE_IN_PROGRESS", ExecutionStatus="UNAVAILABLE", Changes=[]
            )
        return _response(200, {"Id": cs_id, "StackId": stack.id})

    def _execute(self, stack: Stack) -> None:
        new = stack.pending or {}
        props = new["Resources"]["Template"]["Properties"]["LaunchTemplateData"]
        az = new["Resources"]["Subnet"]["Properties"]["AvailabilityZone"]
        creating = stack.status == "REVIEW_IN_PROGRESS"
        replace = creating or _lt_changed(stack.template, new)
        stack.change_set, stack.pending = None, None
        if replace and az in self.no_capacity_azs:
            reason = (
                SPOT_CAPACITY_REASON if self.spot_capacity_message else CAPACITY_REASON
            ).format(az=az)
            self._event(stack, "Instance", "AWS::EC2::Instance", "CREATE_FAILED", reason)
            stack.status = "ROLLBACK_COMPLETE" if creating else "UPDATE_ROLLBACK_COMPLETE"
            return
        if replace:
            tags = props["TagSpecifications"][0]["Tags"]
            until = (
                props.get("InstanceMarketOptions", {}).get("SpotOptions", {}).get("ValidUntil", "")
            )
            iid, _ = self.launch(stack.region, props["InstanceType"], az, tags, until)
            old = stack.resources.get("Instance")
            stack.resources["Instance"] = ("AWS::EC2::Instance", iid)
            stack.resources["Template"] = ("AWS::EC2::LaunchTemplate", "lt-0abc")
            if old is not None:
                # Replacement: the new instance exists, then CloudFormation terminates the old
                # one — through EC2, where a live persistent request reopens.
                self.ec2(stack.region).terminate_instances(InstanceIds=[old[1]])
            with self._quiet():
                inst = self.ec2(stack.region).describe_instances(InstanceIds=[iid])["Reservations"][
                    0
                ]["Instances"][0]
            stack.outputs = {
                "InstanceId": iid,
                "PublicIp": inst.get("PublicIpAddress", "192.0.2.10"),
                "AvailabilityZone": az,
                "Region": stack.region,
                "SshUser": "ubuntu",
                "KeyName": props["KeyName"],
                "LaunchTemplateId": "lt-0abc",
            }
        stack.template = new
        stack.status = "CREATE_COMPLETE" if creating else "UPDATE_COMPLETE"

    def _delete(self, stack: Stack) -> None:
        if stack.name in self.fail_delete:
            self._event(
                stack,
                "Vpc",
                "AWS::EC2::VPC",
                "DELETE_FAILED",
                "The vpc 'vpc-0abc' has dependencies and cannot be deleted.",
            )
            stack.status = "DELETE_FAILED"
            return
        inst = stack.resources.get("Instance")
        if inst is not None:
            with self._quiet():
                state = self.ec2(stack.region).describe_instances(InstanceIds=[inst[1]])[
                    "Reservations"
                ][0]["Instances"][0]["State"]["Name"]
            if state != "terminated":
                # CloudFormation terminates the instance through EC2: the request quirk applies.
                self.ec2(stack.region).terminate_instances(InstanceIds=[inst[1]])
        stack.status = "DELETE_COMPLETE"


def _matches(req: Request, filters: list[dict[str, Any]]) -> bool:
    tags = _tags(req.tags)
    for f in filters:
        name, values = f["Name"], f["Values"]
        if name == "state" and req.state not in values:
            return False
        if name.startswith("tag:") and tags.get(name[4:]) not in values:
            return False
        if name == "instance-id" and req.instance_id not in values:
            return False
    return True


def _lt_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def data(t: dict[str, Any]) -> Any:
        return t.get("Resources", {}).get("Template", {}).get("Properties")

    return bool(old) and data(old) != data(new)


def _diff(
    old: dict[str, Any], new: dict[str, Any], resources: dict[str, tuple[str, str]]
) -> list[dict[str, Any]]:
    """Changes shaped as DescribeChangeSet returns them (User Guide, "Example change sets")."""
    if not old:
        return [
            {
                "Type": "Resource",
                "ResourceChange": {
                    "Action": "Add",
                    "LogicalResourceId": logical,
                    "ResourceType": res["Type"],
                    "Scope": [],
                    "Details": [],
                },
            }
            for logical, res in new["Resources"].items()
        ]
    changes = []
    for logical, res in new["Resources"].items():
        before = old["Resources"].get(logical)
        if before == res:
            continue
        change: dict[str, Any] = {
            "Action": "Modify",
            "LogicalResourceId": logical,
            "PhysicalResourceId": resources.get(logical, ("", ""))[1],
            "ResourceType": res["Type"],
            "Replacement": "False",
            "Scope": ["Properties"],
            "Details": [
                {
                    "ChangeSource": "DirectModification",
                    "Evaluation": "Static",
                    "Target": {
                        "Attribute": "Properties",
                        "Name": next(iter(res["Properties"])),
                        "RequiresRecreation": "Never",
                    },
                }
            ],
        }
        changes.append({"Type": "Resource", "ResourceChange": change})
    if _lt_changed(old, new):
        # A new launch-template version: the instance's LaunchTemplate.Version changes, which
        # requires replacement (AWS::EC2::Instance reference).
        changes.append(
            {
                "Type": "Resource",
                "ResourceChange": {
                    "Action": "Modify",
                    "LogicalResourceId": "Instance",
                    "PhysicalResourceId": resources.get("Instance", ("", ""))[1],
                    "ResourceType": "AWS::EC2::Instance",
                    "Replacement": "True",
                    "Scope": ["Properties"],
                    "Details": [
                        {
                            "ChangeSource": "ResourceAttribute",
                            "CausingEntity": "Template.LatestVersionNumber",
                            "Evaluation": "Static",
                            "Target": {
                                "Attribute": "Properties",
                                "Name": "LaunchTemplate",
                                "RequiresRecreation": "Always",
                            },
                        }
                    ],
                },
            }
        )
    return changes


@dataclass
class FakeCdk:
    """Stands in for the CDK CLI's `cdk deploy --method=prepare-change-set`: it builds the
    stack's template from the deploy context (the parts that decide replacement) and calls
    CreateChangeSet, as the CLI does; the deploy code under test does the rest."""

    fake: FakeAws
    prepares: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    rc: int = 0

    def prepare(self, stack: str, context: dict[str, str], region: str) -> int:
        self.prepares.append((stack, dict(context), region))
        if self.rc:
            return self.rc
        itype = names.type_of_stack(stack)
        cfn = boto3.client("cloudformation", region_name=region)
        exists = (region, stack) in self.fake.stacks and self.fake.stacks[
            (region, stack)
        ].status not in ("ROLLBACK_COMPLETE", "DELETE_COMPLETE")
        if not exists and (region, stack) in self.fake.stacks:
            # The CLI deletes a stack whose creation failed before it creates it again.
            cfn.delete_stack(StackName=stack)
            del self.fake.stacks[(region, stack)]
        cfn.create_change_set(
            StackName=stack,
            ChangeSetName=names.CHANGE_SET_NAME,
            ChangeSetType="UPDATE" if exists else "CREATE",
            TemplateBody=json.dumps(template_from(stack, itype, context)),
            Tags=[
                {"Key": names.TAG_PROJECT, "Value": names.PROJECT},
                {"Key": names.TAG_OWNER, "Value": context[names.CTX_OWNER]},
                {"Key": names.TAG_STACK, "Value": stack},
            ],
        )
        return 0


def template_from(stack: str, itype: str, ctx: dict[str, str]) -> dict[str, Any]:
    tags = [
        {"Key": names.TAG_PROJECT, "Value": names.PROJECT},
        {"Key": names.TAG_OWNER, "Value": ctx[names.CTX_OWNER]},
        {"Key": names.TAG_STACK, "Value": stack},
    ]
    lt = {
        "ImageId": ctx[names.CTX_AMI_PREFIX + itype],
        "InstanceType": itype,
        "KeyName": names.key_pair_name(stack, ctx[names.CTX_PUBLIC_KEY]),
        "InstanceMarketOptions": {
            "MarketType": "spot",
            "SpotOptions": {
                "SpotInstanceType": "persistent",
                "InstanceInterruptionBehavior": "stop",
                "ValidUntil": ctx[names.CTX_VALID_UNTIL_PREFIX + itype],
            },
        },
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
    }
    return {
        "Resources": {
            "Template": {
                "Type": "AWS::EC2::LaunchTemplate",
                "Properties": {"LaunchTemplateData": lt},
            },
            "Subnet": {
                "Type": "AWS::EC2::Subnet",
                "Properties": {"AvailabilityZone": ctx[names.CTX_AZ_PREFIX + itype]},
            },
            "SshOnly": {
                "Type": "AWS::EC2::SecurityGroup",
                "Properties": {"SecurityGroupIngress": [{"CidrIp": ctx[names.CTX_SSH_CIDR]}]},
            },
            "MaxHoursStop": {
                "Type": "AWS::Scheduler::Schedule",
                "Properties": {"ScheduleExpression": f"at({ctx[names.CTX_DEADLINE]})"},
            },
        },
    }
