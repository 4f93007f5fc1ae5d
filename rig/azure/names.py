"""Names every Azure part agrees on: stack, resource group, VM, tags, the VM's role.

The Pulumi program (pulumi_azure/), the deploy, the destroy scan and `make status` all derive
their names from here, so a scan can find by name what a lost Pulumi state no longer lists.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from rig.profile import AzureSection, Profile

PROJECT_TAG = ("project", "gpu-rehearsal")  # on every taggable resource; the orphan scan uses it
RG_PREFIX = "rg-gpu-rehearsal-"  # every resource group this project creates starts with it
# Description of the role assignment the deploy makes; the destroy scan looks for this prefix.
ASSIGNMENT_MARK = "gpu-rehearsal:"
ASSIGNMENT_DESCRIPTION = f"{ASSIGNMENT_MARK} the VM's own identity may deallocate this VM"

# #10.4 decision: the VM's identity gets a BUILT-IN role on the VM itself, no custom role.
# "Desktop Virtualization Power On Off Contributor" (id below; MicrosoftDocs/azure-docs
# articles/role-based-access-control/built-in-roles/compute.md, copied in tests/fixtures/azure/
# role_power_on_off_contributor.json) grants on Microsoft.Compute/virtualMachines read,
# instanceView/read, start, restart, powerOff and deallocate; its other actions name resource
# types that cannot sit under a VM (ComputeSchedule locations, DesktopVirtualization host pools,
# HybridCompute and AzureStackHCI machines, classic alertRules, deployments) or are reads, so
# assigned at the VM's scope they grant nothing more. A custom role could only narrow that to
# deallocate alone, at the price of a tenant-wide object (5,000 per tenant) that outlives
# `az group delete` and blocks the next deploy; a built-in role leaves nothing outside the
# resource group but one assignment, which the destroy scan deletes.
POWER_ROLE_ID = "40c5ff49-9181-41f8-ae61-143b0e78555e"
POWER_ROLE_NAME = "Desktop Virtualization Power On Off Contributor"

# What earlier versions of this tool created (a custom role per resource group): the destroy
# scan still finds and deletes them by this name prefix and by their deterministic GUID.
LEGACY_ROLE_PREFIX = "gpu-rehearsal deallocate "
_LEGACY_NAMESPACE = uuid.UUID("6f1c3d2a-8a51-4f0e-9a57-3c0a4be1d7a1")
_ASSIGNMENT_NAMESPACE = uuid.UUID("0d7b6e0a-3c55-4f55-9d3e-7b1f1c2a9e42")


def slug(size: str) -> str:
    """Standard_NC8as_T4_v3 -> nc8as-t4-v3: short, lower case, valid in every Azure name."""
    return re.sub(r"[^a-z0-9]+", "-", size.lower().removeprefix("standard_")).strip("-")


@dataclass(frozen=True)
class AzureNames:
    size: str
    location: str

    @property
    def stack(self) -> str:
        return f"{slug(self.size)}-{self.location}"

    @property
    def resource_group(self) -> str:
        return f"{RG_PREFIX}{slug(self.size)}-{self.location}"

    @property
    def vm(self) -> str:
        # Fixed (not auto-named) so the DevTestLab schedule's name, which must embed it, is known.
        return f"vm-rehearsal-{slug(self.size)}"

    @property
    def schedule(self) -> str:
        # Azure finds a VM's auto-shutdown schedule by exactly this name (REFERENCE, Azure).
        return f"shutdown-computevm-{self.vm}"

    @property
    def target(self) -> str:
        return f"azure-{self.size}"  # the state file / bench target name


def names_for(profile: Profile, size: str) -> AzureNames:
    return AzureNames(size=size, location=profile.azure.location)


def resource_group_id(subscription_id: str, group: str) -> str:
    return f"/subscriptions/{subscription_id}/resourceGroups/{group}"


def subscription_of(resource_id: str) -> str:
    """'/subscriptions/SUB/resourceGroups/..' -> 'SUB' ('' when the id has none)."""
    parts = resource_id.split("/")
    return parts[2] if len(parts) > 2 and parts[1].lower() == "subscriptions" else ""


def power_role_definition_id(subscription_id: str) -> str:
    """The built-in role's id as a role assignment names it (subscription-qualified)."""
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{POWER_ROLE_ID}"
    )


def assignment_name(vm_id: str, principal_id: str) -> str:
    """Role assignment names are GUIDs. Seeded with the VM identity's principal id too: a VM
    recreated after a lost state has a new identity, hence a new name, so an assignment left
    over from the old one can never collide with it ("already existing resource")."""
    return str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, f"{vm_id}/{principal_id}".lower()))


def legacy_role_guid(subscription_id: str, group: str) -> str:
    """The GUID earlier versions gave the custom role of one resource group."""
    rg_id = resource_group_id(subscription_id, group)
    return str(uuid.uuid5(_LEGACY_NAMESPACE, f"{rg_id}/deallocate-self".lower()))


def max_price(section: AzureSection) -> float | None:
    """Spot cap for billingProfile.maxPrice: -1 = at most on-demand, never evicted for price."""
    if not section.spot:
        return None
    return -1.0 if section.spot_max_price == "" else float(section.spot_max_price)
