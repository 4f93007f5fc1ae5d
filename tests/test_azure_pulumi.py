"""The real Pulumi program (pulumi_azure/) under pulumi.runtime.set_mocks: no CLI, no plugin.

Every test carries @pulumi.runtime.test: without it an assert failing inside .apply() would be
swallowed and the test would pass (test_a_wrong_expectation_fails proves the decorator works).
Mocks see inputs in camelCase, as the engine would.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

pulumi = pytest.importorskip("pulumi", reason="pip install pulumi==3.272.0 (see README Azure)")
pytest.importorskip("pulumi_azure_native", reason="pip install pulumi-azure-native==3.29.0")

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "pulumi_azure"
sys.path.insert(0, str(PROGRAM))  # as the Pulumi language host does for __main__.py

import rehearsal_vm  # noqa: E402

from rig.azure import names  # noqa: E402
from rig.profile import load_profile  # noqa: E402

SUB = "00000000-0000-0000-0000-000000000001"
CALLER = "203.0.113.7/32"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq0test rehearsal"
# Resource types that Azure gives no tags (Microsoft.Authorization has no tags property).
UNTAGGABLE = {"azure-native:authorization:RoleAssignment"}
# What python -m rig deploy azure computed (rig.azure.schedule.cloud_stop) and passes in.
STOP = {"shutdown_time": "1300", "shutdown_time_zone": "UTC"}


class Mocks(pulumi.runtime.Mocks):
    """Records every resource; answers with ARM-like ids and the outputs Azure would add."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        kind = args.typ.rsplit(":", 1)[-1]
        rg = args.inputs.get("resourceGroupName", args.inputs.get("resourceGroupName"))
        if kind == "ResourceGroup":
            rg = args.inputs["resourceGroupName"]
            rid = f"/subscriptions/{SUB}/resourceGroups/{rg}"
            state["name"] = rg
        elif kind == "VirtualMachine":
            rid = (
                f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/"
                f"Microsoft.Compute/virtualMachines/{args.inputs['vmName']}"
            )
            state["name"] = args.inputs["vmName"]
            state["identity"] = {"type": "SystemAssigned", "principalId": "principal-1234"}
        elif kind == "VirtualNetwork":
            rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/vnet"
            state["subnets"] = [dict(s, id=f"{rid}/subnets/{s['name']}") for s in state["subnets"]]
        elif kind == "PublicIPAddress":
            rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/ip"
            state["ipAddress"] = "198.51.100.20"
        else:
            rid = f"/subscriptions/{SUB}/mock/{args.typ}/{args.name}"
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list]:
        return {}, []

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r.inputs for r in self.resources if r.typ.endswith(f":{kind}")]

    def one(self, kind: str) -> dict[str, Any]:
        (inputs,) = self.of(kind)
        return inputs


def declare(profile_path: Path, **overrides: Any) -> tuple[Mocks, rehearsal_vm.Declared]:
    """set_mocks first (before any resource exists), then run the real declare()."""
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="gpu-rehearsal-azure", stack="nc8as-t4-v3-westeurope")
    args = {"vm_size": "Standard_NC8as_T4_v3", "ssh_source": CALLER, "ssh_public_key": KEY}
    args |= STOP | overrides
    return mocks, rehearsal_vm.declare(load_profile(profile_path), **args)


def settled(declared: rehearsal_vm.Declared, *outputs: Any) -> Any:
    """The outputs' values, once every declared resource has been registered with the mocks
    (checking earlier could miss a resource whose inputs wait on another one's id)."""
    urns = [r.urn for r in declared.resources]
    return pulumi.Output.all(*urns, *outputs).apply(lambda values: values[len(urns) :])


def assert_equal(got: Any, want: Any) -> None:
    assert got == want


@pulumi.runtime.test
def test_spot_vm_with_size_image_disk_and_ssh_key_only(profile_file):
    mocks, declared = declare(profile_file())

    def check(_: list[Any]) -> None:
        vm = mocks.one("VirtualMachine")
        assert vm["priority"] == "Spot"
        assert vm["evictionPolicy"] == "Deallocate"
        assert vm["billingProfile"] == {"maxPrice": -1}
        assert vm["hardwareProfile"] == {"vmSize": "Standard_NC8as_T4_v3"}
        assert vm["vmName"] == "vm-rehearsal-nc8as-t4-v3"
        assert vm["location"] == "westeurope"
        assert vm["storageProfile"]["imageReference"] == {
            "publisher": "Canonical",
            "offer": "0001-com-ubuntu-server-jammy",
            "sku": "22_04-lts-gen2",
            "version": "latest",
        }
        disk = vm["storageProfile"]["osDisk"]
        assert disk["diskSizeGB"] == 200
        assert disk["managedDisk"] == {"storageAccountType": "Premium_LRS"}
        linux = vm["osProfile"]["linuxConfiguration"]
        assert linux["disablePasswordAuthentication"] is True
        assert "adminPassword" not in vm["osProfile"]
        assert linux["ssh"]["publicKeys"] == [
            {"path": "/home/azureuser/.ssh/authorized_keys", "keyData": KEY}
        ]
        assert vm["osProfile"]["adminUsername"] == "azureuser"
        assert vm["identity"] == {"type": "SystemAssigned"}

    return settled(declared, *declared.outputs.values()).apply(check)


@pulumi.runtime.test
def test_on_demand_ubuntu_2404_and_spot_cap(profile_file):
    regular, declared = declare(
        profile_file(
            ("azure", "spot", "false"),
            ("azure", "image", '"ubuntu-24.04"'),
            ("azure", "disk_type", '"StandardSSD_LRS"'),
        )
    )

    def check_regular(_: Any) -> None:
        vm = regular.one("VirtualMachine")
        assert vm["priority"] == "Regular"
        assert "evictionPolicy" not in vm and "billingProfile" not in vm
        image = vm["storageProfile"]["imageReference"]
        assert (image["offer"], image["sku"]) == ("ubuntu-24_04-lts", "server")
        assert vm["storageProfile"]["osDisk"]["managedDisk"]["storageAccountType"] == (
            "StandardSSD_LRS"
        )

    return settled(declared).apply(check_regular)


@pulumi.runtime.test
def test_spot_max_price_cap_is_passed(profile_file):
    mocks, declared = declare(profile_file(("azure", "spot_max_price", "0.35")))
    return settled(declared).apply(
        lambda _: assert_equal(mocks.one("VirtualMachine")["billingProfile"], {"maxPrice": 0.35})
    )


@pulumi.runtime.test
def test_nsg_allows_ssh_from_the_caller_only(profile_file):
    mocks, declared = declare(profile_file())

    def check(_: Any) -> None:
        nsg = mocks.one("NetworkSecurityGroup")
        rules = nsg["securityRules"]
        inbound = [r for r in rules if r["direction"] == "Inbound"]
        assert [r["access"] for r in inbound] == ["Allow"]
        (ssh,) = inbound
        assert ssh["protocol"] == "Tcp"
        assert ssh["destinationPortRange"] == "22"
        assert ssh["sourceAddressPrefix"] == CALLER
        for rule in rules:
            addresses = [
                rule.get("sourceAddressPrefix"),
                rule.get("destinationAddressPrefix"),
                *rule.get("sourceAddressPrefixes", []),
                *rule.get("destinationAddressPrefixes", []),
            ]
            for value in filter(None, addresses):
                assert value not in {"*", "0.0.0.0/0", "::/0", "Internet", "Any"}
            assert rule.get("destinationPortRange") != "*"
            assert "destinationPortRanges" not in rule
        nic = mocks.one("NetworkInterface")
        assert nic["networkSecurityGroup"]["id"].endswith("/nsg")
        ip = mocks.one("PublicIPAddress")
        assert ip["sku"] == {"name": "Standard", "tier": "Regional"}
        assert ip["publicIPAllocationMethod"] == "Static"

    return settled(declared).apply(check)


@pulumi.runtime.test
def test_world_open_or_non_cidr_ssh_source_is_refused(profile_file):
    with pytest.raises(ValueError, match="too broad"):
        declare(profile_file(), ssh_source="0.0.0.0/0")
    with pytest.raises(ValueError, match="not a CIDR"):
        declare(profile_file(), ssh_source="*")


@pulumi.runtime.test
def test_the_shutdown_schedule_holds_the_deadline_the_deploy_computed(profile_file):
    """#10.1: the cloud-side stop is the schedule at the deploy's time, not a fixed daily time."""
    mocks, declared = declare(
        profile_file(
            ("autostop", "daily_shutdown", '"07:30"'), ("autostop", "timezone", '"Asia/Tokyo"')
        ),
        shutdown_time="2215",
        shutdown_time_zone="Tokyo Standard Time",
    )

    def check(args: list[Any]) -> None:
        vm_id, vm_name = args
        schedule = mocks.one("GlobalSchedule")
        # DevTestLab finds a VM's auto-shutdown by this exact name (REFERENCE, Azure).
        assert schedule["name"] == f"shutdown-computevm-{vm_name}"
        assert schedule["name"] == "shutdown-computevm-vm-rehearsal-nc8as-t4-v3"
        assert schedule["taskType"] == "ComputeVmShutdownTask"
        assert schedule["dailyRecurrence"] == {"time": "2215"}  # the deadline, not 07:30
        assert schedule["timeZoneId"] == "Tokyo Standard Time"
        assert schedule["targetResourceId"] == vm_id
        assert schedule["status"] == "Enabled"
        assert schedule["location"] == "westeurope"

    return settled(declared, declared.outputs["vm_id"], declared.outputs["vm_name"]).apply(check)


@pulumi.runtime.test
def test_the_schedule_exists_even_with_daily_shutdown_off(profile_file):
    """daily_shutdown = "off" turns off the daily stop, never the max_hours one."""
    mocks, declared = declare(profile_file(("autostop", "daily_shutdown", '"off"')))
    return settled(declared).apply(
        lambda _: assert_equal(mocks.one("GlobalSchedule")["dailyRecurrence"], {"time": "1300"})
    )


def test_a_malformed_stop_time_is_refused(profile_file):
    with pytest.raises(ValueError, match="shutdownTime"):
        declare(profile_file(), shutdown_time="25:00")
    with pytest.raises(ValueError, match="shutdownTimeZone"):
        declare(profile_file(), shutdown_time_zone="")


@pulumi.runtime.test
def test_trusted_launch_is_off_in_the_way_the_providers_api_version_accepts(profile_file):
    """#10.10, corrected in review: the VM must not be Trusted Launch (Secure Boot refuses the
    unsigned DKMS NVIDIA module, REFERENCE). pulumi-azure-native 3.29 sends Compute API
    2024-11-01, where an explicit securityType "Standard" is refused ("The value of parameter
    securityProfile.securityType is invalid.", azure-cli #31234) unless the preview feature
    Microsoft.Compute/UseStandardSecurityType is registered, and where an absent securityProfile
    is a Standard VM; from 2025-11-01 "Standard" is a first-class value (azure-cli #33280,
    azure-rest-api-specs PR #39957). So: no securityProfile at 2024-11-01."""
    assert rehearsal_vm.compute_api_version() == "2024-11-01"  # the pinned provider's
    mocks, declared = declare(profile_file())
    return settled(declared).apply(
        lambda _: assert_equal(mocks.one("VirtualMachine").get("securityProfile"), None)
    )


def test_a_provider_on_api_2025_11_01_or_later_says_standard_explicitly():
    # Upgrading pulumi-azure-native cannot silently bring a Trusted Launch default: from
    # 2025-11-01 the program names Standard, before it the (Standard) default applies.
    assert rehearsal_vm.security_profile("2025-11-01") == {"security_type": "Standard"}
    assert rehearsal_vm.security_profile("2026-03-01") == {"security_type": "Standard"}
    assert rehearsal_vm.security_profile("2024-11-01") is None
    assert rehearsal_vm.security_profile("2025-04-01") is None  # Standard undocumented there


def test_an_unreadable_api_version_stops_before_any_resource(monkeypatch, tmp_path):
    fake = tmp_path / "virtual_machine.py"
    fake.write_text("class VirtualMachine: ...\n", encoding="utf-8")
    monkeypatch.setattr(rehearsal_vm.compute.virtual_machine, "__file__", str(fake))
    with pytest.raises(ValueError, match="cannot tell which Compute API version"):
        rehearsal_vm.compute_api_version()


@pulumi.runtime.test
def test_identity_gets_a_built_in_power_role_on_its_own_vm_only(profile_file):
    """#10.4: no custom role (nothing tenant-wide to leak); a built-in role at the VM's scope."""
    mocks, declared = declare(profile_file())

    def check(args: list[Any]) -> None:
        (vm_id,) = args
        assert mocks.of("RoleDefinition") == []
        assignment = mocks.one("RoleAssignment")
        assert assignment["scope"] == vm_id
        assert vm_id.endswith("/Microsoft.Compute/virtualMachines/vm-rehearsal-nc8as-t4-v3")
        # Desktop Virtualization Power On Off Contributor (Azure built-in roles reference).
        assert assignment["roleDefinitionId"] == (
            f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/"
            "40c5ff49-9181-41f8-ae61-143b0e78555e"
        )
        assert assignment["principalId"] == "principal-1234"
        assert assignment["principalType"] == "ServicePrincipal"
        assert assignment["description"].startswith("gpu-rehearsal:")  # what destroy scans for
        assert assignment["roleAssignmentName"] == names.assignment_name(vm_id, "principal-1234")

    return settled(declared, declared.outputs["vm_id"]).apply(check)


@pulumi.runtime.test
def test_every_taggable_resource_is_tagged_and_outputs_are_exported(profile_file):
    mocks, declared = declare(profile_file())

    def check(values: list[Any]) -> None:
        types = {r.typ for r in mocks.resources}
        assert {t.rsplit(":", 1)[-1] for t in types} == {
            "ResourceGroup",
            "VirtualNetwork",
            "NetworkSecurityGroup",
            "PublicIPAddress",
            "NetworkInterface",
            "VirtualMachine",
            "RoleAssignment",
            "GlobalSchedule",
        }
        for r in mocks.resources:
            if r.typ in UNTAGGABLE:
                assert "tags" not in r.inputs
                continue
            assert r.inputs["tags"]["project"] == "gpu-rehearsal", r.typ
            assert r.inputs["tags"]["stack"] == "nc8as-t4-v3-westeurope", r.typ
        assert dict(zip(declared.outputs, values, strict=True)) == {
            "public_ip": "198.51.100.20",
            "vm_id": f"/subscriptions/{SUB}/resourceGroups/rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
            "/providers/Microsoft.Compute/virtualMachines/vm-rehearsal-nc8as-t4-v3",
            "vm_name": "vm-rehearsal-nc8as-t4-v3",
            "resource_group": "rg-gpu-rehearsal-nc8as-t4-v3-westeurope",
            "location": "westeurope",
            "size": "Standard_NC8as_T4_v3",
            "ssh_user": "azureuser",
            "ssh_port": "22",  # the NSG's one open port; the deploy waits on it
            "shutdown_time": "1300",
            "shutdown_time_zone": "UTC",
        }

    return settled(declared, *declared.outputs.values()).apply(check)


@pulumi.runtime.test
def test_main_program_reads_stack_config(profile_file):
    """__main__.py itself, with the config the deploy sets, declares the same VM."""
    path = profile_file(("azure", "vm_sizes", '["Standard_NC4as_T4_v3"]'))
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="gpu-rehearsal-azure", stack="s")
    for key, value in {
        "profile": str(path),
        "vmSize": "Standard_NC4as_T4_v3",
        "sshSource": CALLER,
        "sshPublicKey": KEY,
        "shutdownTime": "0945",
        "shutdownTimeZone": "W. Europe Standard Time",
    }.items():
        pulumi.runtime.set_config(f"gpu-rehearsal-azure:{key}", value)
    program = runpy.run_path(str(PROGRAM / "__main__.py"), run_name="__main__")

    def check(_: Any) -> None:
        vm = mocks.one("VirtualMachine")
        assert vm["hardwareProfile"] == {"vmSize": "Standard_NC4as_T4_v3"}
        assert vm["vmName"] == "vm-rehearsal-nc4as-t4-v3"
        assert mocks.one("NetworkSecurityGroup")["securityRules"][0]["sourceAddressPrefix"] == (
            CALLER
        )
        schedule = mocks.one("GlobalSchedule")
        assert schedule["dailyRecurrence"] == {"time": "0945"}
        assert schedule["timeZoneId"] == "W. Europe Standard Time"

    return settled(program["declared"]).apply(check)


@pulumi.runtime.test
def test_a_wrong_expectation_fails(profile_file):
    """The decorator surfaces an assert failing inside .apply(): the suite can catch mistakes."""

    @pulumi.runtime.test
    def wrong() -> Any:
        mocks, declared = declare(profile_file())
        return settled(declared).apply(
            lambda _: assert_equal(mocks.one("VirtualMachine")["priority"], "Regular")
        )

    with pytest.raises(AssertionError, match="'Spot' == 'Regular'"):
        wrong()
