"""`make status` for Azure VMs asks Azure (#10.12): power state from the instance view, hours
from the activity log, compute / disk / public IP $ so far — in the subscription the state
records. Against the fake subscription (documented payloads, tests/fixtures/azure/).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "azure"))

from fake_arm import SUB, TOKEN, FakeArm

from rig import cli, state, status
from rig.azure import status as azure_status
from rig.azure.arm import RestAzure
from rig.problems import CommandError

T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
RG = "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
RATES = {
    "compute_usd_per_hour": 0.19,
    "compute_cap_usd_per_hour": 0.84,
    "disk_usd_per_hour": 0.0573,
    "public_ip_usd_per_hour": 0.005,
}


def vm_state(vm_id: str, spot: bool = True) -> state.VmState:
    return state.VmState(
        name="azure-Standard_NC8as_T4_v3",
        cloud="azure",
        region="westeurope",
        instance_type="Standard_NC8as_T4_v3",
        gpu="t4",
        host="198.51.100.20",
        ssh_user="azureuser",
        ssh_key=".state/keys/id_ed25519",
        spot=spot,
        price=state.Price(0.19, "spot", "azure retail prices API", state.iso(T0), 0.84),
        deployed_at=state.iso(T0),
        deadline=state.iso(T0 + dt.timedelta(hours=4)),
        ids={"subscription_id": SUB, "vm_id": vm_id, "resource_group": RG},
        extra={"rates": RATES},
    )


def row(fake: FakeArm, s: state.VmState, hours: float) -> dict:
    asked: list[str] = []

    def api_for(sub: str) -> RestAzure:
        asked.append(sub)
        return RestAzure(sub, TOKEN, fake)

    out = azure_status.live_row(s, T0 + dt.timedelta(hours=hours), api_for)
    assert asked == [SUB]  # the recorded subscription, not the signed-in one
    return out


def test_running_vm_bills_compute_disk_and_ip():
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    r = row(fake, vm_state(vm_id), 2)
    assert r["state"] == "running" and r["hours_billed"] == 2.0
    assert r["usd_compute"] == 0.38 and r["usd_stopped_extras"] == round(2 * 0.0623, 2)
    assert r["usd_total"] == round(0.38 + 0.12, 2) and r["usd_per_hour"] == round(0.19 + 0.0623, 4)
    assert "deploy-time spot price" in r["note"]


def test_an_os_shutdown_is_stopped_but_billing():
    # "Stopped" keeps the host allocated: compute still bills (REFERENCE, Azure).
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="stopped")
    r = row(fake, vm_state(vm_id), 3)
    assert r["state"] == "stopped-but-billing" and r["hours_billed"] == 3.0
    assert r["usd_per_hour"] == round(0.19 + 0.0623, 4) and "az vm deallocate" in r["note"]


def test_an_evicted_spot_vm_bills_disk_and_ip_only_since_the_eviction():
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="deallocated")
    fake.add_event(
        vm_id,
        "Microsoft.Compute/virtualMachines/evictSpotVM/action",
        "2026-11-28T10:30:00.0000000Z",
    )
    r = row(fake, vm_state(vm_id), 5)
    assert r["state"] == "evicted" and r["hours_billed"] == 1.5
    assert r["usd_compute"] == round(1.5 * 0.19, 2) and r["usd_stopped_extras"] == round(
        5 * 0.0623, 2
    )
    assert r["usd_per_hour"] == 0.0623
    assert (
        "/day until make destroy" in r["note"] and "make deploy-azure starts it again" in r["note"]
    )


def test_deallocated_by_the_schedule_then_started_again():
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="deallocated")
    for op, at in [
        ("deallocate", "2026-11-28T13:00:00Z"),  # the shutdown schedule at the deadline
        ("start", "2026-11-28T15:00:00Z"),
        ("deallocate", "2026-11-28T16:00:00Z"),  # the idle watchdog
    ]:
        fake.add_event(vm_id, f"Microsoft.Compute/virtualMachines/{op}/action", at)
    fake.add_event(
        vm_id, "Microsoft.Compute/virtualMachines/start/action", "2026-11-28T17:00:00Z", "Failed"
    )
    r = row(fake, vm_state(vm_id), 10)
    assert r["state"] == "deallocated" and r["hours_billed"] == 5.0  # 09-13 and 15-16


def test_a_vm_gone_from_azure_says_so():
    fake = FakeArm()
    fake.ghost_listings = 0
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    fake.remove_group(RG)
    r = row(fake, vm_state(vm_id), 1)
    assert r["state"] == "gone" and r["usd_per_hour"] == 0.0 and "make destroy" in r["note"]


def test_a_vm_deleted_out_of_band_leaves_its_ip_billing_and_status_says_so():
    """Deleting the VM in the portal removes the VM (and, deleteOption Delete, its OS disk and
    NIC) but not the Standard public IP, which bills per hour until deleted (infracost golden
    public_ip_test: $0.005/h). Status must not say $0/h while the group still holds it."""
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    fake.power.pop(vm_id.lower())  # the VM is gone, the group and its IP are not
    fake.add_event(vm_id, "Microsoft.Compute/virtualMachines/delete", "2026-11-28T11:00:00Z")
    r = row(fake, vm_state(vm_id), 5)
    assert r["state"] == "vm-gone-group-left"
    assert r["usd_per_hour"] == round(
        RATES["disk_usd_per_hour"] + RATES["public_ip_usd_per_hour"], 4
    )
    assert r["hours_billed"] == 2.0  # 09:00 until the delete at 11:00
    assert RG in r["note"] and "make destroy" in r["note"]


def test_no_power_state_counts_as_running_not_as_free():
    # Instance view statuses without a PowerState/* code (a failed or unfinished provisioning)
    # or "PowerState/unknown": the host may be held, so the row is an upper bound.
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3", power="unknown")
    r = row(fake, vm_state(vm_id), 2)
    assert r["state"] == "unknown" and r["usd_per_hour"] > RATES["compute_usd_per_hour"]
    assert "upper bound" in r["note"]


def test_when_azure_cannot_be_asked_the_row_is_unverified(monkeypatch):
    from rig.azure import credentials

    monkeypatch.setattr(azure_status, "find_credentials", lambda **kw: None)
    azure_status._rest_api.cache_clear()
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    with pytest.raises(CommandError, match="az login"):
        azure_status.live_row(vm_state(vm_id), T0)
    cli._parser()  # as `python -m rig status` does: registers the Azure provider
    (r,) = status.status_rows([vm_state(vm_id)], T0)
    assert r["verified"] is False and "could not ask azure" in r["note"]
    assert credentials.NO_CREDENTIALS.split(" — ")[0] in r["note"]


def test_python_m_rig_status_registers_the_azure_provider(monkeypatch, tmp_path, capsys):
    cli._parser()  # loads rig.azure_cli, which registers the provider
    assert status.LIVE_PROVIDERS["azure"] == "rig.azure.status:live_row"
    fake = FakeArm()
    vm_id = fake.add_stack(RG, "vm-rehearsal-nc8as-t4-v3")
    monkeypatch.setattr(azure_status, "_rest_api", lambda sub: RestAzure(sub, TOKEN, fake))
    state.write(vm_state(vm_id), tmp_path)
    assert cli.main(["status", "--state-dir", str(tmp_path), "--json"]) == 0
    import json

    (r,) = json.loads(capsys.readouterr().out)
    assert r["verified"] is True and r["state"] == "running" and "usd_total" in r
