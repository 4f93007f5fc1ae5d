"""Converge ansible/site.yml for real on a booted Debian 12 (systemd-nspawn) over SSH on
loopback, twice, through the same code path the deploys use (rig.provision + rig.inventory).

The real Ollama tarball cannot be downloaded here: a clearly named stand-in
(tests/fixtures/ansible/standin-ollama/ollama) is packed like the release tarball and served
from a loopback HTTP server; the role's download, checksum, unpack, user and unit steps are the
ones that handle the real release.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/ansible"
sys.path.insert(0, str(FIXTURES))

import nspawn  # noqa: E402  (test fixture module beside the stand-in)

from rig.profile import load_profile  # noqa: E402
from rig.provision import failure_line, parse_recap, provision, run_playbook  # noqa: E402
from rig.state import Price, VmState, read_all  # noqa: E402

V1 = "0.0.1-standin"
V2 = "0.0.2-standin"
ARCHIVE = "ollama-linux-amd64.tar.zst"  # the name current releases use
GIB = 1024**3

pytestmark = pytest.mark.needs_root


def _missing() -> str:
    if not sys.platform.startswith("linux"):
        return "needs Linux (systemd-nspawn)"
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "zstd", "ssh", "ssh-keygen"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"needs {tool} (make test-deps installs it)"
    return ""


def pack_standin(out_dir: Path, version: str) -> str:
    """A tarball laid out like Ollama's release (bin/ollama, lib/ollama/); returns its sha256."""
    script = (FIXTURES / "standin-ollama/ollama").read_text().replace("@VERSION@", version)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, mode in (
            ("bin/ollama", script.encode(), 0o755),
            ("lib/ollama/STANDIN-NOT-OLLAMA.txt", b"Test fixture, not Ollama.\n", 0o644),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    packed = subprocess.run(
        ["zstd", "-q", "-c"], input=buf.getvalue(), capture_output=True, check=True
    ).stdout
    (out_dir / f"v{version}").mkdir(parents=True)
    (out_dir / f"v{version}" / ARCHIVE).write_bytes(packed)
    return hashlib.sha256(packed).hexdigest()


@dataclass
class World:
    vm: nspawn.Target
    state: VmState
    state_dir: Path
    base_url: str
    sha1: str
    first_log: str


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if reason := _missing():
        pytest.skip(reason)
    # The container shares the host's network: its Ollama takes the host's 127.0.0.1:11434.
    assert not port_in_use("127.0.0.1", 11434), "127.0.0.1:11434 is taken on this machine"
    work = tmp_path_factory.mktemp("converge")
    served = work / "www"
    sha1 = pack_standin(served, V1)
    pack_standin(served, V2)
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with nspawn.booted(work, machine=f"rehearsal-{os.getpid()}") as vm:
            state_dir = work / "state"
            state = VmState(
                name="nspawn-debian12",
                cloud="aws",
                region="loopback",
                instance_type="systemd-nspawn",
                gpu="a10g",  # a 24 GB card standing in for the 16 GB PC: 8 GiB held back
                host="127.0.0.1",
                ssh_user=nspawn.SSH_USER,
                ssh_key=str(vm.key),
                spot=False,
                price=Price(0.0, "on-demand", "test", "2026-01-01T00:00:00+00:00"),
                deployed_at="2026-01-01T00:00:00+00:00",
                deadline="2026-01-01T04:00:00+00:00",
                extra={"ssh_port": vm.port, "image": "ubuntu-24.04"},
            )
            log = io.StringIO()
            provision(
                state,
                load_profile(ROOT / "rig.toml"),
                Console(file=log, width=200),
                extra_vars=vars_for(base_url, V1, sha1),
                state_dir=state_dir,
            )
            (work / "first-converge.log").write_text(log.getvalue())  # for a failing test
            yield World(vm, state, state_dir, base_url, sha1, log.getvalue())
    finally:
        server.shutdown()


def vars_for(base_url: str, version: str, sha256: str) -> dict[str, object]:
    return {
        "ollama_version": version,
        "ollama_url": f"{base_url}/v{version}/{ARCHIVE}",
        "ollama_sha256": sha256,
        "ollama_pull_delay": 1,
        # /proc/uptime in a container is the host's: acting could power the container off.
        "autostop_dry_run": True,
    }


def inventory_path(world: World) -> Path:
    return world.state_dir / "_inventory.json"


def test_first_converge_changes_things_and_marks_the_state(world: World) -> None:
    recap = parse_recap(world.first_log)[world.state.name]
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert recap["changed"] >= 10, recap
    assert "provision nspawn-debian12: ready" in world.first_log
    (saved,) = read_all(world.state_dir)
    assert saved.provisioned is True and world.state.provisioned is True
    inventory = json.loads(inventory_path(world).read_text())
    host = inventory["all"]["hosts"]["nspawn-debian12"]
    assert host["ansible_port"] == world.vm.port and host["ansible_host"] == "127.0.0.1"
    assert host["ollama_gpu_overhead_bytes"] == 8 * GIB


def test_second_converge_changes_nothing(world: World) -> None:
    run = run_playbook(
        inventory_path(world),
        [world.state.name],
        vars_for(world.base_url, V1, world.sha1),
    )
    recap = run.recap[world.state.name]
    assert run.rc == 0, run.output[-3000:]
    assert recap["changed"] == 0, [
        line for line in run.output.splitlines() if line.startswith("changed:")
    ]
    assert recap["failed"] == 0


def test_driver_role_said_no_gpu_and_installed_nothing(world: World) -> None:
    assert "nvidia_driver: no GPU" in world.first_log
    assert "skipping: [nspawn-debian12]" in world.first_log
    assert world.vm.run("sh", "-c", "command -v nvidia-smi").returncode != 0
    pkgs = world.vm.run("dpkg-query", "-W", "-f", "${Package}\n", "*nvidia*")
    assert pkgs.stdout.strip() == ""


def http_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_ollama_serves_on_loopback_only(world: World) -> None:
    assert world.vm.run("systemctl", "is-active", "ollama").stdout.strip() == "active"
    assert http_json("http://127.0.0.1:11434/api/version") == {"version": V1}
    # Bound to 127.0.0.1 exactly: another loopback address is refused, and the listener table
    # inside the VM has nothing else on the port.
    assert not port_in_use("127.0.0.2", 11434)
    listeners = world.vm.run("ss", "-Hltn", "sport = :11434").stdout.split("\n")
    assert [line.split()[3] for line in listeners if line.strip()] == ["127.0.0.1:11434"]
    assert "ollama: 11434 listens on 127.0.0.1:11434 only" in world.first_log


def test_ollama_install_layout_user_and_unit(world: World) -> None:
    run = world.vm.run
    assert run("/usr/bin/ollama", "--version").stdout.strip() == f"ollama version is {V1}"
    assert run("test", "-f", "/usr/lib/ollama/STANDIN-NOT-OLLAMA.txt").returncode == 0
    passwd = run("getent", "passwd", "ollama").stdout.strip().split(":")
    assert passwd[5:] == ["/usr/share/ollama", "/bin/false"] and int(passwd[2]) < 1000
    env = run("systemctl", "show", "ollama", "-p", "Environment", "--value").stdout.split()
    assert "OLLAMA_HOST=127.0.0.1:11434" in env
    assert f"OLLAMA_GPU_OVERHEAD={8 * GIB}" in env
    assert "OLLAMA_FLASH_ATTENTION=1" in env and "OLLAMA_KEEP_ALIVE=30m" in env
    assert "OLLAMA_MODELS=/usr/share/ollama/.ollama/models" in env
    user = run("systemctl", "show", "ollama", "-p", "User", "--value").stdout.strip()
    assert user == "ollama"


def test_profile_models_were_pulled(world: World) -> None:
    profile = load_profile(ROOT / "rig.toml")
    names = {m["name"] for m in http_json("http://127.0.0.1:11434/api/tags")["models"]}  # type: ignore[index, union-attr]
    assert names == {
        m if ":" in m.rsplit("/", 1)[-1] else f"{m}:latest" for m in profile.bench.models
    }
    assert "ollama pull llama3:8b: verifying sha256 digest | writing manifest | success" in (
        world.first_log
    )


def test_autostop_timer_runs_the_watchdog(world: World) -> None:
    run = world.vm.run
    assert run("systemctl", "is-active", "rehearsal-watchdog.timer").stdout.strip() == "active"
    config = json.loads(run("cat", "/etc/rehearsal/watchdog.json").stdout)
    assert config["idle_minutes"] == 30 and config["max_hours"] == 4 and config["cloud"] == "aws"
    assert run("systemctl", "start", "rehearsal-watchdog.service").returncode == 0
    journal = run("journalctl", "-t", "rehearsal-watchdog", "-o", "cat", "--no-pager").stdout
    decisions = [json.loads(line) for line in journal.splitlines() if '"decision"' in line]
    assert decisions, journal
    assert decisions[-1]["dry_run"] is True and decisions[-1]["reasons"]


def test_wrong_checksum_fails_clearly_and_keeps_the_installed_version(world: World) -> None:
    run = run_playbook(
        inventory_path(world), [world.state.name], vars_for(world.base_url, V2, "0" * 64)
    )
    (world.state_dir.parent / "wrong-checksum.log").write_text(run.output)
    assert run.rc != 0
    assert run.recap[world.state.name]["failed"] == 1
    message = failure_line(run.output)  # what `python -m rig provision` would print
    assert message.startswith("task 'ollama : Stop with the reason, nothing replaced': ollama:")
    assert f"does not match its sha256 ({'0' * 64})" in message
    assert "did not match" in message and "it was " in message  # get_url's own finding
    assert f"nothing was replaced, the installed Ollama (ollama version is {V1}) is untouched" in (
        message
    )
    assert world.vm.run("/usr/bin/ollama", "--version").stdout.strip() == f"ollama version is {V1}"
    assert http_json("http://127.0.0.1:11434/api/version") == {"version": V1}
    cached = world.vm.run("ls", "/var/cache/ollama-rehearsal").stdout.split()
    assert cached == [f"{V1}-{ARCHIVE}"]  # the bad download never reached its path
