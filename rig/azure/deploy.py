"""`python -m rig deploy azure` (make deploy-azure).

plan -> preflight (Pulumi CLI, credentials, resource providers, the deployer's rights, offering,
Spot, quota, live prices) -> the cloud-side stop and the worst case it enforces -> a
confirmation naming subscription, location, size, $/h and worst case (no terminal and no --yes:
refused) -> `pulumi up` per size -> state file -> the VM started if it was deallocated
(evicted) -> SSH -> provisioning. A failed `pulumi up` records what it created and deallocates
a VM it left behind.
"""

from __future__ import annotations

import datetime as dt
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from rig.azure.arm import AzureApi
from rig.azure.credentials import NO_CREDENTIALS, Credentials
from rig.azure.deps import Deps
from rig.azure.names import (
    PROJECT_TAG,
    AzureNames,
    names_for,
    resource_group_id,
    subscription_of,
)
from rig.azure.preflight import check_permissions, check_providers, check_size
from rig.azure.pricing import VmCost, vm_cost
from rig.azure.pulumi_cli import FileBackend, Pulumi, backend_dir
from rig.azure.schedule import SCHEDULE_LEAD, SCHEDULE_MARGIN, CloudStop, cloud_stop
from rig.catalog import Catalog, load_catalog
from rig.cost import HourlyRates, stopped_usd_per_day, worst_case_text, worst_case_usd
from rig.estimate import estimate
from rig.plan import print_plan
from rig.problems import CommandError
from rig.profile import Profile
from rig.standin import azure_standin
from rig.state import SSH_PORT, VmState, ensure_writable, iso, read_all, write
from rig.version import RIG

ARM = "https://management.azure.com"
VM_TYPE = "azure-native:compute:VirtualMachine"
IP_TYPE = "azure-native:network:PublicIPAddress"
SCHEDULE_TYPE = "azure-native:devtestlab:GlobalSchedule"
ALLOCATED = {"running", "starting", "stopping", "stopped", "deallocating"}  # holds quota
NOT_RUNNING = {"deallocated", "deallocating", "stopped", "stopping"}


def vm_id_for(subscription_id: str, names: AzureNames) -> str:
    return (
        f"{resource_group_id(subscription_id, names.resource_group)}/providers/"
        f"Microsoft.Compute/virtualMachines/{names.vm}"
    )


def _ssh_key(profile: Profile, deps: Deps) -> tuple[str, Path]:
    """(public key text, private key path): the profile's key, or one generated under .state/."""
    if profile.access.ssh_public_key:
        public = profile.access.key_path(profile.base_dir)
        return public.read_text(encoding="utf-8").strip(), public.with_suffix("")
    private = deps.state_dir / "keys" / "id_ed25519"
    if not private.exists():
        deps.keygen(private)
    return private.with_suffix(".pub").read_text(encoding="utf-8").strip(), private


def _ssh_source(profile: Profile, deps: Deps) -> str:
    net = profile.access.network()
    return str(net) if net is not None else f"{deps.public_ip()}/32"


def _state(
    profile: Profile,
    names: AzureNames,
    creds: Credentials,
    host: str,
    vm_id: str,
    cost: VmCost,
    stop: CloudStop,
    key: Path,
    now: dt.datetime,
    **extra: Any,
) -> VmState:
    cat = load_catalog()
    image = cat.images_of("azure")[profile.azure.image]
    return VmState(
        name=names.target,
        cloud="azure",
        region=profile.azure.location,
        instance_type=names.size,
        gpu=cat.instances[names.size].gpu or "",
        host=host,
        ssh_user=image.ssh_user,
        ssh_key=str(key),
        spot=profile.azure.spot,
        price=cost.price,
        deployed_at=iso(now),
        # When the VM stops at the latest: the shutdown schedule's first run (cloud-side, holds
        # even if nothing on the VM works). The watchdog may stop it earlier (idle, max_hours).
        deadline=iso(stop.at),
        ids={
            "subscription_id": creds.subscription_id,
            "stack": names.stack,
            "resource_group": names.resource_group,
            "vm_id": vm_id,
            "vm_name": names.vm,
            "schedule": names.schedule,
        },
        extra={
            "image": profile.azure.image,  # tells Ansible whether the driver is there
            # What the idle watchdog calls with the VM's managed identity (an OS shutdown would
            # keep billing; deallocation stops it).
            "deallocate_url": f"{ARM}{vm_id}/deallocate?api-version=2024-07-01",
            "daily_shutdown": profile.autostop.daily_shutdown,
            "timezone": profile.autostop.timezone,
            "max_hours_deadline": iso(now + dt.timedelta(hours=profile.autostop.max_hours)),
            "cloud_stop": {
                "at": iso(stop.at),
                "time": stop.time,
                "time_zone_id": stop.time_zone_id,
                "why": stop.why,
            },
            "rates": cost.as_json(),
            "worst_case_usd": worst_case_usd(cost.worst, stop.hours),
            **extra,
        },
    )


def _cost_lines(
    size: str, cost: VmCost, stop: CloudStop, profile: Profile, cat: Catalog
) -> list[str]:
    p, now, worst = cost.price, cost.now, cost.worst
    # The VM runs until the watchdog's max_hours or the shutdown schedule, whichever comes
    # first (the schedule may come earlier: the daily_shutdown): the estimate bills that.
    standin = replace(
        azure_standin(profile, cat, size, cost, worst_h=stop.hours),
        window_h=min(profile.autostop.max_hours, stop.hours),
    )
    plan = estimate(profile, cat, standin)
    od = f"${p.on_demand_usd_per_hour:.3f}/h" if p.on_demand_usd_per_hour else "unknown"
    lines = [
        f"  {size}: {p.kind} ${now.compute:.3f}/h now ({cost.sources['compute']}; on-demand "
        f"{od}) + OS disk {cost.disk_tier} ${now.disk:.3f}/h ({cost.sources['disk']}) + "
        f"public IP ${now.public_ip:.3f}/h ({cost.sources['public_ip']}) = ${now.running:.3f}/h",
        f"    {worst_case_text(worst, stop.hours)} (compute at its cap ${worst.compute:.3f}/h, "
        f"disk and IP included, until the shutdown schedule deallocates it)",
        f"    {plan.line()}",
    ]
    return lines


def _confirm(deps: Deps, question: str) -> None:
    if deps.assume_yes:
        return
    if not deps.interactive():
        raise CommandError(
            "not deploying: no terminal to ask and no --yes — nothing was created; to accept "
            f"the cost printed above run `make deploy-azure YES=1` ({RIG} deploy azure --yes)"
        )
    if not deps.confirm(question):
        raise CommandError("deploy cancelled — nothing was created", exit_code=1)


def _check_subscription(
    recorded: dict[str, VmState], sizes: list[str], profile: Profile, creds: Credentials
) -> None:
    for size in sizes:
        rec = recorded.get(names_for(profile, size).target)
        if rec is None:
            continue
        sub = rec.ids.get("subscription_id") or subscription_of(rec.ids.get("vm_id", ""))
        if sub and sub != creds.subscription_id:
            raise CommandError(
                f"{rec.name} is deployed in subscription {sub}, but this deploy would go to "
                f"{creds.subscription_id} — run `az account set --subscription {sub}` (or set "
                "[azure] subscription), or run make destroy first"
            )


def _in_use(api: AzureApi, vm_id: str, vcpus: int) -> int:
    """vCPUs the stack's own VM already holds (a redeploy must not count them twice)."""
    view = api.instance_view(vm_id)
    return vcpus if view is not None and view.power_state in ALLOCATED else 0


def deploy(
    profile: Profile, console: Console, deps: Deps, sizes: list[str] | None = None
) -> list[VmState]:
    az = profile.azure
    if not az.enabled:
        raise CommandError(f"{profile.path}: [azure] enabled = false — set it to true to deploy")
    sizes = sizes or list(az.vm_sizes)
    unknown = [s for s in sizes if s not in az.vm_sizes]
    if unknown:
        raise CommandError(
            f"--size {', '.join(map(repr, unknown))}: not in [azure] vm_sizes of "
            f"{profile.path} ({', '.join(az.vm_sizes)}) — add it there first, or drop --size",
            exit_code=2,
        )
    ensure_writable(deps.state_dir)
    start = deps.now()
    stop = cloud_stop(profile.autostop, start)  # an unknown time zone fails before anything
    print_plan(profile, console, cloud="azure")
    console.print(
        "(The table above prices from the catalog; below: live prices — compute, OS disk and "
        "public IP — the worst case the cloud-side stop enforces, and rig plan's estimate.)",
        style="dim",
    )

    if (missing := deps.tools_missing()) is not None:
        raise CommandError(missing)
    creds = deps.credentials(az.subscription)
    if creds is None:
        raise CommandError(NO_CREDENTIALS)
    recorded = {s.name: s for s in read_all(deps.state_dir) if s.cloud == "azure"}
    _check_subscription(recorded, sizes, profile, creds)
    api = deps.api(creds)
    sub_name = creds.subscription_name or api.subscription_name()
    check_providers(api)
    cat = load_catalog()
    costs: dict[str, VmCost] = {}
    for size in sizes:
        names = names_for(profile, size)
        check_permissions(api, names.resource_group)
        vcpus = cat.instances[size].vcpu
        checked = check_size(
            profile, size, vcpus, api, _in_use(api, vm_id_for(api.subscription_id, names), vcpus)
        )
        for note in checked.notes:
            console.print(f"  {size}: {note}", highlight=False)
        for warning in checked.warnings:
            console.print(f"  {size}: warning: {warning}", style="yellow", highlight=False)
        costs[size] = vm_cost(
            profile,
            size,
            deps.price(az.location, size),
            deps.extras(az.location, az.disk_type, az.disk_gb),
            start,
            cat,
        )

    worst = sum(worst_case_usd(c.worst, stop.hours) for c in costs.values())
    idle = HourlyRates(
        compute=0.0,
        disk=sum(c.now.disk for c in costs.values()),
        public_ip=sum(c.now.public_ip for c in costs.values()),
    )
    console.print(
        f"Azure subscription {sub_name or '(name unknown)'} ({creds.subscription_id}), "
        f"location {az.location}:",
        highlight=False,
    )
    for size, cost in costs.items():
        for line in _cost_lines(size, cost, stop, profile, cat):
            console.print(line, highlight=False, soft_wrap=True)
    console.print(
        f"Cloud-side stop: {stop.local()} ({stop.hours:g} h from now) — the VM's shutdown "
        f"schedule deallocates it then, set by {stop.why}; the idle watchdog stops it sooner "
        f"after {profile.autostop.idle_minutes} idle min.",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"Worst case: ${worst:.2f} in all. After the stop the OS disk(s) and public IP(s) still "
        f"bill ${stopped_usd_per_day(idle):.2f}/day until `make destroy`.",
        highlight=False,
        soft_wrap=True,
    )
    per_hour = sum(c.now.running for c in costs.values())
    _confirm(
        deps,
        f"Deploy {', '.join(sizes)} (${per_hour:.3f}/h now) to subscription "
        f"{sub_name or creds.subscription_id} in {az.location}, worst case ${worst:.2f}?",
    )

    if deps.now() > stop.at - SCHEDULE_LEAD:
        # The answer came so late that the printed stop time is now too close for Azure's
        # schedule to be trusted: nothing exists yet, so start over rather than guess.
        raise CommandError(
            f"the stop time printed above ({stop.local()}) is now less than "
            f"{SCHEDULE_LEAD.seconds // 60} min away — nothing was created; run the deploy again "
            "for a new stop time and worst case"
        )
    source = _ssh_source(profile, deps)
    public_key, private_key = _ssh_key(profile, deps)
    pulumi = deps.pulumi(deps.state_dir, creds)
    provision = deps.provisioner()
    states = []
    for size in sizes:
        names = names_for(profile, size)
        console.print(f"[bold]pulumi up[/bold] {names.stack} (SSH from {source})")
        pulumi.select(names.stack)
        pulumi.configure(
            names.stack,
            {
                "profile": str(profile.path.resolve()),
                "vmSize": size,
                "sshSource": source,
                "sshPublicKey": public_key,
                "shutdownTime": stop.time,
                "shutdownTimeZone": stop.time_zone_id,
                # The provider deploys to this subscription, whatever `az` points at later.
                "azure-native:subscriptionId": creds.subscription_id,
            },
        )
        try:
            pulumi.up(names.stack)
            out = pulumi.outputs(names.stack)
        except CommandError as exc:
            raise _failed_up(
                exc, profile, names, creds, api, pulumi, deps, costs[size], stop, private_key, start
            ) from None
        vm_id = str(out["vm_id"])
        state = _state(
            profile,
            names,
            creds,
            str(out["public_ip"]),
            vm_id,
            costs[size],
            stop,
            private_key,
            start,
            # Where sshd answers, as the program's NSG rule opens it (22 from stacks made
            # before the program exported it).
            ssh_port=int(out.get("ssh_port") or SSH_PORT),
        )
        # Recorded before anything else can fail: a running VM bills, so status/destroy see it.
        write(state, deps.state_dir)
        _ensure_running(api, state, costs[size], console)
        if deps.now() > stop.at - SCHEDULE_MARGIN:
            console.print(
                f"warning: pulumi up ended at {iso(deps.now())}, less than "
                f"{SCHEDULE_MARGIN.seconds // 60} min before the schedule's time: Azure may skip "
                "its first run, and the VM then stops a day later (worst case "
                f"{worst_case_text(costs[size].worst, stop.hours + 24)}) — watch `make status`, "
                "or run make deploy-azure again to set a new stop time",
                style="yellow",
                highlight=False,
                soft_wrap=True,
            )
        console.print(f"waiting for SSH on {state.host} ...")
        deps.wait_ssh(state.host, state.ssh_port)
        state = _provision(state, profile, console, deps, provision)
        states.append(state)
        console.print(
            f"[green]ready[/green] {state.name}: ssh -i {state.ssh_key}{_port_flag(state)} -N -L "
            f"11434:127.0.0.1:11434 {state.ssh_user}@{state.host}  "
            f"(${costs[size].now.running:.3f}/h {state.price.kind} with disk and IP; "
            f"deallocated by {stop.local()} at the latest)",
            highlight=False,
            soft_wrap=True,
        )
    return states


def _port_flag(state: VmState) -> str:
    return "" if state.ssh_port == SSH_PORT else f" -p {state.ssh_port}"


def _provision(
    state: VmState, profile: Profile, console: Console, deps: Deps, provision: Any
) -> VmState:
    if provision is None:
        console.print(
            f"{state.name}: not provisioned yet (no Ansible part installed: rig.provision) — "
            "the VM answers SSH but has no NVIDIA driver, Ollama or idle watchdog; the "
            "shutdown schedule still stops it",
            style="yellow",
        )
        return state
    # provision() marks and rewrites the state file itself; hand it our state dir when it
    # takes one (the contract is provision(state, profile, console)).
    kwargs: dict[str, Any] = {}
    if "state_dir" in inspect.signature(provision).parameters:
        kwargs["state_dir"] = deps.state_dir
    result = provision(state, profile, console, **kwargs)
    if isinstance(result, VmState):
        write(result, deps.state_dir)
        return result
    return state


def _ensure_running(api: AzureApi, state: VmState, cost: VmCost, console: Console) -> None:
    """A redeploy after an eviction (or a stop) starts the VM instead of waiting for SSH on a
    deallocated machine; when Azure refuses, say why and what still bills."""
    view = api.instance_view(state.ids["vm_id"])
    if view is None or view.power_state not in NOT_RUNNING:
        return
    console.print(
        f"{state.name}: the VM is {view.power_state} (evicted, or stopped by the watchdog or "
        "the schedule) — starting it",
        highlight=False,
    )
    try:
        api.vm_action(state.ids["vm_id"], "start")
    except CommandError as exc:
        idle = HourlyRates(compute=0.0, disk=cost.now.disk, public_ip=cost.now.public_ip)
        raise CommandError(
            f"{state.name}: Azure did not start the deallocated VM: {exc}; meanwhile only its "
            f"disk and IP bill (${stopped_usd_per_day(idle):.2f}/day) — run make deploy-azure "
            "again later, or make destroy"
        ) from None


def _failed_up(
    exc: CommandError,
    profile: Profile,
    names: AzureNames,
    creds: Credentials,
    api: AzureApi,
    pulumi: Pulumi,
    deps: Deps,
    cost: VmCost,
    stop: CloudStop,
    key: Path,
    start: dt.datetime,
) -> CommandError:
    """After a failed `pulumi up`: record what exists, stop a VM it left, say how to remove it."""
    try:
        created = pulumi.export(names.stack)
    except CommandError:
        created = FileBackend(backend_dir(deps.state_dir)).resources(names.stack)
    ids = [
        str(r["id"])
        for r in created
        if r.get("id") and str(r.get("type", "")).startswith("azure-native:")
    ]
    vm = next((r for r in created if r.get("type") == VM_TYPE and r.get("id")), None)
    if vm is None:
        # Pulumi records a resource once its create finished; a VM whose create ARM accepted
        # but which failed or was interrupted later can exist without being in the state.
        # Ask Azure by the name the program gives it.
        expected = vm_id_for(creds.subscription_id, names)
        try:
            found = api.instance_view(expected) is not None
        except CommandError:
            found = False
        if found:
            vm = {"id": expected, "type": VM_TYPE}
            ids.append(expected)
    if vm is None:
        try:
            group_left = api.resource_group_exists(names.resource_group)
        except CommandError:
            group_left = True  # unknown: say what to run rather than "nothing"
        if not ids and not group_left:
            return CommandError(f"{exc}; nothing was created")
        return CommandError(
            f"{exc}; {len(ids) or 'some'} resource(s) were created before it failed (no VM; "
            f"the public IP bills until removed; resource group {names.resource_group}, "
            f"subscription {creds.subscription_id}) — `make destroy` removes them"
        )
    vm_id = str(vm["id"])
    ip = next((r for r in created if r.get("type") == IP_TYPE), {})
    host = str((ip.get("outputs") or {}).get("ipAddress") or "")
    state = _state(
        profile,
        names,
        creds,
        host,
        vm_id,
        cost,
        stop,
        key,
        start,
        deploy_failed=str(exc),
        created=ids,
    )
    write(state, deps.state_dir)
    idle = HourlyRates(compute=0.0, disk=cost.now.disk, public_ip=cost.now.public_ip)
    try:
        api.vm_action(vm_id, "deallocate")
        what = (
            f"its VM {names.vm} was deallocated (compute stopped); its disk and IP still bill "
            f"${stopped_usd_per_day(idle):.2f}/day"
        )
    except CommandError as err:
        scheduled = any(r.get("type") == SCHEDULE_TYPE and r.get("id") for r in created)
        until = (
            f"until {stop.local()}"
            if scheduled
            else "with no shutdown schedule (it was not created), until you run make destroy"
        )
        what = (
            f"its VM {names.vm} MAY BE RUNNING and billing ${cost.now.running:.3f}/h {until} "
            f"(deallocating it failed: {err})"
        )
    return CommandError(
        f"{exc}; {what} — `make destroy` removes all {len(ids)} resource(s) the deploy created "
        f"(resource group {names.resource_group}, subscription {creds.subscription_id}, tag "
        f"{'='.join(PROJECT_TAG)}); recorded in .state/{names.target}.json"
    )
