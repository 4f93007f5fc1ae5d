"""declare(): the Azure twin of the AWS rehearsal VM, from the validated rig profile.

One spot GPU VM reachable only by SSH from one address, that can deallocate itself (Azure keeps
billing compute after an OS shutdown; only deallocation stops it), plus a daily DevTestLab
shutdown as a backstop that works even if the VM hangs. Names, the time zone and the spot cap
come from rig so that the deploy, the destroy check and this program agree.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import authorization, compute, devtestlab, network, resources

from rig.azure import PROJECT_TAG, max_price, names_for, shutdown_time, windows_time_zone
from rig.catalog import Catalog, load_catalog
from rig.profile import OPEN_PREFIX, Profile

VNET_CIDR = "10.42.0.0/16"
SUBNET_CIDR = "10.42.1.0/24"
# The one thing the VM's identity may do: deallocate (stop billing). Not even read: the idle
# watchdog knows its own VM id from the instance metadata service.
DEALLOCATE_ACTIONS = ["Microsoft.Compute/virtualMachines/deallocate/action"]
_ID_NAMESPACE = uuid.UUID("6f1c3d2a-8a51-4f0e-9a57-3c0a4be1d7a1")  # for stable role GUIDs


def _guid(seed: str) -> str:
    # Role definitions and assignments are named by GUID; derive them from the (subscription-
    # qualified) scope so a re-run updates the same role instead of adding another one.
    return str(uuid.uuid5(_ID_NAMESPACE, seed.lower()))


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
    cat: Catalog | None = None,
) -> Declared:
    """Declare every resource for one VM size; return them with the stack outputs."""
    cat = cat or load_catalog()
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
                "destination_port_range": "22",
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
    # No security_profile: the API's default (no Secure Boot) lets the NVIDIA kernel module that
    # Ansible builds with DKMS load without enrolling a signing key.
    vm = compute.VirtualMachine(
        "vm",
        vm_name=names.vm,
        resource_group_name=rg.name,
        location=loc,
        hardware_profile={"vm_size": vm_size},
        identity={"type": "SystemAssigned"},
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

    # A custom role holding only the deallocate action, assigned on this VM alone: the idle
    # watchdog on the VM (Ansible's autostop role) calls ARM with the VM's managed identity.
    # Custom roles cannot be scoped to a single resource, so the role is assignable within the
    # resource group and the assignment's scope is the VM.
    role = authorization.RoleDefinition(
        "deallocate-self",
        role_definition_id=rg.id.apply(lambda i: _guid(f"{i}/deallocate-self")),
        role_name=rg.id.apply(
            lambda i: (
                f"gpu-rehearsal deallocate {names.vm} "
                f"{hashlib.sha256(i.lower().encode()).hexdigest()[:8]}"
            )
        ),
        description="Lets a gpu-rehearsal VM deallocate itself when idle (stops compute billing)",
        role_type="CustomRole",
        permissions=[{"actions": DEALLOCATE_ACTIONS, "not_actions": []}],
        assignable_scopes=[rg.id],
        scope=rg.id,
    )
    assignment = authorization.RoleAssignment(
        "vm-deallocates-itself",
        role_assignment_name=vm.id.apply(lambda i: _guid(f"{i}/deallocate-self")),
        scope=vm.id,
        role_definition_id=role.id,
        principal_id=vm.identity.apply(lambda i: i.principal_id if i else None),
        # ServicePrincipal skips the directory lookup that fails while a new identity replicates.
        principal_type="ServicePrincipal",
        description="The VM's own identity may deallocate this VM and nothing else",
    )

    declared: list[pulumi.CustomResource] = [rg, vnet, nsg, ip, nic, vm, role, assignment]
    when = shutdown_time(profile.autostop.daily_shutdown)
    if when is not None:
        # Auto-shutdown deallocates (billing stops). Azure finds it by this exact name.
        schedule = devtestlab.GlobalSchedule(
            "daily-shutdown",
            name=f"shutdown-computevm-{names.vm}",
            resource_group_name=rg.name,
            location=loc,
            status="Enabled",
            task_type="ComputeVmShutdownTask",
            daily_recurrence={"time": when},
            time_zone_id=windows_time_zone(profile.autostop.timezone),
            target_resource_id=vm.id,
            notification_settings={"status": "Disabled"},
            tags=tags,
        )
        declared.append(schedule)

    outputs: dict[str, pulumi.Input[str]] = {
        "public_ip": ip.ip_address.apply(lambda a: a or ""),
        "vm_id": vm.id,
        "vm_name": vm.name,
        "resource_group": rg.name,
        "location": loc,
        "size": vm_size,
        "ssh_user": image.ssh_user,
    }
    return Declared(outputs, declared)
