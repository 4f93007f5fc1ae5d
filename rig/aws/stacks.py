"""CloudFormation reads and waits the deploy, destroy and scan share (plain boto3)."""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from rig.aws.names import PROJECT, STACK_PREFIX, TAG_OWNER, TAG_PROJECT
from rig.aws.session import Aws, tags_of

GONE = "DELETE_COMPLETE"


def _missing(exc: botocore.exceptions.ClientError) -> bool:
    # DescribeStacks on an unknown name: ValidationError "Stack with id X does not exist"
    # (CloudFormation API Reference, DescribeStacks errors).
    return "does not exist" in str(exc)


def describe(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        stacks = aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except botocore.exceptions.ClientError as exc:
        if _missing(exc):
            return None
        raise
    if not stacks or stacks[0]["StackStatus"] == GONE:
        return None
    return stacks[0]


def status(aws: Aws, name: str) -> str | None:
    """The stack's status, or None when it does not exist (or is deleted)."""
    found = describe(aws, name)
    return None if found is None else str(found["StackStatus"])


def outputs(aws: Aws, name: str) -> dict[str, str]:
    found = describe(aws, name)
    return {o["OutputKey"]: o["OutputValue"] for o in (found or {}).get("Outputs", [])}


def resource_ids(aws: Aws, name: str, resource_type: str) -> list[str]:
    """Physical ids of the stack's resources of one type (the instance, the template, ...)."""
    try:
        resources = aws.client("cloudformation").describe_stack_resources(StackName=name)[
            "StackResources"
        ]
    except botocore.exceptions.ClientError as exc:
        if _missing(exc):
            return []
        raise
    return [
        r["PhysicalResourceId"]
        for r in resources
        if r["ResourceType"] == resource_type and r.get("PhysicalResourceId")
    ]


def failure(aws: Aws, name: str) -> str | None:
    """The first failure reason of the stack's latest operation, if any."""
    try:
        pages = (
            aws.client("cloudformation")
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


def project_stacks(aws: Aws, owner: str) -> list[str]:
    """Stacks of this project and owner in the region (the CDK CLI copies the tags to them)."""
    out = []
    for page in aws.client("cloudformation").get_paginator("describe_stacks").paginate():
        for s in page["Stacks"]:
            tags = tags_of(s.get("Tags"))
            if (
                s["StackName"].startswith(STACK_PREFIX)
                and tags.get(TAG_PROJECT) == PROJECT
                and tags.get(TAG_OWNER) == owner
                and s["StackStatus"] != GONE
            ):
                out.append(s["StackName"])
    return out


def wait(aws: Aws, waiter: str, name: str, wait_s: float, delay: float = 10) -> None:
    """A CloudFormation waiter (raises botocore's WaiterError on a failed state)."""
    aws.client("cloudformation").get_waiter(waiter).wait(
        StackName=name,
        WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(wait_s // max(delay, 1)))},
    )
