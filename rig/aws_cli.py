"""`python -m rig deploy aws | destroy aws | synth-aws`: the AWS commands (rig.cli loads this).

rig.aws (boto3) is imported inside the handlers: a checkout without the AWS dependencies still
lists every command, and the other commands never pay for importing boto3.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from rig.catalog import load_catalog
from rig.problems import CommandError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.state import STATE_DIR

CDK_OUT = Path(__file__).resolve().parent.parent / "cdk" / "cdk.out"


def add_commands(commands) -> None:  # commands: rig.cli.Commands (not imported: no cycle)
    deploy = commands.deploy.add_parser(
        "aws", help="preflight, cdk deploy one spot GPU VM per aws.instance_types, wait for SSH"
    )
    _common(deploy)
    deploy.add_argument(
        "--yes", action="store_true", help="do not ask before deploying (the cost is printed)"
    )
    deploy.set_defaults(func=cmd_deploy)

    destroy = commands.destroy.add_parser(
        "aws", help="cancel spot requests, cdk destroy, then a tag scan that must find nothing"
    )
    _common(destroy)
    destroy.set_defaults(func=cmd_destroy)

    synth = commands.top.add_parser(
        "synth-aws", help="synthesize the CDK templates offline (cdk-nag runs; no credentials)"
    )
    synth.add_argument("--config", type=Path, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    synth.add_argument("--out", type=Path, default=CDK_OUT, help="where the templates go")
    synth.set_defaults(func=cmd_synth)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR, help=argparse.SUPPRESS)


def _profile(path: Path) -> Profile:
    return load_profile(path, load_catalog())


def cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    from rig import aws

    profile = _profile(args.config)
    deployer = aws.Deployer(
        profile=profile,
        cat=load_catalog(),
        console=console,
        aws=aws.Aws(profile.aws.region),
        state_dir=args.state_dir,
        yes=args.yes,
    )
    for state in deployer.run():
        for line in aws.ready_lines(state):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_destroy(args: argparse.Namespace, console: Console) -> int:
    from rig import aws

    profile = _profile(args.config)
    report = aws.destroy(profile, console, aws.Aws(profile.aws.region), state_dir=args.state_dir)
    if report.leftovers:
        console.print(f"[red]{len(report.leftovers)} AWS resource(s) left behind:[/red]")
        for item in report.leftovers:
            console.print(f"  {item.line()}", highlight=False, markup=False, soft_wrap=True)
        raise CommandError(
            f"destroy aws: {len(report.leftovers)} resource(s) still exist and may bill — "
            "remove them with the commands above, then rerun make destroy"
        )
    console.print(f"orphan scan in {profile.aws.region}: 0 left", highlight=False)
    return 0


def cmd_synth(args: argparse.Namespace, console: Console) -> int:
    from rig import aws

    profile = _profile(args.config)
    out = args.out.resolve()
    if profile.access.network() is None:
        console.print(
            f'access.ssh_source = "auto": synthesized with {aws.PLACEHOLDER_SSH_CIDR} '
            "(deploy puts your /32 in)",
            highlight=False,
        )
    rc = aws.CdkCli(output=out).synth(aws.base_context(profile), region=profile.aws.region)
    if rc != 0:
        raise CommandError(
            "cdk synth failed — see the errors above (an unacknowledged cdk-nag finding fails "
            "it on purpose: fix it or add a reasoned entry to cdk/nag_acknowledgements.py)"
        )
    templates = sorted(out.glob("*.template.json"))
    for t in templates:
        console.print(f"  {t}", highlight=False)
    return 0
