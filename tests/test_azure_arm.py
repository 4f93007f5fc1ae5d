"""rig/azure/arm.py (ARM REST) against the fake subscription in tests/fixtures/azure/fake_arm.py.

Every payload is in the shape the Azure REST reference documents (see the fixtures' README for
the page behind each); nothing here reaches Azure.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
sys.path.insert(0, str(FIXTURES))

from fake_arm import SUB, TOKEN, FakeArm, fixture  # noqa: E402

from rig.azure import arm  # noqa: E402
from rig.azure.errors import hint_for  # noqa: E402
from rig.problems import CommandError  # noqa: E402

RG = "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"


def api(fake: FakeArm, slept: list[float] | None = None) -> arm.RestAzure:
    return arm.RestAzure(SUB, TOKEN, fake, sleep=(slept if slept is not None else []).append)


def test_usages_follow_next_link_and_keep_each_spelling():
    # Usage - List pages with nextLink; the family is spelled StandardNCASv3_T4Family there.
    fake = FakeArm()
    usages = api(fake).usages("westeurope")
    assert [u.name for u in usages] == [
        "cores",
        "StandardNCASv3_T4Family",
        "lowPriorityCores",
        "standardDSv5Family",
    ]
    assert (usages[1].current, usages[1].limit, usages[1].free) == (4, 24, 20)
    assert len([c for c in fake.calls if "/usages" in c[1]]) == 2


def test_requests_carry_the_token_and_a_bad_one_is_refused_in_one_line():
    fake = FakeArm()
    with pytest.raises(CommandError) as err:
        arm.RestAzure(SUB, "stale", fake).usages("westeurope")
    msg = str(err.value)
    assert "\n" not in msg and "401" in msg and "az account show" in msg and SUB in msg


def test_sku_parsing_spot_capability_and_restrictions():
    items = fixture("skus.json")["value"]
    nc8 = arm.parse_sku(items, "westeurope", "Standard_NC8as_T4_v3")
    assert nc8 == arm.SkuInfo(
        "Standard_NC8as_T4_v3", "standardNCASv3_T4Family", 8, spot_capable=True, restricted=""
    )  # a zone restriction does not bar a VM that is not pinned to a zone
    nc4 = arm.parse_sku(items, "westeurope", "Standard_NC4as_T4_v3")
    assert nc4 is not None and not nc4.spot_capable
    assert nc4.restricted == "NotAvailableForSubscription"
    assert arm.parse_sku(items, "eastus", "Standard_NC8as_T4_v3") is None
    assert arm.parse_sku(items, "westeurope", "Premium_LRS") is None  # a disk, not a VM


@pytest.mark.parametrize(
    ("payload", "action", "allowed"),
    [
        # Owner: actions ["*"].
        ("permissions_owner.json", "Microsoft.Authorization/roleAssignments/write", True),
        # Contributor: "*" minus Microsoft.Authorization/*/Write (built-in roles reference).
        ("permissions_contributor.json", "Microsoft.Compute/virtualMachines/write", True),
        ("permissions_contributor.json", "Microsoft.Authorization/roleAssignments/write", False),
        # Contributor + User Access Administrator: the second role adds Microsoft.Authorization/*.
        ("permissions_contributor_uaa.json", "Microsoft.Authorization/roleAssignments/write", True),
        ("permissions_reader.json", "Microsoft.Compute/virtualMachines/read", True),
        ("permissions_reader.json", "Microsoft.Compute/virtualMachines/write", False),
    ],
)
def test_permissions_are_evaluated_per_role_with_wildcards(payload, action, allowed):
    fake = FakeArm()
    fake.permissions = fixture(payload)
    perms = api(fake).permissions(f"/subscriptions/{SUB}")
    assert arm.allowed(perms, action) is allowed
    assert arm.allowed(perms, action.upper()) is allowed  # actions compare case-insensitively
    assert fake.calls[-1][1].startswith(
        f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Authorization/"
        "permissions?api-version=2022-04-01"
    )


def test_instance_view_power_state_and_a_missing_vm():
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="deallocated")
    view = api(fake).instance_view(vm_id)
    assert view == arm.InstanceView("deallocated", "succeeded")
    assert arm.parse_instance_view(fixture("instance_view_running.json")).power_state == "running"
    assert api(fake).instance_view(vm_id.replace("vm-rehearsal", "gone")) is None


def test_vm_start_answers_202_and_is_followed_to_its_end():
    # Deallocate/start answer 202; the outcome is at Azure-AsyncOperation (REFERENCE, Azure).
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="deallocated")
    slept: list[float] = []
    api(fake, slept).vm_action(vm_id, "start")
    assert fake.power[vm_id.lower()] == "running"
    polls = [c for c in fake.calls if "/operations/" in c[1]]
    assert len(polls) == 3 and slept == [5.0, 5.0, 5.0]  # two InProgress, then Succeeded


def test_a_failed_operation_is_an_error_with_its_code_and_fix():
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="deallocated")
    fake.fail_next["start"] = fixture("errors/AllocationFailed.json")["error"]
    with pytest.raises(CommandError) as err:
        api(fake).vm_action(vm_id, "start")
    msg = str(err.value)
    assert "AllocationFailed" in msg and "no capacity" in msg and "\n" not in msg
    assert fake.power[vm_id.lower()] == "deallocated"


def test_resource_group_deletion_waits_for_location_and_404_means_gone():
    fake = FakeArm()
    fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    client = api(fake)
    assert client.resource_group_exists(RG)
    assert client.delete_resource_group(RG) is True
    assert client.resource_group_exists(RG)  # ARM still answers for a moment ("Deleting")
    assert not client.resource_group_exists(RG)
    assert [c for c in fake.calls if c[0] == "DELETE"]
    assert client.delete_resource_group(RG) is False


def test_tag_scan_lists_groups_and_resources_across_pages():
    # Resources - List with $filter=tagName eq 'project' and tagValue eq 'gpu-rehearsal', paged
    # by nextLink. Tags are not inherited from the group (Microsoft Learn, "Use tags to organize
    # your Azure resources"), so the implicit OS disk, which the program does not tag, is not in
    # the tag scan: the scan must also find groups by name (resource_groups below).
    fake = FakeArm()
    fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    found = api(fake).tagged(("project", "gpu-rehearsal"))
    kinds = {t.kind for t in found}
    assert "Microsoft.Resources/resourceGroups" in kinds
    assert "Microsoft.Compute/virtualMachines" in kinds and "Microsoft.Compute/disks" not in kinds
    assert len(found) == 1 + 6  # the group + the six tagged resources, over four pages
    assert "tagName+eq+%27project%27" in fake.calls[-1][1].replace("%20", "+")
    assert any("%24skiptoken" in url or "$skiptoken" in url for _, url in fake.calls)


def test_resource_groups_are_listed_by_name_tag_or_no_tag():
    fake = FakeArm()
    fake.add_group("rg-gpu-rehearsal-old-eastus", tagged=False)  # tag removed by hand
    fake.add_group("someone-elses", tagged=False)
    fake.add_group(RG)
    assert sorted(api(fake).resource_groups()) == sorted(
        ["rg-gpu-rehearsal-old-eastus", "someone-elses", RG]
    )


def test_throttling_is_retried_after_retry_after_then_given_up_in_one_line():
    # ARM answers 429 with Retry-After (Microsoft Learn, "Understand how Azure Resource Manager
    # throttles requests"); a scan must wait and retry, not report "could not verify" at once.
    fake = FakeArm()
    fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    fake.throttle["/roleAssignments"] = 2
    slept: list[float] = []
    assert len(api(fake, slept).role_assignments()) == 1
    assert slept == [7.0, 7.0]
    fake.throttle["/roleAssignments"] = 99
    with pytest.raises(CommandError) as err:
        api(fake, slept).role_assignments()
    assert "TooManyRequests" in str(err.value) and "\n" not in str(err.value)


def test_a_link_to_another_host_never_gets_the_token():
    fake = FakeArm()
    seen: list[str] = []

    def evil(method: str, url: str, headers: Any, form: Any) -> Any:
        seen.append(url)
        if "evil.example" in url:
            raise AssertionError("token sent to a foreign host")
        assert fake(method, url, headers, form).status == 200  # a real first page
        return arm.Response(200, {"value": [], "nextLink": "https://evil.example/steal"})

    with pytest.raises(CommandError, match="not following it with your token"):
        arm.RestAzure(SUB, TOKEN, evil).role_assignments()
    assert not any("evil" in u for u in seen)


def test_a_202_without_an_operation_to_follow_is_not_taken_for_done():
    # VirtualMachines_Deallocate answers 202 with Location / Azure-AsyncOperation; without them
    # the outcome is unknown — a deallocation reported done but never made would bill.
    def bare(method: str, url: str, headers: Any, form: Any) -> Any:
        return arm.Response(202, {}, {})

    with pytest.raises(CommandError, match="named no operation to follow"):
        arm.RestAzure(SUB, TOKEN, bare, sleep=lambda s: None).vm_action(
            f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/"
            "virtualMachines/vm",
            "deallocate",
        )


@pytest.mark.parametrize(("status", "ok"), [("succeeded", True), ("Canceled", False)])
def test_async_operation_status_is_read_case_insensitively(status, ok):
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")

    def http(method: str, url: str, headers: Any, form: Any) -> Any:
        if "/operations/" in url:
            return arm.Response(200, {"status": status, "error": {"code": "OperationCanceled"}})
        return fake(method, url, headers, form)

    client = arm.RestAzure(SUB, TOKEN, http, sleep=lambda s: None)
    if ok:
        client.vm_action(vm_id, "deallocate")
    else:
        with pytest.raises(CommandError, match="OperationCanceled"):
            client.vm_action(vm_id, "deallocate")


def test_usage_items_with_missing_fields_are_skipped_not_a_crash():
    # Usage - List items: {"unit", "currentValue", "limit", "name": {"value", "localizedValue"}}.
    assert arm.parse_usage({"currentValue": 1, "limit": 2}) is None
    assert arm.parse_usage({"name": {"value": "cores"}, "limit": 2}) is None
    assert arm.parse_usage({"name": {"value": "cores"}, "currentValue": "x", "limit": 2}) is None
    assert arm.parse_usage(
        {"name": {"value": "cores"}, "currentValue": 1, "limit": 2}
    ) == arm.Usage("cores", "cores", 1, 2)  # no localizedValue: the name stands in


def test_activity_times_keep_their_zone_and_bad_ones_are_dropped():
    assert arm.parse_event(
        {"eventTimestamp": "2026-11-28T11:30:00.1234567+01:00", "status": {"value": "Succeeded"}}
    ).at == dt.datetime(2026, 11, 28, 10, 30, 0, 123456, tzinfo=dt.UTC)
    assert arm.parse_event({"eventTimestamp": "yesterday"}) is None
    assert arm.parse_event({}) is None


def test_role_assignments_list_and_delete():
    # RoleAssignments_ListForScope / RoleAssignments_Delete (2022-04-01 examples): 200 with the
    # deleted assignment, 204 when it is already gone.
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    client = api(fake)
    (ours,) = client.role_assignments()
    assert ours.scope == vm_id and ours.description.startswith("gpu-rehearsal:")
    assert ours.role_definition_id.endswith("40c5ff49-9181-41f8-ae61-143b0e78555e")
    client.delete_role_assignment(ours.id)
    client.delete_role_assignment(ours.id)  # 204: fine
    assert client.role_assignments() == []


def test_custom_roles_list_get_and_delete():
    # GetRoleDefinitionById / DeleteRoleDefinition (2022-04-01 examples). A role assignable in
    # one resource group is listed at the subscription only with atScopeAndBelow(); a GET by
    # its GUID finds it too; a role with assignments refuses deletion.
    fake = FakeArm()
    rg_scope = f"/subscriptions/{SUB}/resourceGroups/{RG}"
    fake.add_custom_role("1111-guid", "gpu-rehearsal deallocate vm-x 1a2b3c4d", rg_scope)
    client = api(fake)
    (listed,) = client.custom_roles(f"/subscriptions/{SUB}")
    assert "atScopeAndBelow()" in urllib.parse.unquote(fake.calls[-1][1])
    assert client.custom_roles(rg_scope) == [listed]
    assert listed.role_name.startswith("gpu-rehearsal deallocate ")
    assert client.role_definition("1111-guid") == listed
    assert client.role_definition("2222-guid") is None
    aid = fake.add_assignment(f"{rg_scope}/providers/x/vm", "p", listed.id)
    with pytest.raises(CommandError, match="RoleDefinitionHasAssignments"):
        client.delete_role_definition("1111-guid")
    client.delete_role_assignment(aid)
    client.delete_role_definition("1111-guid")
    assert client.role_definition("1111-guid") is None


def test_activity_log_events():
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    fake.add_event(
        vm_id,
        "Microsoft.Compute/virtualMachines/evictSpotVM/action",
        "2026-11-28T11:30:00.1234567Z",
    )
    since = dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC)
    (event,) = api(fake).activity(vm_id, since)
    assert event.operation.endswith("/evictSpotVM/action") and event.status == "Succeeded"
    assert event.at == dt.datetime(2026, 11, 28, 11, 30, 0, 123456, tzinfo=dt.UTC)
    assert "eventTimestamp+ge+%272026-11-28T09%3A00%3A00Z%27" in fake.calls[-1][1].replace(
        "%20", "+"
    )


def test_subscription_name_and_provider_registration():
    fake = FakeArm()
    fake.providers["Microsoft.DevTestLab"] = "NotRegistered"
    client = api(fake)
    assert client.subscription_name() == "Rehearsal Pay-As-You-Go"
    assert client.provider_state("Microsoft.Compute") == "Registered"
    assert client.provider_state("Microsoft.DevTestLab") == "NotRegistered"


ERROR_FIXES = {
    # code -> a phrase the fix must contain (#10.8); messages: tests/fixtures/azure/errors/
    "AllocationFailed": "no capacity for this size in the location",
    "ZonalAllocationFailed": "requested zone",
    "OverconstrainedAllocationRequest": "every constraint",
    "SkuNotAvailable": "az vm list-skus",
    "OperationNotAllowed": "Usage + quotas",
    "MissingSubscriptionRegistration": "az provider register --namespace Microsoft.DevTestLab",
    "VariablePricingIsNotSupportedForThisVMSize": "spot = false",
}


@pytest.mark.parametrize(("code", "fix"), sorted(ERROR_FIXES.items()))
def test_each_documented_error_code_gets_its_fix(code, fix):
    body = fixture(f"errors/{code}.json")
    assert fix in (hint_for(json.dumps(body)) or "")
    # The same fix reaches the user when ARM answers the code directly.
    fake = FakeArm()
    fake.refuse["/usages"] = arm.Response(409, body)
    with pytest.raises(CommandError) as err:
        api(fake).usages("westeurope")
    assert code in str(err.value) and fix in str(err.value) and "\n" not in str(err.value)


def test_pulumi_already_existing_resource_gets_its_fix():
    # pulumi-azure-native provider: fmt.Errorf("cannot create already existing resource %q", id)
    text = (
        "error: azure-native:resources:ResourceGroup resource 'rg' failed: cannot create "
        f'already existing resource "/subscriptions/{SUB}/resourceGroups/{RG}"'
    )
    fix = hint_for(text) or ""
    assert "make destroy" in fix and "by name" in fix
    assert hint_for("Spot: This size does not support Azure Spot (OperationNotAllowed)") == (
        "set [azure] spot = false in rig.toml to deploy this size on demand (full price)"
    )


# Role permissions as MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/
# privileged.md and general.md publish them (actions / notActions / dataActions). Azure
# wildcards span path segments ("Microsoft.Authorization/*/Write" covers roleAssignments/write),
# action names compare case-insensitively, NotActions subtract per role, and a role's
# dataActions never grant a control-plane action.
RBAC_ADMIN = arm.Permission(
    (
        "Microsoft.Authorization/roleAssignments/write",
        "Microsoft.Authorization/roleAssignments/delete",
        "*/read",
        "Microsoft.Support/*",
    )
)
CONTRIBUTOR = arm.Permission(("*",), ("Microsoft.Authorization/*/Write",))
DATA_ONLY = arm.Permission(())  # e.g. Storage Blob Data Owner: dataActions only


@pytest.mark.parametrize(
    ("roles", "action", "allowed"),
    [
        ([RBAC_ADMIN], "Microsoft.Authorization/roleAssignments/write", True),
        ([RBAC_ADMIN], "Microsoft.Authorization/roleDefinitions/write", False),
        ([RBAC_ADMIN], "Microsoft.Compute/virtualMachines/write", False),
        ([RBAC_ADMIN], "microsoft.compute/VIRTUALMACHINES/read", True),
        ([CONTRIBUTOR], "Microsoft.Authorization/roleAssignments/write", False),
        ([CONTRIBUTOR], "Microsoft.Authorization/locks/write", False),
        ([CONTRIBUTOR], "Microsoft.DevTestLab/schedules/write", True),
        ([CONTRIBUTOR, RBAC_ADMIN], "Microsoft.Authorization/roleAssignments/write", True),
        ([CONTRIBUTOR, RBAC_ADMIN], "Microsoft.Compute/virtualMachines/write", True),
        ([DATA_ONLY], "Microsoft.Compute/virtualMachines/read", False),
        ([], "Microsoft.Compute/virtualMachines/read", False),
    ],
)
def test_rights_check_with_wildcards_notactions_and_several_roles(roles, action, allowed):
    assert arm.allowed(roles, action) is allowed


def test_permissions_ignore_data_actions_in_the_payload():
    fake = FakeArm()
    fake.permissions = {
        "value": [
            {"actions": [], "notActions": [], "dataActions": ["*"], "notDataActions": []},
        ]
    }
    perms = api(fake).permissions(f"/subscriptions/{SUB}")
    assert not arm.allowed(perms, "Microsoft.Compute/virtualMachines/write")


def test_the_telling_code_in_error_details_gets_its_fix():
    # ARM error envelope: {"error": {"code", "message", "details": [{"code", "message"}]}}
    # (Microsoft Learn, "Troubleshoot common Azure deployment errors"): the quota code may only
    # be in details.
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="deallocated")
    fake.refuse["/start"] = arm.Response(
        409,
        {
            "error": {
                "code": "Conflict",
                "message": "The operation could not be completed.",
                "details": [
                    {
                        "code": "QuotaExceeded",
                        "message": "Operation could not be completed as it results in "
                        "exceeding approved Total Regional Spot vCPUs quota.",
                    }
                ],
            }
        },
    )
    with pytest.raises(CommandError) as err:
        api(fake).vm_action(vm_id, "start")
    msg = str(err.value)
    assert "QuotaExceeded" in msg and "request more in the portal" in msg and "\n" not in msg


def test_an_expired_token_is_refreshed_once_then_refused_in_one_line():
    # An `az` access token lives about an hour; a destroy waiting out a group deletion can
    # outlive it: on 401 the client asks for a fresh one once.
    fake = FakeArm()
    fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    fresh = iter([TOKEN])
    client = arm.RestAzure(SUB, "expired", fake, refresh=lambda: next(fresh))
    assert len(client.role_assignments()) == 1
    stale = arm.RestAzure(SUB, "expired", fake, refresh=lambda: "still-expired")
    with pytest.raises(CommandError, match="401"):
        stale.role_assignments()
