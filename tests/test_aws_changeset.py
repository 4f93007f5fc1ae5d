"""Reading the change set the CDK CLI prepared (rig/aws/changeset.py). The payloads are the
CloudFormation User Guide's own "Example change sets" (using-cfn-updating-stacks-changesets-
samples: SampleChangeSet-direct, SampleChangeSet-multiple, SampleChangeSet-addremove) on its
sample stack, with the enum values of the API Reference (ResourceChange.Replacement: True |
False | Conditional)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from rig.aws import changeset

STACK_ID = "arn:aws:cloudformation:us-east-1:123456789012:stack/SampleStack/1a2345b6-0000-00a0-a123-00abc0abc000"  # noqa: E501
CREATED = dt.datetime(2016, 3, 17, 0, 39, 35, tzinfo=dt.UTC)


def _doc(name: str, changes: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {
        "StackId": STACK_ID,
        "Status": "CREATE_COMPLETE",
        "ChangeSetName": name,
        "Parameters": [
            {"ParameterValue": "production", "ParameterKey": "Purpose"},
            {"ParameterValue": "MyNewKeyName", "ParameterKey": "KeyPairName"},
            {"ParameterValue": "t2.small", "ParameterKey": "InstanceType"},
        ],
        "Changes": changes,
        "CreationTime": CREATED,
        "Capabilities": [],
        "StackName": "SampleStack",
        "NotificationARNs": [],
        "ChangeSetId": f"arn:aws:cloudformation:us-east-1:123456789012:changeSet/{name}/1a2345b6",
        "ExecutionStatus": "AVAILABLE",
    } | more


def _detail(name: str, recreation: str, evaluation: str, source: str = "DirectModification"):
    detail: dict[str, Any] = {
        "ChangeSource": source,
        "Evaluation": evaluation,
        "Target": {"Attribute": "Properties", "Name": name, "RequiresRecreation": recreation},
    }
    if source == "ParameterReference":
        detail["CausingEntity"] = {"KeyName": "KeyPairName"}.get(name, name)
    return detail


# SampleChangeSet-direct: a tag added, "RequiresRecreation": "Never", "Replacement": "False".
DIRECT = [
    {
        "ResourceChange": {
            "ResourceType": "AWS::EC2::Instance",
            "PhysicalResourceId": "i-1abc23d4",
            "Details": [
                {
                    "ChangeSource": "DirectModification",
                    "Evaluation": "Static",
                    "Target": {"Attribute": "Tags", "RequiresRecreation": "Never"},
                }
            ],
            "Action": "Modify",
            "Scope": ["Tags"],
            "LogicalResourceId": "MyEC2Instance",
            "Replacement": "False",
        },
        "Type": "Resource",
    }
]
# SampleChangeSet-multiple: KeyName "Always" and InstanceType "Conditionally" → "True".
MULTIPLE = [
    {
        "ResourceChange": {
            "ResourceType": "AWS::EC2::Instance",
            "PhysicalResourceId": "i-7bef86f8",
            "Details": [
                _detail("KeyName", "Always", "Dynamic"),
                _detail("InstanceType", "Conditionally", "Dynamic"),
                {
                    "ChangeSource": "DirectModification",
                    "Evaluation": "Dynamic",
                    "Target": {"Attribute": "Tags", "RequiresRecreation": "Never"},
                },
                _detail("KeyName", "Always", "Static", "ParameterReference"),
                _detail("InstanceType", "Conditionally", "Static", "ParameterReference"),
            ],
            "Action": "Modify",
            "Scope": ["Tags", "Properties"],
            "LogicalResourceId": "MyEC2Instance",
            "Replacement": "True",
        },
        "Type": "Resource",
    }
]
# SampleChangeSet-addremove: the instance removed, an Auto Scaling group added.
ADDREMOVE = [
    {
        "ResourceChange": {
            "Action": "Add",
            "ResourceType": "AWS::AutoScaling::AutoScalingGroup",
            "Scope": [],
            "Details": [],
            "LogicalResourceId": "AutoScalingGroup",
        },
        "Type": "Resource",
    },
    {
        "ResourceChange": {
            "ResourceType": "AWS::EC2::Instance",
            "PhysicalResourceId": "i-1abc23d4",
            "Details": [],
            "Action": "Remove",
            "Scope": [],
            "LogicalResourceId": "MyEC2Instance",
        },
        "Type": "Resource",
    },
]


def _conditional() -> list[dict[str, Any]]:
    """The same sample with the key name unchanged: only InstanceType, "Conditional" (the
    User Guide: "the Replacement field would be Conditionally"; the API enum: Conditional)."""
    changes = copy.deepcopy(MULTIPLE)
    rc = changes[0]["ResourceChange"]
    rc["Details"] = [d for d in rc["Details"] if d["Target"].get("Name") != "KeyName"]
    rc["Replacement"] = "Conditional"
    return changes


def _read(*pages: dict[str, Any]) -> changeset.ChangeSet | None:
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    stub = Stubber(cfn)
    for page in pages:
        stub.add_response("describe_change_set", page)
    stub.activate()
    found = changeset.read(cfn, "SampleStack", "SampleChangeSet", poll_s=0)
    stub.assert_no_pending_responses()
    return found


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_a_tag_change_is_no_replacement() -> None:
    cs = _read(_doc("SampleChangeSet-direct", DIRECT))
    assert cs is not None and not cs.empty and not cs.failed
    assert cs.replacements() == []


def test_replacement_true_is_found_with_its_static_causes() -> None:
    cs = _read(_doc("SampleChangeSet-multiple", MULTIPLE))
    assert cs is not None
    (r,) = cs.replacements()
    assert (r.physical_id, r.action, r.replacement) == ("i-7bef86f8", "Modify", "True")
    assert r.causes == ["InstanceType (Conditionally)", "KeyName (Always)"]
    assert r.describe() == (
        "i-7bef86f8 would be replaced (True); changed: InstanceType (Conditionally), "
        "KeyName (Always)"
    )


def test_a_conditional_replacement_counts_as_one() -> None:
    cs = _read(_doc("SampleChangeSet-conditional", _conditional()))
    assert cs is not None
    (r,) = cs.replacements()
    assert r.replacement == "Conditional" and r.causes == ["InstanceType (Conditionally)"]


def test_a_removed_instance_counts_as_one() -> None:
    cs = _read(_doc("SampleChangeSet-addremove", ADDREMOVE))
    assert cs is not None
    (r,) = cs.replacements()
    assert r.action == "Remove" and "removed" in r.describe()


def test_no_changes_is_an_empty_change_set_not_a_failure() -> None:
    cs = _read(
        _doc(
            "SampleChangeSet",
            [],
            Status="FAILED",
            ExecutionStatus="UNAVAILABLE",
            StatusReason="The submitted information didn't contain changes. Submit different "
            "information to create a change set.",
        )
    )
    assert cs is not None and cs.empty and not cs.failed


def test_a_real_failure_is_a_failure() -> None:
    cs = _read(
        _doc(
            "SampleChangeSet",
            [],
            Status="FAILED",
            ExecutionStatus="UNAVAILABLE",
            StatusReason="Template format error: Unresolved resource dependencies [Vpc]",
        )
    )
    assert cs is not None and cs.failed and not cs.empty


def test_it_waits_while_cloudformation_computes_and_reads_every_page() -> None:
    pending = _doc("SampleChangeSet-multiple", [], Status="CREATE_IN_PROGRESS")
    first = _doc("SampleChangeSet-multiple", DIRECT, NextToken="page-2")
    second = _doc("SampleChangeSet-multiple", MULTIPLE)
    cs = _read(pending, first, second)
    assert cs is not None and len(cs.changes) == 2 and len(cs.replacements()) == 1


def test_no_change_set_at_all() -> None:
    """The CDK CLI skips creating one when the template did not change."""
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    stub = Stubber(cfn)
    stub.add_client_error(
        "describe_change_set", "ChangeSetNotFound", "ChangeSet [x] does not exist", 404
    )
    stub.activate()
    assert changeset.read(cfn, "SampleStack", "x", poll_s=0) is None


def _instance_change(**rc: Any) -> list[dict[str, Any]]:
    change = copy.deepcopy(DIRECT)
    change[0]["ResourceChange"].update(rc)
    return change


def test_a_dynamic_action_on_the_instance_counts_as_a_replacement() -> None:
    """ResourceChange.Action "Dynamic": "exact action for the resource can't be determined"
    (botocore cloudformation model, ResourceChange.Action enum: Add | Modify | Remove | Import |
    Dynamic | SyncWithActual). The guard cannot read it as safe, so it fails closed."""
    cs = _read(_doc("SampleChangeSet-dynamic", _instance_change(Action="Dynamic")))
    assert cs is not None
    (r,) = cs.replacements()
    assert r.action == "Dynamic" and "replaced or removed (action Dynamic)" in r.describe()
    sync = _read(_doc("SampleChangeSet-sync", _instance_change(Action="SyncWithActual")))
    assert sync is not None and sync.replacements() == []  # metadata only: the VM stays


def test_a_replace_policy_action_counts_as_a_replacement() -> None:
    """ResourceChange.PolicyAction "ReplaceAndDelete": "The resource will be replaced and then
    deleted" (botocore cloudformation model), even where Replacement reads "False"."""
    cs = _read(_doc("SampleChangeSet-policy", _instance_change(PolicyAction="ReplaceAndDelete")))
    assert cs is not None and len(cs.replacements()) == 1


def test_only_a_computed_available_change_set_is_ready() -> None:
    """DescribeChangeSet Status CREATE_COMPLETE and ExecutionStatus AVAILABLE (botocore enums
    ChangeSetStatus / ExecutionStatus) is the only executable pair; a change set still being
    computed lists no changes yet, so the replacement guard must not be asked about it."""
    ready = _read(_doc("SampleChangeSet-multiple", MULTIPLE))
    assert ready is not None and ready.ready
    obsolete = _read(_doc("SampleChangeSet-multiple", MULTIPLE, ExecutionStatus="OBSOLETE"))
    assert obsolete is not None and not obsolete.ready
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    stub = Stubber(cfn)
    pending = _doc("SampleChangeSet-multiple", [], Status="CREATE_PENDING")
    stub.add_response("describe_change_set", pending)
    stub.activate()
    # The wait ran out (timeout 0): what comes back is not ready, and lists nothing.
    late = changeset.read(cfn, "SampleStack", "SampleChangeSet", timeout_s=0, poll_s=0)
    assert late is not None and not late.ready and late.replacements() == []


def test_the_failure_reason_is_the_latest_operations_own() -> None:
    """DescribeStackEvents lists every operation's events, newest first; each operation opens
    with the stack's own event reading "User Initiated" (CloudFormation User Guide, "View stack
    events"). An old deploy's failure must not be reported as today's reason."""
    from rig.aws import stacks
    from rig.aws.session import Aws

    def event(n: int, rtype: str, status: str, reason: str) -> dict[str, Any]:
        return {
            "StackId": STACK_ID,
            "EventId": f"ev-{n}",
            "StackName": "SampleStack",
            "LogicalResourceId": "SampleStack" if "Stack" in rtype else "Instance",
            "ResourceType": rtype,
            "Timestamp": CREATED,
            "ResourceStatus": status,
            "ResourceStatusReason": reason,
        }

    cfn = boto3.client("cloudformation", region_name="us-east-1")
    stub = Stubber(cfn)
    stub.add_response(
        "describe_stack_events",
        {
            "StackEvents": [
                event(5, "AWS::CloudFormation::Stack", "UPDATE_ROLLBACK_COMPLETE", ""),
                event(4, "AWS::EC2::Instance", "UPDATE_FAILED", "today's reason"),
                event(3, "AWS::CloudFormation::Stack", "UPDATE_IN_PROGRESS", "User Initiated"),
                event(2, "AWS::EC2::Instance", "CREATE_FAILED", "last week's reason"),
                event(1, "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
            ]
        },
    )
    stub.activate()
    aws = Aws("us-east-1", boto3.Session(region_name="us-east-1"))
    aws._clients["cloudformation"] = cfn
    assert stacks.failure(aws, "SampleStack") == "today's reason"
