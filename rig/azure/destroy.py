"""`python -m rig destroy azure` (part of make destroy): remove everything, then prove it.

Needs only Python — plus the Pulumi CLI where Pulumi stacks exist, and even then falls back to
ARM when the CLI or the passphrase is missing. In every subscription that holds something of
this project (the ones the state files and stacks record — never just whatever `az` points at):

1. `pulumi destroy` each stack (when the CLI can);
2. delete this project's role assignments (description "gpu-rehearsal:", or a scope inside a
   rg-gpu-rehearsal-* group) and the custom roles earlier versions made (name "gpu-rehearsal
   deallocate ...", or their deterministic GUID) — these live outside resource groups, so
   deleting the group would leave them behind;
3. delete the rg-gpu-rehearsal-* resource groups still there (recorded, in the profile,
   tagged project=gpu-rehearsal, or listed under that name), waiting for Azure to finish;
4. scan again: resource groups, anything tagged project=gpu-rehearsal, role assignments, custom
   roles. "0 left" is printed only when that scan ran and found nothing; anything left, or a
   scan that could not run, is exit 1 with the list and what to check by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from rig.azure.arm import AzureApi, RoleAssignment
from rig.azure.credentials import NO_CREDENTIALS
from rig.azure.deps import Deps
from rig.azure.names import (
    ASSIGNMENT_MARK,
    LEGACY_ROLE_PREFIX,
    PROJECT_TAG,
    RG_PREFIX,
    legacy_role_guid,
    names_for,
    subscription_of,
)
from rig.azure.pulumi_cli import FileBackend, PassphraseMissing, backend_dir, project_dir
from rig.problems import CommandError
from rig.profile import Profile
from rig.state import VmState, read_all, remove

RG_TYPE = "Microsoft.Resources/resourceGroups"
SCAN_ATTEMPTS = 6  # ARM may list a group for a moment after its deletion finished
SCAN_PAUSE_S = 10.0


def manual_check(subscription: str) -> str:
    sub = subscription or "SUBSCRIPTION_ID"
    return (
        f"check by hand in subscription {sub}: `az group list --subscription {sub} --query "
        f"\"[?starts_with(name, '{RG_PREFIX}')].name\" -o tsv`, `az resource list --subscription "
        f"{sub} --tag {PROJECT_TAG[0]}={PROJECT_TAG[1]} -o table`, `az role assignment list "
        f"--all --subscription {sub} --query \"[?starts_with(description, '{ASSIGNMENT_MARK}')]"
        f'.id" -o tsv`, `az role definition list --custom-role-only true --query '
        f"\"[?starts_with(roleName, 'gpu-rehearsal')].name\" -o tsv` (portal: "
        "https://portal.azure.com/#browse/resourcegroups)"
    )


@dataclass
class Scope:
    """What to remove and verify in one subscription."""

    subscription: str
    groups: set[str] = field(default_factory=set)
    stacks: set[str] = field(default_factory=set)
    states: list[VmState] = field(default_factory=list)


def _scopes(
    profile: Profile, recorded: list[VmState], backend: FileBackend, signed_in: str
) -> dict[str, Scope]:
    scopes: dict[str, Scope] = {}

    def scope(sub: str) -> Scope:
        return scopes.setdefault(sub, Scope(sub))

    for s in recorded:
        sub = s.ids.get("subscription_id") or subscription_of(s.ids.get("vm_id", ""))
        sc = scope(sub or signed_in)
        sc.states.append(s)
        if s.ids.get("resource_group"):
            sc.groups.add(s.ids["resource_group"])
        if s.ids.get("stack"):
            sc.stacks.add(s.ids["stack"])
    for stack in backend.stacks():
        resources = backend.resources(stack)
        subs = {subscription_of(str(r.get("id", ""))) for r in resources} - {""}
        for sub in subs or {signed_in}:
            sc = scope(sub)
            sc.stacks.add(stack)
            sc.groups |= {
                str(r["id"]).rsplit("/", 1)[-1]
                for r in resources
                if r.get("type") == "azure-native:resources:ResourceGroup" and r.get("id")
            }
    if not scopes:
        scope(signed_in)
    for sc in scopes.values():  # what the profile would have deployed, in each subscription
        sc.groups |= {names_for(profile, size).resource_group for size in profile.azure.vm_sizes}
    return scopes


def _ours(a: RoleAssignment, sub: str, legacy: set[str]) -> bool:
    scope = a.scope.lower()
    return (
        a.description.startswith(ASSIGNMENT_MARK)
        or scope.startswith(f"/subscriptions/{sub}/resourcegroups/{RG_PREFIX}".lower())
        or a.role_definition_id.rsplit("/", 1)[-1] in legacy
    )


def _legacy_roles(api: AzureApi, groups: set[str]) -> set[str]:
    """GUIDs of custom roles earlier versions made that still exist."""
    found = {
        r.name
        for r in api.custom_roles(f"/subscriptions/{api.subscription_id}")
        if r.role_name.startswith(LEGACY_ROLE_PREFIX)
    }
    for group in groups:
        guid = legacy_role_guid(api.subscription_id, group)
        if guid not in found and api.role_definition(guid) is not None:
            found.add(guid)
    return found


def _ours_by_name(group: str) -> bool:
    return group.lower().startswith(RG_PREFIX)  # Azure group names are case-insensitive


def _project_groups(api: AzureApi, groups: set[str]) -> set[str]:
    """This project's groups that exist: recorded or in the profile, tagged, or merely named
    rg-gpu-rehearsal-* (a group from another size or location, or whose tag someone removed,
    still bills for what is in it)."""
    tagged = {t.name for t in api.tagged(PROJECT_TAG) if t.kind == RG_TYPE}
    listed = {g for g in api.resource_groups() if _ours_by_name(g)}
    known = {g.lower() for g in listed}
    # Recorded or tagged names the list did not show: ask for each (a list may lag).
    rest = {g for g in groups | tagged if _ours_by_name(g) and g.lower() not in known}
    return listed | {g for g in rest if api.resource_group_exists(g)}


def _remove(api: AzureApi, sc: Scope, console: Console) -> int:
    """Delete role assignments, legacy roles and groups; the number of things deleted."""
    deleted = 0
    groups = _project_groups(api, sc.groups)
    legacy = _legacy_roles(api, sc.groups | groups)
    for a in api.role_assignments():
        if _ours(a, api.subscription_id, legacy):
            console.print(f"  deleting role assignment {a.id}", highlight=False)
            api.delete_role_assignment(a.id)
            deleted += 1
    for guid in sorted(legacy):
        console.print(f"  deleting custom role {guid} (made by an earlier version)")
        api.delete_role_definition(guid)
        deleted += 1
    for group in sorted(groups):
        console.print(f"  deleting resource group {group} (waiting for Azure to finish) ...")
        deleted += api.delete_resource_group(group)
    return deleted


def _leftovers(api: AzureApi, sc: Scope) -> list[str]:
    sub = api.subscription_id
    in_groups = f"/subscriptions/{sub}/resourcegroups/{RG_PREFIX}".lower()  # gone with them
    out = [f"resource group {g}" for g in sorted(_project_groups(api, sc.groups))]
    out += [
        f"resource {t.id}"
        for t in api.tagged(PROJECT_TAG)
        if t.kind != RG_TYPE and not t.id.lower().startswith(in_groups)
    ]
    legacy = _legacy_roles(api, sc.groups)
    out += [f"custom role {guid}" for guid in sorted(legacy)]
    out += [f"role assignment {a.id}" for a in api.role_assignments() if _ours(a, sub, legacy)]
    return out


def destroy(profile: Profile, console: Console, deps: Deps) -> int:
    recorded = [s for s in read_all(deps.state_dir) if s.cloud == "azure"]
    backend = FileBackend(backend_dir(deps.state_dir))
    if not profile.azure.enabled and not recorded and not backend.stacks():
        console.print("Azure: [azure] enabled = false and nothing in .state/ — not scanned")
        return 0
    creds = deps.credentials(profile.azure.subscription)
    signed_in = creds.subscription_id if creds else ""
    scopes = _scopes(profile, recorded, backend, signed_in)
    if creds is None:
        subs = sorted(s for s in scopes if s) or [""]
        raise CommandError(
            f"Azure: could not verify that nothing is left — {NO_CREDENTIALS}; nothing was "
            f"deleted. Or {'; '.join(manual_check(s) for s in subs)}"
        )

    stacks_done: set[str] = set()
    all_stacks = set(backend.stacks())
    if all_stacks:
        missing = deps.tools_missing()
        if missing is not None:
            console.print(
                f"Azure: Pulumi cannot run here ({missing.split(' — ')[0]}): deleting through "
                "ARM instead",
                style="yellow",
            )
        else:
            for sc in scopes.values():
                for stack in sorted(sc.stacks & all_stacks - stacks_done):
                    try:
                        pulumi = deps.pulumi(
                            deps.state_dir, creds.for_subscription(sc.subscription)
                        )
                        console.print(f"[bold]pulumi destroy[/bold] {stack}")
                        pulumi.destroy(stack)
                        stacks_done.add(stack)
                    except PassphraseMissing as exc:
                        console.print(
                            f"Azure: {exc}; deleting through ARM instead",
                            style="yellow",
                            soft_wrap=True,
                        )
                    except CommandError as exc:
                        console.print(
                            f"Azure: {exc}; deleting {stack}'s resources through ARM instead",
                            style="yellow",
                            soft_wrap=True,
                        )

    left: list[tuple[str, str]] = []  # (subscription, what)
    unverified: list[tuple[str, str]] = []
    deleted = 0
    for sub, sc in sorted(scopes.items()):
        try:
            api = deps.api(creds.for_subscription(sub))
            deleted += _remove(api, sc, console)
            found: list[str] = []
            for attempt in range(SCAN_ATTEMPTS):
                found = _leftovers(api, sc)
                if not found:
                    break
                if attempt < SCAN_ATTEMPTS - 1:
                    deps.sleep(SCAN_PAUSE_S)
        except CommandError as exc:
            unverified.append((sub, str(exc)))
            continue
        left += [(sub, item) for item in found]

    for sub, item in left:
        console.print(f"  left on Azure (subscription {sub}): {item}", highlight=False)
    if unverified:
        for sub, why in unverified:
            console.print(
                f"  could not verify subscription {sub}: {why}", highlight=False, soft_wrap=True
            )
        raise CommandError(
            f"Azure: could not verify {len(unverified)} subscription(s) — something may still "
            f"bill; {'; '.join(manual_check(s) for s, _ in unverified)}; then run make destroy "
            "again"
        )
    if left:
        raise CommandError(
            f"Azure: {len(left)} left after destroy (listed above) — they may still bill; "
            "delete them (az group delete --name GROUP --subscription SUB --yes; az role "
            "assignment delete --ids ID; az role definition delete --name GUID) and run make "
            "destroy again; a custom role whose scope is already gone may need an Azure "
            "support request"
        )
    verified = sorted(scopes)
    for sc in scopes.values():
        for s in sc.states:
            remove(s.name, deps.state_dir)
    removed_stacks = {st for sc in scopes.values() for st in sc.stacks}
    for stack in sorted((removed_stacks & all_stacks) - stacks_done):
        backend.remove(stack)  # its resources are verified gone: forget the stale state
    for stack in removed_stacks:
        (project_dir(deps.state_dir) / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)
    console.print(
        f"Azure: {len(stacks_done)} stack(s) destroyed, {deleted} more thing(s) deleted through "
        f"ARM; scan of subscription(s) {', '.join(verified)} (resource groups "
        f"{RG_PREFIX}*, resources tagged {'='.join(PROJECT_TAG)}, role assignments "
        f"'{ASSIGNMENT_MARK}*', custom roles '{LEGACY_ROLE_PREFIX}*') says 0 left",
        highlight=False,
        soft_wrap=True,
    )
    return 0
