"""`python -m rig deploy azure` and `python -m rig destroy azure` (make deploy-azure / destroy).

The work lives in rig/azure/ (deploy.py, destroy.py, status.py); this module wires the commands
into `python -m rig` and registers the live status provider, so `python -m rig status` asks
Azure for Azure VMs.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from rig.azure.deploy import deploy
from rig.azure.deps import Deps
from rig.azure.destroy import destroy
from rig.clihelp import path_arg
from rig.profile import DEFAULT_PROFILE, load_profile
from rig.state import STATE_DIR, STATE_DIR_HELP
from rig.status import register_live

register_live("azure", "rig.azure.status:live_row")


def cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    deps = Deps(state_dir=args.state_dir, assume_yes=args.yes)
    deploy(load_profile(args.config), console, deps, args.size or None)
    return 0


def cmd_destroy(args: argparse.Namespace, console: Console) -> int:
    return destroy(load_profile(args.config), console, Deps(state_dir=args.state_dir))


def add_commands(commands: Any) -> None:
    register_live("azure", "rig.azure.status:live_row")
    dep = commands.deploy.add_parser("azure", help="spot GPU VM(s) on Azure with Pulumi")
    dep.add_argument("--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    dep.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=STATE_DIR_HELP)
    dep.add_argument("--size", action="append", help="only this [azure] vm_sizes entry")
    dep.add_argument(
        "--yes",
        action="store_true",
        help="do not ask before spending money (without a terminal, deploy refuses unless set)",
    )
    dep.set_defaults(func=cmd_deploy)
    des = commands.destroy.add_parser(
        "azure", help="pulumi destroy (or ARM), then verify nothing is left"
    )
    des.add_argument("--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    des.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=STATE_DIR_HELP)
    des.set_defaults(func=cmd_destroy)
