"""Everything the Azure deploy and destroy reach outside through: one seam, faked in tests.

Azure itself (ARM REST), the Pulumi CLI, the retail prices API, the caller's public IP, SSH,
ssh-keygen, Ansible, the terminal and the clock. The real implementations are the defaults.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import ipaddress
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

from rig.azure.arm import AzureApi, RestAzure
from rig.azure.credentials import Credentials, access_token, find_credentials
from rig.azure.pricing import Extras, PriceQuote, live_extras, retail_price
from rig.azure.pulumi_cli import (
    FileBackend,
    Pulumi,
    backend_dir,
    backend_env,
    pulumi_missing,
    secrets_env,
    subprocess_runner,
    write_project,
)
from rig.problems import CommandError
from rig.state import STATE_DIR, utc_now

SSH_WAIT_S = 600.0


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


def wait_for_ssh(host: str, port: int = 22, timeout_s: float = SSH_WAIT_S) -> None:
    """Until sshd answers with its banner (a bare TCP accept can come from a half-booted VM)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(5)
    raise CommandError(
        f"SSH on {host}:{port} did not answer within {timeout_s / 60:.0f} min — the VM is up and "
        "billing until its shutdown schedule: check access.ssh_source is your current address "
        "and run make deploy-azure again, or run make destroy"
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


def ask(question: str) -> bool:
    return input(f"{question} [y/N] ").strip().lower() in {"y", "yes"}


def real_api(creds: Credentials) -> AzureApi:
    return RestAzure(
        creds.subscription_id, access_token(creds), refresh=lambda: access_token(creds)
    )


def real_pulumi(state_dir: Path, creds: Credentials) -> Pulumi:
    exe = shutil.which("pulumi") or "pulumi"
    stacks = bool(FileBackend(backend_dir(state_dir)).stacks())
    env = backend_env(state_dir) | secrets_env(state_dir, stacks_exist=stacks) | creds.pulumi_env()
    return Pulumi(subprocess_runner(exe, write_project(state_dir)), env)


@dataclass
class Deps:
    state_dir: Path = STATE_DIR
    tools_missing: Callable[[], str | None] = pulumi_missing
    credentials: Callable[[str], Credentials | None] = field(
        default=lambda sub: find_credentials(subscription=sub)
    )
    api: Callable[[Credentials], AzureApi] = real_api
    pulumi: Callable[[Path, Credentials], Pulumi] = real_pulumi
    price: Callable[[str, str], PriceQuote | None] = retail_price
    extras: Callable[[str, str, int], Extras] = field(
        default=lambda loc, disk_type, gb: live_extras(loc, disk_type, gb)
    )
    public_ip: Callable[[], str] = caller_ip
    wait_ssh: Callable[[str, int], None] = wait_for_ssh  # (host, port)
    keygen: Callable[[Path], None] = ssh_keygen
    provisioner: Callable[[], Callable[..., Any] | None] = find_provisioner
    interactive: Callable[[], bool] = field(default=lambda: sys.stdin.isatty())
    confirm: Callable[[str], bool] = ask
    assume_yes: bool = False  # --yes / YES=1
    now: Callable[[], dt.datetime] = utc_now
    sleep: Callable[[float], None] = time.sleep
