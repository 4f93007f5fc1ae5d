"""`make status` for Azure VMs: asks Azure, not the state file (registered in rig.status).

In the subscription the state records: the VM's instance view (power state) and the activity
log since the deploy (when it started, was deallocated or evicted), so the row shows what bills
now and the $ so far: compute while allocated, OS disk and public IP all along (they bill until
`make destroy`, deallocated or not).

Power states and billing (Microsoft Learn, "States and billing status of Azure Virtual
Machines"): starting/running/stopping/stopped bill compute — "stopped" is an OS shutdown, the
host is still allocated; deallocating/deallocated do not.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

from rig.azure.arm import ActivityEvent, AzureApi, RestAzure
from rig.azure.credentials import NO_CREDENTIALS, access_token, find_credentials
from rig.azure.names import subscription_of
from rig.cost import HourlyRates, stopped_usd_per_day
from rig.problems import CommandError
from rig.state import VmState

BILLING = {"starting", "running", "stopping", "stopped"}
# Compute billing ends when these succeed; deleting the VM ends it too.
STOPS = ("/deallocate/action", "/evictSpotVM/action", "Microsoft.Compute/virtualMachines/delete")
EVICTED = "/evictSpotVM/action"
STARTS = ("/start/action",)

ApiFor = Callable[[str], AzureApi]


@functools.cache
def _rest_api(subscription_id: str) -> AzureApi:
    creds = find_credentials(subscription=subscription_id)
    if creds is None:
        raise CommandError(NO_CREDENTIALS)
    return RestAzure(subscription_id, access_token(creds), refresh=lambda: access_token(creds))


def _parse(t: str) -> dt.datetime:
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))


def compute_hours(events: list[ActivityEvent], since: dt.datetime, now: dt.datetime) -> float:
    """Hours the VM was allocated since `since`, from the activity log's succeeded starts and
    deallocations (the DevTestLab schedule, the watchdog and evictions all log one)."""
    running, began, total = True, since, 0.0
    for ev in sorted(events, key=lambda e: e.at):
        if ev.status != "Succeeded" or ev.at < since:
            continue
        if ev.operation.endswith(STOPS) and running:
            total += (ev.at - began).total_seconds()
            running = False
        elif ev.operation.endswith(STARTS) and not running:
            began, running = ev.at, True
    if running:  # (when Azure says it is not billing now, this is an upper bound: said so)
        total += (now - began).total_seconds()
    return max(total, 0.0) / 3600


def live_row(state: VmState, now: dt.datetime, api_for: ApiFor | None = None) -> dict[str, Any]:
    """The status row's live fields; CommandError (one line) when Azure cannot be asked."""
    vm_id = state.ids.get("vm_id", "")
    sub = state.ids.get("subscription_id") or subscription_of(vm_id)
    if not vm_id or not sub:
        raise CommandError(f"{state.name}: the state file records no VM id — run make destroy")
    api = (api_for or _rest_api)(sub)
    rates_json = state.extra.get("rates", {})
    rates = HourlyRates(
        compute=float(rates_json.get("compute_usd_per_hour", state.price.usd_per_hour)),
        disk=float(rates_json.get("disk_usd_per_hour", 0.0)),
        public_ip=float(rates_json.get("public_ip_usd_per_hour", 0.0)),
    )
    since = _parse(state.deployed_at)
    alive_h = max((now - since).total_seconds(), 0) / 3600
    view = api.instance_view(vm_id)
    if view is None:
        return _gone(api, state, rates, since, now, alive_h, sub)
    power = view.power_state or "unknown"
    # A VM whose instance view names no power state (provisioning failed or in progress,
    # "PowerState/unknown") may hold a host: counted as billing, said to be an upper bound.
    billing = power in BILLING or power == "unknown"
    notes = []
    if power == "unknown":
        notes.append("Azure reports no power state: counted as running (upper bound)")
    try:
        events = api.activity(vm_id, since, now)
    except CommandError as exc:
        events = None
        notes.append(f"activity log unreadable ({exc}): compute hours are an upper bound")
    hours = compute_hours(events or [], since, now)
    stops = [e for e in events or [] if e.status == "Succeeded" and e.operation.endswith(STOPS)]
    if not billing and events is not None and not stops:
        notes.append("no deallocation in the activity log: compute hours are an upper bound")
    label = power
    if power == "stopped":
        label = "stopped-but-billing"
        notes.append(
            "stopped by an OS shutdown: compute still bills — deallocate it (az vm deallocate) "
            "or make destroy"
        )
    elif power in ("deallocated", "deallocating"):
        if state.spot and stops and max(stops, key=lambda e: e.at).operation.endswith(EVICTED):
            label = "evicted"
        notes.append(
            f"disk and IP still bill ${stopped_usd_per_day(rates):.2f}/day until make destroy"
            + ("; make deploy-azure starts it again" if label == "evicted" else "")
        )
    if state.spot:
        notes.append("compute at the deploy-time spot price")
    usd_compute = round(hours * rates.compute, 2)
    extras = round(alive_h * rates.stopped, 2)
    return {
        "state": label,
        "hours_billed": round(hours, 2),
        "usd_compute": usd_compute,
        "usd_stopped_extras": extras,
        "usd_total": round(usd_compute + extras, 2),
        "usd_per_hour": round(rates.running if billing else rates.stopped, 4),
        "note": "; ".join(notes),
    }


def _gone(
    api: AzureApi,
    state: VmState,
    rates: HourlyRates,
    since: dt.datetime,
    now: dt.datetime,
    alive_h: float,
    sub: str,
) -> dict[str, Any]:
    """The VM is not in Azure any more. Its public IP (and a disk kept with deleteOption
    Detach) live in the resource group and keep billing until the group goes: when the group
    is still there, say so and count them, never "$0/h"."""
    group = state.ids.get("resource_group", "")
    left = bool(group) and api.resource_group_exists(group)
    try:
        events: list[ActivityEvent] | None = api.activity(state.ids["vm_id"], since, now)
    except CommandError:
        events = None
    hours = compute_hours(events or [], since, now)  # a delete event ends the compute hours
    usd_compute = round(hours * rates.compute, 2)
    extras = round(alive_h * rates.stopped, 2)
    note = (
        f"the VM no longer exists in subscription {sub}, but resource group {group} does: its "
        f"public IP (and any disk left) still bill up to ${rates.stopped:.3f}/h — run make "
        "destroy"
        if left
        else f"the VM no longer exists in subscription {sub} — run make destroy to verify that "
        "nothing else is left and to clear .state/"
    )
    return {
        "state": "vm-gone-group-left" if left else "gone",
        "hours_billed": round(hours, 2),
        "usd_compute": usd_compute,
        "usd_stopped_extras": extras,
        "usd_total": round(usd_compute + extras, 2),
        "usd_per_hour": round(rates.stopped, 4) if left else 0.0,
        "note": note + "; $ so far are upper bounds (when it was deleted is not known here)",
    }
