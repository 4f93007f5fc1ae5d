"""The whole journey in one test, and the bounded first run (`rig smoke`) beside it.

The commands a user runs, in order, each a process of its own in a checkout of its own:
`make deploy-azure YES=1` → `make provision` → `make bench` (its report opened in headless
Chromium) → `make status` → `make destroy` → `make status`. Everything that can be real here is:

- the VM is a booted systemd-nspawn Debian 12 guest (tests/fixtures/ansible/nspawn.py, booted
  once for this module) with a real sshd on 127.0.0.1:<port>; Azure's part in it — the admin
  user, the SSH key from the stack's osProfile — is done by the stand-in `pulumi`;
- Ansible converges the real roles on it over SSH (the Ollama archive is the stand-in served
  from loopback, nvidia-smi reports the T4 the deployed size has);
- the bench goes through a real SSH tunnel to the guest's loopback-only Ollama stand-in (which
  answers /api/chat with the bench's own fake, tests/fake_ollama.py) and samples nvidia-smi
  over SSH;
- Azure is tests/fixtures/azure/fake_arm.py and the retail prices API behind an HTTPS proxy
  (tests/fixtures/journey/fake_cloud.py) that the commands reach as any user behind a
  TLS-inspecting proxy does (HTTPS_PROXY, SSL_CERT_FILE), plus stand-in `az` and `pulumi` CLIs
  on PATH; `pulumi up` creates the resources through ARM, so status and destroy read what the
  deploy made.

Each seam asserts what the next step relies on: the state file's fields, the key and the
inventory (host, port, key) Ansible uses, the tunnel's local port, the results' target
metadata, and finally nothing left in the fake subscription and no state.

The guest's Ollama takes the host's 127.0.0.1:11434: run under `flock /tmp/rehearsal-heavy.lock`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import DEFAULT_TOML, edit_toml

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_FIXTURES = ROOT / "tests/fixtures/ansible"
JOURNEY_FIXTURES = ROOT / "tests/fixtures/journey"
sys.path.insert(0, str(ANSIBLE_FIXTURES))
sys.path.insert(0, str(JOURNEY_FIXTURES))

import nspawn  # noqa: E402
from fake_cloud import FakeCloud  # noqa: E402
from standin import add_standins, file_server, pack_standin  # noqa: E402

from rig import state as rig_state  # noqa: E402

pytestmark = pytest.mark.needs_root

OLLAMA = "0.32.15-standin"  # named like the pinned 0.32.15: the role derives the same layout
# nvidia-smi on an NCasT4_v3 VM, ECC on (REFERENCE.md: T4 memory.total 15,360 MiB).
T4 = "Tesla T4, 15360"
ADMIN = "azureuser"  # rig/catalog/images.toml: the Azure Ubuntu images' ssh_user
NC8 = "Standard_NC8as_T4_v3"
NC4 = "Standard_NC4as_T4_v3"
# The commands never install anything here: the test's checkout shares this one's .venv.
STAMPS = [
    ".venv/.installed-stamp",
    ".venv/.installed-bench",
    ".venv/.installed-aws",
    ".venv/.installed-azure",
    ".venv/.installed-provision",
]
LINKED = ["rig", "bench", "ansible", "pulumi_azure", "cdk", "scripts", "Makefile", "pyproject.toml"]


def _missing() -> str:
    if not sys.platform.startswith("linux"):
        return "needs Linux (systemd-nspawn)"
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "zstd", "ssh", "ssh-keygen", "make"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make test-deps installs it)"
    return ""


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def add_admin_user(root: Path) -> None:
    """What Azure's provisioning agent makes from osProfile.adminUsername: a sudo user (the key
    comes with `pulumi up`, see the stand-in)."""
    subprocess.run(
        ["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", ADMIN],
        check=True,
        capture_output=True,
    )
    sudoers = root / "etc/sudoers.d/90-cloud-init-users"
    sudoers.write_text(f"{ADMIN} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)


def prepare_guest(root: Path) -> None:
    add_standins(root, gpu=True, gpu_line=T4)
    add_admin_user(root)


@dataclass
class Cmd:
    args: list[str]
    rc: int
    out: str
    seconds: float


@dataclass
class World:
    work: Path
    cloud: FakeCloud
    guest: nspawn.Target
    bin_dir: Path
    archive_url: str
    archive_sha: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def checkout(self, name: str, *edits: tuple[str, str, str | None]) -> Path:
        """A user's checkout: the repository's code (linked), their own rig.toml, .state/ and
        results/. Ansible picks up .state/group_vars/ beside the generated inventory: there the
        test points the Ollama role at the stand-in archive (a mirror, as a user behind a
        firewall would) and keeps the watchdog from acting (a container's /proc/uptime is the
        host's: max_hours would power it off)."""
        project = self.work / name
        project.mkdir()
        for entry in LINKED:
            (project / entry).symlink_to(ROOT / entry)
        (project / ".venv").symlink_to((ROOT / ".venv").resolve())
        text = DEFAULT_TOML
        for section, key, value in edits:
            text = edit_toml(text, section, key, value)
        (project / "rig.toml").write_text(text)
        group_vars = project / ".state/group_vars"
        group_vars.mkdir(parents=True, mode=0o700)
        (group_vars / "all.yml").write_text(
            json.dumps(
                {
                    "ollama_version": OLLAMA,
                    "ollama_url": f"{self.archive_url}/v{OLLAMA}/ollama-linux-amd64.tar.zst",
                    "ollama_sha256": self.archive_sha,
                    "ollama_pull_poll_s": 0.3,
                    "autostop_dry_run": True,
                    # a decode slow enough that nvidia-smi's 500 ms samples fall inside each
                    # request (a GPU's would take seconds; the stand-in's 5 tokens take 1.2 s)
                    "ollama_extra_env": {"OLLAMA_STANDIN_TOKEN_DELAY_S": "0.2"},
                }
            )
        )
        return project

    def pulumi_settings(self, **extra: object) -> None:
        """What the stand-in `pulumi up` gives the VM: the guest's address and sshd port."""
        settings = {
            "public_ip": "127.0.0.1",
            "ssh_port": self.guest.port,
            "guest_root": str(self.guest.root),
            "admin_user": ADMIN,
            **extra,
        }
        (self.work / "pulumi-standin.json").write_text(json.dumps(settings))

    def run(self, project: Path, *args: str, timeout: float = 600, tag: str = "") -> Cmd:
        start = time.monotonic()
        proc = subprocess.run(
            list(args),
            cwd=project,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.monotonic() - start
        name = f"{project.name}: {tag or ' '.join(args[2:5])}"
        self.timings[name] = self.timings.get(name, 0) + seconds
        log = self.work / "logs" / f"{project.name}-{len(self.timings):02d}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"$ {' '.join(args)}\n{proc.stdout}\nexit {proc.returncode}\n")
        return Cmd(list(args), proc.returncode, proc.stdout, seconds)

    def make(self, project: Path, *args: str, timeout: float = 600) -> Cmd:
        old = [f"--old-file={s}" for s in STAMPS]
        return self.run(project, "make", *old, *args, timeout=timeout, tag=f"make {args[0]}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if reason := _missing():
        pytest.skip(reason)
    # The guest shares the host's network: its Ollama takes the host's 127.0.0.1:11434.
    assert not port_open(11434), "127.0.0.1:11434 is taken on this machine"
    work = tmp_path_factory.mktemp("journey")
    sha = pack_standin(work / "www", OLLAMA)
    cloud = FakeCloud(work)
    # The subscription the journey deploys to: Spot quota for a few T4 VMs, and the 4-vCPU size
    # offered (the fixture's world restricts it, for the preflight tests).
    cloud.arm.polls, cloud.arm.retry_after = 1, "1"
    cloud.arm.usage_pages[0]["value"][2]["limit"] = 24  # lowPriorityCores
    for sku in cloud.arm.skus["value"]:
        if sku["name"] == NC4:
            sku["restrictions"] = []
            sku["capabilities"] = [
                {"name": "vCPUs", "value": "4"},
                {"name": "LowPriorityCapable", "value": "True"},
            ]
    cloud.retail.vm_prices[NC4] = (0.526, 0.1211)  # test figures, the fixture's shape
    bin_dir = work / "bin"
    bin_dir.mkdir()
    settings = work / "pulumi-standin.json"
    for name, script, env in (
        ("az", "standin_az.py", ""),
        ("pulumi", "standin_pulumi.py", f"PULUMI_STANDIN_CONFIG={settings} "),
    ):
        (bin_dir / name).write_text(
            f'#!/bin/sh\nexec env {env}{sys.executable} {JOURNEY_FIXTURES / script} "$@"\n'
        )
        (bin_dir / name).chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "ARM_", "AZURE_", "PULUMI_", "MAKE")) and k != "MFLAGS"
    }
    env |= cloud.env() | {
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "RIG_MODELS": "",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "AZURE_CONFIG_DIR": str(work / "azure-cli"),
        "AWS_CONFIG_FILE": str(work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
    }
    start = time.monotonic()
    with (
        file_server(work / "www") as archive_url,
        cloud.running(),
        nspawn.booted(
            work, machine=f"rehearsal-journey-{os.getpid()}", prepare=prepare_guest
        ) as guest,
    ):
        w = World(work, cloud, guest, bin_dir, archive_url, sha, env)
        w.timings["boot (rootfs copy + boot + sshd)"] = time.monotonic() - start
        w.pulumi_settings()
        yield w
        print("\njourney timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in w.timings.items()))


def state_files(project: Path) -> list[Path]:
    return sorted(p for p in (project / ".state").glob("*.json") if not p.name.startswith("_"))


def assert_nothing_left(world: World, project: Path) -> None:
    arm = world.cloud.arm
    assert arm.groups == {}, sorted(arm.groups)
    assert arm.assignments == {}, sorted(arm.assignments)
    assert arm.power == {}, arm.power
    assert state_files(project) == []
    assert world.cloud.errors == [] and world.cloud.refused == []


def test_the_journey_deploy_provision_bench_report_status_destroy(world: World, chromium) -> None:
    project = world.checkout(
        "checkout",
        ("aws", "enabled", "false"),
        ("access", "ssh_source", '"127.0.0.1/32"'),
        ("bench", "models", '["phi3:mini", "gemma:7b"]'),
        ("bench", "workloads", '["chat-en"]'),
        ("bench", "repetitions", "1"),
    )
    name = f"azure-{NC8}"

    # 1. Deploy: preflight and prices through the proxy, `pulumi up`, SSH, Ansible.
    deploy = world.make(project, "deploy-azure", "YES=1")
    assert deploy.rc == 0, deploy.out[-4000:]
    (path,) = state_files(project)
    vm = rig_state.load(path)
    assert (vm.name, vm.cloud, vm.instance_type, vm.gpu) == (name, "azure", NC8, "t4")
    assert (vm.host, vm.ssh_port, vm.ssh_user) == ("127.0.0.1", world.guest.port, ADMIN)
    assert vm.provisioned is True and vm.spot is True and vm.price.kind == "spot"
    assert vm.price.source == "azure retail prices API"
    vm_id = vm.ids["vm_id"]
    assert world.cloud.arm.power == {vm_id.lower(): "running"}
    key = project / vm.ssh_key
    assert key.stat().st_mode & 0o777 == 0o600
    authorized = (world.guest.root / "home" / ADMIN / ".ssh/authorized_keys").read_text()
    assert key.with_suffix(".pub").read_text().split()[1] in authorized
    inventory = json.loads((project / ".state/_inventory.json").read_text())
    host = inventory["all"]["hosts"][name]
    assert (host["ansible_host"], host["ansible_port"], host["ansible_user"]) == (
        "127.0.0.1",
        world.guest.port,
        ADMIN,
    )
    assert host["ansible_ssh_private_key_file"] == str(key.resolve())
    assert f"provision {name}: ready" in deploy.out
    assert f"-p {world.guest.port} -N -L 11434:127.0.0.1:11434 {ADMIN}@127.0.0.1" in deploy.out
    with urllib.request.urlopen("http://127.0.0.1:11434/api/tags", timeout=10) as resp:
        tags = json.load(resp)  # the guest shares the host's loopback
    assert {m["name"] for m in tags["models"]} == {"phi3:mini", "gemma:7b"}

    # 2. `python -m rig provision` on the deployed VM again: the roles change nothing.
    again = world.make(project, "provision")
    assert again.rc == 0, again.out[-4000:]
    assert f"provision {name}: ready (0 changed" in again.out, again.out[-2000:]

    # 3. The bench, through the tunnel, exactly as `make bench` runs it.
    bench = world.make(project, "bench")
    assert bench.rc == 0, bench.out[-4000:]
    run_dir = (project / "results/latest").resolve()
    meta = json.loads((run_dir / "meta.json").read_text())
    (target,) = meta["targets"]
    assert (target["name"], target["kind"], target["cloud"], target["gpu"]) == (
        name,
        "cloud",
        "azure",
        "t4",
    )
    assert (target["instance_type"], target["region"]) == (NC8, "westeurope")
    assert target["usd_per_hour"] == vm.price.usd_per_hour
    tunnel_port = int(target["url"].rsplit(":", 1)[1])
    assert tunnel_port not in (11434, world.guest.port)  # a local forward, not the VM itself
    assert not port_open(tunnel_port)  # closed with the bench
    assert target["rtt_ms"] is not None
    assert meta["versions"][f"server:{name}"] == OLLAMA
    # rig plan's estimate of this very run, at the state file's price: what the report's
    # estimate-vs-actual section reads.
    est = meta["estimates"][name]
    assert (est["target"], est["instance_type"], est["gpu"]) == (name, NC8, "t4")
    assert [m["model"] for m in est["models"]] == ["phi3:mini", "gemma:7b"]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["ok"] for r in rows), rows
    assert {r["model"] for r in rows} == {"phi3:mini", "gemma:7b"}
    assert all(r["target"] == name for r in rows)
    for r in rows:
        assert r["decode_tok_s"] > 0 and r["ttft_s"] > 0
        assert r["size_vram_bytes"] == r["size_bytes"] == 2142590208  # /api/ps: all on the GPU
        # nvidia-smi over SSH while the request ran: the loaded model's VRAM
        assert r["vram_used_mib"] == 2142590208 >> 20
    journal = world.guest.run("journalctl", "-u", "ollama", "-o", "cat", "--no-pager").stdout
    # Every request reached the VM's Ollama: one warm-up per model, then the measured ones.
    assert journal.count('POST    "/api/chat"') == len(rows) + 2

    # 4. The report, opened as the user opens it.
    report = run_dir / "report.html"
    session, errors = chromium.open(report.as_uri())
    assert errors == []
    text = chromium.send(
        "Runtime.evaluate",
        {"expression": "document.body.innerText", "returnByValue": True},
        session,
    )["result"]["value"]
    # The report names the VM by its label (cloud and size) and holds both models' rows.
    assert target["label"] == f"azure {NC8}"
    assert target["label"] in text and "phi3:mini" in text and "gemma:7b" in text, text[:3000]

    # 5. Status asks Azure, then destroy leaves nothing, and status says so.
    status = world.make(project, "status")
    assert status.rc == 0, status.out
    assert name in status.out and "running" in status.out
    destroy = world.make(project, "destroy")
    assert destroy.rc == 0, destroy.out[-4000:]
    assert "says 0 left" in destroy.out
    assert_nothing_left(world, project)
    stacks = project / ".state/pulumi/.pulumi/stacks/gpu-rehearsal-azure"
    assert not stacks.exists() or list(stacks.iterdir()) == []
    after = world.make(project, "status")
    assert after.rc == 0 and "Nothing deployed" in after.out


def smoke_checkout(world: World, name: str) -> Path:
    return world.checkout(
        name,
        ("aws", "enabled", "false"),
        ("access", "ssh_source", '"127.0.0.1/32"'),
        ("bench", "models", '["gemma:7b", "phi3:mini"]'),
    )


def test_smoke_deploys_the_cheapest_size_runs_one_request_and_destroys(world: World) -> None:
    project = smoke_checkout(world, "smoke")
    smoke = world.make(project, "smoke", "CLOUD=azure", "YES=1")
    assert smoke.rc == 0, smoke.out[-4000:]
    out = smoke.out
    # The cheapest T4 size of the location, one hour, the smallest model.
    assert f"smoke: {NC4} in westeurope" in out and "max_hours 1" in out
    assert "model phi3:mini" in out
    estimate = out.index(f"smoke estimate (azure-{NC4}, chat-en, one request): estimated ")
    assert estimate < out.index("pulumi up")
    assert "time to first token" in out and "decode" in out and "cost so far $" in out
    assert "says 0 left" in out and "smoke: passed" in out
    assert_nothing_left(world, project)
    assert not (project / ".state/smoke").exists()  # its profile went with what it made
    results = [p for p in (project / "results").iterdir() if p.is_dir()]
    (run,) = results
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [(r["model"], r["ok"], r["target"]) for r in rows] == [
        ("phi3:mini", True, f"azure-{NC4}")
    ]


def test_smoke_destroys_after_a_failure_mid_way(world: World) -> None:
    """The stack is created, then `pulumi up` fails: what it made is destroyed and verified."""
    project = smoke_checkout(world, "smoke-failure")
    world.pulumi_settings(fail_up="error: creating VM: AllocationFailed: out of capacity")
    try:
        smoke = world.run(project, ".venv/bin/python", "-m", "rig", "smoke", "azure", "--yes")
    finally:
        world.pulumi_settings()
    assert smoke.rc == 1, smoke.out[-4000:]
    assert "AllocationFailed" in smoke.out
    assert "says 0 left" in smoke.out
    assert_nothing_left(world, project)


def test_smoke_interrupted_still_destroys(world: World) -> None:
    """Ctrl-C while the VM is being created: the smoke destroys, verifies, and says so."""
    project = smoke_checkout(world, "smoke-interrupted")
    world.pulumi_settings(sleep_up_s=30)
    proc = subprocess.Popen(
        [".venv/bin/python", "-m", "rig", "smoke", "azure", "--yes"],
        cwd=project,
        env=world.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the whole group, as in a terminal
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not world.cloud.arm.power:
            time.sleep(0.2)
        assert world.cloud.arm.power, "the VM was never created"
        time.sleep(0.5)  # `pulumi up` is still under way: the VM exists, the stack not done
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        world.pulumi_settings()
    assert proc.returncode == 130, out[-4000:]
    assert "interrupted" in out and "says 0 left" in out
    assert_nothing_left(world, project)
