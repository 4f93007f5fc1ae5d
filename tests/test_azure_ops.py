"""rig/azure.py: names, the schedule's time zone, credentials, ARM REST parsing, preflight.

The REST client runs against a fake `Http` serving payloads in Microsoft's documented shapes
(tests/fixtures/azure); nothing here reaches Azure.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from rig import azure
from rig.problems import CommandError
from rig.profile import load_profile

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
SUB = "00000000-0000-0000-0000-000000000001"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


class FakeHttp:
    """Answers by URL substring; records every request."""

    def __init__(self, routes: dict[str, tuple[int, Any]]):
        self.routes = routes
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, method: str, url: str, headers: Any, form: Any) -> tuple[int, Any]:
        self.calls.append((method, url, dict(headers), form))
        for key, answer in self.routes.items():
            if key in url:
                return answer
        return 404, {"error": {"code": "ResourceGroupNotFound"}}


def test_names_are_short_valid_and_embed_the_size():
    names = azure.AzureNames("Standard_NC8as_T4_v3", "westeurope")
    assert azure.slug("Standard_NC8as_T4_v3") == "nc8as-t4-v3"
    assert names.stack == "nc8as-t4-v3-westeurope"
    assert names.resource_group == "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
    assert names.vm == "vm-rehearsal-nc8as-t4-v3"
    assert names.target == "azure-Standard_NC8as_T4_v3"


def test_max_price_follows_spot_settings(profile_file):
    assert azure.max_price(load_profile(profile_file()).azure) == -1.0
    capped = load_profile(profile_file(("azure", "spot_max_price", "0.4"))).azure
    assert azure.max_price(capped) == 0.4
    assert azure.max_price(load_profile(profile_file(("azure", "spot", "false"))).azure) is None


@pytest.mark.parametrize(
    ("iana", "windows"),
    [
        ("UTC", "UTC"),
        ("Asia/Tokyo", "Tokyo Standard Time"),
        ("Europe/Amsterdam", "W. Europe Standard Time"),
        ("Europe/London", "GMT Standard Time"),
        ("America/New_York", "Eastern Standard Time"),
    ],
)
def test_iana_zones_map_to_windows_ids(iana, windows):
    assert azure.windows_time_zone(iana) == windows


def test_every_mapped_zone_is_a_real_iana_zone():
    for iana in azure.WINDOWS_ZONES:
        zoneinfo.ZoneInfo(iana)  # raises for a typo in the table


def test_unknown_zone_is_a_one_line_error_with_the_fix():
    with pytest.raises(CommandError) as err:
        azure.windows_time_zone("America/Argentina/Ushuaia")
    msg = str(err.value)
    assert "\n" not in msg and "America/Argentina/Ushuaia" in msg
    assert 'daily_shutdown = "off"' in msg and err.value.exit_code == 2


def test_shutdown_time_is_hhmm():
    assert azure.shutdown_time("19:00") == "1900"
    assert azure.shutdown_time("07:05") == "0705"
    assert azure.shutdown_time("off") is None


def test_service_principal_from_either_variable_family():
    env = {
        "ARM_CLIENT_ID": "app",
        "AZURE_CLIENT_SECRET": "s3cret",
        "ARM_TENANT_ID": "tenant",
        "AZURE_SUBSCRIPTION_ID": SUB,
    }
    creds = azure.find_credentials(env, run=lambda _a: pytest.fail("az must not be called"))
    assert creds is not None and creds.kind == "service-principal"
    assert creds.pulumi_env() == {
        "ARM_SUBSCRIPTION_ID": SUB,
        "ARM_CLIENT_ID": "app",
        "ARM_CLIENT_SECRET": "s3cret",
        "ARM_TENANT_ID": "tenant",
    }
    assert "s3cret" not in repr(creds)


def test_az_login_account_or_nothing(monkeypatch):
    monkeypatch.setattr(azure.shutil, "which", lambda name: "/usr/bin/az")
    shown = json.dumps({"id": SUB, "tenantId": "t"})
    ok = azure.find_credentials({}, run=lambda a: subprocess.CompletedProcess(a, 0, shown, ""))
    assert ok == azure.Credentials("az-cli", SUB, "t")
    assert ok.pulumi_env() == {"ARM_SUBSCRIPTION_ID": SUB}
    logged_out = azure.find_credentials(
        {}, run=lambda a: subprocess.CompletedProcess(a, 1, "", "Please run 'az login'")
    )
    assert logged_out is None
    monkeypatch.setattr(azure.shutil, "which", lambda name: None)
    assert azure.find_credentials({}) is None


def test_service_principal_token_request():
    http = FakeHttp({"login.microsoftonline.com": (200, {"access_token": "tok"})})
    creds = azure.Credentials("service-principal", SUB, "tenant", "app", "pw")
    assert azure.access_token(creds, http) == "tok"
    method, url, _, form = http.calls[0]
    assert (method, url) == ("POST", "https://login.microsoftonline.com/tenant/oauth2/v2.0/token")
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "https://management.azure.com/.default"
    bad = FakeHttp({"login": (401, {"error": "invalid_client"})})
    with pytest.raises(CommandError, match="invalid_client"):
        azure.access_token(creds, bad)


def test_usages_follow_next_link_and_send_the_token():
    http = FakeHttp(
        {"page=2": (200, fixture("usages_page2.json")), "/usages": (200, fixture("usages.json"))}
    )
    usages = azure.RestAzure(SUB, "tok", http).usages("westeurope")
    assert [u.name for u in usages] == [
        "cores",
        "standardNCASv3_T4Family",
        "lowPriorityCores",
        "standardDSv5Family",
    ]
    family = usages[1]
    assert (family.current, family.limit, family.free) == (4, 24, 20)
    assert family.label == "Standard NCASv3_T4 Family vCPUs"
    first = http.calls[0][1]
    assert first.startswith(
        f"https://management.azure.com/subscriptions/{SUB}/providers/Microsoft.Compute/"
        "locations/westeurope/usages?api-version="
    )
    assert all(h["Authorization"] == "Bearer tok" for _, _, h, _ in http.calls)


def test_sku_parsing_spot_capability_and_restrictions():
    items = fixture("skus.json")["value"]
    nc8 = azure.parse_sku(items, "westeurope", "Standard_NC8as_T4_v3")
    assert nc8 == azure.SkuInfo(
        "Standard_NC8as_T4_v3", "standardNCASv3_T4Family", 8, spot_capable=True, restricted=""
    )  # a zone restriction does not bar a VM that is not pinned to a zone
    nc4 = azure.parse_sku(items, "westeurope", "Standard_NC4as_T4_v3")
    assert nc4 is not None and not nc4.spot_capable
    assert nc4.restricted == "NotAvailableForSubscription"
    assert azure.parse_sku(items, "eastus", "Standard_NC8as_T4_v3") is None
    assert azure.parse_sku(items, "westeurope", "Premium_LRS") is None  # a disk, not a VM


def test_resource_group_gone_and_tagged_leftovers():
    http = FakeHttp(
        {
            "/resourcegroups/rg-here?": (200, {"id": "/subscriptions/x/resourceGroups/rg-here"}),
            "/resourcegroups?": (200, {"value": []}),
            "/resources?": (200, {"value": [{"id": "/subscriptions/x/disk-1"}]}),
        }
    )
    api = azure.RestAzure(SUB, "tok", http)
    assert api.resource_group_exists("rg-here") is True
    assert api.resource_group_exists("rg-gone") is False
    assert api.tagged_resources(("project", "gpu-rehearsal")) == ["/subscriptions/x/disk-1"]
    assert "tagName+eq+%27project%27" in http.calls[-1][1]
    denied = azure.RestAzure(SUB, "tok", FakeHttp({"": (403, {"error": {"code": "Denied"}})}))
    with pytest.raises(CommandError, match="403"):
        denied.resource_group_exists("rg")


def test_retail_prices_pick_linux_on_demand_and_spot():
    http = FakeHttp({"prices.azure.com": (200, fixture("retail_prices.json"))})
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    quote = azure.retail_price("westeurope", "Standard_NC8as_T4_v3", http, now)
    assert quote == azure.PriceQuote(0.84, 0.1932, "azure retail prices API", now.isoformat())
    url = http.calls[0][1]
    assert "armSkuName+eq+%27Standard_NC8as_T4_v3%27" in url
    assert "armRegionName+eq+%27westeurope%27" in url


def test_retail_price_offline_or_unknown_is_none():
    def offline(*_a: Any) -> Any:
        raise CommandError("cannot reach prices.azure.com")

    assert azure.retail_price("westeurope", "Standard_NC8as_T4_v3", offline) is None
    empty = FakeHttp({"prices": (200, {"Items": []})})
    assert azure.retail_price("westeurope", "Standard_NC8as_T4_v3", empty) is None


class FakeApi:
    subscription_id = SUB

    def __init__(self, sku: azure.SkuInfo | None, usages: list[azure.Usage]):
        self.sku, self._usages = sku, usages

    def usages(self, location: str) -> list[azure.Usage]:
        return self._usages

    def vm_sku(self, location: str, size: str) -> azure.SkuInfo | None:
        return self.sku

    def resource_group_exists(self, name: str) -> bool:
        return False

    def tagged_resources(self, tag: tuple[str, str]) -> list[str]:
        return []


NC8 = azure.SkuInfo("Standard_NC8as_T4_v3", "standardNCASv3_T4Family", 8, True)
ROOMY = [
    azure.Usage("cores", "Total Regional vCPUs", 0, 100),
    azure.Usage("standardNCASv3_T4Family", "Standard NCASv3_T4 Family vCPUs", 0, 24),
    azure.Usage("lowPriorityCores", "Total Regional Spot vCPUs", 0, 24),
]


def test_preflight_passes_with_quota_and_notes_it(profile_file):
    notes = azure.preflight(load_profile(profile_file()), NC8.name, 8, FakeApi(NC8, ROOMY))
    assert notes == [
        "quota Total Regional Spot vCPUs: 24 of 24 vCPUs free",
        "quota Total Regional vCPUs: 100 of 100 vCPUs free",
    ]


def test_preflight_spot_refused_names_the_on_demand_option(profile_file):
    no_spot = azure.SkuInfo(NC8.name, NC8.family, 8, spot_capable=False)
    with pytest.raises(CommandError) as err:
        azure.preflight(load_profile(profile_file()), NC8.name, 8, FakeApi(no_spot, ROOMY))
    assert "does not support Azure Spot" in str(err.value)
    assert "spot = false" in str(err.value)
    # On demand the same size passes, against the family quota.
    regular = load_profile(profile_file(("azure", "spot", "false")))
    notes = azure.preflight(regular, NC8.name, 8, FakeApi(no_spot, ROOMY))
    assert notes[0] == "quota Standard NCASv3_T4 Family vCPUs: 24 of 24 vCPUs free"


def test_preflight_quota_too_small(profile_file):
    tight = [azure.Usage("lowPriorityCores", "Total Regional Spot vCPUs", 0, 3)]
    with pytest.raises(CommandError) as err:
        azure.preflight(load_profile(profile_file()), NC8.name, 8, FakeApi(NC8, tight))
    assert "0/3 used, 8 needed" in str(err.value)
    assert "Usage + quotas" in str(err.value)


def test_preflight_not_offered_or_restricted(profile_file):
    profile = load_profile(profile_file())
    with pytest.raises(CommandError, match="not offered in westeurope"):
        azure.preflight(profile, NC8.name, 8, FakeApi(None, ROOMY))
    barred = azure.SkuInfo(NC8.name, NC8.family, 8, True, "NotAvailableForSubscription")
    with pytest.raises(CommandError, match="restricted"):
        azure.preflight(profile, NC8.name, 8, FakeApi(barred, ROOMY))
