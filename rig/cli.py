"""`python -m rig`: the commands the Makefile runs. Errors reach the user as one line each."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from rig.advice import advisories
from rig.catalog import CatalogError, load_catalog
from rig.clihelp import path_arg, use_formatter
from rig.problems import CommandError, ProfileError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.render import catalog_json, print_catalog, print_profile, resolved
from rig.state import STATE_DIR, STATE_DIR_HELP, read_all, utc_now
from rig.status import print_status, status_rows
from rig.version import version_line

EXIT_INVALID = 2
CLOUDS = ("aws", "azure")
# Optional command modules, one per part: each exposes add_commands(commands: Commands).
# Missing ones (a part not built yet) are skipped, so the CLI lists only what works.
EXTENSIONS = (
    "rig.aws_cli",
    "rig.azure_cli",
    "rig.plan",
    "rig.provision",
    "rig.models",
    "rig.smoke",
)

# Which pyproject extra brings which importable module (see [project.optional-dependencies]).
EXTRA_OF_MODULE = {
    "boto3": "aws",
    "botocore": "aws",
    "aws_cdk": "aws",
    "cdk_nag": "aws",
    "constructs": "aws",
    "jsii": "aws",
    "pulumi": "azure",
    "pulumi_azure_native": "azure",
    "ansible": "provision",
    "ansible_collections": "provision",
}
# What a command needs beyond the base install. A deploy provisions the VM once SSH answers,
# so it needs Ansible too: refusing up front beats a VM that bills but never gets Ollama.
# `destroy azure` needs no extra (it falls back to ARM), so that no one is kept from deleting.
NEEDS: dict[str, tuple[str, ...]] = {
    "deploy aws": ("boto3", "aws_cdk", "cdk_nag", "constructs", "ansible"),
    "destroy aws": ("boto3", "aws_cdk", "cdk_nag", "constructs"),
    "synth-aws": ("aws_cdk", "cdk_nag", "constructs"),
    "deploy azure": ("pulumi", "pulumi_azure_native", "ansible"),
    "provision": ("ansible",),
}
# The smoke run deploys and destroys with the same code as those commands.
NEEDS["smoke aws"] = NEEDS["deploy aws"]
NEEDS["smoke azure"] = NEEDS["deploy azure"]
# The lean setup target per extra set (Makefile), named in the message.
SETUP_TARGET = {"aws": "setup-aws", "azure": "setup-azure", "provision": "setup-provision"}
# Commands an extension registers, so they still show (and explain) when its import fails for
# a missing extra: module -> [(group, name, help)], group "top" | "deploy" | "destroy".
EXTENSION_COMMANDS: dict[str, list[tuple[str, str, str]]] = {
    "rig.aws_cli": [
        ("deploy", "aws", "spot GPU VM(s) on AWS (needs the aws extra)"),
        ("destroy", "aws", "destroy the AWS stacks, verified (needs the aws extra)"),
        ("top", "synth-aws", "synthesize the CDK templates offline (needs the aws extra)"),
    ],
    "rig.azure_cli": [
        ("deploy", "azure", "spot GPU VM(s) on Azure (needs the azure extra)"),
        ("destroy", "azure", "destroy the Azure VMs, verified"),
    ],
    "rig.provision": [("top", "provision", "Ansible on deployed VMs (needs the provision extra)")],
}


class MissingExtra(CommandError):
    """A command needs a pyproject extra that is not installed: one line with the fix."""

    def __init__(self, command: str, modules: Sequence[str]):
        extras = sorted({EXTRA_OF_MODULE.get(m.split(".")[0], m) for m in modules})
        needed = sorted(set(extras) | _companions(command))
        target = next(
            (SETUP_TARGET[e] for e in ("aws", "azure", "provision") if e in needed), "setup"
        )
        super().__init__(
            f"{command}: needs the {' and '.join(repr(e) for e in needed)} extra"
            f"{'s' if len(needed) > 1 else ''} ({', '.join(modules)} not installed) — "
            f"make {target}, or: {_pip()} install -e '.[{','.join(needed)}]'",
            exit_code=EXIT_INVALID,
        )


def _companions(command: str) -> set[str]:
    return {EXTRA_OF_MODULE[m] for m in NEEDS.get(command, ())}


def _pip() -> str:
    venv_python = Path(sys.prefix) / "bin" / "python"
    return f"{venv_python if venv_python.exists() else 'python'} -m pip"


def missing_modules(modules: Sequence[str]) -> list[str]:
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found and not (name == "ansible" and shutil.which("ansible-playbook")):
            out.append(name)
    return out


def _aws_unused(args: argparse.Namespace) -> bool:
    profile = load_profile(getattr(args, "config", DEFAULT_PROFILE), load_catalog())
    state_dir = getattr(args, "state_dir", STATE_DIR)
    recorded = [s for s in read_all(state_dir) if s.cloud == "aws"]
    return not profile.aws.enabled and not recorded


def command_key(args: argparse.Namespace) -> str:
    cloud = getattr(args, "cloud", None)
    return f"{args.command} {cloud}" if cloud else str(args.command)


@dataclass
class Commands:
    """Where extensions hang their subcommands; each sets func=handler(args, console) -> int."""

    top: argparse._SubParsersAction  # type: ignore[type-arg]  # python -m rig <command>
    deploy: argparse._SubParsersAction  # type: ignore[type-arg]  # python -m rig deploy <cloud>
    destroy: argparse._SubParsersAction  # type: ignore[type-arg]  # python -m rig destroy <cloud>


def _prog() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m rig" if name in ("", "__main__.py", "-c") else name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="gpu-rehearsal: rehearse a local-LLM PC on cloud GPUs before buying it.",
    )
    parser.add_argument("--version", action="version", version=version_line(_prog()))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate the profile and print it resolved")
    check.add_argument(
        "--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)"
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of tables")
    catalog = sub.add_parser("catalog", help="GPUs, instances and prices, with sources")
    catalog.add_argument(
        "--config",
        type=path_arg,
        default=DEFAULT_PROFILE,
        help="profile whose PC and regions to compare against (if it exists)",
    )
    catalog.add_argument("--json", action="store_true", help="print JSON instead of tables")
    catalog.set_defaults(func=cmd_catalog)
    check.set_defaults(func=cmd_check)
    status = sub.add_parser("status", help="what is deployed, since when, $ so far, auto-stop")
    status.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=STATE_DIR_HELP)
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
            if exc.name == name:
                continue  # a part not built yet
            if (exc.name or "").split(".")[0] not in EXTRA_OF_MODULE:
                raise  # a real import error inside a part that exists
            _placeholders(commands, name, exc.name or "")
            continue
        module.add_commands(commands)
    every = commands.destroy.add_parser(
        "all", help="destroy on both clouds, each verified; one exit status (make destroy)"
    )
    every.add_argument(
        "--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)"
    )
    every.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=STATE_DIR_HELP)
    every.set_defaults(func=cmd_destroy_all)
    return use_formatter(parser)


def _placeholders(commands: Commands, module: str, missing: str) -> None:
    """The commands of a part whose extra is missing: listed, and each says what to install."""
    for group, name, help_text in EXTENSION_COMMANDS.get(module, []):
        sub = getattr(commands, group).add_parser(name, help=help_text)
        sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        sub.set_defaults(func=_needs_extra(f"{group} {name}" if group != "top" else name, missing))


def _needs_extra(command: str, missing: str) -> Callable[[argparse.Namespace, Console], int]:
    def handler(args: argparse.Namespace, console: Console) -> int:
        raise MissingExtra(command, [missing])

    return handler


def cmd_destroy_all(args: argparse.Namespace, console: Console) -> int:
    """`destroy aws` then `destroy azure`, each as if typed alone (its own checks, its own
    errors); the second runs whatever the first did. 0 only when both are verified clean."""
    # The profile and the state files are read once up front: a problem in either is one line,
    # not the same line once per cloud.
    load_profile(args.config, load_catalog())
    read_all(args.state_dir)
    codes = []
    for cloud in CLOUDS:
        console.print(f"[bold]destroy {cloud}[/bold]")
        argv = ["destroy", cloud, "--config", str(args.config), "--state-dir", str(args.state_dir)]
        codes.append(run_command(_parser().parse_args(argv), console, Console(stderr=True)))
    failed = [c for c, rc in zip(CLOUDS, codes, strict=True) if rc != 0]
    if failed:
        console.print(
            f"destroy: {' and '.join(failed)} not verified clean — see the lines above",
            markup=False,
            highlight=False,
        )
    return max(codes)


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    cat = load_catalog()
    profile = load_profile(args.config, cat)
    notes = advisories(profile, cat)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
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
    return run_command(args, Console(), Console(stderr=True))


def _json_error(args: argparse.Namespace, problems: list[dict[str, str]], code: int) -> int | None:
    """With --json, an error is JSON on stdout too (so a script always parses what it gets):
    {"ok": false, "problems": [{"field", "message", "line"}]}; None without --json."""
    if not getattr(args, "json", False):
        return None
    print(json.dumps({"ok": False, "problems": problems}, indent=2, ensure_ascii=False))
    return code


def run_command(args: argparse.Namespace, console: Console, err: Console) -> int:
    """One parsed command: its extras checked, its errors one line each (exit 2 for input)."""
    try:
        key = command_key(args)
        absent = missing_modules(NEEDS.get(key, ()))
        if absent and key == "destroy aws" and _aws_unused(args):
            # `make destroy` runs both clouds: an Azure-only lean setup has no AWS extra.
            console.print("aws.enabled = false and no AWS state in .state/: AWS part skipped")
            return 0
        if absent:
            raise MissingExtra(key, absent)
        try:
            return int(args.func(args, console))
        except ModuleNotFoundError as exc:
            # An extra's module imported deep inside a command (e.g. boto3 for a live status).
            if (exc.name or "").split(".")[0] not in EXTRA_OF_MODULE:
                raise
            raise MissingExtra(key, [exc.name or ""]) from None
    except ProfileError as exc:
        problems = [
            {"field": p.path, "message": p.message, "line": p.render(exc.filename)}
            for p in exc.problems
        ]
        as_json = _json_error(args, [{"file": exc.filename, **p} for p in problems], EXIT_INVALID)
        for line in exc.lines():
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID if as_json is None else as_json
    except CommandError as exc:
        _json_error(args, [{"field": "", "message": str(exc), "line": str(exc)}], exc.exit_code)
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except CatalogError as exc:
        line = f"rig/catalog: {exc} — fix the data file named there"
        _json_error(args, [{"field": "", "message": str(exc), "line": line}], EXIT_INVALID)
        err.print(line, markup=False, soft_wrap=True)
        return EXIT_INVALID
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        return 0
