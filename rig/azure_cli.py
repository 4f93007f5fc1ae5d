"""`python -m rig deploy azure` and `python -m rig destroy azure` (make deploy-azure / destroy).

deploy: the plan side by side -> preflight (Pulumi CLI, credentials, offering, Spot, quota, live
price, worst case) -> `pulumi up` per VM size -> state file -> wait for SSH -> provisioning.
destroy: `pulumi destroy` per stack -> the resource groups must be gone and no resource tagged
project=gpu-rehearsal may be left; anything left is listed and the exit status is 1.

Everything that reaches outside (Azure, the Pulumi CLI, the network, ssh-keygen, Ansible) comes
in through `Deps`, so tests run the whole flow with fakes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import inspect
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from rig import azure
from rig.azure import AzureApi, AzureNames, Credentials, PriceQuote, names_for
from rig.catalog import load_catalog
from rig.plan import print_plan
from rig.problems import CommandError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.state import STATE_DIR, Price, VmState, iso, read_all, remove, utc_now, write

PROGRAM_DIR = Path(__file__).resolve().parent.parent / "pulumi_azure"
PROJECT = "gpu-rehearsal-azure"  # Pulumi.yaml name: the stack config namespace
SSH_WAIT_S = 600.0

# ---- Pulumi, without Pulumi Cloud ------------------------------------------------------------

# (args after `pulumi`, extra environment, capture stdout?) -> completed process
PulumiRunner = Callable[[list[str], dict[str, str], bool], "subprocess.CompletedProcess[str]"]


def secrets_env(state_dir: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The passphrase for the secrets provider: the user's, else one generated once (0600)."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("PULUMI_CONFIG_PASSPHRASE") or environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return {}
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "pulumi-passphrase"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path.resolve())}


def backend_env(state_dir: Path) -> dict[str, str]:
    backend = state_dir / "pulumi"
    backend.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {
        "PULUMI_BACKEND_URL": backend.resolve().as_uri(),  # file:// — no Pulumi Cloud account
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
    }


def subprocess_runner(exe: str) -> PulumiRunner:
    def run(
        args: list[str], env: dict[str, str], capture: bool
    ) -> subprocess.CompletedProcess[str]:
        full = [exe, *args, "--cwd", str(PROGRAM_DIR), "--non-interactive"]
        if capture:
            return subprocess.run(
                full, env=os.environ | env, capture_output=True, text=True, check=False
            )
        # Stream `up`/`destroy` progress to the user and keep the text to explain failures.
        proc = subprocess.Popen(
            full,
            env=os.environ | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        return subprocess.CompletedProcess(full, proc.wait(), "".join(lines[-200:]), "")

    return run


# Azure errors `pulumi up` may end with, and the one-line fix for each.
UP_HINTS = {
    "does not support Azure Spot": "set [azure] spot = false in rig.toml (on-demand price)",
    "SkuNotAvailable": "the size has no capacity there now: try another [azure] location",
    "OverconstrainedAllocationRequest": "no capacity for this size: try another location",
    "QuotaExceeded": "request more vCPU quota (portal: Subscriptions > Usage + quotas)",
    "AuthorizationFailed": "deploying needs Owner (or Contributor + User Access Administrator)",
}


@dataclass
class Pulumi:
    run: PulumiRunner
    env: dict[str, str]

    def _ok(self, args: list[str], what: str, capture: bool = True) -> str:
        done = self.run(args, self.env, capture)
        if done.returncode != 0:
            text = (done.stdout or "") + (done.stderr or "")
            hint = next((fix for key, fix in UP_HINTS.items() if key in text), None)
            tail = text.strip().splitlines()[-1:] if capture else []
            raise CommandError(
                f"pulumi {what} failed (exit {done.returncode})"
                + (f": {tail[0]}" if tail else "")
                + f" — {hint or 'read the error above, fix it and run the command again'}"
                + "; `make destroy` removes whatever was created"
            )
        return done.stdout or ""

    def select(self, stack: str) -> None:
        self._ok(
            ["stack", "select", "--create", "--stack", stack, "--secrets-provider", "passphrase"],
            f"stack select {stack}",
        )

    def configure(self, stack: str, values: dict[str, str]) -> None:
        args = ["config", "set-all", "--stack", stack]
        for key, value in values.items():
            args += ["--plaintext", f"{PROJECT}:{key}={value}"]
        self._ok(args, f"config set-all {stack}")

    def up(self, stack: str) -> None:
        self._ok(["up", "--yes", "--skip-preview", "--stack", stack], f"up {stack}", False)

    def outputs(self, stack: str) -> dict[str, Any]:
        return json.loads(self._ok(["stack", "output", "--json", "--stack", stack], "output"))

    def stacks(self) -> list[str]:
        listed = json.loads(self._ok(["stack", "ls", "--json"], "stack ls") or "[]")
        return [s["name"] for s in listed]

    def destroy(self, stack: str) -> None:
        self._ok(
            ["destroy", "--yes", "--skip-preview", "--stack", stack], f"destroy {stack}", False
        )
        self._ok(["stack", "rm", "--yes", "--stack", stack], f"stack rm {stack}")


def pulumi_missing() -> str | None:
    """Why a real deploy cannot run the Pulumi program here, with the exact fix; None if it can."""
    if shutil.which("pulumi") is None:
        return (
            f"the Pulumi CLI is not installed — install it with: {azure.PULUMI_INSTALL} "
            '&& export PATH="$HOME/.pulumi/bin:$PATH" (no Pulumi account needed: state stays in '
            ".state/pulumi)"
        )
    if not all(importlib.util.find_spec(m) for m in ("pulumi", "pulumi_azure_native")):
        return (
            f"the Pulumi Python packages are missing — install them with: {azure.PULUMI_PY_INSTALL}"
        )
    return None


# ---- everything outside, behind one seam -------------------------------------------------------


def caller_ip() -> str:
    """This machine's public IPv4 address, as Azure will see the SSH connection come."""
    try:
        with urllib.request.urlopen("https://api.ipify.org", timeout=15) as resp:
            text = resp.read().decode().strip()
        return str(ipaddress.IPv4Address(text))
    except (OSError, ValueError) as exc:
        raise CommandError(
            f"cannot find your public IP for access.ssh_source = 'auto' ({exc}) — set "
            'access.ssh_source = "YOUR.IP.ADDRESS/32" in rig.toml'
        ) from None


def wait_for_ssh(host: str, timeout_s: float = SSH_WAIT_S) -> None:
    """Until sshd answers with its banner (a bare TCP accept can come from a half-booted VM)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, 22), timeout=5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(5)
    raise CommandError(
        f"SSH on {host}:22 did not answer within {timeout_s / 60:.0f} min — the VM is up and "
        "billing: check access.ssh_source is your current address, or run `make destroy`"
    )


def ssh_keygen(private: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        raise CommandError(
            "ssh-keygen not found — install OpenSSH client, or set access.ssh_public_key"
        )
    private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpu-rehearsal", "-f", str(private)],
        check=True,
    )


def find_provisioner() -> Callable[..., Any] | None:
    """rig.provision.provision when the Ansible part is installed; None until then."""
    if importlib.util.find_spec("rig.provision") is None:
        return None
    return importlib.import_module("rig.provision").provision  # type: ignore[no-any-return]


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return True  # make deploy-azure is the intent; the cost was printed just above
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def _real_pulumi(state_dir: Path, creds: Credentials) -> Pulumi:
    exe = shutil.which("pulumi") or "pulumi"
    env = backend_env(state_dir) | secrets_env(state_dir) | creds.pulumi_env()
    return Pulumi(subprocess_runner(exe), env)


@dataclass
class Deps:
    state_dir: Path = STATE_DIR
    tools_missing: Callable[[], str | None] = pulumi_missing
    credentials: Callable[[], Credentials | None] = azure.find_credentials
    api: Callable[[Credentials], AzureApi] = field(
        default=lambda c: azure.RestAzure(c.subscription_id, azure.access_token(c))
    )
    pulumi: Callable[[Path, Credentials], Pulumi] = _real_pulumi
    price: Callable[[str, str], PriceQuote | None] = azure.retail_price
    public_ip: Callable[[], str] = caller_ip
    wait_ssh: Callable[[str], None] = wait_for_ssh
    keygen: Callable[[Path], None] = ssh_keygen
    provisioner: Callable[[], Callable[..., Any] | None] = find_provisioner
    confirm: Callable[[str], bool] = _confirm
    now: Callable[[], dt.datetime] = utc_now
    sleep: Callable[[float], None] = time.sleep


# ---- deploy ------------------------------------------------------------------------------------


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


def _price(profile: Profile, size: str, quote: PriceQuote | None, now: dt.datetime) -> Price:
    """What the state file records: the live price when read, else the catalog's with its key."""
    az = profile.azure
    catalog = load_catalog().instances[size].price_in(az.location)
    on_demand = quote.on_demand if quote and quote.on_demand else None
    if on_demand is None and catalog is not None:
        on_demand = catalog.usd_per_hour
    source = quote.source if quote else (catalog.source if catalog else "unknown")
    at = quote.at if quote else iso(now)
    if az.spot:
        cap = None if az.spot_max_price == "" else float(az.spot_max_price)
        live = quote.spot if quote else None
        # Without a live spot price the cap (on-demand unless set) is the honest upper bound.
        hourly = live if live is not None else (cap if cap is not None else on_demand)
        if hourly is None:
            raise CommandError(f"no price known for {size} in {az.location} — try again later")
        if live is None:
            source += " (spot price unknown: its cap as upper bound)"
        return Price(hourly, "spot", source, at, on_demand)
    if on_demand is None:
        raise CommandError(f"no price known for {size} in {az.location} — try again later")
    return Price(on_demand, "on-demand", source, at, on_demand)


def _state(
    profile: Profile, names: AzureNames, out: dict[str, Any], price: Price, key: Path, now: Any
) -> VmState:
    cat = load_catalog()
    return VmState(
        name=names.target,
        cloud="azure",
        region=profile.azure.location,
        instance_type=names.size,
        gpu=cat.instances[names.size].gpu or "",
        host=str(out["public_ip"]),
        ssh_user=str(out["ssh_user"]),
        ssh_key=str(key),
        spot=profile.azure.spot,
        price=price,
        deployed_at=iso(now),
        deadline=iso(now + dt.timedelta(hours=profile.autostop.max_hours)),
        ids={
            "stack": names.stack,
            "resource_group": str(out["resource_group"]),
            "vm_id": str(out["vm_id"]),
            "vm_name": str(out["vm_name"]),
        },
        extra={
            "image": profile.azure.image,  # tells Ansible whether the driver is there
            # What the idle watchdog calls with the VM's managed identity (OS shutdown would
            # keep billing; deallocation stops it).
            "deallocate_url": f"{azure.ARM}{out['vm_id']}/deallocate?api-version=2024-07-01",
            "daily_shutdown": profile.autostop.daily_shutdown,
            "timezone": profile.autostop.timezone,
        },
    )


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
            f"{', '.join(unknown)} not in [azure] vm_sizes {az.vm_sizes} — add it there first"
        )
    if profile.autostop.daily_shutdown != "off":
        azure.windows_time_zone(profile.autostop.timezone)  # fail before anything costs money
    print_plan(profile, console, cloud="azure")

    if (missing := deps.tools_missing()) is not None:
        raise CommandError(missing)
    creds = deps.credentials()
    if creds is None:
        raise CommandError(azure.NO_CREDENTIALS)
    api = deps.api(creds)
    cat = load_catalog()
    prices: dict[str, Price] = {}
    worst = 0.0
    for size in sizes:
        for note in azure.preflight(profile, size, cat.instances[size].vcpu, api):
            console.print(f"  {size}: {note}", highlight=False)
        prices[size] = _price(profile, size, deps.price(az.location, size), deps.now())
        p = prices[size]
        worst += p.usd_per_hour * profile.autostop.max_hours
        od = p.on_demand_usd_per_hour
        console.print(
            f"  {size}: ${p.usd_per_hour:.3f}/h {p.kind} ({p.source}); on-demand "
            + (f"${od:.3f}/h" if od else "unknown"),
            highlight=False,
        )
    console.print(
        f"Worst case: ${worst:.2f} if nothing stops the VM(s) before autostop.max_hours = "
        f"{profile.autostop.max_hours:g} h (idle stop after {profile.autostop.idle_minutes} min)",
        highlight=False,
    )
    if not deps.confirm("Deploy to Azure now?"):
        raise CommandError("deploy cancelled — nothing was created", exit_code=1)

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
            },
        )
        pulumi.up(names.stack)
        out = pulumi.outputs(names.stack)
        state = _state(profile, names, out, prices[size], private_key, deps.now())
        # Recorded before anything else can fail: a running VM bills, so status/destroy see it.
        write(state, deps.state_dir)
        console.print(f"waiting for SSH on {state.host} ...")
        deps.wait_ssh(state.host)
        if provision is None:
            console.print(
                f"{state.name}: not provisioned yet (no Ansible part installed: rig.provision) — "
                "the VM answers SSH but has no NVIDIA driver, Ollama or idle watchdog; "
                "the daily shutdown and max_hours still apply",
                style="yellow",
            )
        else:
            # provision() marks and rewrites the state file itself; hand it our state dir
            # when it takes one (the contract is provision(state, profile, console)).
            kwargs: dict[str, Any] = {}
            if "state_dir" in inspect.signature(provision).parameters:
                kwargs["state_dir"] = deps.state_dir
            result = provision(state, profile, console, **kwargs)
            if isinstance(result, VmState):
                state = result
                write(state, deps.state_dir)
        states.append(state)
        console.print(
            f"[green]ready[/green] {state.name}: ssh -i {state.ssh_key} -N -L "
            f"11434:127.0.0.1:11434 {state.ssh_user}@{state.host}  "
            f"(${state.price.usd_per_hour:.3f}/h {state.price.kind}; stops by {state.deadline})",
            highlight=False,
        )
    return states


# ---- destroy -----------------------------------------------------------------------------------


def destroy(profile: Profile, console: Console, deps: Deps) -> int:
    recorded = [s for s in read_all(deps.state_dir) if s.cloud == "azure"]
    backend = deps.state_dir / "pulumi"
    has_backend = backend.is_dir() and any(backend.rglob("*.json"))
    creds = deps.credentials()
    if not recorded and not has_backend and creds is None:
        console.print("Azure: nothing recorded in .state/ and no credentials to scan — 0 left")
        return 0
    if creds is None:
        raise CommandError(azure.NO_CREDENTIALS + " (needed to destroy and verify)")
    groups = {s.ids.get("resource_group", "") for s in recorded} - {""}
    groups |= {names_for(profile, size).resource_group for size in profile.azure.vm_sizes}
    stacks = {s.ids["stack"] for s in recorded if "stack" in s.ids}
    if has_backend:
        if (missing := deps.tools_missing()) is not None:
            raise CommandError(
                f"{missing}; or delete by hand: "
                + "; ".join(f"az group delete --name {g} --yes" for g in sorted(groups))
            )
        pulumi = deps.pulumi(deps.state_dir, creds)
        stacks |= set(pulumi.stacks())
        for stack in sorted(stacks):
            console.print(f"[bold]pulumi destroy[/bold] {stack}")
            pulumi.destroy(stack)
    api = deps.api(creds)
    leftovers: list[str] = []
    for attempt in range(6):  # ARM may list a group for a moment after its deletion finished
        leftovers = [f"resource group {g}" for g in sorted(groups) if api.resource_group_exists(g)]
        leftovers += [f"resource {r}" for r in api.tagged_resources(azure.PROJECT_TAG)]
        if not leftovers:
            break
        if attempt < 5:
            deps.sleep(10)
    if leftovers:
        for item in leftovers:
            console.print(f"  left on Azure: {item}", highlight=False)
        raise CommandError(
            f"Azure: {len(leftovers)} left after destroy (listed above) — they may still bill; "
            "delete them (az group delete --name GROUP --yes) and run make destroy again"
        )
    for s in recorded:
        remove(s.name, deps.state_dir)
    console.print(
        f"Azure: {len(stacks)} stack(s) destroyed; orphan scan (tag "
        f"{'='.join(azure.PROJECT_TAG)}) says 0 left"
    )
    return 0


# ---- the commands ------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    profile = load_profile(args.config)
    deps = Deps(state_dir=args.state_dir)
    if args.yes:
        deps.confirm = lambda _q: True
    deploy(profile, console, deps, args.size or None)
    return 0


def cmd_destroy(args: argparse.Namespace, console: Console) -> int:
    return destroy(load_profile(args.config), console, Deps(state_dir=args.state_dir))


def add_commands(commands: Any) -> None:
    dep = commands.deploy.add_parser("azure", help="spot GPU VM(s) on Azure with Pulumi")
    dep.add_argument("--config", type=Path, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    dep.add_argument("--state-dir", type=Path, default=STATE_DIR)
    dep.add_argument("--size", action="append", help="only this [azure] vm_sizes entry")
    dep.add_argument("--yes", action="store_true", help="do not ask before spending money")
    dep.set_defaults(func=cmd_deploy)
    des = commands.destroy.add_parser("azure", help="pulumi destroy, then verify nothing is left")
    des.add_argument("--config", type=Path, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    des.add_argument("--state-dir", type=Path, default=STATE_DIR)
    des.set_defaults(func=cmd_destroy)
