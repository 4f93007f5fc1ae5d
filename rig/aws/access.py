"""Who may reach the VM: the SSH source (one IPv4 address) and the key pair."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rig.aws.names import PROJECT
from rig.problems import CommandError
from rig.profile import Profile

# The stack's VPC and subnet are IPv4 only (no IPv6 CIDR, no egress-only gateway): an IPv6
# source would allow an address the VM is never reachable on.
IPV6_FIX = (
    'the AWS VPC has no IPv6 — set access.ssh_source to your IPv4 address, e.g. "203.0.113.7/32"'
)


def public_ip_lookup() -> str:
    """The caller's public IPv4 address, as AWS sees it (checkip answers over IPv4)."""
    with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=10) as resp:
        return resp.read().decode().strip()


def resolve_ssh_cidr(profile: Profile, lookup: Callable[[], str] = public_ip_lookup) -> str:
    net = profile.access.network()
    if net is not None:
        if net.version != 4:
            raise CommandError(f"access.ssh_source {str(net)!r} is IPv6: {IPV6_FIX}")
        return str(net)
    try:
        addr = ipaddress.ip_address(lookup())
    except (OSError, ValueError) as exc:
        raise CommandError(
            f'access.ssh_source = "auto" could not find your public IP ({exc}) — set '
            'access.ssh_source to your address, e.g. "203.0.113.7/32"'
        ) from None
    if addr.version != 4:
        raise CommandError(f'access.ssh_source = "auto" found {addr}, an IPv6 address: {IPV6_FIX}')
    return f"{addr}/32"


def ensure_key(profile: Profile, state_dir: Path) -> tuple[str, Path | None]:
    """(public key material, private key path) — the profile's key, or one generated under
    .state/ once (ed25519, 0600) and reused by every later deploy."""
    if profile.access.ssh_public_key:
        pub = profile.access.key_path(profile.base_dir)
        private = pub.with_suffix("") if pub.suffix == ".pub" else None
        return pub.read_text(encoding="utf-8").strip(), private
    private = state_dir / "aws-rehearsal_ed25519"
    pub = private.with_name(private.name + ".pub")
    if not pub.is_file():
        if shutil.which("ssh-keygen") is None:
            raise CommandError(
                "ssh-keygen is missing — install OpenSSH (apt install openssh-client), or set "
                'access.ssh_public_key = "~/.ssh/id_ed25519.pub"'
            )
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", PROJECT, "-f", str(private)],
            check=True,
        )
    return pub.read_text(encoding="utf-8").strip(), private
