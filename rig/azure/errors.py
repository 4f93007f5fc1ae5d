"""The Azure errors a user will meet, each with the one-line fix.

Codes are the ones ARM returns in {"error": {"code": ...}} (Microsoft Learn: "Troubleshoot
common Azure deployment errors", the allocation-failure and Spot troubleshooting pages) plus
pulumi-azure-native's own "cannot create already existing resource". `hint_for` finds the first
known code in any text (a `pulumi up` log, an ARM error body) and returns the fix.
"""

from __future__ import annotations

import re

QUOTA_FIX = (
    "a vCPU quota is too small — request more in the portal (Subscriptions > Usage + quotas: "
    "'Total Regional Spot vCPUs' for Spot, 'Standard NCASv3_T4 Family vCPUs' on demand), "
    "then deploy again"
)

# Order matters: the more specific text first (ZonalAllocationFailed contains AllocationFailed;
# "does not support Azure Spot" arrives as an OperationNotAllowed).
HINTS: list[tuple[str, str]] = [
    (
        "does not support Azure Spot",
        "set [azure] spot = false in rig.toml to deploy this size on demand (full price)",
    ),
    (
        "VariablePricingIsNotSupportedForThisVMSize",
        "this size cannot run as Spot (variable pricing) here — set [azure] spot = false, or "
        "pick another [azure] location",
    ),
    (
        "ZonalAllocationFailed",
        "Azure has no capacity for this size in the requested zone right now — try again in a "
        "while or another [azure] location",
    ),
    (
        "OverconstrainedAllocationRequest",
        "no capacity that meets every constraint of this VM (size, Spot, Gen2 image) in the "
        "location right now — try another [azure] location, later, or spot = false",
    ),
    (
        "AllocationFailed",
        "Azure has no capacity for this size in the location right now — try again in a while, "
        "another [azure] location, or spot = false",
    ),
    (
        "SkuNotAvailable",
        "the size is not available to this subscription in the location — pick another "
        "[azure] location or vm_sizes (`az vm list-skus -l LOCATION --size Standard_NC "
        "--output table` shows the restrictions)",
    ),
    ("MissingSubscriptionRegistration", "REGISTER"),  # filled in with the namespace below
    ("OperationNotAllowed", QUOTA_FIX),
    ("QuotaExceeded", QUOTA_FIX),
    (
        "already existing resource",
        "a resource of an earlier deploy exists but the Pulumi state does not know it (state "
        "lost, or made by hand) — run make destroy (it deletes this project's resource groups "
        "and role assignments by name), then deploy again",
    ),
    (
        "RoleAssignmentExists",
        "a role assignment of an earlier deploy is still there — run make destroy, then deploy "
        "again",
    ),
    (
        "AuthorizationFailed",
        "the signed-in identity lacks a permission — deploying needs Owner, or Contributor + "
        "User Access Administrator (or Role Based Access Control Administrator)",
    ),
]

_NAMESPACE = re.compile(r"namespace '([A-Za-z0-9.]+)'")


def hint_for(text: str) -> str | None:
    for key, fix in HINTS:
        if key in text:
            if fix == "REGISTER":
                found = _NAMESPACE.search(text)
                ns = found.group(1) if found else "NAMESPACE"
                return (
                    f"the subscription is not registered for {ns} — run `az provider register "
                    f"--namespace {ns} --wait`, then deploy again"
                )
            return fix
    return None


def code_in(text: str) -> str | None:
    """The first known error code (or phrase) in `text`."""
    return next((key for key, _ in HINTS if key in text), None)
