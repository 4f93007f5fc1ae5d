"""`python -m rig provision <target>`: run ansible/site.yml against deployed VMs.

The deploys call `provision(state, profile, console)` once SSH answers; it generates the
inventory from the state file (rig/inventory.py), runs the playbook, and on success marks the
state file `provisioned`. A failure becomes one CommandError line: the failing task's message
and the command to rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from rig.catalog import load_catalog
from rig.clihelp import path_arg
from rig.problems import CommandError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.state import STATE_DIR, STATE_DIR_HELP, VmState, read_all, write
from rig.version import RIG

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = ROOT / "ansible"
PLAYBOOK = ANSIBLE_DIR / "site.yml"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+"
    r"rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)"
)


@dataclass
class PlaybookRun:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]  # host -> ok/changed/unreachable/failed/skipped/...


def ansible_playbook() -> Path:
    """The ansible-playbook of this venv (make setup installs it), else one on PATH."""
    local = Path(sys.executable).parent / "ansible-playbook"
    if local.exists():
        return local
    found = shutil.which("ansible-playbook")
    if found is None:
        raise CommandError(
            "provision: ansible-playbook not found — run `make setup` (it installs the pinned "
            "ansible into .venv)"
        )
    return Path(found)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        if m := RECAP.match(line.strip()):
            fields = m.groupdict()
            host = fields.pop("host")
            recap[host] = {k: int(v) for k, v in fields.items()}
    return recap


def failure_line(output: str) -> str:
    """The message of the last failed task, on one line ("see the log above" if none)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^(fatal|failed): \[", line)]
    if not starts:
        return "the playbook failed (see the log above)"
    first = lines[starts[-1]]
    task = next(
        (
            m.group(1)
            for line in reversed(lines[: starts[-1]])
            if (m := re.match(r"^TASK \[(.*)\]", line))
        ),
        "?",
    )
    if "=>" in first and first.rstrip().endswith("}"):  # the one-line JSON form
        try:
            data = json.loads(first.split("=>", 1)[1])
            return f"task '{task}': {data.get('msg', first)}"
        except ValueError:
            pass
    msg: list[str] = []  # the yaml form: "    msg: ..." plus its indented continuation
    for line in lines[starts[-1] + 1 :]:
        if msg and (not line.startswith("      ") or not line.strip()):
            break
        if msg:
            msg.append(line.strip())
        elif line.strip().startswith("msg:"):
            msg.append(line.strip()[4:].strip().strip("|>-").strip())
    text = " ".join(p for p in msg if p).strip("'\"").replace("''", "'") or first
    return f"task '{task}': {text}"


def run_playbook(
    inventory: Path,
    limit: list[str] | None = None,
    extra_vars: dict[str, Any] | None = None,
    console: Console | None = None,
    timeout_s: float = 3600,
    *,
    tags: list[str] | None = None,
    check: bool = False,
) -> PlaybookRun:
    """Run site.yml, echoing its log line by line (model pulls print their progress)."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER="auto_silent",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    # ansible-playbook runs in ansible/ (its ansible.cfg): a relative inventory path, as the
    # default state dir gives (.state/_inventory.json), would be looked up there instead.
    cmd = [str(ansible_playbook()), "-i", str(Path(inventory).resolve()), str(PLAYBOOK)]
    if limit:
        cmd += ["--limit", ",".join(limit)]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    if tags:
        cmd += ["--tags", ",".join(tags)]
    if check:
        cmd += ["--check"]  # a dry run: works on a fresh VM too
    out: list[str] = []
    with subprocess.Popen(
        cmd,
        cwd=ANSIBLE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if console is not None:
                console.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        rc = proc.wait(timeout=timeout_s)
    output = "".join(out)
    return PlaybookRun(rc, output, parse_recap(output))


def provision(
    state: VmState,
    profile: Profile,
    console: Console,
    *,
    extra_vars: dict[str, Any] | None = None,
    state_dir: Path = STATE_DIR,
    tags: list[str] | None = None,
    check: bool = False,
) -> PlaybookRun:
    """Converge one VM; on success set state.provisioned and rewrite its state file.

    `check` is a dry run (ansible-playbook --check): nothing changes, the state file included.
    """
    from rig.inventory import write_inventory  # keeps `python -m rig --help` light

    inventory = write_inventory([state], profile, state_dir)
    how = " --check" if check else ""
    how += f" --tags {','.join(tags)}" if tags else ""
    console.print(f"provision {state.name}: ansible-playbook {PLAYBOOK.relative_to(ROOT)}{how}")
    run = run_playbook(inventory, [state.name], extra_vars, console, tags=tags, check=check)
    stats = run.recap.get(state.name)
    if stats is None or stats["unreachable"]:
        raise CommandError(
            f"provision {state.name}: {state.ssh_user}@{state.host} did not answer over SSH "
            f"({failure_line(run.output)}) — check the VM is running (make status) and rerun "
            f"{RIG} provision {state.name}"
        )
    if run.rc != 0 or stats["failed"]:
        raise CommandError(
            f"provision {state.name}: {failure_line(run.output)} — fix that, then rerun "
            f"{RIG} provision {state.name}"
        )
    if check:
        console.print(
            f"provision {state.name}: dry run done ({stats['changed']} would change)", markup=False
        )
        return run
    if not tags:  # a partial run does not make a VM ready
        state.provisioned = True
        write(state, state_dir)
    console.print(
        f"provision {state.name}: ready ({stats['changed']} changed, {stats['ok']} ok)",
        markup=False,
    )
    return run


# The role tags of ansible/site.yml (ollama_models: a tag inside the ollama role).
TAGS = ("nvidia_driver", "ollama", "ollama_models", "autostop")


def cmd_provision(args: argparse.Namespace, console: Console) -> int:
    tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
    unknown = [t for t in tags or [] if t not in TAGS]
    if unknown or (args.tags and not tags):  # "," names no tag; "" (the default) means all
        what = f"{', '.join(map(repr, unknown))} is not a role tag" if unknown else "names no tag"
        raise CommandError(
            f"provision: --tags {args.tags!r}: {what} — use one or more of {', '.join(TAGS)}, "
            "comma-separated",
            exit_code=2,
        )
    profile = load_profile(args.config, load_catalog())
    states = read_all(args.state_dir)
    if not states:
        raise CommandError(
            f"provision: nothing is deployed (no state files in {args.state_dir}/) — deploy "
            "first: make deploy-aws / make deploy-azure"
        )
    chosen = states if args.target == "all" else [s for s in states if s.name == args.target]
    if not chosen:
        deployed = ", ".join(s.name for s in states)
        raise CommandError(
            f"provision: {args.target!r} is not a deployed target — use one of: {deployed}, "
            "or all (see make status)",
            exit_code=2,
        )
    for state in chosen:
        provision(state, profile, console, state_dir=args.state_dir, tags=tags, check=args.check)
    return 0


def add_commands(commands: Any) -> None:
    parser = commands.top.add_parser(
        "provision",
        help="run Ansible on a deployed VM: NVIDIA driver, Ollama + models, idle watchdog",
    )
    parser.add_argument("target", help="a target from .state/ (see make status), or 'all'")
    parser.add_argument(
        "--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)"
    )
    parser.add_argument("--state-dir", type=path_arg, default=STATE_DIR, help=STATE_DIR_HELP)
    parser.add_argument(
        "--check", action="store_true", help="dry run: show what would change, change nothing"
    )
    parser.add_argument(
        "--tags",
        default="",
        help="only these roles: nvidia_driver, ollama, ollama_models (pulls + GPU check), autostop",
    )
    parser.set_defaults(func=cmd_provision)
