"""CDK app: one RehearsalStack per aws.instance_types entry of the validated profile, each in
its own region ("g6.2xlarge@eu-north-1"; entries without "@" use aws.region).

Run by the pinned CDK CLI (`python -m rig deploy aws`, `make synth-aws`). Deploy-time values
(the caller's /32, the public key, the cheapest AZ, the max_hours deadline, the owner, and the
AMI and spot ValidUntil pinned at the first deploy) arrive as context from rig/aws/deploy.py;
without them synth still works offline, with placeholders that fail closed (an unroutable SSH
source, a key nobody holds) and the AMI as an SSM parameter.

LegacyStackSynthesizer, not BootstraplessSynthesizer: the latter still names the bootstrap
execution role (cdk-hnb659fds-cfn-exec-role-...) in the cloud assembly, and the CLI hands it to
CloudFormation as RoleARN, which fails on an account that never ran `cdk bootstrap`
(aws-cdk-lib docstring: "The name is poorly chosen -- it does still require bootstrapping";
aws/aws-cdk#20648). The legacy synthesizer writes no role and no BootstrapVersion; with no
assets and a template under 51,200 bytes, the CLI deploys it inline with the caller's own
credentials (tests/test_aws_cdk.py checks both).
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

from rig.aws import names  # noqa: E402
from rig.aws.preflight import valid_until_from  # noqa: E402
from rig.catalog import Catalog, load_catalog  # noqa: E402
from rig.profile import Placement, Profile, load_profile  # noqa: E402

DEFAULT_CONFIG = HERE.parent / "rig.toml"


def _context(app: cdk.App, key: str, default: str) -> str:
    value = app.node.try_get_context(key)
    return default if value in (None, "") else str(value)


def props_for(app: cdk.App, profile: Profile, cat: Catalog, placement: Placement) -> RehearsalProps:
    section = profile.aws
    itype = placement.instance_type
    image = cat.images_of("aws")[section.image]
    net = profile.access.network()
    ssh_cidr = _context(
        app, names.CTX_SSH_CIDR, str(net) if net is not None else names.PLACEHOLDER_SSH_CIDR
    )
    public_key = app.node.try_get_context(names.CTX_PUBLIC_KEY)
    if not public_key:
        key_file = profile.access.ssh_public_key
        public_key = (
            profile.access.key_path(profile.base_dir).read_text(encoding="utf-8").strip()
            if key_file
            else names.PLACEHOLDER_PUBLIC_KEY
        )
    now = dt.datetime.now(dt.UTC)
    deadline = _context(
        app,
        names.CTX_DEADLINE,
        (now + dt.timedelta(hours=profile.autostop.max_hours)).strftime("%Y-%m-%dT%H:%M:%S"),
    )
    stack = names.stack_name(itype)
    tags = {
        names.TAG_PROJECT: names.PROJECT,
        names.TAG_PROFILE: _context(app, names.CTX_PROFILE_NAME, profile.path.stem),
        names.TAG_OWNER: _context(app, names.CTX_OWNER, getpass.getuser()),
        names.TAG_STACK: stack,
    }
    daily = profile.autostop.daily_shutdown
    return RehearsalProps(
        instance_type=itype,
        availability_zone=_context(app, names.CTX_AZ_PREFIX + itype, f"{placement.region}a"),
        ssh_cidr=ssh_cidr,
        public_key=public_key,
        key_name=names.key_pair_name(stack, public_key),
        # The AMI pinned at the first deploy; offline synth falls back to the SSM parameter.
        ami_id=_context(app, names.CTX_AMI_PREFIX + itype, "") or None,
        ami_ssm_parameter=image.ssm_parameter,
        ssh_user=image.ssh_user,
        disk_gb=section.disk_gb,
        disk_throughput_mbs=section.throughput_for(itype, cat),
        disk_iops=section.disk_iops,
        spot=section.spot,
        spot_max_price=section.spot_max_price
        if isinstance(section.spot_max_price, float)
        else None,
        spot_valid_until=_context(app, names.CTX_VALID_UNTIL_PREFIX + itype, valid_until_from(now)),
        idle_minutes=profile.autostop.idle_minutes,
        deadline_utc=deadline,
        daily_shutdown=None if daily == "off" else daily,
        timezone=profile.autostop.timezone,
        tags=tags,
    )


def build(app: cdk.App | None = None) -> tuple[cdk.App, list[RehearsalStack]]:
    app = app or cdk.App()
    cat = load_catalog()
    profile = load_profile(_context(app, names.CTX_CONFIG, str(DEFAULT_CONFIG)), cat)
    # cdk-nag 3.x runs as a validation plugin at synth: any finding not acknowledged with a
    # reason (nag_acknowledgements.py) fails the synth, and so `make test` and deploy.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks())
    stacks = []
    for placement in profile.aws.placements():
        itype = placement.instance_type
        stack = RehearsalStack(
            app,
            names.stack_name(itype),
            props_for(app, profile, cat, placement),
            env=cdk.Environment(region=placement.region),
            description=f"gpu-rehearsal: {itype} stoppable GPU VM in {placement.region} "
            f"({profile.path.name})",
            # Needs no `cdk bootstrap` at all (see the module docstring).
            synthesizer=cdk.LegacyStackSynthesizer(),
            analytics_reporting=False,
        )
        acknowledge(stack)
        stacks.append(stack)
    return app, stacks


if __name__ == "__main__":
    build()[0].synth()
