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
import re
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
# ARM throttles with 429 and a Retry-After header, and answers 5xx on passing faults (Microsoft
# Learn, "Understand how Azure Resource Manager throttles requests": "wait the number of seconds
# in Retry-After before retrying"). A destroy or status that gives up on the first 429 would
# report "could not verify" for nothing; one that retries forever would hang.
RETRY_STATUSES = {429, 500, 502, 503, 504}
RETRIES = 5
MAX_RETRY_WAIT_S = 60.0
ARM_HOST = "management.azure.com"

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
    def resource_groups(self) -> list[str]: ...
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
        *,
        refresh: Callable[[], str] | None = None,
    ):
        self.subscription_id = subscription_id
        self._token = token
        # A fresh token when ARM answers 401 (an `az` token lives about an hour; a destroy that
        # waits out a group deletion, or a long deploy, can outlive it).
        self._refresh = refresh
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
        split = urllib.parse.urlsplit(url)
        if split.scheme != "https" or split.netloc.lower() != ARM_HOST:
            # nextLink / Azure-AsyncOperation / Location come from the response: never hand the
            # bearer token to a host that is not ARM.
            raise CommandError(
                f"Azure sent a link to {split.scheme}://{split.netloc} — not following it with "
                "your token; check the request in the Azure portal"
            )
        headers = {"Authorization": f"Bearer {self._token}"}
        resp = self._http(method, url, headers, None)
        if resp.status == 401 and self._refresh is not None:
            self._token = self._refresh()
            headers = {"Authorization": f"Bearer {self._token}"}
            resp = self._http(method, url, headers, None)
        for attempt in range(RETRIES):
            if resp.status not in RETRY_STATUSES:
                break
            retry = resp.header("retry-after")
            wait = float(retry) if retry.isdigit() else 2.0 * 2**attempt
            self._sleep(min(wait, MAX_RETRY_WAIT_S))
            resp = self._http(method, url, headers, None)
        return resp

    def _fail(self, resp: Response, what: str) -> CommandError:
        code, message = resp.error
        if resp.status in (401, 403):
            return CommandError(
                f"Azure refused {what} ({resp.status} {code}) in subscription "
                f"{self.subscription_id} — the signed-in identity needs Reader there (Owner, or "
                "Contributor + User Access Administrator, to deploy and destroy); check `az "
                "account show`"
            )
        # One line: ARM messages may hold line breaks (lists of constraints). The error envelope
        # {"error": {"code", "message", "details": [{"code", "message"}, ...]}} may put the
        # telling code in details (e.g. QuotaExceeded under a generic top-level code).
        details = _details(resp.body)
        text = " ".join((f"{code}: {message}" if code else f"HTTP {resp.status}").split())
        if details and details[0] not in text:
            text = f"{text} ({details[0]})"
        hint = hint_for(" ".join([code, message, *details]))
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
        if resp.status in (200, 204) or (resp.status == 201 and not url):
            return
        if not url:
            # ARM documents one of the two headers on every 202: without them the outcome is
            # unknown, and "done" would be a guess (a deallocation that never happened bills).
            raise CommandError(
                f"Azure accepted {what} but named no operation to follow — check it in the "
                "Azure portal (Activity log) and run the command again"
            )
        deadline = self._clock() + OPERATION_TIMEOUT_S
        retry = resp.header("retry-after")
        while True:
            self._sleep(float(retry) if retry.isdigit() else 10.0)
            poll = self._send("GET", url)
            retry = poll.header("retry-after")
            if async_url:
                body = poll.body if isinstance(poll.body, dict) else {}
                # Azure-AsyncOperation: {"status": "InProgress" | "Succeeded" | "Failed" |
                # "Canceled", "error": {...}} (Microsoft Learn, "Track asynchronous Azure
                # operations"); compared case-insensitively.
                status = str(body.get("status", "")).lower() if poll.status == 200 else ""
                if status == "succeeded":
                    return
                if status in ("failed", "canceled", "cancelled"):
                    raise self._fail(Response(poll.status, body), what)
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
        return [u for u in map(parse_usage, items) if u is not None]

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

    def resource_groups(self) -> list[str]:
        """Every resource group's name (Resource Groups - List, no filter): the destroy scan
        finds this project's groups by name too, tag or no tag."""
        items = self._list(
            f"{self.sub}/resourcegroups", {"api-version": RESOURCES_API}, "the resource groups"
        )
        return [str(r["name"]) for r in items if isinstance(r, Mapping) and r.get("name")]

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
        return [e for e in map(parse_event, items) if e is not None]

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


def _details(body: Any) -> list[str]:
    """ "code: message" of each nested error under error.details (ARM's error envelope)."""
    out: list[str] = []
    stack = [body.get("error")] if isinstance(body, dict) else []
    while stack and len(out) < 20:
        err = stack.pop(0)
        if not isinstance(err, Mapping):
            continue
        for d in err.get("details") or []:
            if isinstance(d, Mapping):
                out.append(" ".join(f"{d.get('code', '')}: {d.get('message', '')}".split()))
                stack.append(d)
    return out


def parse_usage(item: Mapping[str, Any]) -> Usage | None:
    """One Usage - List item ({"unit", "currentValue", "limit", "name": {"value",
    "localizedValue"}}); None when a field is missing or not a number, so a malformed entry
    reads as "not listed" (a warning) rather than a crash or a pass."""
    name = item.get("name")
    if not isinstance(name, Mapping) or not name.get("value"):
        return None
    try:
        current, limit = int(item["currentValue"]), int(item["limit"])
    except (KeyError, TypeError, ValueError):
        return None
    value = str(name["value"])
    return Usage(value, str(name.get("localizedValue") or value), current, limit)


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


_TIMESTAMP = re.compile(r"(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$")


def _time(text: str) -> dt.datetime:
    # ARM writes 7 fractional digits ("...T10:00:00.1234567Z"), which fromisoformat refuses
    # before Python 3.11's relaxed parser and rounds oddly: trim to microseconds, keep the zone.
    found = _TIMESTAMP.match(text.strip())
    if found is None:
        raise ValueError(f"not an ARM timestamp: {text!r}")
    head, frac, zone = found.groups()
    zone = "+00:00" if zone in (None, "Z") else zone
    t = dt.datetime.fromisoformat(f"{head}{'.' + frac[:6].ljust(6, '0') if frac else ''}{zone}")
    return t


def parse_event(item: Mapping[str, Any]) -> ActivityEvent | None:
    try:
        at = _time(str(item["eventTimestamp"]))
    except (KeyError, ValueError):
        return None  # an event without a usable time cannot be placed: ignored
    return ActivityEvent(
        operation=str((item.get("operationName") or {}).get("value", "")),
        status=str((item.get("status") or {}).get("value", "")),
        at=at,
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
