"""Azure: names, the schedule's time zone, and the cloud calls the deploy and destroy need.

The only rig module that talks to Azure. It uses ARM's REST API through a tiny `Http` callable
instead of the Azure SDKs: four GET calls do not justify ~100 MB of SDK packages, and a plain
callable is trivial to fake in tests. Everything the orchestration needs is behind the
`AzureApi` protocol; `RestAzure` is the real one, tests pass a fake.

No Pulumi import here: the Pulumi program (pulumi_azure/) imports this module for the names
and the time zone so that the stack and the deploy agree on them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rig.problems import CommandError
from rig.profile import AzureSection, Profile

ARM = "https://management.azure.com"
RETAIL_PRICES = "https://prices.azure.com/api/retail/prices"
COMPUTE_API = "2024-07-01"  # usages
SKUS_API = "2021-07-01"  # Microsoft.Compute/skus
RESOURCES_API = "2021-04-01"  # resource groups, generic resources
PROJECT_TAG = ("project", "gpu-rehearsal")  # on every taggable resource; the orphan scan uses it

# Pinned tools for real deploys (not needed by `make setup` or the tests).
PULUMI_VERSION = "3.272.0"
AZURE_NATIVE_VERSION = "3.29.0"
PULUMI_INSTALL = f"curl -fsSL https://get.pulumi.com | sh -s -- --version {PULUMI_VERSION}"
PULUMI_PY_INSTALL = (
    f".venv/bin/pip install pulumi=={PULUMI_VERSION} pulumi-azure-native=={AZURE_NATIVE_VERSION}"
)

# ---- names: one stack, resource group and VM per size ----------------------------------------


def slug(size: str) -> str:
    """Standard_NC8as_T4_v3 -> nc8as-t4-v3: short, lower case, valid in every Azure name."""
    return re.sub(r"[^a-z0-9]+", "-", size.lower().removeprefix("standard_")).strip("-")


@dataclass(frozen=True)
class AzureNames:
    size: str
    location: str

    @property
    def stack(self) -> str:
        return f"{slug(self.size)}-{self.location}"

    @property
    def resource_group(self) -> str:
        return f"rg-gpu-rehearsal-{slug(self.size)}-{self.location}"

    @property
    def vm(self) -> str:
        # Fixed (not auto-named) so the DevTestLab schedule's name, which must embed it, is known.
        return f"vm-rehearsal-{slug(self.size)}"

    @property
    def target(self) -> str:
        return f"azure-{self.size}"  # the state file / bench target name


def names_for(profile: Profile, size: str) -> AzureNames:
    return AzureNames(size=size, location=profile.azure.location)


def max_price(section: AzureSection) -> float | None:
    """Spot cap for billingProfile.maxPrice: -1 = at most on-demand, never evicted for price."""
    if not section.spot:
        return None
    return -1.0 if section.spot_max_price == "" else float(section.spot_max_price)


# ---- the daily shutdown schedule's time zone -------------------------------------------------

# IANA -> Windows time-zone ids (DevTestLab schedules take only Windows ids). From Unicode CLDR's
# windowsZones.xml (common/supplemental), the table Windows itself follows.
WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Etc/UTC": "UTC",
    "Etc/GMT": "UTC",
    "Europe/London": "GMT Standard Time",
    "Europe/Dublin": "GMT Standard Time",
    "Europe/Lisbon": "GMT Standard Time",
    "Europe/Amsterdam": "W. Europe Standard Time",
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/Rome": "W. Europe Standard Time",
    "Europe/Stockholm": "W. Europe Standard Time",
    "Europe/Vienna": "W. Europe Standard Time",
    "Europe/Zurich": "W. Europe Standard Time",
    "Europe/Oslo": "W. Europe Standard Time",
    "Europe/Luxembourg": "W. Europe Standard Time",
    "Europe/Paris": "Romance Standard Time",
    "Europe/Brussels": "Romance Standard Time",
    "Europe/Madrid": "Romance Standard Time",
    "Europe/Copenhagen": "Romance Standard Time",
    "Europe/Warsaw": "Central European Standard Time",
    "Europe/Zagreb": "Central European Standard Time",
    "Europe/Prague": "Central Europe Standard Time",
    "Europe/Budapest": "Central Europe Standard Time",
    "Europe/Belgrade": "Central Europe Standard Time",
    "Europe/Athens": "GTB Standard Time",
    "Europe/Bucharest": "GTB Standard Time",
    "Europe/Helsinki": "FLE Standard Time",
    "Europe/Kyiv": "FLE Standard Time",
    "Europe/Kiev": "FLE Standard Time",
    "Europe/Riga": "FLE Standard Time",
    "Europe/Sofia": "FLE Standard Time",
    "Europe/Tallinn": "FLE Standard Time",
    "Europe/Vilnius": "FLE Standard Time",
    "Europe/Istanbul": "Turkey Standard Time",
    "Europe/Moscow": "Russian Standard Time",
    "Asia/Tokyo": "Tokyo Standard Time",
    "Asia/Seoul": "Korea Standard Time",
    "Asia/Shanghai": "China Standard Time",
    "Asia/Hong_Kong": "China Standard Time",
    "Asia/Taipei": "Taipei Standard Time",
    "Asia/Singapore": "Singapore Standard Time",
    "Asia/Kuala_Lumpur": "Singapore Standard Time",
    "Asia/Manila": "Singapore Standard Time",
    "Asia/Bangkok": "SE Asia Standard Time",
    "Asia/Jakarta": "SE Asia Standard Time",
    "Asia/Ho_Chi_Minh": "SE Asia Standard Time",
    "Asia/Kolkata": "India Standard Time",
    "Asia/Calcutta": "India Standard Time",
    "Asia/Dubai": "Arabian Standard Time",
    "Asia/Jerusalem": "Israel Standard Time",
    "Asia/Karachi": "Pakistan Standard Time",
    "Asia/Dhaka": "Bangladesh Standard Time",
    "Australia/Sydney": "AUS Eastern Standard Time",
    "Australia/Melbourne": "AUS Eastern Standard Time",
    "Australia/Brisbane": "E. Australia Standard Time",
    "Australia/Adelaide": "Cen. Australia Standard Time",
    "Australia/Perth": "W. Australia Standard Time",
    "Pacific/Auckland": "New Zealand Standard Time",
    "Pacific/Honolulu": "Hawaiian Standard Time",
    "America/New_York": "Eastern Standard Time",
    "America/Toronto": "Eastern Standard Time",
    "America/Detroit": "Eastern Standard Time",
    "America/Chicago": "Central Standard Time",
    "America/Winnipeg": "Central Standard Time",
    "America/Denver": "Mountain Standard Time",
    "America/Edmonton": "Mountain Standard Time",
    "America/Phoenix": "US Mountain Standard Time",
    "America/Los_Angeles": "Pacific Standard Time",
    "America/Vancouver": "Pacific Standard Time",
    "America/Anchorage": "Alaskan Standard Time",
    "America/Halifax": "Atlantic Standard Time",
    "America/Mexico_City": "Central Standard Time (Mexico)",
    "America/Sao_Paulo": "E. South America Standard Time",
    "Africa/Johannesburg": "South Africa Standard Time",
    "Africa/Cairo": "Egypt Standard Time",
    "Africa/Lagos": "W. Central Africa Standard Time",
    "Africa/Nairobi": "E. Africa Standard Time",
}


def windows_time_zone(iana: str) -> str:
    """The Windows id Azure's auto-shutdown schedule needs; a one-line fix when unknown."""
    zone = WINDOWS_ZONES.get(iana)
    if zone is None:
        raise CommandError(
            f"rig.toml: autostop.timezone: {iana!r} has no known Windows time-zone id for "
            "Azure's daily shutdown — use a zone of the same offset that is known (e.g. "
            '"UTC", "Europe/Amsterdam", "Asia/Tokyo"; list: rig/azure.py WINDOWS_ZONES), '
            'or set autostop.daily_shutdown = "off"',
            exit_code=2,
        )
    return zone


def shutdown_time(daily: str) -> str | None:
    """ "19:00" -> "1900" (DevTestLab's HHmm); None when the schedule is off."""
    return None if daily == "off" else daily.replace(":", "")


# ---- credentials -----------------------------------------------------------------------------

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def run_quiet(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


@dataclass(frozen=True)
class Credentials:
    kind: str  # "service-principal" or "az-cli"
    subscription_id: str
    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)

    def pulumi_env(self) -> dict[str, str]:
        """Variables the azure-native provider reads (it uses the ARM_* names)."""
        env = {"ARM_SUBSCRIPTION_ID": self.subscription_id}
        if self.kind == "service-principal":
            env |= {
                "ARM_CLIENT_ID": self.client_id,
                "ARM_CLIENT_SECRET": self.client_secret,
                "ARM_TENANT_ID": self.tenant_id,
            }
        # Without a principal the provider falls back to `az login` by itself.
        return env


def _env(env: Mapping[str, str], name: str) -> str:
    # Pulumi documents ARM_*, the Azure SDKs and CLI AZURE_*: accept both.
    return env.get(f"ARM_{name}") or env.get(f"AZURE_{name}") or ""


def find_credentials(
    env: Mapping[str, str] | None = None, run: Runner = run_quiet
) -> Credentials | None:
    """A service principal from the environment, else `az login`'s account; None if neither."""
    env = os.environ if env is None else env
    sp = {n: _env(env, n) for n in ("CLIENT_ID", "CLIENT_SECRET", "TENANT_ID", "SUBSCRIPTION_ID")}
    if all(sp.values()):
        return Credentials(
            "service-principal",
            sp["SUBSCRIPTION_ID"],
            sp["TENANT_ID"],
            sp["CLIENT_ID"],
            sp["CLIENT_SECRET"],
        )
    if shutil.which("az") is None:
        return None
    try:
        done = run(["az", "account", "show", "--output", "json"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    account = json.loads(done.stdout or "{}")
    sub = sp["SUBSCRIPTION_ID"] or account.get("id", "")
    return Credentials("az-cli", sub, account.get("tenantId", "")) if sub else None


NO_CREDENTIALS = (
    "no Azure credentials — run `az login` (and `az account set --subscription ID`), or export "
    "ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and ARM_SUBSCRIPTION_ID for a service "
    "principal"
)


# ---- HTTP ------------------------------------------------------------------------------------

# (method, url, headers, form body or None) -> (status, parsed JSON or {})
Http = Callable[[str, str, Mapping[str, str], Mapping[str, str] | None], tuple[int, Any]]


def urllib_http(
    method: str, url: str, headers: Mapping[str, str], form: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(url, data=data, headers=dict(headers), method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (urllib.error.URLError, TimeoutError) as exc:
        raise CommandError(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {exc}") from None
    try:
        return status, json.loads(body) if body else {}
    except ValueError:
        return status, {}


def access_token(creds: Credentials, http: Http = urllib_http, run: Runner = run_quiet) -> str:
    """An ARM bearer token: OAuth client credentials for a principal, `az` otherwise."""
    if creds.kind == "service-principal":
        status, body = http(
            "POST",
            f"https://login.microsoftonline.com/{creds.tenant_id}/oauth2/v2.0/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            {
                "grant_type": "client_credentials",
                "client_id": creds.client_id,
                "client_secret": creds.client_secret,
                "scope": f"{ARM}/.default",
            },
        )
        if status != 200 or "access_token" not in body:
            raise CommandError(
                f"Azure sign-in for service principal {creds.client_id} failed "
                f"({body.get('error', status)}) — check ARM_CLIENT_ID/SECRET/TENANT_ID"
            )
        return str(body["access_token"])
    done = run(["az", "account", "get-access-token", "--resource", f"{ARM}/", "--output", "json"])
    if done.returncode != 0:
        raise CommandError("`az account get-access-token` failed — run `az login` again")
    return str(json.loads(done.stdout)["accessToken"])


# ---- the interface the orchestration uses ----------------------------------------------------


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
class PriceQuote:
    on_demand: float | None
    spot: float | None
    source: str
    at: str


class AzureApi(Protocol):
    subscription_id: str

    def usages(self, location: str) -> list[Usage]: ...

    def vm_sku(self, location: str, size: str) -> SkuInfo | None: ...

    def resource_group_exists(self, name: str) -> bool: ...

    def tagged_resources(self, tag: tuple[str, str]) -> list[str]: ...


class RestAzure:
    """AzureApi over ARM REST with a bearer token."""

    def __init__(self, subscription_id: str, token: str, http: Http = urllib_http):
        self.subscription_id = subscription_id
        self._token = token
        self._http = http

    def _get(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        url = f"{ARM}/subscriptions/{self.subscription_id}{path}"
        items: list[Any] = []
        status, body = 0, {}
        next_url: str | None = f"{url}?{urllib.parse.urlencode(params)}"
        while next_url:  # ARM pages lists with nextLink
            status, body = self._http(
                "GET", next_url, {"Authorization": f"Bearer {self._token}"}, None
            )
            if status == 401 or status == 403:
                raise CommandError(
                    f"Azure refused {path} ({status}: "
                    f"{body.get('error', {}).get('code', '')}) — the signed-in identity needs "
                    "Reader on the subscription (and Owner/User Access Administrator to deploy)"
                )
            if status != 200 or "value" not in body:
                return status, body
            items += body["value"]
            next_url = body.get("nextLink")
        return status, {"value": items}

    def usages(self, location: str) -> list[Usage]:
        status, body = self._get(
            f"/providers/Microsoft.Compute/locations/{location}/usages",
            {"api-version": COMPUTE_API},
        )
        if status != 200:
            raise CommandError(f"Azure usage API answered {status} for {location}")
        return [parse_usage(u) for u in body["value"]]

    def vm_sku(self, location: str, size: str) -> SkuInfo | None:
        status, body = self._get(
            "/providers/Microsoft.Compute/skus",
            {"api-version": SKUS_API, "$filter": f"location eq '{location}'"},
        )
        if status != 200:
            raise CommandError(f"Azure resource SKU API answered {status} for {location}")
        return parse_sku(body["value"], location, size)

    def resource_group_exists(self, name: str) -> bool:
        status, _ = self._get(f"/resourcegroups/{name}", {"api-version": RESOURCES_API})
        if status not in (200, 404):
            raise CommandError(f"Azure answered {status} when checking resource group {name}")
        return status == 200

    def tagged_resources(self, tag: tuple[str, str]) -> list[str]:
        filt = f"tagName eq '{tag[0]}' and tagValue eq '{tag[1]}'"
        ids: list[str] = []
        for path in ("/resourcegroups", "/resources"):
            status, body = self._get(path, {"api-version": RESOURCES_API, "$filter": filt})
            if status != 200:
                raise CommandError(f"Azure answered {status} listing tagged {path[1:]}")
            ids += [str(r["id"]) for r in body["value"]]
        return ids


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


def retail_price(
    location: str, size: str, http: Http = urllib_http, now: dt.datetime | None = None
) -> PriceQuote | None:
    """Live Linux on-demand and spot $/h from the public retail prices API (no sign-in)."""
    filt = (
        "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and "
        f"armRegionName eq '{location}' and armSkuName eq '{size}'"
    )
    url = f"{RETAIL_PRICES}?{urllib.parse.urlencode({'$filter': filt})}"
    try:
        status, body = http("GET", url, {}, None)
    except CommandError:
        return None  # offline: the catalog price stands in, and says so
    if status != 200:
        return None
    return parse_retail(body.get("Items", []), now or dt.datetime.now(dt.UTC))


def parse_retail(items: list[Mapping[str, Any]], now: dt.datetime) -> PriceQuote | None:
    on_demand = spot = None
    for item in items:
        if item.get("unitOfMeasure") != "1 Hour" or "Windows" in item.get("productName", ""):
            continue
        sku = str(item.get("skuName", ""))
        price = float(item["retailPrice"])
        if sku.endswith(" Spot"):
            spot = price
        elif not sku.endswith(" Low Priority"):
            on_demand = price
    if on_demand is None and spot is None:
        return None
    return PriceQuote(on_demand, spot, "azure retail prices API", now.isoformat(timespec="seconds"))


# ---- preflight -------------------------------------------------------------------------------


def preflight(profile: Profile, size: str, vcpus_needed: int, api: AzureApi) -> list[str]:
    """Check offering, Spot and quota for one size; raise a one-line CommandError, else notes."""
    az = profile.azure
    sku = api.vm_sku(az.location, size)
    if sku is None:
        raise CommandError(
            f"{size} is not offered in {az.location} for this subscription — pick another "
            "[azure] location or vm_sizes (`az vm list-skus -l LOCATION --size Standard_NC`)"
        )
    if sku.restricted:
        raise CommandError(
            f"{size} is restricted in {az.location} for this subscription ({sku.restricted}) — "
            "pick another [azure] location, or ask Azure support to lift the restriction"
        )
    if az.spot and not sku.spot_capable:
        raise CommandError(
            f"This size does not support Azure Spot: {size} in {az.location} — set "
            "[azure] spot = false in rig.toml to deploy it on demand (billed at the full price)"
        )
    usages = {u.name: u for u in api.usages(az.location)}
    notes = []
    vcpus = sku.vcpus or vcpus_needed
    checks = [(sku.family, "family")]
    if az.spot:
        # Spot VMs draw on the regional low-priority quota, not the family quota.
        checks = [("lowPriorityCores", "Spot")]
    checks.append(("cores", "regional"))
    for name, what in checks:
        usage = usages.get(name)
        if usage is None:
            continue
        if usage.free < vcpus:
            raise CommandError(
                f"not enough {what} vCPU quota for {size} in {az.location}: {usage.label} "
                f"{usage.current}/{usage.limit} used, {vcpus} needed — request more in the portal "
                f"(Subscriptions > Usage + quotas, search '{usage.label}') and deploy again"
            )
        notes.append(f"quota {usage.label}: {usage.free} of {usage.limit} vCPUs free")
    return notes
