"""`python -m rig`: the commands the Makefile runs. Errors reach the user as one line each."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from rig.advice import advisories
from rig.catalog import CatalogError, load_catalog
from rig.problems import CommandError, ProfileError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.render import catalog_json, print_catalog, print_profile, resolved
from rig.state import STATE_DIR, read_all, utc_now
from rig.status import print_status, status_rows

EXIT_INVALID = 2
# Optional command modules, one per part: each exposes add_commands(commands: Commands).
# Missing ones (a part not built yet) are skipped, so the CLI lists only what works.
EXTENSIONS = ("rig.aws_cli", "rig.azure_cli", "rig.plan", "rig.provision")


@dataclass
class Commands:
    """Where extensions hang their subcommands; each sets func=handler(args, console) -> int."""

    top: argparse._SubParsersAction  # type: ignore[type-arg]  # python -m rig <command>
    deploy: argparse._SubParsersAction  # type: ignore[type-arg]  # python -m rig deploy <cloud>
    destroy: argparse._SubParsersAction  # type: ignore[type-arg]  # python -m rig destroy <cloud>


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rig",
        description="gpu-rehearsal: rehearse a local-LLM PC on cloud GPUs before buying it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate the profile and print it resolved")
    check.add_argument("--config", type=Path, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    catalog = sub.add_parser("catalog", help="GPUs, instances and prices, with sources")
    catalog.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_PROFILE,
        help="profile whose PC and regions to compare against (if it exists)",
    )
    catalog.add_argument("--json", action="store_true", help="print JSON instead of tables")
    catalog.set_defaults(func=cmd_catalog)
    check.set_defaults(func=cmd_check)
    status = sub.add_parser("status", help="what is deployed, since when, $ so far, auto-stop")
    status.add_argument("--state-dir", type=Path, default=STATE_DIR)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "--offline",
        action="store_true",
        help="read the state files only (upper bounds; exit 0 even though nothing was verified)",
    )
    status.set_defaults(func=cmd_status)
    commands = Commands(
        top=sub,
        deploy=sub.add_parser("deploy", help="deploy a GPU VM for the rehearsal").add_subparsers(
            dest="cloud", required=True, metavar="CLOUD"
        ),
        destroy=sub.add_parser(
            "destroy", help="destroy what a deploy created, verified"
        ).add_subparsers(dest="cloud", required=True, metavar="CLOUD"),
    )
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # a real import error inside a part that exists
            continue
        module.add_commands(commands)
    return parser


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    cat = load_catalog()
    profile = load_profile(args.config, cat)
    notes = advisories(profile, cat)
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(profile.path),
                    "profile": profile.as_toml_dict(),
                    "resolved": resolved(profile, cat),
                    "advisories": notes,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        print_profile(console, profile, cat, notes)
    return 0


def cmd_catalog(args: argparse.Namespace, console: Console) -> int:
    cat = load_catalog()
    # The catalog is useful before rig.toml exists: fall back to the built-in defaults then.
    profile = load_profile(args.config, cat) if args.config.exists() else Profile()
    regions = {"aws": profile.aws.region, "azure": profile.azure.location}
    if args.json:
        print(
            json.dumps(
                catalog_json(cat, profile.pc.gpu, regions),
                indent=2,  # type: ignore[arg-type]
                ensure_ascii=False,
            )
        )
    else:
        print_catalog(console, cat, profile.pc.gpu, regions)  # type: ignore[arg-type]
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    rows = status_rows(read_all(args.state_dir), utc_now(), ask_cloud=not args.offline)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_status(console, rows)
    # A VM whose cloud could not be asked may be billing: never exit 0 on a guess.
    return 0 if args.offline or all(r["verified"] for r in rows) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    try:
        return int(args.func(args, console))
    except ProfileError as exc:
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    except CommandError as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except CatalogError as exc:
        err.print(
            f"rig/catalog: {exc} — fix the data file named there", markup=False, soft_wrap=True
        )
        return EXIT_INVALID
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        return 0
