"""CDK app: one RehearsalStack per aws.instance_types entry of the validated profile.

Run by the pinned CDK CLI (`python -m rig deploy aws`, `make synth-aws`). Deploy-time values
(the caller's /32, the public key, the cheapest AZ, the max_hours deadline, the owner) arrive as
context from rig/aws.py; without them synth still works offline, with placeholders that fail
closed (an unroutable SSH source, a key nobody holds).
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # rehearsal_stack, nag_acknowledgements
sys.path.insert(0, str(HERE.parent))  # rig, when run from cdk/ without the package installed

from nag_acknowledgements import acknowledge  # noqa: E402
from rehearsal_stack import RehearsalProps, RehearsalStack  # noqa: E402

from rig import aws  # noqa: E402
from rig.catalog import Catalog, load_catalog  # noqa: E402
from rig.profile import Profile, load_profile  # noqa: E402

DEFAULT_CONFIG = HERE.parent / "rig.toml"


def _context(app: cdk.App, key: str, default: str) -> str:
    value = app.node.try_get_context(key)
    return default if value in (None, "") else str(value)


def props_for(app: cdk.App, profile: Profile, cat: Catalog, instance_type: str) -> RehearsalProps:
    section = profile.aws
    image = cat.images_of("aws")[section.image]
    net = profile.access.network()
    ssh_cidr = _context(
        app, aws.CTX_SSH_CIDR, str(net) if net is not None else aws.PLACEHOLDER_SSH_CIDR
    )
    public_key = app.node.try_get_context(aws.CTX_PUBLIC_KEY)
    if not public_key:
        key_file = profile.access.ssh_public_key
        public_key = (
            profile.access.key_path(profile.base_dir).read_text(encoding="utf-8").strip()
            if key_file
            else aws.PLACEHOLDER_PUBLIC_KEY
        )
    deadline = _context(
        app,
        aws.CTX_DEADLINE,
        (dt.datetime.now(dt.UTC) + dt.timedelta(hours=profile.autostop.max_hours)).strftime(
            "%Y-%m-%dT%H:%M:%S"
        ),
    )
    tags = {
        aws.TAG_PROJECT: aws.PROJECT,
        aws.TAG_PROFILE: _context(app, aws.CTX_PROFILE_NAME, profile.path.stem),
        aws.TAG_OWNER: _context(app, aws.CTX_OWNER, getpass.getuser()),
        aws.TAG_STACK: aws.stack_name(instance_type),
    }
    daily = profile.autostop.daily_shutdown
    return RehearsalProps(
        instance_type=instance_type,
        availability_zone=_context(app, aws.CTX_AZ_PREFIX + instance_type, f"{section.region}a"),
        ssh_cidr=ssh_cidr,
        public_key=public_key,
        ami_ssm_parameter=image.ssm_parameter,
        ssh_user=image.ssh_user,
        disk_gb=section.disk_gb,
        disk_throughput_mbs=section.disk_throughput_mbs,
        disk_iops=section.disk_iops,
        spot=section.spot,
        spot_max_price=section.spot_max_price
        if isinstance(section.spot_max_price, float)
        else None,
        idle_minutes=profile.autostop.idle_minutes,
        deadline_utc=deadline,
        daily_shutdown=None if daily == "off" else daily,
        timezone=profile.autostop.timezone,
        tags=tags,
    )


def build(app: cdk.App | None = None) -> tuple[cdk.App, list[RehearsalStack]]:
    app = app or cdk.App()
    cat = load_catalog()
    profile = load_profile(_context(app, aws.CTX_CONFIG, str(DEFAULT_CONFIG)), cat)
    # cdk-nag 3.x runs as a validation plugin at synth: any finding not acknowledged with a
    # reason (nag_acknowledgements.py) fails the synth, and so `make test` and deploy.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks())
    stacks = []
    for instance_type in profile.aws.instance_types:
        stack = RehearsalStack(
            app,
            aws.stack_name(instance_type),
            props_for(app, profile, cat, instance_type),
            env=cdk.Environment(region=profile.aws.region),
            description=f"gpu-rehearsal: {instance_type} stoppable GPU VM ({profile.path.name})",
            # Needs no `cdk bootstrap`: no assets, and the template (< 50 KiB) goes inline.
            synthesizer=cdk.BootstraplessSynthesizer(),
            analytics_reporting=False,
        )
        acknowledge(stack)
        stacks.append(stack)
    return app, stacks


if __name__ == "__main__":
    build()[0].synth()
