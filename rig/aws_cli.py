"""`python -m rig deploy aws | destroy aws | synth-aws`: the AWS commands (rig.cli loads this).

The boto3 modules of rig.aws are imported inside the handlers: a checkout without the AWS
dependencies still lists every command, and the other commands never pay for importing boto3.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from rig.catalog import load_catalog
from rig.clihelp import path_arg
from rig.problems import CommandError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.state import STATE_DIR
from rig.status import register_live

CDK_OUT = Path(__file__).resolve().parent.parent / "cdk" / "cdk.out"


def add_commands(commands) -> None:  # commands: rig.cli.Commands (not imported: no cycle)
    # `rig status` asks EC2 for the real state of every AWS VM (rig/aws/status.py).
    register_live("aws", "rig.aws.status:live_row")
    deploy = commands.deploy.add_parser(
        "aws", help="preflight + cost, one spot GPU VM per aws.instance_types, wait for SSH"
    )
    _common(deploy)
    deploy.add_argument(
        "--yes", action="store_true", help="do not ask before deploying (the cost is printed)"
    )
    deploy.add_argument(
        "--replace",
        action="store_true",
        help="allow a change that replaces a VM (new disk: models pulled again)",
    )
    deploy.set_defaults(func=cmd_deploy)

    destroy = commands.destroy.add_parser(
        "aws", help="cancel spot requests, terminate, delete the stacks, then an orphan scan"
    )
    _common(destroy)
    destroy.set_defaults(func=cmd_destroy)

    synth = commands.top.add_parser(
        "synth-aws", help="synthesize the CDK templates offline (cdk-nag runs; no credentials)"
    )
    synth.add_argument(
        "--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)"
    )
    synth.add_argument("--out", type=path_arg, default=CDK_OUT, help="where the templates go")
    synth.set_defaults(func=cmd_synth)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)"
    )
    parser.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=argparse.SUPPRESS)


def _profile(path: Path) -> Profile:
    return load_profile(path, load_catalog())


def cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    from rig.aws.deploy import Deployer, ready_lines

    profile = _profile(args.config)
    deployer = Deployer(
        profile=profile,
        cat=load_catalog(),
        console=console,
        state_dir=args.state_dir,
        yes=args.yes,
        replace=args.replace,
    )
    for state in deployer.run():
        for line in ready_lines(state):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_destroy(args: argparse.Namespace, console: Console) -> int:
    from rig.aws.destroy import Destroyer, report_lines

    profile = _profile(args.config)
    report = Destroyer(profile, console, state_dir=args.state_dir).run()
    lines, error = report_lines(report)
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if error is not None:
        raise error
    return 0


def cmd_synth(args: argparse.Namespace, console: Console) -> int:
    from rig.aws.cdk_cli import CdkCli
    from rig.aws.deploy import base_context
    from rig.aws.names import PLACEHOLDER_SSH_CIDR

    profile = _profile(args.config)
    out = args.out.resolve()
    if profile.access.network() is None:
        console.print(
            f'access.ssh_source = "auto": synthesized with {PLACEHOLDER_SSH_CIDR} '
            "(deploy puts your /32 in)",
            highlight=False,
        )
    regions = sorted({p.region for p in profile.aws.placements()})
    rc = CdkCli(output=out).synth(base_context(profile), region=regions[0])
    if rc != 0:
        raise CommandError(
            "cdk synth failed — see the errors above (an unacknowledged cdk-nag finding fails "
            "it on purpose: fix it or add a reasoned entry to cdk/nag_acknowledgements.py)"
        )
    for t in sorted(out.glob("*.template.json")):
        console.print(f"  {t}", highlight=False)
    return 0
