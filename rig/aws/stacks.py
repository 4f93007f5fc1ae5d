"""CloudFormation reads and waits the deploy, destroy and scan share (plain boto3)."""

from __future__ import annotations

import time
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
    # Events come newest first. The latest operation starts with the stack's own event whose
    # reason is "User Initiated"; failures before it belong to earlier deploys.
    latest: list[dict[str, Any]] = []
    for e in events:
        latest.append(e)
        if (
            e.get("ResourceType") == "AWS::CloudFormation::Stack"
            and e.get("ResourceStatusReason") == "User Initiated"
        ):
            break
    failed = [
        e
        for e in latest
        if e.get("ResourceStatus", "").endswith("_FAILED") and e.get("ResourceStatusReason")
    ]
    # The root cause is the oldest failure of the operation.
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


# How many reads of an unchanged, settled status are taken for stale ones before trusting it.
# DescribeStacks is eventually consistent: right after ExecuteChangeSet or DeleteStack it can
# still report the status the stack had before (the CDK CLI polls again on such reads:
# aws-cdk-cli toolkit-lib cfn-api.ts stabilizeStack, "may be a stale read"). botocore's
# waiters take the first read at face value: StackDeleteComplete fails at once on a stale
# UPDATE_COMPLETE or UPDATE_ROLLBACK_COMPLETE, and StackUpdateComplete succeeds at once on a
# stale UPDATE_COMPLETE, before the update ran.
STALE_READS = 3


class StackTimeout(Exception):
    """The stack was still changing when the wait ran out."""


# The settled states each operation can end in (CloudFormation stack status codes).
CREATE_ENDS = ("CREATE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED")
UPDATE_ENDS = (
    "UPDATE_COMPLETE",
    "UPDATE_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
)


def settle(
    aws: Aws,
    name: str,
    wait_s: float,
    poll_s: float = 10,
    ends: tuple[str, ...] | None = None,
) -> str | None:
    """Poll an operation just started on the stack (ExecuteChangeSet, DeleteStack) until it
    ends: its final status, or None once the stack is gone. A settled status that is not one
    this operation ends in (`ends`) is the previous operation's, read again until the wait
    runs out; one it can end in, read before any *_IN_PROGRESS, may still be the previous
    operation's too (an update after an update): it is read again up to STALE_READS times."""
    deadline = time.monotonic() + wait_s
    seen_progress = False
    stale_reads = 0
    while True:
        current = status(aws, name)
        if current is None:
            return None
        in_progress = current.endswith("_IN_PROGRESS") and current != "REVIEW_IN_PROGRESS"
        if in_progress:
            seen_progress = True
        elif ends is not None and current not in ends:
            pass  # not this operation's end: an old read
        elif seen_progress or stale_reads >= STALE_READS:
            return current
        else:
            stale_reads += 1
        if time.monotonic() > deadline:
            raise StackTimeout(f"{name} is still {current} after {wait_s / 60:.0f} min")
        time.sleep(poll_s)
