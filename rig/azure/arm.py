"""Azure Resource Manager over REST: the calls preflight, deploy, destroy and status make.

`AzureApi` is the interface the orchestration uses; `RestAzure` implements it over `Http` with
a bearer token for ONE subscription (the one a state records, not whatever `az` points at).
Long-running operations (VM start/deallocate, resource group deletion) answer 202 Accepted; the
outcome is at the `Azure-AsyncOperation` URL (or, without it, `Location`), polled here until it
ends (Microsoft Learn: "Track asynchronous Azure operations").
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rig.azure.credentials import ARM
from rig.azure.errors import hint_for
from rig.azure.http import Http, Response, urllib_http
from rig.problems import CommandError

COMPUTE_API = "2024-07-01"  # usages, VM instance view, start, deallocate
SKUS_API = "2021-07-01"  # Microsoft.Compute/skus
RESOURCES_API = "2021-04-01"  # resource groups, generic resources, resource providers
SUBSCRIPTIONS_API = "2022-12-01"
AUTHORIZATION_API = "2022-04-01"  # permissions, role assignments, role definitions
ACTIVITY_API = "2015-04-01"  # Microsoft.Insights/eventtypes/management/values
OPERATION_TIMEOUT_S = 1800.0

# ---- what the calls return ---------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    name: str  # e.g. "standardNCASv3_T4Family", "lowPriorityCores"
    label: str  # e.g. "Standard NCASv3_T4 Family vCPUs"
    current: int
    limit: int

    @property
    def free(self) -> int:
        return self.limit - self.current


@dataclass(frozen=True)
class SkuInfo:
    name: str
    family: str  # the quota family, e.g. "standardNCASv3_T4Family"
    vcpus: int
    spot_capable: bool  # capability LowPriorityCapable
    restricted: str = ""  # reason code when the subscription may not use it here


@dataclass(frozen=True)
class Permission:
    """One entry of a permissions list: what is allowed, minus what is denied in it."""

    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()

    def allows(self, action: str) -> bool:
        a = action.lower()
        return any(fnmatch.fnmatchcase(a, p.lower()) for p in self.actions) and not any(
            fnmatch.fnmatchcase(a, p.lower()) for p in self.not_actions
        )


def allowed(permissions: list[Permission], action: str) -> bool:
    # Azure RBAC: an action is allowed when some role (entry) allows it (Microsoft Learn,
    # "Understand Azure role definitions": Actions minus NotActions, per role).
    return any(p.allows(action) for p in permissions)


@dataclass(frozen=True)
class RoleAssignment:
    id: str
    scope: str
    role_definition_id: str
    principal_id: str
    description: str = ""


@dataclass(frozen=True)
class RoleDefinition:
    id: str
    name: str  # the GUID
    role_name: str
    description: str = ""
    assignable_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceView:
    power_state: str  # "running", "deallocated", "stopped", "starting", ... ("" if none)
    provisioning_state: str = ""


@dataclass(frozen=True)
class ActivityEvent:
    operation: str  # e.g. "Microsoft.Compute/virtualMachines/deallocate/action"
    status: str  # "Started", "Accepted", "Succeeded", "Failed"
    at: dt.datetime


@dataclass(frozen=True)
class Tagged:
    id: str
    kind: str  # resource type, e.g. "Microsoft.Resources/resourceGroups"
    name: str


class AzureApi(Protocol):
    subscription_id: str

    def subscription_name(self) -> str: ...
    def usages(self, location: str) -> list[Usage]: ...
    def vm_sku(self, location: str, size: str) -> SkuInfo | None: ...
    def provider_state(self, namespace: str) -> str: ...
    def permissions(self, scope: str) -> list[Permission]: ...
    def resource_group_exists(self, name: str) -> bool: ...
    def delete_resource_group(self, name: str) -> bool: ...
    def tagged(self, tag: tuple[str, str]) -> list[Tagged]: ...
    def instance_view(self, vm_id: str) -> InstanceView | None: ...
    def vm_action(self, vm_id: str, action: str) -> None: ...
    def role_assignments(self) -> list[RoleAssignment]: ...
    def delete_role_assignment(self, assignment_id: str) -> None: ...
    def custom_roles(self, scope: str) -> list[RoleDefinition]: ...
    def role_definition(self, guid: str) -> RoleDefinition | None: ...
    def delete_role_definition(self, guid: str) -> None: ...
    def activity(
        self, resource_id: str, since: dt.datetime, until: dt.datetime | None = None
    ) -> list[ActivityEvent]: ...


# ---- the REST client ---------------------------------------------------------------------------


def _q(params: Mapping[str, str]) -> str:
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


class RestAzure:
    """AzureApi over ARM REST with a bearer token, for one subscription."""

    def __init__(
        self,
        subscription_id: str,
        token: str,
        http: Http = urllib_http,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.subscription_id = subscription_id
        self._token = token
        self._http = http
        self._sleep = sleep
        self._clock = clock

    # -- plumbing

    @property
    def sub(self) -> str:
        return f"/subscriptions/{self.subscription_id}"

    def _send(self, method: str, url: str) -> Response:
        if url.startswith("/"):
            url = ARM + url
        return self._http(method, url, {"Authorization": f"Bearer {self._token}"}, None)

    def _fail(self, resp: Response, what: str) -> CommandError:
        code, message = resp.error
        if resp.status in (401, 403):
            return CommandError(
                f"Azure refused {what} ({resp.status} {code}) in subscription "
                f"{self.subscription_id} — the signed-in identity needs Reader there (Owner, or "
                "Contributor + User Access Administrator, to deploy and destroy); check `az "
                "account show`"
            )
        # One line: ARM messages may hold line breaks (lists of constraints).
        text = " ".join((f"{code}: {message}" if code else f"HTTP {resp.status}").split())
        hint = hint_for(f"{code} {message}")
        return CommandError(
            f"Azure answered {text[:300]} for {what}" + (f" — {hint}" if hint else "")
        )

    def _get(self, path: str, params: Mapping[str, str], what: str) -> Any:
        resp = self._send("GET", f"{path}?{_q(params)}")
        if resp.status != 200:
            raise self._fail(resp, what)
        return resp.body

    def _list(self, path: str, params: Mapping[str, str], what: str) -> list[Any]:
        items: list[Any] = []
        url: str | None = f"{path}?{_q(params)}"
        while url:  # ARM pages lists with nextLink
            resp = self._send("GET", url)
            if resp.status != 200 or "value" not in resp.body:
                raise self._fail(resp, what)
            items += resp.body["value"]
            url = resp.body.get("nextLink")
        return items

    def _wait(self, resp: Response, what: str) -> None:
        """Follow a 201/202 to its end; raise with the operation's error when it fails."""
        async_url = resp.header("azure-asyncoperation")
        url = async_url or resp.header("location")
        if resp.status in (200, 204) or not url:
            return
        deadline = self._clock() + OPERATION_TIMEOUT_S
        retry = resp.header("retry-after")
        while True:
            self._sleep(float(retry) if retry.isdigit() else 10.0)
            poll = self._send("GET", url)
            retry = poll.header("retry-after")
            if async_url:
                status = str(poll.body.get("status", "")) if poll.status == 200 else ""
                if status == "Succeeded":
                    return
                if status in ("Failed", "Canceled"):
                    raise self._fail(Response(poll.status, poll.body), what)
                if poll.status != 200:
                    raise self._fail(poll, what)
            elif poll.status in (200, 204):
                return
            elif poll.status != 202:
                raise self._fail(poll, what)
            if self._clock() > deadline:
                raise CommandError(
                    f"{what} still running after {OPERATION_TIMEOUT_S / 60:.0f} min — check it "
                    "in the Azure portal (Activity log) and run the command again"
                )

    # -- subscription, quota, offerings

    def subscription_name(self) -> str:
        body = self._get(self.sub, {"api-version": SUBSCRIPTIONS_API}, "the subscription")
        return str(body.get("displayName", ""))

    def usages(self, location: str) -> list[Usage]:
        items = self._list(
            f"{self.sub}/providers/Microsoft.Compute/locations/{location}/usages",
            {"api-version": COMPUTE_API},
            f"the vCPU usages in {location}",
        )
        return [parse_usage(u) for u in items]

    def vm_sku(self, location: str, size: str) -> SkuInfo | None:
        items = self._list(
            f"{self.sub}/providers/Microsoft.Compute/skus",
            {"api-version": SKUS_API, "$filter": f"location eq '{location}'"},
            f"the VM sizes offered in {location}",
        )
        return parse_sku(items, location, size)

    def provider_state(self, namespace: str) -> str:
        body = self._get(
            f"{self.sub}/providers/{namespace}",
            {"api-version": RESOURCES_API},
            f"resource provider {namespace}",
        )
        return str(body.get("registrationState", ""))

    def permissions(self, scope: str) -> list[Permission]:
        items = self._list(
            f"{scope}/providers/Microsoft.Authorization/permissions",
            {"api-version": AUTHORIZATION_API},
            f"your permissions on {scope}",
        )
        return [
            Permission(tuple(p.get("actions", [])), tuple(p.get("notActions", []))) for p in items
        ]

    # -- resource groups and tagged resources

    def resource_group_exists(self, name: str) -> bool:
        resp = self._send("GET", f"{self.sub}/resourcegroups/{name}?api-version={RESOURCES_API}")
        if resp.status not in (200, 404):
            raise self._fail(resp, f"resource group {name}")
        return resp.status == 200

    def delete_resource_group(self, name: str) -> bool:
        resp = self._send("DELETE", f"{self.sub}/resourcegroups/{name}?api-version={RESOURCES_API}")
        if resp.status == 404:
            return False
        if resp.status not in (200, 202, 204):
            raise self._fail(resp, f"deleting resource group {name}")
        self._wait(resp, f"deleting resource group {name}")
        return True

    def tagged(self, tag: tuple[str, str]) -> list[Tagged]:
        filt = f"tagName eq '{tag[0]}' and tagValue eq '{tag[1]}'"
        out: list[Tagged] = []
        for path in ("/resourcegroups", "/resources"):
            items = self._list(
                f"{self.sub}{path}",
                {"api-version": RESOURCES_API, "$filter": filt},
                f"resources tagged {tag[0]}={tag[1]}",
            )
            out += [
                Tagged(
                    str(r["id"]),
                    str(r.get("type", "Microsoft.Resources/resourceGroups")),
                    str(r.get("name", "")),
                )
                for r in items
            ]
        return out

    # -- the VM

    def instance_view(self, vm_id: str) -> InstanceView | None:
        resp = self._send("GET", f"{vm_id}/instanceView?api-version={COMPUTE_API}")
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._fail(resp, f"the state of {vm_id.rsplit('/', 1)[-1]}")
        return parse_instance_view(resp.body)

    def vm_action(self, vm_id: str, action: str) -> None:
        what = f"{action} {vm_id.rsplit('/', 1)[-1]}"
        resp = self._send("POST", f"{vm_id}/{action}?api-version={COMPUTE_API}")
        if resp.status not in (200, 202):
            raise self._fail(resp, what)
        self._wait(resp, what)

    def activity(
        self, resource_id: str, since: dt.datetime, until: dt.datetime | None = None
    ) -> list[ActivityEvent]:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        start = since.astimezone(dt.UTC).strftime(fmt)
        end = (until or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime(fmt)
        items = self._list(
            f"{self.sub}/providers/Microsoft.Insights/eventtypes/management/values",
            {
                "api-version": ACTIVITY_API,
                # Activity Logs - List: a time window, then the resource.
                "$filter": f"eventTimestamp ge '{start}' and eventTimestamp le '{end}' and "
                f"resourceUri eq '{resource_id}'",
            },
            "the activity log",
        )
        return [parse_event(e) for e in items]

    # -- role assignments and definitions

    def role_assignments(self) -> list[RoleAssignment]:
        # Without $filter: every assignment at, above and below the subscription (Microsoft
        # Learn, Role Assignments - List For Subscription).
        items = self._list(
            f"{self.sub}/providers/Microsoft.Authorization/roleAssignments",
            {"api-version": AUTHORIZATION_API},
            "the role assignments",
        )
        return [parse_assignment(a) for a in items]

    def delete_role_assignment(self, assignment_id: str) -> None:
        resp = self._send("DELETE", f"{assignment_id}?api-version={AUTHORIZATION_API}")
        if resp.status not in (200, 204):  # 204: already gone
            raise self._fail(resp, f"deleting role assignment {assignment_id}")

    def custom_roles(self, scope: str) -> list[RoleDefinition]:
        """Custom roles assignable at `scope` or below it (Role Definitions - List: "Use
        atScopeAndBelow filter to search below the given scope as well"): a role assignable in
        one resource group only, even one whose group is gone, is listed at the subscription."""
        items = self._list(
            f"{scope}/providers/Microsoft.Authorization/roleDefinitions",
            {"api-version": AUTHORIZATION_API, "$filter": "atScopeAndBelow()"},
            f"the custom roles at {scope}",
        )
        return [parse_role(r) for r in items if r.get("properties", {}).get("type") == "CustomRole"]

    def role_definition(self, guid: str) -> RoleDefinition | None:
        resp = self._send(
            "GET",
            f"{self.sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
            f"?api-version={AUTHORIZATION_API}",
        )
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._fail(resp, f"role definition {guid}")
        return parse_role(resp.body)

    def delete_role_definition(self, guid: str) -> None:
        resp = self._send(
            "DELETE",
            f"{self.sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
            f"?api-version={AUTHORIZATION_API}",
        )
        if resp.status not in (200, 204):
            raise self._fail(resp, f"deleting custom role {guid}")


# ---- parsing documented payloads ---------------------------------------------------------------


def parse_usage(item: Mapping[str, Any]) -> Usage:
    return Usage(
        name=item["name"]["value"],
        label=item["name"].get("localizedValue", item["name"]["value"]),
        current=int(item["currentValue"]),
        limit=int(item["limit"]),
    )


def parse_sku(items: list[Mapping[str, Any]], location: str, size: str) -> SkuInfo | None:
    """The virtualMachines SKU `size` in `location` from a resource SKU list; None if absent."""
    for item in items:
        if item.get("resourceType") != "virtualMachines" or item.get("name") != size:
            continue
        if location.lower() not in (loc.lower() for loc in item.get("locations", [])):
            continue
        caps = {c["name"]: c["value"] for c in item.get("capabilities", [])}
        # A "Location" restriction bars the whole region; zone restrictions do not matter here
        # (the VM is not pinned to a zone).
        reasons = [
            r.get("reasonCode", "restricted")
            for r in item.get("restrictions", [])
            if r.get("type") == "Location"
        ]
        return SkuInfo(
            name=size,
            family=str(item.get("family", "")),
            vcpus=int(caps.get("vCPUs", 0)),
            spot_capable=caps.get("LowPriorityCapable", "False") == "True",
            restricted=", ".join(reasons),
        )
    return None


def parse_instance_view(body: Mapping[str, Any]) -> InstanceView:
    power = provisioning = ""
    for status in body.get("statuses", []):
        code = str(status.get("code", ""))
        if code.startswith("PowerState/"):
            power = code.split("/", 1)[1]
        elif code.startswith("ProvisioningState/"):
            provisioning = code.split("/", 1)[1]
    return InstanceView(power, provisioning)


def _time(text: str) -> dt.datetime:
    # ARM writes 7 fractional digits ("...T10:00:00.1234567Z"): trim to microseconds.
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        frac = "".join(c for c in rest if c.isdigit())
        tz = rest[len(frac) :]
        text = f"{head}.{frac[:6]}{tz}"
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def parse_event(item: Mapping[str, Any]) -> ActivityEvent:
    return ActivityEvent(
        operation=str(item.get("operationName", {}).get("value", "")),
        status=str(item.get("status", {}).get("value", "")),
        at=_time(str(item.get("eventTimestamp", "1970-01-01T00:00:00Z"))),
    )


def parse_assignment(item: Mapping[str, Any]) -> RoleAssignment:
    props = item.get("properties", {})
    return RoleAssignment(
        id=str(item["id"]),
        scope=str(props.get("scope", "")),
        role_definition_id=str(props.get("roleDefinitionId", "")),
        principal_id=str(props.get("principalId", "")),
        description=str(props.get("description") or ""),
    )


def parse_role(item: Mapping[str, Any]) -> RoleDefinition:
    props = item.get("properties", {})
    return RoleDefinition(
        id=str(item["id"]),
        name=str(item.get("name", "")),
        role_name=str(props.get("roleName", "")),
        description=str(props.get("description") or ""),
        assignable_scopes=tuple(props.get("assignableScopes", [])),
    )
