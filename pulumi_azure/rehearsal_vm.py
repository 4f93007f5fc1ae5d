"""declare(): the Azure twin of the AWS rehearsal VM, from the validated rig profile.

One spot GPU VM reachable only by SSH from one address, that can deallocate itself (Azure keeps
billing compute after an OS shutdown; only deallocation stops it), plus the cloud-side stop:
the VM's auto-shutdown schedule set to the time the deploy computed (rig/azure/schedule.py: the
max_hours deadline, or the daily shutdown when it comes first), which deallocates the VM even
if nothing on it works. Names, the role and the spot cap come from rig so that the deploy, the
destroy scan and this program agree.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
from pulumi_azure_native import authorization, compute, devtestlab, network, resources

from rig.azure.names import (
    ASSIGNMENT_DESCRIPTION,
    PROJECT_TAG,
    assignment_name,
    max_price,
    names_for,
    power_role_definition_id,
    subscription_of,
)
from rig.catalog import Catalog, load_catalog
from rig.profile import OPEN_PREFIX, Profile

VNET_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"
SSH_PORT = 22  # the only inbound port the NSG opens (exported: the deploy waits on it)
# Trusted Launch turns on Secure Boot, which refuses the unsigned NVIDIA kernel module Ansible
# builds with DKMS (REFERENCE: nvidia-dkms is refused under Secure Boot), so the VM must be a
# "Standard" (non-Trusted-Launch) VM. How to say so depends on the Compute API version the
# provider sends:
# - from 2025-11-01, "Standard" is a documented securityType and the default (Azure/azure-rest-
#   api-specs PR #39957; azure-cli #33280: "CRP API now supports Standard as first-class enum
#   for securityType starting API version 2025-11-01");
# - before it, an explicit "Standard" is refused with InvalidParameter "The value of parameter
#   securityProfile.securityType is invalid." unless the subscription registered the preview
#   feature Microsoft.Compute/UseStandardSecurityType (azure-cli #31234, #31191), while leaving
#   securityProfile out gives a Standard VM (the REST API has no Trusted Launch default; the
#   SDK enum reads "If not specified, Standard will be returned starting api version 2025-11-01").
# pulumi-azure-native 3.29 sends 2024-11-01 ("Uses Azure REST API version 2024-11-01" in its
# VirtualMachine docstring), so the profile is left out there and set explicitly from 2025-11-01.
# An API version this cannot read stops the program before any resource is declared.
SECURITY_TYPE = "Standard"
STANDARD_IS_AN_ENUM_FROM = "2025-11-01"
_API_VERSION = re.compile(r"Uses Azure REST API version (\d{4}-\d{2}-\d{2})")


def compute_api_version() -> str:
    """The Compute REST API version the installed azure-native provider uses for a VM."""
    # The version is stated in the generated module's docstrings (its @overload __init__s,
    # which Python does not keep at run time): read the module's source text.
    source = Path(compute.virtual_machine.__file__).read_text(encoding="utf-8")
    found = _API_VERSION.search(source)
    if found is None:
        raise ValueError(
            "cannot tell which Compute API version pulumi-azure-native uses for virtual "
            "machines (its VirtualMachine docstring changed) — check pulumi_azure/"
            "rehearsal_vm.py security_profile() against the provider before deploying"
        )
    return found.group(1)


def security_profile(api_version: str) -> dict[str, str] | None:
    """securityProfile for a non-Trusted-Launch VM at this API version (see above)."""
    if api_version >= STANDARD_IS_AN_ENUM_FROM:
        return {"security_type": SECURITY_TYPE}
    return None


_HHMM = re.compile(r"([01]\d|2[0-3])[0-5]\d")


def _checked_source(profile: Profile, ssh_source: str) -> str:
    """The resolved SSH source as a CIDR; never the world unless the profile opted in."""
    try:
        net = ipaddress.ip_network(ssh_source, strict=True)
    except ValueError as exc:
        raise ValueError(f"sshSource {ssh_source!r} is not a CIDR (e.g. 203.0.113.7/32)") from exc
    if net.prefixlen < OPEN_PREFIX[net.version] and not profile.access.allow_open_ssh:
        raise ValueError(
            f"sshSource {ssh_source} is too broad — set access.allow_open_ssh = true to allow it"
        )
    return str(net)


@dataclass
class Declared:
    outputs: dict[str, pulumi.Input[str]]  # the stack outputs (__main__ exports them)
    resources: list[pulumi.CustomResource] = field(default_factory=list)


def declare(
    profile: Profile,
    vm_size: str,
    ssh_source: str,
    ssh_public_key: str,
    shutdown_time: str,
    shutdown_time_zone: str,
    cat: Catalog | None = None,
) -> Declared:
    """Declare every resource for one VM size; return them with the stack outputs.

    shutdown_time ("HHmm") and shutdown_time_zone (a Windows id) are the cloud-side stop the
    deploy computed (rig.azure.schedule.cloud_stop) and printed the worst case for."""
    cat = cat or load_catalog()
    security = security_profile(compute_api_version())  # before any resource: may raise
    if not _HHMM.fullmatch(shutdown_time) or not shutdown_time_zone:
        raise ValueError(
            f"shutdownTime {shutdown_time!r} / shutdownTimeZone {shutdown_time_zone!r}: "
            "expected HHmm and a Windows time-zone id (python -m rig deploy azure sets them)"
        )
    az = profile.azure
    if vm_size not in az.vm_sizes:
        raise ValueError(f"vmSize {vm_size} is not in [azure] vm_sizes {az.vm_sizes}")
    source = _checked_source(profile, ssh_source)
    names = names_for(profile, vm_size)
    image = cat.images_of("azure")[az.image]
    loc = az.location
    tags = {
        PROJECT_TAG[0]: PROJECT_TAG[1],
        "stack": pulumi.get_stack(),
        "vm-size": vm_size,
        "managed-by": "pulumi",
    }

    rg = resources.ResourceGroup(
        "rg", resource_group_name=names.resource_group, location=loc, tags=tags
    )
    # The subnet is declared inline so it is part of the (tagged) virtual network resource.
    vnet = network.VirtualNetwork(
        "vnet",
        resource_group_name=rg.name,
        location=loc,
        address_space={"address_prefixes": [VNET_CIDR]},
        subnets=[{"name": "rehearsal", "address_prefix": SUBNET_CIDR}],
        tags=tags,
    )
    # One inbound allow rule: SSH from one address. Azure's default rules deny everything else
    # from the internet (DenyAllInBound); Ollama is reached through the SSH tunnel only.
    nsg = network.NetworkSecurityGroup(
        "nsg",
        resource_group_name=rg.name,
        location=loc,
        security_rules=[
            {
                "name": "ssh-from-caller",
                "priority": 100,
                "direction": "Inbound",
                "access": "Allow",
                "protocol": "Tcp",
                "source_address_prefix": source,
                "source_port_range": "*",  # a client's own port is arbitrary; the address is not
                "destination_address_prefix": SUBNET_CIDR,
                "destination_port_range": str(SSH_PORT),
                "description": "SSH from the deploying machine only (rig.toml access.ssh_source)",
            }
        ],
        tags=tags,
    )
    ip = network.PublicIPAddress(
        "ip",
        resource_group_name=rg.name,
        location=loc,
        sku={"name": "Standard", "tier": "Regional"},
        public_ip_allocation_method="Static",
        public_ip_address_version="IPv4",
        tags=tags,
    )
    nic = network.NetworkInterface(
        "nic",
        resource_group_name=rg.name,
        location=loc,
        network_security_group={"id": nsg.id},
        ip_configurations=[
            {
                "name": "primary",
                "subnet": {"id": vnet.subnets.apply(lambda s: s[0].id if s else None)},
                "private_ip_allocation_method": "Dynamic",
                "public_ip_address": {"id": ip.id},
            }
        ],
        tags=tags,
    )
    spot: dict[str, object] = {}
    if az.spot:
        spot = {
            "priority": "Spot",
            "eviction_policy": "Deallocate",  # keeps the disk and its pulled models
            "billing_profile": {"max_price": max_price(az)},
        }
    else:
        spot = {"priority": "Regular"}
    vm = compute.VirtualMachine(
        "vm",
        vm_name=names.vm,
        resource_group_name=rg.name,
        location=loc,
        hardware_profile={"vm_size": vm_size},
        identity={"type": "SystemAssigned"},
        security_profile=security,
        storage_profile={
            "image_reference": {
                "publisher": image.publisher,
                "offer": image.offer,
                "sku": image.sku,
                "version": "latest",
            },
            "os_disk": {
                "name": f"{names.vm}-os",
                "create_option": "FromImage",
                "caching": "ReadWrite",
                "disk_size_gb": az.disk_gb,
                "managed_disk": {"storage_account_type": az.disk_type},
                "delete_option": "Delete",
            },
        },
        os_profile={
            "computer_name": names.vm,
            "admin_username": image.ssh_user,
            "linux_configuration": {
                "disable_password_authentication": True,
                "provision_vm_agent": True,
                "ssh": {
                    "public_keys": [
                        {
                            "path": f"/home/{image.ssh_user}/.ssh/authorized_keys",
                            "key_data": ssh_public_key.strip(),
                        }
                    ]
                },
            },
        },
        network_profile={
            "network_interfaces": [{"id": nic.id, "primary": True, "delete_option": "Delete"}]
        },
        tags=tags,
        **spot,  # type: ignore[arg-type]
    )

    # The VM's identity may power itself off for good (deallocate: billing stops), through a
    # built-in role assigned on the VM alone (why not a custom role: rig/azure/names.py). The
    # idle watchdog on the VM (Ansible's autostop role) calls ARM with this identity.
    principal = vm.identity.apply(lambda i: i.principal_id if i else None)
    assignment = authorization.RoleAssignment(
        "vm-deallocates-itself",
        role_assignment_name=pulumi.Output.all(vm.id, principal).apply(
            lambda v: assignment_name(str(v[0]), str(v[1]))
        ),
        scope=vm.id,
        role_definition_id=vm.id.apply(lambda i: power_role_definition_id(subscription_of(i))),
        principal_id=principal,
        # ServicePrincipal skips the directory lookup that fails while a new identity replicates.
        principal_type="ServicePrincipal",
        description=ASSIGNMENT_DESCRIPTION,
    )
    # The cloud-side stop: Azure finds a VM's auto-shutdown schedule by this exact name; it
    # deallocates (billing stops) at the time the deploy set, daily, even if the VM hangs.
    schedule = devtestlab.GlobalSchedule(
        "shutdown",
        name=names.schedule,
        resource_group_name=rg.name,
        location=loc,
        status="Enabled",
        task_type="ComputeVmShutdownTask",
        daily_recurrence={"time": shutdown_time},
        time_zone_id=shutdown_time_zone,
        target_resource_id=vm.id,
        notification_settings={"status": "Disabled"},
        tags=tags,
    )
    declared: list[pulumi.CustomResource] = [rg, vnet, nsg, ip, nic, vm, assignment, schedule]

    outputs: dict[str, pulumi.Input[str]] = {
        "public_ip": ip.ip_address.apply(lambda a: a or ""),
        "vm_id": vm.id,
        "vm_name": vm.name,
        "resource_group": rg.name,
        "location": loc,
        "size": vm_size,
        "ssh_user": image.ssh_user,
        "ssh_port": str(SSH_PORT),  # the deploy waits for SSH, and the state records it, here
        "shutdown_time": shutdown_time,
        "shutdown_time_zone": shutdown_time_zone,
    }
    return Declared(outputs, declared)
