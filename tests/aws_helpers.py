"""Test helpers for the AWS tests: constants, a profile writer, a Deployer wired to the fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_fakes import FakeAws, FakeCdk
from rich.console import Console

from rig.aws.deploy import Deployer
from rig.aws.session import Aws
from rig.catalog import load_catalog
from rig.profile import load_profile

REGION = "eu-west-1"
DLAMI = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2HLkoRwWMprcPPlIrvT4OvK6fwzYU6kw11zcUB0Sbj t"
OTHER_PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEz3l0VqyXr2oP1m9TiS3w6Lx1Fh1n0u7kUe5fJc9dGk other"
)
MOTO_OWNER = "moto"  # moto's caller identity: arn:aws:sts::123456789012:user/moto
MOTO_ACCOUNT = "123456789012"


def write_profile(tmp_path: Path, aws: str, key_file: Path | None = None, extra: str = "") -> Path:
    path = tmp_path / "rig.toml"
    access = f'[access]\nssh_public_key = "{key_file}"\n' if key_file else ""
    path.write_text(f"[aws]\n{aws}\n{access}{extra}", encoding="utf-8")
    return path


def deployer(
    fake: FakeAws, config: Path, state_dir: Path, cdk: FakeCdk | None = None, **kw: Any
) -> Deployer:
    waited: list[str] = []
    fields: dict[str, Any] = dict(
        profile=load_profile(config),
        cat=load_catalog(),
        console=Console(record=True, width=250),
        aws_for=Aws,
        cdk=cdk or FakeCdk(fake),
        state_dir=state_dir,
        ip_lookup=lambda: "203.0.113.9",
        ssh_wait=waited.append,
        yes=True,
        provision=None,
        poll_s=0.01,
        stack_wait_s=5,
        interrupted_wait_s=0.05,
    )
    fields.update(kw)
    d = Deployer(**fields)
    d.waited = waited  # type: ignore[attr-defined]
    return d
