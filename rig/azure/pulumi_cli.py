"""Pulumi without Pulumi Cloud: a file backend, a project directory and stack config under .state/.

- Backend: `.state/pulumi` (file://). Its stacks are read straight from the files Pulumi writes
  (pulumi/pulumi pkg/backend/diy/store.go: `.pulumi/stacks/<project>/<stack>.json[.gz]`, or
  `.pulumi/stacks/<stack>.json` in the legacy layout), so destroy knows what exists — and in
  which subscription — without the CLI.
- Project: a generated `.state/pulumi-project/Pulumi.yaml` whose `main` is the repo's
  pulumi_azure/ (absolute `main` and `virtualenv` are allowed: pkg/engine/project.go getPwdMain,
  sdk/python/toolchain). So the stack config Pulumi writes next to it (Pulumi.<stack>.yaml: your
  IP, an absolute path, the encryption salt) lives under .state/, never in the source tree.
- Secrets: the passphrase provider, with PULUMI_CONFIG_PASSPHRASE(_FILE) or a passphrase
  generated once into `.state/pulumi-passphrase` (0600) — never a new one once stacks exist.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.azure.errors import hint_for
from rig.problems import CommandError

PROJECT = "gpu-rehearsal-azure"  # pulumi_azure/Pulumi.yaml name: the stack config namespace
REPO = Path(__file__).resolve().parents[2]
PROGRAM_DIR = REPO / "pulumi_azure"
PULUMI_VERSION = "3.272.0"
AZURE_NATIVE_VERSION = "3.29.0"
PULUMI_INSTALL = f"curl -fsSL https://get.pulumi.com | sh -s -- --version {PULUMI_VERSION}"
PULUMI_PY_INSTALL = (
    f".venv/bin/pip install pulumi=={PULUMI_VERSION} pulumi-azure-native=={AZURE_NATIVE_VERSION}"
)
_STACK_SUFFIXES = (".json", ".json.gz")


class PassphraseMissing(CommandError):
    """The stacks need a passphrase that is neither in the environment nor in .state/."""


def backend_dir(state_dir: Path) -> Path:
    return state_dir / "pulumi"


def project_dir(state_dir: Path) -> Path:
    return state_dir / "pulumi-project"


# ---- the file backend, read without the CLI ---------------------------------------------------


@dataclass(frozen=True)
class FileBackend:
    root: Path  # .state/pulumi

    @property
    def _stacks_dir(self) -> Path:
        return self.root / ".pulumi" / "stacks"

    def _files(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for base in (self._stacks_dir / PROJECT, self._stacks_dir):
            if not base.is_dir():
                continue
            for path in sorted(base.iterdir()):
                for suffix in _STACK_SUFFIXES:
                    if path.is_file() and path.name.endswith(suffix):
                        out.setdefault(path.name.removesuffix(suffix), path)
        return out

    def stacks(self) -> list[str]:
        return sorted(self._files())

    def resources(self, stack: str) -> list[dict[str, Any]]:
        """The stack's resources from its checkpoint; [] when it has none or cannot be read."""
        path = self._files().get(stack)
        if path is None:
            return []
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            data = json.loads(raw or b"{}")
        except (OSError, ValueError):
            return []
        return resources_of(data)

    def remove(self, stack: str) -> None:
        """Forget a stack whose resources were verified gone (what `stack rm --force` does)."""
        path = self._files().get(stack)
        if path is not None:
            for extra in (path, path.with_name(path.name + ".bak")):
                extra.unlink(missing_ok=True)
        for sub in ("history", "backups"):
            for base in (self.root / ".pulumi" / sub / PROJECT, self.root / ".pulumi" / sub):
                shutil.rmtree(base / stack, ignore_errors=True)


def resources_of(data: Any) -> list[dict[str, Any]]:
    """Resources of a checkpoint (file backend) or of `pulumi stack export` output."""
    if not isinstance(data, dict):
        return []
    deployment = data.get("deployment") or (data.get("checkpoint") or {}).get("latest") or {}
    return [r for r in deployment.get("resources") or [] if isinstance(r, dict)]


# ---- secrets and environment -------------------------------------------------------------------


def secrets_env(
    state_dir: Path, environ: dict[str, str] | None = None, stacks_exist: bool = False
) -> dict[str, str]:
    """The passphrase for the secrets provider: the user's, else the one generated once."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("PULUMI_CONFIG_PASSPHRASE") or environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return {}
    path = state_dir / "pulumi-passphrase"
    if not path.exists():
        if stacks_exist:
            # A new passphrase could never open these stacks: ask for the one they were made with.
            raise PassphraseMissing(
                f"the Pulumi stacks in {backend_dir(state_dir)} were made with "
                "PULUMI_CONFIG_PASSPHRASE, which is not set now (and no "
                f"{path} exists) — export PULUMI_CONFIG_PASSPHRASE with the same passphrase "
                "and run the command again"
            )
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path.resolve())}


def backend_env(state_dir: Path) -> dict[str, str]:
    backend = backend_dir(state_dir)
    backend.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {
        "PULUMI_BACKEND_URL": backend.resolve().as_uri(),  # file:// — no Pulumi Cloud account
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
    }


def _venv() -> Path:
    """The virtualenv running rig (it holds the pinned pulumi packages), else the repo's."""
    return Path(sys.prefix) if sys.prefix != sys.base_prefix else REPO / ".venv"


def write_project(state_dir: Path, venv: Path | None = None) -> Path:
    """The generated project file: same name and program as pulumi_azure/Pulumi.yaml."""
    where = project_dir(state_dir)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = (
        "# Generated by python -m rig deploy azure: the program is the repo's pulumi_azure/;\n"
        "# the stack config files Pulumi writes here stay under .state/ (never committed).\n"
        f"name: {PROJECT}\n"
        "description: Spot Azure GPU VM that deallocates itself (gpu-rehearsal)\n"
        f"main: {json.dumps(str(PROGRAM_DIR))}\n"
        "runtime:\n"
        "  name: python\n"
        "  options:\n"
        "    toolchain: pip\n"
        f"    virtualenv: {json.dumps(str((venv or _venv()).resolve()))}\n"
    )
    path = where / "Pulumi.yaml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return where


# ---- the CLI -----------------------------------------------------------------------------------

# (args after `pulumi`, extra environment, capture stdout?) -> completed process
PulumiRunner = Callable[[list[str], dict[str, str], bool], "subprocess.CompletedProcess[str]"]


def subprocess_runner(exe: str, cwd: Path) -> PulumiRunner:
    def run(
        args: list[str], env: dict[str, str], capture: bool
    ) -> subprocess.CompletedProcess[str]:
        full = [exe, *args, "--cwd", str(cwd), "--non-interactive"]
        if capture:
            return subprocess.run(
                full, env=os.environ | env, capture_output=True, text=True, check=False
            )
        # Stream `up`/`destroy` progress to the user and keep the text to explain failures.
        # Its own session: a terminal's Ctrl-C reaches only us, and we pass one on (_cancel).
        proc = subprocess.Popen(
            full,
            env=os.environ | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                lines.append(line)
        except BaseException:
            _cancel(proc)
            raise
        return subprocess.CompletedProcess(full, proc.wait(), "".join(lines[-400:]), "")

    return run


def _cancel(proc: subprocess.Popen[str]) -> None:
    """We were interrupted (Ctrl-C, `kill`, a closed terminal) while `pulumi up`/`destroy` runs.
    Left alone it went on creating after we returned — and the smoke's destroy, run right then,
    raced it: a resource group created after the destroy's scan said "0 left" — or it died of
    SIGPIPE on its next line, leaving pending operations and the stack locked. So: one SIGINT,
    Pulumi's graceful cancel (it finishes the operations in flight and saves its state; SIGTERM
    is handled the same since pulumi/pulumi#17463), then wait for it, still showing its output.
    A second interrupt while waiting passes a second SIGINT on, Pulumi's "terminate now"."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(OSError):
                sys.stdout.write(line)
        proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        raise


class PulumiFailed(CommandError):
    """A Pulumi command failed; `text` holds its output (for the error-code hints)."""

    def __init__(self, message: str, text: str):
        super().__init__(message)
        self.text = text


@dataclass
class Pulumi:
    run: PulumiRunner
    env: dict[str, str]

    def _ok(self, args: list[str], what: str, capture: bool = True) -> str:
        done = self.run(args, self.env, capture)
        if done.returncode != 0:
            text = (done.stdout or "") + (done.stderr or "")
            hint = hint_for(text)
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:]
            raise PulumiFailed(
                f"pulumi {what} failed (exit {done.returncode})"
                + (f": {tail[0].strip()[:300]}" if tail else "")
                + f" — {hint or 'read the error above, fix it and run the command again'}",
                text,
            )
        return done.stdout or ""

    def select(self, stack: str) -> None:
        self._ok(
            ["stack", "select", "--create", "--stack", stack, "--secrets-provider", "passphrase"],
            f"stack select {stack}",
        )

    def configure(self, stack: str, values: dict[str, str]) -> None:
        """Plaintext config; keys with a ':' name another namespace (azure-native:...)."""
        args = ["config", "set-all", "--stack", stack]
        for key, value in values.items():
            full = key if ":" in key else f"{PROJECT}:{key}"
            args += ["--plaintext", f"{full}={value}"]
        self._ok(args, f"config set-all {stack}")

    def up(self, stack: str) -> None:
        self._ok(["up", "--yes", "--skip-preview", "--stack", stack], f"up {stack}", False)

    def outputs(self, stack: str) -> dict[str, Any]:
        return json.loads(self._ok(["stack", "output", "--json", "--stack", stack], "output"))

    def export(self, stack: str) -> list[dict[str, Any]]:
        """What the stack holds now (after a failed up: what was created before it failed)."""
        return resources_of(json.loads(self._ok(["stack", "export", "--stack", stack], "export")))

    def destroy(self, stack: str) -> None:
        self._ok(
            ["destroy", "--yes", "--skip-preview", "--stack", stack], f"destroy {stack}", False
        )
        self._ok(["stack", "rm", "--yes", "--stack", stack], f"stack rm {stack}")


def pulumi_missing() -> str | None:
    """Why a real deploy cannot run the Pulumi program here, with the exact fix; None if it can."""
    import importlib.util

    if shutil.which("pulumi") is None:
        return (
            f"the Pulumi CLI is not installed — install it with: {PULUMI_INSTALL} "
            '&& export PATH="$HOME/.pulumi/bin:$PATH" (no Pulumi account needed: state stays in '
            ".state/pulumi)"
        )
    if not all(importlib.util.find_spec(m) for m in ("pulumi", "pulumi_azure_native")):
        return f"the Pulumi Python packages are missing — install them with: {PULUMI_PY_INSTALL}"
    return None
