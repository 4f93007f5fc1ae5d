"""rig/azure/preflight.py: everything that would fail `pulumi up` half-way, found before it runs.

Quota (#10.7), resource providers and the deployer's rights (#10.5), against the fake
subscription (tests/fixtures/azure/fake_arm.py, documented payloads).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "azure"))

from fake_arm import SUB, TOKEN, FakeArm, fixture

from rig.azure import preflight
from rig.azure.arm import RestAzure
from rig.problems import CommandError
from rig.profile import load_profile

NC8 = "Standard_NC8as_T4_v3"
RG = "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"


def api(fake: FakeArm) -> RestAzure:
    return RestAzure(SUB, TOKEN, fake)


def usages(fake: FakeArm, *items: tuple[str, int, int]) -> None:
    fake.usage_pages = [
        {
            "value": [
                {
                    "unit": "Count",
                    "currentValue": cur,
                    "limit": lim,
                    "name": {"value": n, "localizedValue": n},
                }
                for n, cur, lim in items
            ]
        }
    ]


def test_spot_draws_on_the_spot_pool_only(profile_file):
    # Azure Spot: "quota for Spot VMs is lowPriorityCores", separate from the regional cores.
    fake = FakeArm()
    usages(
        fake, ("cores", 100, 100), ("lowPriorityCores", 0, 24), ("StandardNCASv3_T4Family", 24, 24)
    )
    checked = preflight.check_size(load_profile(profile_file()), NC8, 8, api(fake))
    assert checked.notes == ["quota lowPriorityCores: 24 of 24 vCPUs free"] and not checked.warnings


def test_spot_quota_too_small(profile_file):
    fake = FakeArm()  # usages.json: lowPriorityCores 0/3
    with pytest.raises(CommandError) as err:
        preflight.check_size(load_profile(profile_file()), NC8, 8, api(fake))
    assert "0/3 used, 8 needed" in str(err.value) and "Usage + quotas" in str(err.value)


def test_on_demand_family_usage_found_whatever_its_case(profile_file):
    # The SKU says standardNCASv3_T4Family, the usage list StandardNCASv3_T4Family.
    fake = FakeArm()
    regular = load_profile(profile_file(("azure", "spot", "false")))
    checked = preflight.check_size(regular, NC8, 8, api(fake))
    assert checked.notes == [
        "quota Standard NCASv3_T4 Family vCPUs: 20 of 24 vCPUs free",
        "quota Total Regional vCPUs: 100 of 100 vCPUs free",
    ]


def test_a_missing_usage_is_a_warning_not_a_silent_pass(profile_file):
    fake = FakeArm()
    usages(fake, ("cores", 0, 100))
    checked = preflight.check_size(load_profile(profile_file()), NC8, 8, api(fake))
    assert checked.notes == []
    (warning,) = checked.warnings
    assert "lowPriorityCores" in warning and "could not be checked" in warning


def test_a_running_vm_of_the_same_stack_needs_no_new_quota(profile_file):
    fake = FakeArm()
    usages(fake, ("lowPriorityCores", 8, 8))  # our own VM holds them
    checked = preflight.check_size(load_profile(profile_file()), NC8, 8, api(fake), in_use=8)
    assert checked.notes == ["quota lowPriorityCores: 0 of 8 vCPUs free"]


def test_spot_refused_restricted_and_not_offered(profile_file):
    profile = load_profile(profile_file())
    fake = FakeArm()  # skus.json: NC4as is restricted here (Location) and not Spot-capable
    with pytest.raises(
        CommandError, match=r"restricted in westeurope.*NotAvailableForSubscription"
    ):
        preflight.check_size(profile, "Standard_NC4as_T4_v3", 4, api(fake))
    fake.skus["value"][2]["restrictions"] = []
    with pytest.raises(CommandError, match=r"does not support Azure Spot.*spot = false"):
        preflight.check_size(profile, "Standard_NC4as_T4_v3", 4, api(fake))
    with pytest.raises(CommandError, match="not offered in westeurope"):
        preflight.check_size(profile, "Standard_D8s_v5", 8, api(fake))


def test_unregistered_provider_names_the_command(profile_file):
    fake = FakeArm()
    fake.providers["Microsoft.DevTestLab"] = "NotRegistered"
    with pytest.raises(CommandError) as err:
        preflight.check_providers(api(fake))
    assert "az provider register --namespace Microsoft.DevTestLab --wait" in str(err.value)


@pytest.mark.parametrize(
    ("payload", "missing"),
    [
        ("permissions_owner.json", None),
        ("permissions_contributor_uaa.json", None),
        ("permissions_contributor.json", "Microsoft.Authorization/roleAssignments/write"),
        ("permissions_reader.json", "Microsoft.Resources/subscriptions/resourceGroups/write"),
    ],
)
def test_the_deployers_rights_before_anything_exists(payload, missing):
    fake = FakeArm()
    fake.permissions = fixture(payload)
    if missing is None:
        preflight.check_permissions(api(fake), RG)
        return
    with pytest.raises(CommandError) as err:
        preflight.check_permissions(api(fake), RG)
    msg = str(err.value)
    assert missing in msg and "nothing was created" in msg and "Owner" in msg
    # No resource group yet: asked at the subscription's scope.
    asked = [u for _, u in fake.calls if "/permissions" in u]
    assert asked[-1].startswith(
        f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Authorization/permissions"
    )


def test_rights_are_asked_on_the_resource_group_once_it_exists():
    fake = FakeArm()
    fake.add_group(RG)
    preflight.check_permissions(api(fake), RG)
    asked = [u for _, u in fake.calls if "/permissions" in u]
    assert (
        f"/resourcegroups/{RG}/providers/Microsoft.Authorization/permissions".lower()
        in asked[-1].lower()
    )
