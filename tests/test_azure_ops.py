"""rig/azure names and credentials: what every Azure part agrees on, and who is signed in."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rig.azure import credentials, names
from rig.azure.http import Response
from rig.problems import CommandError
from rig.profile import load_profile

FIXTURES = Path(__file__).parent / "fixtures" / "azure"

SUB = "00000000-0000-0000-0000-000000000001"


def test_names_are_short_valid_and_embed_the_size():
    n = names.AzureNames("Standard_NC8as_T4_v3", "westeurope")
    assert names.slug("Standard_NC8as_T4_v3") == "nc8as-t4-v3"
    assert n.stack == "nc8as-t4-v3-westeurope"
    assert n.resource_group == "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
    assert n.resource_group.startswith(names.RG_PREFIX)
    assert n.vm == "vm-rehearsal-nc8as-t4-v3"
    # Azure finds a VM's auto-shutdown schedule by this exact name (REFERENCE, Azure).
    assert n.schedule == "shutdown-computevm-vm-rehearsal-nc8as-t4-v3"
    assert n.target == "azure-Standard_NC8as_T4_v3"
    assert names.subscription_of(f"/subscriptions/{SUB}/resourceGroups/x") == SUB
    assert names.subscription_of("3d9c2a56-provider") == ""


def test_role_assignment_names_change_with_the_vm_identity():
    # A VM recreated after a lost state gets a new principal, hence a new assignment name: an
    # orphaned assignment of the old VM can never collide ("already existing resource").
    vm = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
    first = names.assignment_name(vm, "principal-1")
    assert first == names.assignment_name(vm.upper(), "PRINCIPAL-1")  # stable, case-blind
    assert first != names.assignment_name(vm, "principal-2")
    assert names.power_role_definition_id(SUB).endswith(
        "/roleDefinitions/40c5ff49-9181-41f8-ae61-143b0e78555e"
    )


def test_legacy_custom_role_guid_is_what_earlier_versions_used():
    # Earlier pulumi_azure/rehearsal_vm.py: uuid5(6f1c3d2a-..., f"{rg.id}/deallocate-self".lower())
    import uuid

    rg_id = f"/subscriptions/{SUB}/resourceGroups/rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
    want = str(
        uuid.uuid5(
            uuid.UUID("6f1c3d2a-8a51-4f0e-9a57-3c0a4be1d7a1"), f"{rg_id}/deallocate-self".lower()
        )
    )
    assert names.legacy_role_guid(SUB, "rg-gpu-rehearsal-nc8as-t4-v3-westeurope") == want


def test_max_price_follows_spot_settings(profile_file):
    assert names.max_price(load_profile(profile_file()).azure) == -1.0
    capped = load_profile(profile_file(("azure", "spot_max_price", "0.4"))).azure
    assert names.max_price(capped) == 0.4
    assert names.max_price(load_profile(profile_file(("azure", "spot", "false"))).azure) is None


def test_subscription_key_is_a_guid_or_empty(profile_file, capsys):
    from rig import cli

    ok = load_profile(profile_file(("azure", "subscription", f'"{SUB}"')))
    assert ok.azure.subscription == SUB
    assert (
        cli.main(["check", "--config", str(profile_file(("azure", "subscription", '"my-sub"')))])
        == 2
    )
    err = capsys.readouterr().err
    assert "azure.subscription: 'my-sub' is not a subscription id" in err


def test_service_principal_from_either_variable_family():
    env = {
        "ARM_CLIENT_ID": "app",
        "AZURE_CLIENT_SECRET": "s3cret",
        "ARM_TENANT_ID": "tenant",
        "AZURE_SUBSCRIPTION_ID": SUB,
    }
    creds = credentials.find_credentials(env, run=lambda _a: pytest.fail("az must not be called"))
    assert creds is not None and creds.kind == "service-principal"
    assert creds.pulumi_env() == {
        "ARM_SUBSCRIPTION_ID": SUB,
        "ARM_CLIENT_ID": "app",
        "ARM_CLIENT_SECRET": "s3cret",
        "ARM_TENANT_ID": "tenant",
    }
    assert "s3cret" not in repr(creds)
    other = "00000000-0000-0000-0000-000000000002"
    assert credentials.find_credentials(env, subscription=other).subscription_id == other  # type: ignore[union-attr]
    assert creds.for_subscription(other).subscription_id == other


def test_az_login_account_or_nothing(monkeypatch):
    monkeypatch.setattr(credentials.shutil, "which", lambda name: "/usr/bin/az")
    shown = json.dumps({"id": SUB, "tenantId": "t", "name": "Pay-As-You-Go"})
    ok = credentials.find_credentials(
        {}, run=lambda a: subprocess.CompletedProcess(a, 0, shown, "")
    )
    assert ok == credentials.Credentials("az-cli", SUB, "t", subscription_name="Pay-As-You-Go")
    assert ok.pulumi_env() == {"ARM_SUBSCRIPTION_ID": SUB}
    logged_out = credentials.find_credentials(
        {}, run=lambda a: subprocess.CompletedProcess(a, 1, "", "Please run 'az login'")
    )
    assert logged_out is None
    monkeypatch.setattr(credentials.shutil, "which", lambda name: None)
    assert credentials.find_credentials({}) is None


def test_service_principal_token_request():
    calls: list[Any] = []

    def http(method: str, url: str, headers: Any, form: Any) -> Response:
        calls.append((method, url, form))
        return (
            Response(200, {"access_token": "tok"})
            if form["client_secret"] == "pw"
            else Response(401, {"error": "invalid_client"})
        )

    creds = credentials.Credentials("service-principal", SUB, "tenant", "app", "pw")
    assert credentials.access_token(creds, http) == "tok"
    method, url, form = calls[0]
    assert (method, url) == ("POST", "https://login.microsoftonline.com/tenant/oauth2/v2.0/token")
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://management.azure.com/.default"
    with pytest.raises(CommandError, match="invalid_client"):
        credentials.access_token(
            credentials.Credentials("service-principal", SUB, "tenant", "app", "bad"), http
        )


def test_the_vms_built_in_role_is_the_documented_power_role_and_can_deallocate():
    """#10.4 review: the role id and its actions, as MicrosoftDocs/azure-docs
    articles/role-based-access-control/built-in-roles/compute.md (ms.date 09/03/2025, commit
    064f7ba2) publishes "Desktop Virtualization Power On Off Contributor" — copied verbatim into
    tests/fixtures/azure/role_power_on_off_contributor.json."""
    from rig.azure.arm import Permission, allowed

    role = json.loads((FIXTURES / "role_power_on_off_contributor.json").read_text())
    assert role["name"] == names.POWER_ROLE_ID and role["roleName"] == names.POWER_ROLE_NAME
    (perm,) = role["permissions"]
    granted = [Permission(tuple(perm["actions"]), tuple(perm["notActions"]))]
    # What the idle watchdog needs (rig/azure/deploy.py deallocate_url) and what a redeploy's
    # start needs, on the VM itself.
    assert allowed(granted, "Microsoft.Compute/virtualMachines/deallocate/action")
    assert allowed(granted, "Microsoft.Compute/virtualMachines/read")
    # Assigned at the VM's scope it grants nothing beyond that VM: every action outside
    # Microsoft.Compute/virtualMachines/ names a resource type that cannot sit under a VM
    # (locations, host pools, Arc machines, Azure Stack HCI, classic alert rules, deployments,
    # resource groups) or is a read. None of them deletes, writes or creates a VM or a disk.
    vm_actions = [a for a in perm["actions"] if a.startswith("Microsoft.Compute/")]
    assert all(a.startswith("Microsoft.Compute/virtualMachines/") for a in vm_actions)
    for forbidden in (
        "Microsoft.Compute/virtualMachines/write",
        "Microsoft.Compute/virtualMachines/delete",
        "Microsoft.Compute/disks/write",
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.Network/publicIPAddresses/write",
    ):
        assert not allowed(granted, forbidden), forbidden
    # Known and accepted: powerOff (an OS-level stop that keeps billing) is in the role too;
    # the watchdog calls deallocate, and `make status` shows a powered-off VM as
    # stopped-but-billing.
    assert allowed(granted, "Microsoft.Compute/virtualMachines/powerOff/action")


def test_az_output_that_is_not_json_is_one_line_not_a_traceback(monkeypatch):
    monkeypatch.setattr(credentials.shutil, "which", lambda name: "/usr/bin/az")

    def garbage(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, "WARNING: upgrade available\n", "")

    assert credentials.find_credentials(env={}, run=garbage) is None
    creds = credentials.Credentials("az-cli", "sub")
    with pytest.raises(CommandError, match="accessToken"):
        credentials.access_token(creds, run=garbage)
