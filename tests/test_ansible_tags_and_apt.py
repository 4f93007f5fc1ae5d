"""Issue #11 item 8 and 9, pinned statically: every apt task waits for the dpkg lock
(unattended-upgrades holds it on a cloud VM's first boot), each role runs alone under its tag,
and the bench-lock signal that nothing ever created is gone from the watchdog."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
PLAYBOOK = ROOT / ".venv" / "bin" / "ansible-playbook"
ROLES = ("nvidia_driver", "ollama", "autostop")
APT = {"ansible.builtin.apt", "apt"}


def _tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for task in items or []:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out.extend(_tasks(task.get(key, [])))
    return out


def _apt_tasks() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(ANSIBLE.glob("roles/*/tasks/*.yml")) + sorted(
        ANSIBLE.glob("roles/*/handlers/*.yml")
    ):
        for task in _tasks(yaml.safe_load(path.read_text()) or []):
            for module in APT & task.keys():
                found.append((f"{path.relative_to(ROOT)}: {task.get('name')}", task[module]))
    return found


def test_every_apt_task_waits_for_the_dpkg_lock():
    """ansible.builtin.apt's lock_timeout (default 60 s) — "How many seconds will this action
    wait to acquire a lock on the apt db" (docs.ansible.com, ansible.builtin.apt module). On a
    fresh Ubuntu cloud image unattended-upgrades runs right after cloud-init and can hold the
    lock for minutes: 60 s fails the first provision."""
    tasks = _apt_tasks()
    assert len(tasks) >= 5, tasks  # the driver, Ollama and watchdog roles all install packages
    for where, args in tasks:
        assert isinstance(args, dict) and int(args.get("lock_timeout", 0)) >= 600, where


def _listed(tag: str) -> list[tuple[str, list[str]]]:
    """(role, tags) of each task `ansible-playbook --list-tasks --tags TAG` would run."""
    proc = subprocess.run(
        [str(PLAYBOOK), "-i", "localhost,", "--list-tasks", "--tags", tag, "site.yml"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = re.findall(r"^\s{6}(\S+) : .*\tTAGS: \[(.*)\]$", proc.stdout, re.M)
    return [(role, [t.strip() for t in tags.split(",")]) for role, tags in rows]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_runs_alone_under_its_tag(role: str):
    """`rig provision --tags ROLE` (ansible-playbook --tags) runs that role's tasks; another
    role's task appears only where it is tagged `always` (the OS variables load)."""
    if not PLAYBOOK.exists():
        pytest.skip("ansible-playbook not in .venv: make setup-provision")
    rows = _listed(role)
    assert sum(r == role for r, _ in rows) >= 3, rows
    for other, tags in rows:
        assert other == role or "always" in tags, (role, other, tags)
    assert f"tags: [{role}]" in (ANSIBLE / "site.yml").read_text()


def test_the_watchdog_has_no_bench_lock_signal():
    """#11.9: the bench never created the lock the watchdog looked for, so the signal went (idle
    is now "no inference", read from Ollama's own request log): no lock path, no setting."""
    watchdog = (ANSIBLE / "roles/autostop/files/rehearsal_watchdog.py").read_text()
    defaults = (ANSIBLE / "roles/autostop/defaults/main.yml").read_text()
    assert "/run/rehearsal/" not in watchdog and "bench_lock" not in watchdog
    assert "lock" not in defaults.lower()
