"""Read the change set the CDK CLI prepared, and say whether it would replace the VM.

A replaced instance is a new VM: its disk and every pulled model are gone, and when
CloudFormation terminates the old persistent-spot instance, its request reopens and launches
another one that nothing tracks (EC2 User Guide, "Terminate a Spot Instance"). So a deploy
refuses any change set whose AWS::EC2::Instance is removed or has Replacement "True" or
"Conditional" (CloudFormation API Reference, ResourceChange: "Conditional" means it *may* be
replaced, depending on a value known only when executing), whose Action is "Dynamic" ("exact
action for the resource can't be determined"), or whose PolicyAction starts with "Replace",
unless the user confirms; then the old request is cancelled first (rig.aws.deploy). Anything
the guard cannot read as safe counts as a replacement: it fails closed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from rig.aws.names import CHANGE_SET_NAME

INSTANCE = "AWS::EC2::Instance"
# describe_change_set's Status for a change set that changes nothing is FAILED with this
# StatusReason (CloudFormation User Guide, "Update stacks using change sets"; the CDK CLI
# checks the same text in changeSetHasNoChanges).
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
PENDING = ("CREATE_PENDING", "CREATE_IN_PROGRESS")
READY = "CREATE_COMPLETE"  # ChangeSetStatus of a change set that can be executed
EXECUTABLE = "AVAILABLE"  # ExecutionStatus of one (DescribeChangeSet)
# Actions that leave the instance in place (ResourceChange.Action); any other one on the
# instance, including "Dynamic" and values added later, is treated as a possible replacement.
SAFE_ACTIONS = ("Add", "Modify", "Import", "SyncWithActual")


@dataclass(frozen=True)
class Replacement:
    logical_id: str
    physical_id: str
    action: str  # "Modify" (Replacement True/Conditional), "Remove", "Dynamic", ...
    replacement: str
    causes: list[str]  # e.g. ["LaunchTemplate (Always)"]

    def describe(self) -> str:
        why = f"; changed: {', '.join(self.causes)}" if self.causes else ""
        if self.action == "Remove":
            verb = "removed"
        elif self.action == "Modify":
            verb = f"replaced ({self.replacement})"
        else:
            verb = f"replaced or removed (action {self.action or 'unknown'})"
        return f"{self.physical_id or self.logical_id} would be {verb}{why}"


@dataclass
class ChangeSet:
    name: str
    stack: str
    status: str
    reason: str
    execution_status: str
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.status == "FAILED" and any(m in self.reason for m in NO_CHANGES)

    @property
    def failed(self) -> bool:
        return self.status == "FAILED" and not self.empty

    @property
    def ready(self) -> bool:
        """Computed and executable: anything else must not be executed (and is not guarded:
        a change set still being computed lists no changes yet)."""
        return self.status == READY and self.execution_status == EXECUTABLE

    def replacements(self) -> list[Replacement]:
        """Every change that removes, replaces or may replace the VM."""
        out = []
        for change in self.changes:
            rc = change.get("ResourceChange", {})
            if rc.get("ResourceType") != INSTANCE:
                continue
            action, repl = rc.get("Action", ""), rc.get("Replacement", "False")
            policy = rc.get("PolicyAction", "")
            replaced = (
                action not in SAFE_ACTIONS
                or (action == "Modify" and repl != "False")
                or policy.startswith("Replace")
            )
            if not replaced:
                continue
            causes = [
                f"{d['Target'].get('Name') or d['Target'].get('Attribute')} "
                f"({d['Target'].get('RequiresRecreation')})"
                for d in rc.get("Details", [])
                if d.get("Target", {}).get("RequiresRecreation") in ("Always", "Conditionally")
            ]
            out.append(
                Replacement(
                    logical_id=rc.get("LogicalResourceId", ""),
                    physical_id=rc.get("PhysicalResourceId", ""),
                    action=action,
                    replacement=repl,
                    causes=sorted(set(causes)),
                )
            )
        return out


def read(
    cfn: Any,
    stack: str,
    name: str = CHANGE_SET_NAME,
    timeout_s: float = 300,
    poll_s: float = 3,
) -> ChangeSet | None:
    """The change set with all its pages, once CloudFormation finished computing it; None when
    there is none (the CDK CLI skips creating one when the template is unchanged)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            first = cfn.describe_change_set(ChangeSetName=name, StackName=stack)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ChangeSetNotFound", "ChangeSetNotFoundException") or (
                code == "ValidationError" and "does not exist" in str(exc)
            ):
                return None
            raise
        if first.get("Status") not in PENDING or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    changes = list(first.get("Changes", []))
    token = first.get("NextToken")
    while token:
        page = cfn.describe_change_set(ChangeSetName=name, StackName=stack, NextToken=token)
        changes += page.get("Changes", [])
        token = page.get("NextToken")
    return ChangeSet(
        name=name,
        stack=stack,
        status=str(first.get("Status", "")),
        reason=str(first.get("StatusReason", "")),
        execution_status=str(first.get("ExecutionStatus", "")),
        changes=changes,
    )


def delete(cfn: Any, stack: str, name: str = CHANGE_SET_NAME) -> None:
    with contextlib.suppress(botocore.exceptions.ClientError):  # already gone: nothing to do
        cfn.delete_change_set(ChangeSetName=name, StackName=stack)
