"""Targets: where a bench run sends its requests.

A target is an endpoint plus facts about its hardware. Deployed VMs come from `.state/*.json`
(written by the deploys) and are reached through an SSH tunnel to their loopback-only Ollama;
`--target NAME=URL[@backend]` adds any server by hand, and `local` means this machine's Ollama.
bench/ knows nothing of clouds beyond these facts.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bench.schema import TargetInfo
from rig import state as rig_state
from rig.problems import CommandError

LOCAL_OLLAMA = "http://127.0.0.1:11434"
OLLAMA_PORT = 11434
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TargetError(ValueError):
    """A bad --target or state file; the message names it and the fix."""


@dataclass
class Remote:
    """How to reach a deployed VM: SSH for the tunnel and for nvidia-smi."""

    host: str
    user: str
    key: str | None
    port: int = 22
    # The rehearsal's own known_hosts (under .state/), so VMs that come and go with recycled
    # IPs never touch or trip over the user's ~/.ssh/known_hosts.
    known_hosts: str | None = None

    def ssh_argv(self) -> list[str]:
        options = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "accept-new",
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "3",
            "ConnectTimeout": "15",
        }
        if self.known_hosts:
            options["UserKnownHostsFile"] = self.known_hosts
        if self.key:
            options["IdentitiesOnly"] = "yes"
        argv = ["ssh", "-p", str(self.port)]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        if self.key:
            argv += ["-i", self.key]
        return [*argv, f"{self.user}@{self.host}"]


@dataclass
class TargetSpec:
    info: TargetInfo
    remote: Remote | None = None


def parse_target(text: str, default_backend: str) -> TargetSpec:
    """NAME=URL[@backend], or `local` for this machine's Ollama."""
    if text == "local":
        return TargetSpec(
            TargetInfo(
                name="local",
                url=LOCAL_OLLAMA,
                backend="ollama",
                label="this PC (local Ollama)",
                kind="local",
            )
        )
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise TargetError(
            f"--target {text!r}: write NAME=URL, e.g. "
            "--target pc=http://127.0.0.1:11434, or --target local"
        )
    url, _, backend = rest.partition("@")
    backend = backend or default_backend
    if not _NAME.match(name):
        raise TargetError(f"--target {text!r}: name {name!r} must be letters, digits, . _ -")
    if not re.match(r"^http://[^/\s]+(:\d+)?(/.*)?$", url):
        raise TargetError(
            f"--target {text!r}: {url!r} is not an http:// URL — e.g. "
            "http://127.0.0.1:11434 (reach remote servers through an SSH tunnel)"
        )
    if not _parses(url):
        raise TargetError(
            f"--target {text!r}: {url!r} has no host or a port outside 1-65535 — e.g. "
            "http://127.0.0.1:11434"
        )
    if backend not in ("ollama", "openai"):
        raise TargetError(f"--target {text!r}: backend {backend!r} — use @ollama or @openai")
    if is_pc(name):
        # The user's own PC (e.g. Windows/WSL2 running Ollama, reached over the LAN): its
        # numbers are the real thing the cloud runs stand in for, never labelled "cloud".
        info = TargetInfo(
            name=name, url=url, backend=backend, label=f"your PC ({name})", kind="local"
        )
        return TargetSpec(info)
    return TargetSpec(TargetInfo(name=name, url=url, backend=backend, label=name, kind="cloud"))


def _parses(url: str) -> bool:
    """A host and, if given, a port 1-65535 (urllib raises on "[::1" or ":99999" only when the
    port is read, which would be mid-run)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return bool(parts.hostname) and (port is None or port > 0)


def is_pc(name: str) -> bool:
    """`local`, `pc` and `pc-*` (pc-wsl, pc-5060ti, ...) name the user's own PC."""
    return name in ("local", "pc") or name.startswith("pc-")


def from_state_file(path: Path) -> TargetSpec:
    """A deployed VM from its state file (see rig's deploy for the writer)."""
    try:
        # rig.state's loader: the same one-line message and fix as every rig command.
        loaded = rig_state.load(path)
        state = loaded.to_json()
    except CommandError as exc:
        raise TargetError(str(exc)) from None
    try:
        price = state.get("price") or {}
        extra = state.get("extra") or {}
        rates = extra.get("rates") or {}  # Azure's deploy records its rates there
        disk = extra.get("disk_usd_per_hour", rates.get("disk_usd_per_hour"))
        ip = extra.get("public_ipv4_usd_per_hour", rates.get("public_ip_usd_per_hour"))
        info = TargetInfo(
            name=state["name"],
            url="",  # filled in once the tunnel is open
            backend="ollama",
            label=f"{state['cloud']} {state['instance_type']}",
            kind="cloud",
            gpu=state.get("gpu"),
            cloud=state["cloud"],
            instance_type=state["instance_type"],
            region=state.get("region"),
            spot=state.get("spot"),
            usd_per_hour=price.get("usd_per_hour"),
            price_source=price.get("source"),
            disk_usd_per_hour=disk if isinstance(disk, int | float) else None,
            public_ip_usd_per_hour=ip if isinstance(ip, int | float) else None,
        )
        remote = Remote(
            state["host"],
            state["ssh_user"],
            state.get("ssh_key"),
            port=loaded.ssh_port,
            known_hosts=str(path.parent / "known_hosts"),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TargetError(
            f"{path}: not a usable state file ({exc.__class__.__name__}: {exc}) "
            "— redeploy, or remove the file"
        ) from None
    return TargetSpec(info, remote)


def from_state_dir(state_dir: Path) -> list[TargetSpec]:
    if not state_dir.is_dir():
        return []
    return [
        from_state_file(p) for p in sorted(state_dir.glob("*.json")) if not p.name.startswith("_")
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


class SshTunnel:
    """ssh -N -L 127.0.0.1:PORT:127.0.0.1:11434: Ollama stays bound to the VM's loopback."""

    def __init__(self, remote: Remote, remote_port: int = OLLAMA_PORT):
        self.remote = remote
        self.remote_port = remote_port
        self.local_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def open(self, timeout_s: float = 30) -> str:
        argv = self.remote.ssh_argv()
        argv[1:1] = [
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"127.0.0.1:{self.local_port}:127.0.0.1:{self.remote_port}",
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if not wait_for_port(self.local_port, timeout_s, self.proc):
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            self.close()
            said = [
                line.strip()
                for line in err.decode(errors="replace").splitlines()
                if line.strip() and not line.startswith("Warning: Permanently added")
            ]
            raise TargetError(
                f"SSH tunnel to {self.remote.user}@{self.remote.host} did not "
                f"open: {' | '.join(said)[-200:] or 'timeout'}"
                " — is the VM running (make status) and your IP allowed?"
            )
        return self.url

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
