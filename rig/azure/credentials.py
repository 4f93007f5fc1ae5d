"""Who is signed in to Azure, for which subscription, and an ARM bearer token.

A service principal from ARM_* (or AZURE_*) variables, else the Azure CLI's `az login` account.
The subscription is, in order: [azure] subscription in rig.toml, ARM_SUBSCRIPTION_ID, the
CLI's default. Destroy and status do not use it for what was deployed: they use the subscription
recorded in the state (`for_subscription`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from rig.azure.http import Http, urllib_http
from rig.problems import CommandError

ARM = "https://management.azure.com"

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
    subscription_name: str = ""

    def for_subscription(self, subscription_id: str) -> Credentials:
        """The same identity, pointed at another subscription (the one a state records)."""
        if subscription_id == self.subscription_id:
            return self
        return replace(self, subscription_id=subscription_id, subscription_name="")

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
    env: Mapping[str, str] | None = None, run: Runner = run_quiet, subscription: str = ""
) -> Credentials | None:
    """A service principal from the environment, else `az login`'s account; None if neither."""
    env = os.environ if env is None else env
    sp = {n: _env(env, n) for n in ("CLIENT_ID", "CLIENT_SECRET", "TENANT_ID", "SUBSCRIPTION_ID")}
    wanted = subscription or sp["SUBSCRIPTION_ID"]
    if all(sp[n] for n in ("CLIENT_ID", "CLIENT_SECRET", "TENANT_ID")) and wanted:
        return Credentials(
            "service-principal", wanted, sp["TENANT_ID"], sp["CLIENT_ID"], sp["CLIENT_SECRET"]
        )
    if shutil.which("az") is None:
        return None
    try:
        done = run(["az", "account", "show", "--output", "json"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        account = json.loads(done.stdout or "{}")
    except ValueError:
        return None  # not the JSON `az account show -o json` documents: treat as not signed in
    if not isinstance(account, dict):
        return None
    sub = wanted or account.get("id", "")
    name = account.get("name", "") if sub == account.get("id") else ""
    if not sub:
        return None
    return Credentials("az-cli", sub, account.get("tenantId", ""), subscription_name=name)


NO_CREDENTIALS = (
    "no Azure credentials — run `az login` (and `az account set --subscription ID`), or export "
    "ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID and ARM_SUBSCRIPTION_ID for a service "
    "principal"
)


def access_token(creds: Credentials, http: Http = urllib_http, run: Runner = run_quiet) -> str:
    """An ARM bearer token: OAuth client credentials for a principal, `az` otherwise."""
    if creds.kind == "service-principal":
        resp = http(
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
        if resp.status != 200 or "access_token" not in resp.body:
            raise CommandError(
                f"Azure sign-in for service principal {creds.client_id} failed "
                f"({resp.error[0] or resp.status}) — check ARM_CLIENT_ID/SECRET/TENANT_ID"
            )
        return str(resp.body["access_token"])
    try:
        done = run(
            ["az", "account", "get-access-token", "--resource", f"{ARM}/", "--output", "json"]
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandError(f"`az account get-access-token` could not run ({exc})") from None
    if done.returncode != 0:
        raise CommandError("`az account get-access-token` failed — run `az login` again")
    try:
        return str(json.loads(done.stdout)["accessToken"])
    except (ValueError, KeyError, TypeError):
        raise CommandError(
            "`az account get-access-token` answered without an accessToken — run `az login` "
            "again (or update the Azure CLI)"
        ) from None
