"""Converge ansible/site.yml for real on booted Debian 12 and Debian 13 (systemd-nspawn) guests
over SSH on loopback, through the code path the deploys use (rig.provision + rig.inventory):
a dry run (--check) on the fresh guest, the first converge, then a second one that must change
nothing.

The real Ollama archive cannot be downloaded here: a clearly named stand-in
(tests/fixtures/ansible/standin-ollama/ollama) is packed as a .tar.zst like current releases and
served from a loopback HTTP server; the role's download, checksum, unpack, user and unit steps
are the ones that handle the real release. The Debian 13 guest also gets a stand-in nvidia-smi
that reports an A10G (tests/fixtures/ansible/standin-nvidia-smi), so the "a GPU answers" paths
run there: the VRAM reserve measured on the VM, modules-load, and the /api/ps GPU check; the
Debian 12 guest has no GPU at all.

Both guests share the host's network, and so 127.0.0.1:11434: run this under
`flock /tmp/rehearsal-heavy.lock`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests/fixtures/ansible"
sys.path.insert(0, str(FIXTURES))

import nspawn  # noqa: E402  (test fixture module beside the stand-ins)
from standin import ARCHIVE, QuietFiles, add_standins, pack_standin  # noqa: E402

from rig.inventory import write_inventory  # noqa: E402
from rig.profile import load_profile  # noqa: E402
from rig.provision import failure_line, parse_recap, provision, run_playbook  # noqa: E402
from rig.state import Price, VmState, read_all  # noqa: E402

# Stand-in releases named like 0.32.x so the role derives what it does for the pinned 0.32.15:
# the .tar.zst archive name and the llama-server placement (LLAMA_ARG_FIT_TARGET).
V1 = "0.32.14-standin"
V2 = "0.32.15-standin"
MIB = 1024**2
A10G_MIB = 23028  # what the stand-in nvidia-smi reports
PC_MIB = 16380  # the planned RTX 4060 Ti 16GB (catalog usable_mib)

pytestmark = pytest.mark.needs_root


def _missing() -> str:
    if not sys.platform.startswith("linux"):
        return "needs Linux (systemd-nspawn)"
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "zstd", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make test-deps installs it)"
    return ""


@dataclass
class World:
    suite: str
    gpu: bool  # the stand-in nvidia-smi is installed
    vm: nspawn.Target
    state: VmState
    state_dir: Path
    base_url: str
    sha1: str
    check_log: str
    first_log: str
    timings: dict[str, float] = field(default_factory=dict)
    second_log: str = ""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def vars_for(base_url: str, version: str, sha256: str) -> dict[str, object]:
    return {
        "ollama_version": version,
        "ollama_url": f"{base_url}/v{version}/{ARCHIVE}",
        "ollama_sha256": sha256,
        "ollama_pull_poll_s": 0.3,
        # /proc/uptime in a container is the host's: acting could power the container off.
        "autostop_dry_run": True,
    }


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    if reason := _missing():
        pytest.skip(reason)
    suite: str = request.param
    gpu = suite == "trixie"
    # The container shares the host's network: its Ollama takes the host's 127.0.0.1:11434.
    assert not port_in_use("127.0.0.1", 11434), "127.0.0.1:11434 is taken on this machine"
    work = tmp_path_factory.mktemp(f"converge-{suite}")
    served = work / "www"
    sha1 = pack_standin(served, V1)
    pack_standin(served, V2)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    profile = load_profile(ROOT / "rig.toml")
    timings: dict[str, float] = {}
    try:
        start = time.monotonic()
        with nspawn.booted(
            work,
            machine=f"rehearsal-{suite}-{os.getpid()}",
            suite=suite,
            prepare=partial(add_standins, gpu=gpu),
        ) as vm:
            timings["boot"] = time.monotonic() - start
            state_dir = work / "state"
            state = VmState(
                name=f"nspawn-{suite}",
                cloud="aws",
                region="loopback",
                instance_type="systemd-nspawn",
                gpu="a10g",
                host="127.0.0.1",
                ssh_user=nspawn.SSH_USER,
                ssh_key=str(vm.key),
                spot=False,
                price=Price(0.0, "on-demand", "test", "2026-01-01T00:00:00+00:00"),
                deployed_at="2026-01-01T00:00:00+00:00",
                deadline="2026-01-01T04:00:00+00:00",
                extra={"ssh_port": vm.port, "image": "ubuntu-24.04"},
            )
            check = io.StringIO()
            start = time.monotonic()
            provision(
                state,
                profile,
                Console(file=check, width=200),
                extra_vars=vars_for(base_url, V1, sha1),
                state_dir=state_dir,
                check=True,
            )
            timings["check"] = time.monotonic() - start
            log = io.StringIO()
            start = time.monotonic()
            provision(
                state,
                profile,
                Console(file=log, width=200),
                extra_vars=vars_for(base_url, V1, sha1),
                state_dir=state_dir,
            )
            timings["first"] = time.monotonic() - start
            (work / "first-converge.log").write_text(log.getvalue())  # for a failing test
            yield World(
                suite,
                gpu,
                vm,
                state,
                state_dir,
                base_url,
                sha1,
                check.getvalue(),
                log.getvalue(),
                timings,
            )
    finally:
        server.shutdown()
        print(
            f"\nconverge timings {suite}: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        )


def inventory_path(world: World) -> Path:
    return world.state_dir / "_inventory.json"


def http_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def env_of(world: World) -> list[str]:
    return world.vm.run(
        "systemctl", "show", "ollama", "-p", "Environment", "--value"
    ).stdout.split()


def test_check_mode_works_on_a_fresh_host_and_changes_nothing(world: World) -> None:
    recap = parse_recap(world.check_log)[world.state.name]
    assert recap["failed"] == 0 and recap["unreachable"] == 0, world.check_log[-3000:]
    assert "dry run done" in world.check_log
    assert "ollama: check mode on a host without Ollama" in world.check_log
    # The dry run ran before the first converge: the first converge found a fresh machine.
    assert "changed: [" in world.first_log and "Unpack the release into /usr" in world.first_log


def test_first_boot_waits_for_cloud_init(world: World) -> None:
    task = world.first_log.split("TASK [Wait for cloud-init to finish]")[1].split("TASK [")[0]
    assert f"ok: [{world.state.name}]" in task  # exit 2 = done with recoverable errors
    assert world.first_log.index("TASK [Wait for cloud-init") < world.first_log.index(
        "TASK [nvidia_driver :"
    )


def test_first_converge_changes_things_and_marks_the_state(world: World) -> None:
    recap = parse_recap(world.first_log)[world.state.name]
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert recap["changed"] >= 10, recap
    assert f"provision {world.state.name}: ready" in world.first_log
    (saved,) = read_all(world.state_dir)
    assert saved.provisioned is True and world.state.provisioned is True
    inventory = json.loads(inventory_path(world).read_text())
    host = inventory["all"]["hosts"][world.state.name]
    assert host["ansible_port"] == world.vm.port and host["ansible_host"] == "127.0.0.1"
    assert host["ollama_pc_usable_mib"] == PC_MIB and host["ollama_context_length"] == 4096


def test_second_converge_changes_nothing(world: World) -> None:
    start = time.monotonic()
    run = run_playbook(
        inventory_path(world), [world.state.name], vars_for(world.base_url, V1, world.sha1)
    )
    world.timings["second"] = time.monotonic() - start
    world.second_log = run.output
    recap = run.recap[world.state.name]
    assert run.rc == 0, run.output[-3000:]
    assert recap["changed"] == 0, [
        line for line in run.output.splitlines() if line.startswith("changed:")
    ]
    assert recap["failed"] == 0
    # Present models are not pulled again.
    assert "ollama: 10 of 10 models already present, 0 to pull" in run.output


def test_driver_role_said_no_gpu_and_installed_nothing(world: World) -> None:
    assert "nvidia_driver: no GPU" in world.first_log
    pkgs = world.vm.run("dpkg-query", "-W", "-f", "${Package}\n", "*nvidia*")
    assert pkgs.stdout.strip() == ""


def test_sshd_drops_dead_clients(world: World) -> None:
    run = world.vm.run
    dropin = run("cat", "/etc/ssh/sshd_config.d/10-rehearsal-keepalive.conf").stdout
    assert "ClientAliveInterval 60" in dropin and "ClientAliveCountMax 3" in dropin
    effective = run("/usr/sbin/sshd", "-T").stdout.splitlines()
    assert "clientaliveinterval 60" in effective and "clientalivecountmax 3" in effective
    assert "autostop: sshd drops a dead client after 180 s" in world.first_log


def test_modules_load_and_persistenced_ordering(world: World) -> None:
    run = world.vm.run
    after = run("systemctl", "show", "ollama", "-p", "After", "--value").stdout.split()
    assert "nvidia-persistenced.service" in after and "network-online.target" in after
    wants = run("systemctl", "show", "ollama", "-p", "Wants", "--value").stdout.split()
    assert "nvidia-persistenced.service" in wants
    modules = run("cat", "/etc/modules-load.d/nvidia.conf")
    if world.gpu:
        assert modules.stdout.split() == ["nvidia", "nvidia_uvm"]
    else:  # no GPU: no module list that would fail at every boot
        assert modules.returncode != 0


def test_ollama_environment_mirrors_the_planned_pc(world: World) -> None:
    env = env_of(world)
    for pinned in (
        "OLLAMA_HOST=127.0.0.1:11434",
        "OLLAMA_NUM_PARALLEL=1",
        "OLLAMA_MAX_LOADED_MODELS=1",
        "OLLAMA_CONTEXT_LENGTH=4096",
        "OLLAMA_FLASH_ATTENTION=1",
        "OLLAMA_KEEP_ALIVE=30m",
        "OLLAMA_MODELS=/usr/share/ollama/.ollama/models",
    ):
        assert pinned in env, env
    # The reserve is measured on the VM: memory.total minus the PC card's usable MiB; 0.32.x
    # places layers with llama-server --fit, whose margin is 1024 MiB + the reserve.
    reserve = A10G_MIB - PC_MIB if world.gpu else 0
    assert f"OLLAMA_GPU_OVERHEAD={reserve * MIB}" in env
    assert f"LLAMA_ARG_FIT_TARGET={1024 + reserve}" in env
    if world.gpu:
        assert (
            f"ollama: NVIDIA A10G reports {A10G_MIB} MiB, the planned NVIDIA GeForce RTX 4060 Ti "
            f"16GB {PC_MIB} MiB: holding back {reserve} MiB (LLAMA_ARG_FIT_TARGET={1024 + reserve}"
            f" MiB for llama-server --fit, OLLAMA_GPU_OVERHEAD={reserve * MIB} bytes)"
        ) in " ".join(world.first_log.split())
    else:
        assert "ollama: no GPU answers nvidia-smi" in world.first_log


def test_loopback_check_runs_right_after_start_before_the_pulls(world: World) -> None:
    log = world.first_log
    start = log.index("TASK [ollama : Wait for /api/version]")
    loopback = log.index("TASK [ollama : Check that port 11434 is not reachable")
    pulls = log.index("TASK [ollama : Pull the missing models")
    assert start < loopback < pulls
    assert "ollama: 11434 listens on 127.0.0.1:11434 only" in log
    listeners = world.vm.run("ss", "-Hltn", "sport = :11434").stdout.split("\n")
    assert [line.split()[3] for line in listeners if line.strip()] == ["127.0.0.1:11434"]
    assert not port_in_use("127.0.0.2", 11434)


def test_pulls_show_progress_and_every_model_arrives(world: World) -> None:
    log = world.first_log
    assert "ollama: 0 of 10 models already present, 10 to pull" in log
    # Lines printed while the pulls run: bytes and percent, then the end of each pull.
    partial = re.findall(r"ollama pull \(\d+/10\) \S+: [\d.]+ of 2\.14 GB \((\d+) %\) pulling", log)
    assert partial and min(int(p) for p in partial) < 100, log[-3000:]
    assert "ollama pull (1/10) llama3:8b: 2.14 of 2.14 GB (100 %) success" in log
    assert log.count("of 2.14 GB (100 %) success") == 10
    profile = load_profile(ROOT / "rig.toml")
    names = {m["name"] for m in http_json("http://127.0.0.1:11434/api/tags")["models"]}  # type: ignore[index, union-attr]
    assert names == {
        m if ":" in m.rsplit("/", 1)[-1] else f"{m}:latest" for m in profile.bench.models
    }


def test_one_model_is_checked_to_run_entirely_on_the_gpu(world: World) -> None:
    if world.gpu:
        assert "ollama: phi3:mini runs 100 % on the GPU (2.14 GB in VRAM)" in world.first_log
    else:
        task = world.first_log.split("TASK [ollama : Check that the model is 100 % on the GPU]")[1]
        assert task.split("\n")[1] == f"skipping: [{world.state.name}]"
    assert http_json("http://127.0.0.1:11434/api/ps") == {"models": []}  # unloaded again


def test_ollama_install_layout_user_and_unit(world: World) -> None:
    run = world.vm.run
    assert run("/usr/bin/ollama", "--version").stdout.strip() == f"ollama version is {V1}"
    assert run("test", "-f", "/usr/lib/ollama/STANDIN-NOT-OLLAMA.txt").returncode == 0
    passwd = run("getent", "passwd", "ollama").stdout.strip().split(":")
    assert passwd[5:] == ["/usr/share/ollama", "/bin/false"] and int(passwd[2]) < 1000
    assert run("systemctl", "show", "ollama", "-p", "User", "--value").stdout.strip() == "ollama"
    assert http_json("http://127.0.0.1:11434/api/version") == {"version": V1}


def test_watchdog_runs_and_sees_inference_in_ollamas_request_log(world: World) -> None:
    run = world.vm.run
    assert run("systemctl", "is-active", "rehearsal-watchdog.timer").stdout.strip() == "active"
    unit = run(
        "systemctl", "show", "rehearsal-watchdog.service", "-p", "TimeoutStartUSec", "--value"
    )
    assert unit.stdout.strip() == "15min"
    config = json.loads(run("cat", "/etc/rehearsal/watchdog.json").stdout)
    assert config["idle_minutes"] == 30 and config["max_hours"] == 4 and config["cloud"] == "aws"
    # A container's /proc/uptime is the host's (systemd-nspawn shares the kernel): on a host up
    # longer than max_hours every run decides "stop" for max_hours before it reads the log (as
    # it must on a VM). This test is about the request log, so this one run gets a max_hours no
    # host reaches; the rendered file is put back byte for byte (converges change nothing).
    settings = world.vm.root / "etc/rehearsal/watchdog.json"
    rendered = settings.read_bytes()
    settings.write_text(json.dumps({**config, "max_hours": 100_000}))
    try:
        # An inference through the "tunnel" (loopback), then one watchdog run.
        http_json("http://127.0.0.1:11434/api/generate", {"model": "phi3:mini"})
        http_json("http://127.0.0.1:11434/api/generate", {"model": "phi3:mini", "keep_alive": 0})
        assert run("systemctl", "start", "rehearsal-watchdog.service").returncode == 0
    finally:
        settings.write_bytes(rendered)
    journal = run("journalctl", "-t", "rehearsal-watchdog", "-o", "cat", "--no-pager").stdout
    decisions = [json.loads(line) for line in journal.splitlines() if '"decision"' in line]
    assert decisions, journal
    last = decisions[-1]
    assert last["dry_run"] is True and last["action"] == "none"
    assert any("(Ollama request)" in r for r in last["reasons"]), last


def test_a_cpu_fallback_fails_the_run_where_a_gpu_exists(world: World) -> None:
    if not world.gpu:  # no GPU: Ollama runs on the CPU by design and the check does not run
        assert "ollama: no GPU answers nvidia-smi" in world.first_log
        return
    extra = vars_for(world.base_url, V1, world.sha1) | {
        # The stand-in then loads models 48 % on the CPU, as Ollama does after a reboot
        # without nvidia_uvm (ollama/ollama#10204).
        "ollama_extra_env": {"OLLAMA_STANDIN_CPU_FALLBACK": "1"},
    }
    run = run_playbook(inventory_path(world), [world.state.name], extra, tags=["ollama"])
    (world.state_dir.parent / "cpu-fallback.log").write_text(run.output)
    assert run.rc != 0
    message = failure_line(run.output)
    assert message.startswith("task 'ollama : Check that the model is 100 % on the GPU'")
    assert "phi3:mini is not entirely on the GPU — 52 % of its 2.14 GB is in VRAM" in message


def test_wrong_checksum_fails_clearly_and_keeps_the_installed_version(world: World) -> None:
    run = run_playbook(
        inventory_path(world),
        [world.state.name],
        vars_for(world.base_url, V2, "0" * 64),
        tags=["ollama"],
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
    cached = world.vm.run("ls", "/var/cache/ollama-rehearsal").stdout.split()
    assert cached == [f"{V1}-{ARCHIVE}"]  # the bad download never reached its path


def test_a_version_without_known_checksum_is_refused(world: World) -> None:
    inventory = write_inventory([world.state], load_profile(ROOT / "rig.toml"), world.state_dir)
    extra = vars_for(world.base_url, "0.32.13", "") | {"ollama_url": ""}
    run = run_playbook(inventory, [world.state.name], extra, tags=["ollama"])
    assert run.rc != 0
    assert "no known sha256 for Ollama 0.32.13 (amd64)" in failure_line(run.output)
    extra = vars_for(world.base_url, "0.33.0", "ab" * 32)
    run = run_playbook(inventory, [world.state.name], extra, tags=["ollama"])
    assert "how Ollama 0.33.0 places layers on the GPU has not been checked" in failure_line(
        run.output
    )
    print(f"\nconverge timings {world.suite}: {world.timings}")
