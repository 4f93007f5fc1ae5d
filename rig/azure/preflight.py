"""Preflight: everything that would make `pulumi up` fail half-way, checked before anything exists.

A failed `pulumi up` can leave a running VM behind (it creates resources in parallel), so the
rights, resource providers, offering, Spot support and quota are read from Azure first, and
each problem is one line with its fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rig.azure.arm import AzureApi, Permission, SkuInfo, allowed
from rig.azure.names import resource_group_id
from rig.problems import CommandError
from rig.profile import Profile

# Resource providers the stack uses, and what for. A subscription that never used one answers
# MissingSubscriptionRegistration in the middle of `pulumi up`.
PROVIDERS = {
    "Microsoft.Compute": "the VM",
    "Microsoft.Network": "its network and public IP",
    "Microsoft.DevTestLab": "the shutdown schedule (the cloud-side max_hours stop)",
}

# What the deploying identity must be allowed to do (Microsoft Learn, "Azure permissions"
# reference for each provider). Contributor lacks the last one: Microsoft.Authorization/*/Write
# is in its NotActions.
DEPLOY_ACTIONS = [
    ("Microsoft.Network/virtualNetworks/write", "create the virtual network"),
    ("Microsoft.Network/networkSecurityGroups/write", "create the SSH-only firewall"),
    ("Microsoft.Network/publicIPAddresses/write", "create the public IP"),
    ("Microsoft.Network/networkInterfaces/write", "create the network interface"),
    ("Microsoft.Compute/virtualMachines/write", "create the VM"),
    ("Microsoft.DevTestLab/schedules/write", "create the shutdown schedule"),
    (
        "Microsoft.Authorization/roleAssignments/write",
        "let the VM deallocate itself (assign it a role on itself)",
    ),
]
CREATE_GROUP = (
    "Microsoft.Resources/subscriptions/resourceGroups/write",
    "create the resource group",
)


@dataclass
class SizeCheck:
    sku: SkuInfo
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_size(
    profile: Profile, size: str, vcpus_needed: int, api: AzureApi, in_use: int = 0
) -> SizeCheck:
    """Offering, restrictions, Spot support and quota for one size; `in_use` = vCPUs the
    stack's own VM already holds (a redeploy of a running VM needs no new quota)."""
    az = profile.azure
    sku = api.vm_sku(az.location, size)
    if sku is None:
        raise CommandError(
            f"{size} is not offered in {az.location} for this subscription — pick another "
            "[azure] location or vm_sizes (`az vm list-skus -l LOCATION --size Standard_NC`)"
        )
    if sku.restricted:
        raise CommandError(
            f"{size} is restricted in {az.location} for this subscription ({sku.restricted}) — "
            "pick another [azure] location, or ask Azure support to lift the restriction"
        )
    if az.spot and not sku.spot_capable:
        raise CommandError(
            f"This size does not support Azure Spot: {size} in {az.location} — set "
            "[azure] spot = false in rig.toml to deploy it on demand (billed at the full price)"
        )
    out = SizeCheck(sku)
    vcpus = (sku.vcpus or vcpus_needed) - in_use
    # Usage names differ in case between the SKU list and the usage list
    # (standardNCASv3_T4Family vs StandardNCASv3_T4Family): compare them case-insensitively.
    usages = {u.name.lower(): u for u in api.usages(az.location)}
    if az.spot:
        # Spot VMs draw on their own regional pool, not on the family or regional quota
        # (Microsoft Learn, "Azure Spot Virtual Machines": quota is lowPriorityCores).
        checks = [("lowPriorityCores", "Spot")]
    else:
        checks = [(sku.family, "family"), ("cores", "regional")]
    for name, what in checks:
        usage = usages.get(name.lower()) if name else None
        if usage is None:
            out.warnings.append(
                f"Azure lists no {what} vCPU usage {name or '(no family in the SKU)'!r} in "
                f"{az.location}: its quota could not be checked — if `pulumi up` then fails with "
                "OperationNotAllowed, request quota in the portal (Subscriptions > Usage + quotas)"
            )
            continue
        if usage.free < vcpus:
            raise CommandError(
                f"not enough {what} vCPU quota for {size} in {az.location}: {usage.label} "
                f"{usage.current}/{usage.limit} used, {vcpus} needed — request more in the portal "
                f"(Subscriptions > Usage + quotas, search '{usage.label}') and deploy again"
            )
        out.notes.append(f"quota {usage.label}: {usage.free} of {usage.limit} vCPUs free")
    return out


def check_providers(api: AzureApi) -> None:
    for namespace, what in PROVIDERS.items():
        state = api.provider_state(namespace)
        if state != "Registered":
            raise CommandError(
                f"resource provider {namespace} is {state or 'not registered'} in subscription "
                f"{api.subscription_id} ({what} needs it) — run `az provider register "
                f"--namespace {namespace} --wait`, then deploy again"
            )


def missing_actions(permissions: list[Permission], group_exists: bool) -> list[tuple[str, str]]:
    needed = DEPLOY_ACTIONS if group_exists else [CREATE_GROUP, *DEPLOY_ACTIONS]
    return [(action, why) for action, why in needed if not allowed(permissions, action)]


def check_permissions(api: AzureApi, group: str) -> None:
    """The signed-in identity's effective rights where the stack will live (Permissions - List:
    the resource group when it exists, else the subscription)."""
    exists = api.resource_group_exists(group)
    scope = (
        resource_group_id(api.subscription_id, group)
        if exists
        else f"/subscriptions/{api.subscription_id}"
    )
    missing = missing_actions(api.permissions(scope), exists)
    if missing:
        actions = ", ".join(a for a, _ in missing)
        whys = "; ".join(w for _, w in missing)
        raise CommandError(
            f"the signed-in identity may not {whys} on {scope} (missing {actions}) — deploying "
            "needs Owner, or Contributor + User Access Administrator (or Role Based Access "
            "Control Administrator); nothing was created"
        )
