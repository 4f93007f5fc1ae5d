"""deploy/destroy azure end to end: the real rig code against a fake subscription and Pulumi CLI.

Azure is tests/fixtures/azure/fake_arm.py (documented payloads, ARM's quirks); the Pulumi CLI is
fake_pulumi.py (the real file-backend layout). Everything else is real: the REST client, the
preflight, the pricing, the schedule, the state files, the passphrase file, the generated
project directory. Each test names the defect of issue #10 it pins.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

FIXTURES = Path(__file__).parent / "fixtures" / "azure"
sys.path.insert(0, str(FIXTURES))

from fake_arm import SUB, TOKEN, FakeArm, fixture  # noqa: E402
from fake_pulumi import FakePulumi  # noqa: E402

from rig import cli, state  # noqa: E402
from rig.azure import destroy as destroy_mod  # noqa: E402
from rig.azure.arm import RestAzure  # noqa: E402
from rig.azure.credentials import Credentials  # noqa: E402
from rig.azure.deploy import deploy  # noqa: E402
from rig.azure.deps import Deps  # noqa: E402
from rig.azure.destroy import destroy  # noqa: E402
from rig.azure.http import Response  # noqa: E402
from rig.azure.names import legacy_role_guid  # noqa: E402
from rig.azure.pricing import LIVE, Extras, PriceQuote  # noqa: E402
from rig.azure.pulumi_cli import (  # noqa: E402
    PROGRAM_DIR,
    FileBackend,
    PassphraseMissing,
    Pulumi,
    backend_dir,
    backend_env,
    project_dir,
    secrets_env,
    write_project,
)
from rig.problems import CommandError  # noqa: E402
from rig.profile import load_profile  # noqa: E402

OTHER = "00000000-0000-0000-0000-000000000002"
T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
NC8 = "Standard_NC8as_T4_v3"
STACK = "nc8as-t4-v3-westeurope"
RG = f"rg-gpu-rehearsal-{STACK}"
VM = "vm-rehearsal-nc8as-t4-v3"
ROOT = Path(__file__).resolve().parent.parent


class World:
    """Fakes for every Deps seam, one FakeArm per subscription, and what each saw."""

    def __init__(self, tmp_path: Path):
        self.state_dir = tmp_path / "state"
        self.arms = {SUB: FakeArm(SUB), OTHER: FakeArm(OTHER)}
        for fake in self.arms.values():  # room for one Spot VM (the fixture's pool is 0/3)
            fake.usage_pages[0]["value"][2]["limit"] = 24
        self.creds: Credentials | None = Credentials("az-cli", SUB, "tenant")
        self.fake: FakePulumi | None = None
        self.ssh_port = 22  # what the stack exports as ssh_port
        self.missing: str | None = None
        self.environ: dict[str, str] = {}
        self.tty = True
        self.answer = True
        self.questions: list[str] = []
        self.order: list[str] = []
        self.provision_fn: Any = None
        self.price: PriceQuote | None = PriceQuote(0.84, 0.19, LIVE, "2026-11-28T09:00:00+00:00")
        self.extras = Extras(41.82, 0.005)
        self.clock = [T0]
        self.slept: list[float] = []

    @property
    def arm(self) -> FakeArm:
        return self.arms[SUB]

    def http(self, method: str, url: str, headers: Any, form: Any) -> Any:
        sub = url.split("/subscriptions/")[1].split("/")[0].split("?")[0]
        return self.arms[sub](method, url, headers, form)

    def api(self, creds: Credentials) -> RestAzure:
        return RestAzure(creds.subscription_id, TOKEN, self.http, sleep=self.slept.append)

    def pulumi(self, state_dir: Path, creds: Credentials) -> Pulumi:
        stacks = bool(FileBackend(backend_dir(state_dir)).stacks())
        env = (
            backend_env(state_dir)
            | secrets_env(state_dir, self.environ, stacks_exist=stacks)
            | creds.pulumi_env()
        )
        project = write_project(state_dir)
        if self.fake is None:
            self.fake = FakePulumi(
                self.arms[creds.subscription_id], backend_dir(state_dir), project
            )
        self.fake.arm = self.arms[creds.subscription_id]
        self.fake.ssh_port = self.ssh_port
        return Pulumi(self.fake.run, env)

    def deps(self) -> Deps:
        def keygen(private: Path) -> None:
            private.parent.mkdir(parents=True, exist_ok=True)
            private.write_text("PRIVATE")
            private.with_suffix(".pub").write_text("ssh-ed25519 AAAAtest gpu-rehearsal\n")

        def confirm(question: str) -> bool:
            self.questions.append(question)
            return self.answer

        return Deps(
            state_dir=self.state_dir,
            tools_missing=lambda: self.missing,
            credentials=lambda sub: (
                self.creds.for_subscription(sub) if self.creds and sub else self.creds
            ),
            api=self.api,
            pulumi=self.pulumi,
            price=lambda loc, size: self.price,
            extras=lambda loc, disk_type, gb: self.extras,
            public_ip=lambda: "203.0.113.7",
            wait_ssh=lambda host, port: self.order.append(
                f"ssh {host}" + ("" if port == 22 else f":{port}")
            ),
            keygen=keygen,
            provisioner=lambda: self.provision_fn,
            interactive=lambda: self.tty,
            confirm=confirm,
            now=lambda: self.clock[0],
            sleep=self.slept.append,
        )

    def writes(self, sub: str = SUB) -> list[tuple[str, str]]:
        return [c for c in self.arms[sub].calls if c[0] in ("POST", "PUT", "DELETE")]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def console() -> Console:
    return Console(record=True, width=300)


def deployed(world: World, profile_file: Any, **edits: Any) -> tuple[state.VmState, str]:
    out = console()
    (vm,) = deploy(load_profile(profile_file()), out, world.deps())
    return vm, out.export_text()


# ---- deploy ---------------------------------------------------------------------------------


def test_deploy_sets_the_cloud_side_stop_and_prints_what_it_enforces(profile_file, world):
    """#10.1 and #10.11: the schedule holds the max_hours deadline; the worst case printed is
    compute at its cap + disk + IP until then; the question names subscription, location,
    size and the worst case."""
    vm, text = deployed(world, profile_file)
    fake = world.fake
    assert fake is not None
    assert [c[:2] for c in fake.calls] == [
        ["stack", "select"],
        ["config", "set-all"],
        ["up", "--yes"],
        ["stack", "output"],
    ]
    config = fake.config[STACK]
    assert config["gpu-rehearsal-azure:shutdownTime"] == "1300"  # 09:00 + max_hours 4
    assert config["gpu-rehearsal-azure:shutdownTimeZone"] == "UTC"
    assert config["azure-native:subscriptionId"] == SUB
    assert config["gpu-rehearsal-azure:sshSource"] == "203.0.113.7/32"
    # (0.84 cap + 41.82/730 disk + 0.005 IP) x 4 h, the one formula of rig/cost.py
    assert "worst case 4 h, $3.61" in text and "Worst case: $3.61 in all" in text
    assert "Cloud-side stop: 2026-11-28 13:00 UTC (4 h from now)" in text
    assert "spot $0.190/h now" in text and "OS disk P15" in text and "public IP $0.005/h" in text
    assert f"Azure subscription Rehearsal Pay-As-You-Go ({SUB}), location westeurope" in text
    # rig plan's estimate at the price just read, with the same worst case (issue #16).
    plan = re.search(r"estimated (.+?), \$([\d.]+); worst case 4 h, \$3\.61", text)
    assert plan is not None, text
    (question,) = world.questions
    assert question == (
        f"Deploy {NC8} ($0.252/h now) to subscription Rehearsal Pay-As-You-Go in westeurope, "
        "worst case $3.61?"
    )
    assert vm.deadline == state.iso(T0 + dt.timedelta(hours=4))
    assert vm.extra["worst_case_usd"] == 3.61
    assert vm.extra["cloud_stop"]["time"] == "1300"
    assert vm.ids["subscription_id"] == SUB and vm.ids["schedule"] == f"shutdown-computevm-{VM}"
    (saved,) = state.read_all(world.state_dir)
    assert saved == vm
    assert world.order == ["ssh 198.51.100.20"]
    assert "ssh -i" in text and "11434:127.0.0.1:11434 azureuser@198.51.100.20" in text


def test_the_ssh_port_the_stack_exports_is_waited_on_recorded_and_printed(profile_file, world):
    """The state says where sshd answers; Ansible, the bench's tunnel and the printed tunnel
    command all read it from there (22 when a stack exports none)."""
    world.ssh_port = 2222
    vm, text = deployed(world, profile_file)
    assert vm.extra["ssh_port"] == 2222 and vm.ssh_port == 2222
    assert world.order == ["ssh 198.51.100.20:2222"]
    assert "-p 2222 -N -L 11434:127.0.0.1:11434 azureuser@198.51.100.20" in text
    (saved,) = state.read_all(world.state_dir)
    assert saved.ssh_port == 2222


def test_no_terminal_and_no_yes_refuses_before_anything_exists(profile_file, world):
    """#10.11: never spend silently."""
    world.tty = False
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    assert "no terminal" in str(err.value) and "YES=1" in str(err.value)
    assert world.fake is None and world.writes() == [] and world.questions == []
    assert not (world.state_dir / "keys").exists()


def test_yes_deploys_without_asking(profile_file, world):
    world.tty = False
    deps = world.deps()
    deps.assume_yes = True
    deploy(load_profile(profile_file()), console(), deps)
    assert world.questions == [] and len(state.read_all(world.state_dir)) == 1


def test_a_no_answer_creates_nothing(profile_file, world):
    world.answer = False
    with pytest.raises(CommandError, match="cancelled — nothing was created"):
        deploy(load_profile(profile_file()), console(), world.deps())
    assert world.fake is None and world.writes() == []


def test_an_answer_too_late_for_the_printed_stop_creates_nothing(profile_file, world):
    """#10.1: the schedule must be set at least its lead ahead of the time printed."""
    profile = load_profile(profile_file(("autostop", "max_hours", "1.5")))
    world.answer = True
    deps = world.deps()
    asked = deps.confirm

    def slow(question: str) -> bool:
        world.clock[0] = T0 + dt.timedelta(minutes=45)  # the user went for coffee
        return asked(question)

    deps.confirm = slow
    with pytest.raises(CommandError, match="nothing was created; run the deploy again"):
        deploy(profile, console(), deps)
    assert world.fake is None and world.writes() == []


def test_a_long_pulumi_up_warns_that_the_first_stop_may_be_a_day_late(profile_file, world):
    deps = world.deps()
    real_up = world.pulumi

    def slow_pulumi(state_dir: Path, creds: Credentials) -> Pulumi:
        p = real_up(state_dir, creds)
        run = p.run

        def timed(args: list[str], env: dict[str, str], capture: bool) -> Any:
            if args[0] == "up":
                world.clock[0] = T0 + dt.timedelta(hours=3, minutes=40)
            return run(args, env, capture)

        p.run = timed
        return p

    deps.pulumi = slow_pulumi
    out = console()
    deploy(load_profile(profile_file()), out, deps)
    text = out.export_text()
    assert "Azure may skip its first run" in text and "worst case 28 h" in text


def test_makefile_passes_yes_only_when_asked():
    plain = subprocess.run(["make", "-n", "deploy-azure"], cwd=ROOT, capture_output=True, text=True)
    yes = subprocess.run(
        ["make", "-n", "deploy-azure", "YES=1"], cwd=ROOT, capture_output=True, text=True
    )
    assert "rig deploy azure" in plain.stdout and "--yes" not in plain.stdout
    assert "rig deploy azure --yes" in yes.stdout


def test_contributor_alone_is_stopped_before_anything_exists(profile_file, world):
    """#10.5: the deployer's rights are read first (Permissions - List)."""
    world.arm.permissions = fixture("permissions_contributor.json")
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    assert "Microsoft.Authorization/roleAssignments/write" in str(err.value)
    assert world.fake is None and world.writes() == []


def test_an_unregistered_provider_is_stopped_before_anything_exists(profile_file, world):
    world.arm.providers["Microsoft.DevTestLab"] = "NotRegistered"
    with pytest.raises(
        CommandError, match=r"az provider register --namespace Microsoft\.DevTestLab"
    ):
        deploy(load_profile(profile_file()), console(), world.deps())
    assert world.fake is None


def test_a_failed_up_records_the_vm_deallocates_it_and_names_the_fix(profile_file, world):
    """#10.5: the VM came up, then the role assignment failed: recorded, deallocated, told."""
    world.fake = FakePulumi(world.arm, backend_dir(world.state_dir), project_dir(world.state_dir))
    world.fake.fail_up = (
        "error: azure-native:authorization:RoleAssignment resource 'vm-deallocates-itself' "
        "failed: AuthorizationFailed: The client does not have authorization to perform action "
        "'Microsoft.Authorization/roleAssignments/write'"
    )
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    msg = str(err.value)
    assert "pulumi up" in msg and "Owner" in msg  # the AuthorizationFailed fix
    assert f"VM {VM} was deallocated" in msg and "make destroy" in msg and RG in msg and SUB in msg
    vm_id = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{VM}"
    )
    assert world.arm.power[vm_id.lower()] == "deallocated"
    (saved,) = state.read_all(world.state_dir)
    assert saved.extra["deploy_failed"].startswith("pulumi up") and saved.ids["vm_id"] == vm_id
    assert vm_id in saved.extra["created"]
    # and make destroy then removes it all
    assert destroy(load_profile(profile_file()), console(), world.deps()) == 0
    assert world.arm.groups == {} and state.read_all(world.state_dir) == []


def test_a_failed_up_before_any_vm_says_what_exists(profile_file, world):
    world.fake = FakePulumi(world.arm, backend_dir(world.state_dir), project_dir(world.state_dir))
    world.fake.fail_up = "error: " + json.dumps(
        fixture("errors/MissingSubscriptionRegistration.json")
    )
    world.fake.fail_after_vm = False
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    msg = str(err.value)
    assert "az provider register --namespace Microsoft.DevTestLab" in msg
    assert "1 resource(s) were created" in msg and "make destroy" in msg
    assert state.read_all(world.state_dir) == []


def test_a_redeploy_after_an_eviction_starts_the_vm_before_waiting_for_ssh(profile_file, world):
    """#10.11: Spot eviction deallocates; make deploy-azure again starts it."""
    vm, _ = deployed(world, profile_file)
    world.arm.power[vm.ids["vm_id"].lower()] = "deallocated"
    world.order.clear()
    out = console()
    deploy(load_profile(profile_file()), out, world.deps())
    starts = [u for m, u in world.arm.calls if m == "POST" and u.split("?")[0].endswith("/start")]
    assert len(starts) == 1 and world.arm.power[vm.ids["vm_id"].lower()] == "running"
    text = out.export_text()
    assert "the VM is deallocated" in text and "starting it" in text
    assert world.order == ["ssh 198.51.100.20"]


def test_a_start_azure_refuses_says_why_and_what_bills(profile_file, world):
    vm, _ = deployed(world, profile_file)
    world.arm.power[vm.ids["vm_id"].lower()] = "deallocated"
    world.arm.fail_next["start"] = fixture("errors/AllocationFailed.json")["error"]
    world.order.clear()
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    msg = str(err.value)
    assert "did not start" in msg and "AllocationFailed" in msg and "no capacity" in msg
    assert "/day" in msg and world.order == []  # never waited for SSH on a stopped VM


def test_a_size_deployed_in_another_subscription_is_not_redeployed_elsewhere(profile_file, world):
    """#10.6"""
    world.creds = Credentials("az-cli", OTHER, "tenant")
    deployed(world, profile_file)
    world.creds = Credentials("az-cli", SUB, "tenant")
    with pytest.raises(CommandError, match=f"deployed in subscription {OTHER}"):
        deploy(load_profile(profile_file()), console(), world.deps())


def test_profile_subscription_is_where_it_deploys(profile_file, world):
    profile = load_profile(profile_file(("azure", "subscription", f'"{OTHER}"')))
    (vm,) = deploy(profile, console(), world.deps())
    assert vm.ids["subscription_id"] == OTHER and world.writes(SUB) == []


def test_stack_config_lives_under_state_not_in_the_source_tree(profile_file, world):
    """#10.9: Pulumi.<stack>.yaml (your IP, a path, the salt) goes under .state/, never into
    pulumi_azure/."""
    deployed(world, profile_file)
    project = project_dir(world.state_dir)
    assert (project / f"Pulumi.{STACK}.yaml").is_file()
    assert "203.0.113.7" in (project / f"Pulumi.{STACK}.yaml").read_text()
    assert list(PROGRAM_DIR.glob("Pulumi.*.yaml")) == []
    text = (project / "Pulumi.yaml").read_text()
    assert f"main: {json.dumps(str(PROGRAM_DIR))}" in text and "name: gpu-rehearsal-azure" in text
    # The repo's own Pulumi.yaml names the same project.
    assert "name: gpu-rehearsal-azure" in (PROGRAM_DIR / "Pulumi.yaml").read_text()
    assert (PROGRAM_DIR / ".gitignore").read_text().count("Pulumi.*.yaml") == 1
    passphrase = world.state_dir / "pulumi-passphrase"
    assert oct(passphrase.stat().st_mode & 0o777) == "0o600"


def test_no_new_passphrase_once_stacks_exist(profile_file, world):
    """#10.9: deploy with PULUMI_CONFIG_PASSPHRASE, later without: say what to set, make none."""
    world.environ = {"PULUMI_CONFIG_PASSPHRASE": "mine"}
    deployed(world, profile_file)
    assert not (world.state_dir / "pulumi-passphrase").exists()
    with pytest.raises(PassphraseMissing) as err:
        secrets_env(world.state_dir, {}, stacks_exist=True)
    assert "export PULUMI_CONFIG_PASSPHRASE" in str(err.value)
    assert not (world.state_dir / "pulumi-passphrase").exists()
    first = secrets_env(world.state_dir / "fresh", {})
    assert first == secrets_env(world.state_dir / "fresh", {}, stacks_exist=True)  # reused


def test_backend_detection_reads_stacks_not_any_json(tmp_path):
    """#10.9: pulumi/pulumi pkg/backend/diy/store.go layouts; other JSON is not a stack."""
    import gzip

    backend = FileBackend(tmp_path / "pulumi")
    (backend.root / ".pulumi" / "history" / "gpu-rehearsal-azure" / "s").mkdir(parents=True)
    (
        backend.root / ".pulumi" / "history" / "gpu-rehearsal-azure" / "s" / "s-1.history.json"
    ).write_text("{}")
    (backend.root / "stray.json").write_text("{}")
    (backend.root / ".pulumi" / "meta.yaml").write_text("version: 1\n")
    assert backend.stacks() == []
    stacks = backend.root / ".pulumi" / "stacks"
    (stacks / "gpu-rehearsal-azure").mkdir(parents=True)
    checkpoint = {
        "version": 3,
        "checkpoint": {
            "latest": {
                "resources": [
                    {
                        "type": "azure-native:compute:VirtualMachine",
                        "id": f"/subscriptions/{OTHER}/resourceGroups/rg/providers/x/vm",
                    }
                ]
            }
        },
    }
    (stacks / "gpu-rehearsal-azure" / "a.json.gz").write_bytes(
        gzip.compress(json.dumps(checkpoint).encode())
    )
    (stacks / "legacy.json").write_text(json.dumps({"version": 3, "checkpoint": {}}))
    (stacks / "gpu-rehearsal-azure" / "a.json.bak").write_text("{}")
    assert backend.stacks() == ["a", "legacy"]
    assert backend.resources("a")[0]["id"].startswith(f"/subscriptions/{OTHER}/")
    assert backend.resources("legacy") == []
    backend.remove("a")
    assert backend.stacks() == ["legacy"]


# ---- destroy --------------------------------------------------------------------------------


def test_destroy_removes_the_stack_and_proves_it(profile_file, world):
    deployed(world, profile_file)
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    assert ["destroy", "--yes", "--skip-preview", "--stack", STACK] in world.fake.calls  # type: ignore[union-attr]
    assert ["stack", "rm", "--yes", "--stack", STACK] in world.fake.calls  # type: ignore[union-attr]
    assert state.read_all(world.state_dir) == [] and world.arm.groups == {}
    assert world.arm.assignments == {}
    assert FileBackend(backend_dir(world.state_dir)).stacks() == []
    assert not (project_dir(world.state_dir) / f"Pulumi.{STACK}.yaml").exists()
    text = out.export_text()
    assert "says 0 left" in text and SUB in text
    scans = [u for m, u in world.arm.calls if m == "GET" and "roleAssignments" in u]
    assert scans, "0 left printed without a scan"


def test_destroy_needs_no_pulumi_cli_and_deletes_through_arm(profile_file, world):
    """#10.2 (Azure side): with Pulumi state but no CLI, ARM does the job (202, polled)."""
    deployed(world, profile_file)
    world.missing = "the Pulumi CLI is not installed — install it with: curl ..."
    world.slept.clear()
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    deletes = [u for m, u in world.arm.calls if m == "DELETE"]
    assert any(f"/resourcegroups/{RG}?" in u for u in deletes)
    assert any("roleAssignments" in u for u in deletes)
    assert world.slept  # the 202 was followed, not assumed
    assert FileBackend(backend_dir(world.state_dir)).stacks() == []  # the stale stack is forgotten
    text = out.export_text()
    assert "deleting through ARM instead" in text and "0 left" in text


def test_destroy_without_the_passphrase_falls_back_to_arm(profile_file, world):
    world.environ = {"PULUMI_CONFIG_PASSPHRASE": "mine"}
    deployed(world, profile_file)
    world.environ = {}
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    text = out.export_text()
    assert "export PULUMI_CONFIG_PASSPHRASE" in text
    assert world.arm.groups == {} and "0 left" in text


def test_destroy_verifies_the_recorded_subscription_not_the_current_one(profile_file, world):
    """#10.6"""
    world.creds = Credentials("az-cli", OTHER, "tenant")
    deployed(world, profile_file)
    world.creds = Credentials("az-cli", SUB, "tenant")  # `az account set` to another one since
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    assert world.arms[OTHER].groups == {}
    assert any("roleAssignments" in u for _, u in world.arms[OTHER].calls)
    assert f"scan of subscription(s) {OTHER}" in out.export_text()
    assert world.fake is not None and world.fake.envs[-1]["ARM_SUBSCRIPTION_ID"] == OTHER


def test_destroy_without_credentials_is_exit_1_never_0_left(profile_file, world):
    """#10.3: [azure] enabled, nothing recorded, no credentials: could not verify."""
    world.creds = None
    out = console()
    with pytest.raises(CommandError) as err:
        destroy(load_profile(profile_file()), out, world.deps())
    msg = str(err.value)
    assert err.value.exit_code == 1 and "could not verify" in msg and "az login" in msg
    assert "az group list" in msg and "portal.azure.com" in msg
    assert "0 left" not in out.export_text() + msg


def test_cli_destroy_without_credentials_exits_1(profile_file, tmp_path, monkeypatch, capsys):
    from rig.azure import credentials

    monkeypatch.setattr(credentials.shutil, "which", lambda name: None)
    for var in [v for v in os.environ if v.startswith(("ARM_", "AZURE_"))]:
        monkeypatch.delenv(var)
    code = cli.main(
        ["destroy", "azure", "--config", str(profile_file()), "--state-dir", str(tmp_path / "s")]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "could not verify" in captured.err and "0 left" not in captured.out + captured.err


def test_destroy_with_azure_off_and_nothing_recorded_does_not_claim_a_scan(profile_file, world):
    world.creds = None
    out = console()
    assert (
        destroy(load_profile(profile_file(("azure", "enabled", "false"))), out, world.deps()) == 0
    )
    text = out.export_text()
    assert "not scanned" in text and "0 left" not in text


def test_destroy_removes_earlier_versions_custom_roles(profile_file, world):
    """#10.4: a custom role (tenant-wide, outside the group) and its assignment, state lost."""
    rg_scope = f"/subscriptions/{SUB}/resourceGroups/{RG}"
    vm_id = world.arm.add_stack(RG, VM)
    guid = legacy_role_guid(SUB, RG)
    world.arm.add_custom_role(guid, f"gpu-rehearsal deallocate {VM} 1a2b3c4d", rg_scope)
    world.arm.add_assignment(vm_id, "principal-1", world.arm.roles[guid]["id"])
    # ...and one whose group a manual `az group delete` already removed: only its GUID finds it.
    gone = "rg-gpu-rehearsal-nc4as-t4-v3-westeurope"
    world.arm.add_custom_role(
        legacy_role_guid(SUB, gone),
        "gpu-rehearsal deallocate vm-x 5e6f7a8b",
        f"/subscriptions/{SUB}/resourceGroups/{gone}",
    )
    profile = load_profile(
        profile_file(("azure", "vm_sizes", '["Standard_NC8as_T4_v3", "Standard_NC4as_T4_v3"]'))
    )
    out = console()
    assert destroy(profile, out, world.deps()) == 0
    assert world.arm.roles == {} and world.arm.assignments == {} and world.arm.groups == {}
    assert "0 left" in out.export_text()


def test_destroy_lists_leftovers_and_exits_1(profile_file, world):
    deployed(world, profile_file)
    # A resource tagged for this project outside its resource groups, which destroy leaves alone.
    other = world.arm.add_group("someone-elses-rg", tagged=False)
    other.resources["/subscriptions/x/resourceGroups/someone-elses-rg/providers/disk-1"] = (
        "Microsoft.Compute/disks"
    )
    other.tags = {"project": "gpu-rehearsal"}
    out = console()
    with pytest.raises(CommandError) as err:
        destroy(load_profile(profile_file()), out, world.deps())
    assert err.value.exit_code == 1 and "left after destroy" in str(err.value)
    assert "disk-1" in out.export_text()
    assert len(state.read_all(world.state_dir)) == 1  # kept: something may still bill


def test_destroy_that_cannot_scan_is_exit_1_with_the_manual_check(profile_file, world):
    deployed(world, profile_file)
    world.arm.refuse["roleAssignments"] = Response(
        403, {"error": {"code": "AuthorizationFailed", "message": "no read on role assignments"}}
    )
    out = console()
    with pytest.raises(CommandError) as err:
        destroy(load_profile(profile_file()), out, world.deps())
    msg = str(err.value)
    assert "could not verify 1 subscription" in msg and "az role assignment list" in msg
    assert "0 left" not in out.export_text()
    assert len(state.read_all(world.state_dir)) == 1


def test_destroy_waits_for_a_group_arm_still_lists(profile_file, world):
    deployed(world, profile_file)
    world.arm.ghost_listings = 4  # still answered by the first scan after deletion
    assert destroy(load_profile(profile_file()), console(), world.deps()) == 0
    assert destroy_mod.SCAN_PAUSE_S in world.slept


def test_destroy_runs_with_python_alone(profile_file, tmp_path):
    """#10.2 (Azure side): `python -m rig destroy azure` with no node, npx, cdk or pulumi on
    PATH, Pulumi state present: the whole path runs (ARM through the fake) and says 0 left."""
    bin_dir = tmp_path / "bin"  # an empty PATH: nothing to start, not even `python`
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARM_", "AZURE_", "PULUMI_"))}
    env |= {"PATH": str(bin_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            str(FIXTURES / "destroy_python_only.py"),
            str(profile_file()),
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no node, npx, cdk, pulumi or az on PATH" in done.stdout
    assert "says 0 left" in done.stdout


# ---- destroy: hostile cases (review of #10) ---------------------------------------------------


def test_destroy_finds_a_group_by_name_when_state_profile_and_tag_all_miss_it(profile_file, world):
    """A group of an earlier profile (another size/location), Pulumi state lost, its tag removed
    by hand: still rg-gpu-rehearsal-*, still billing for its IP and disk. Found by name."""
    old = "rg-gpu-rehearsal-nc4as-t4-v3-eastus"
    group = world.arm.add_group(old, tagged=False)
    ip = (
        f"/subscriptions/{SUB}/resourceGroups/{old}/providers/Microsoft.Network/publicIPAddresses/x"
    )
    group.resources[ip] = "Microsoft.Network/publicIPAddresses"
    group.untagged.add(ip)
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    assert world.arm.groups == {}
    assert any(f"/resourcegroups/{old}?" in u for m, u in world.arm.calls if m == "DELETE")
    assert "0 left" in out.export_text()


def test_destroy_after_the_vm_was_deleted_out_of_band(profile_file, world):
    """The VM (and its OS disk) deleted in the portal: the IP, NIC and the assignment of a now
    unknown identity remain. Destroy removes them and verifies."""
    deployed(world, profile_file)
    group = world.arm.groups[RG.lower()]
    for rid in [r for r in group.resources if "/virtualMachines/" in r or "/disks/" in r]:
        del group.resources[rid]
        world.arm.power.pop(rid.lower(), None)
    world.missing = "the Pulumi CLI is not installed"
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    assert world.arm.groups == {} and world.arm.assignments == {}
    assert "0 left" in out.export_text()


def test_destroy_rides_out_throttling(profile_file, world):
    """ARM 429 + Retry-After on the scan's lists: waited for, not reported as unverifiable."""
    deployed(world, profile_file)
    world.arm.throttle = {"/roleAssignments": 2, "/resourcegroups": 1}
    world.slept.clear()
    out = console()
    assert destroy(load_profile(profile_file()), out, world.deps()) == 0
    assert 7.0 in world.slept and "0 left" in out.export_text()


def test_destroy_of_a_subscription_we_cannot_read_is_exit_1_and_keeps_the_state(
    profile_file, world
):
    """A state file for subscription OTHER; the signed-in identity has no rights there (403):
    exit 1 naming OTHER and the manual check; the state file stays (something may bill)."""
    world.creds = Credentials("az-cli", OTHER, "tenant")
    deployed(world, profile_file)
    world.creds = Credentials("az-cli", SUB, "tenant")
    world.arms[OTHER].refuse["/"] = Response(
        403, {"error": {"code": "AuthorizationFailed", "message": "does not have authorization"}}
    )
    world.missing = "the Pulumi CLI is not installed"
    out = console()
    with pytest.raises(CommandError) as err:
        destroy(load_profile(profile_file()), out, world.deps())
    msg = str(err.value)
    assert err.value.exit_code == 1 and OTHER in msg and "az group list" in msg
    assert "0 left" not in out.export_text() + msg
    assert len(state.read_all(world.state_dir)) == 1
    assert FileBackend(backend_dir(world.state_dir)).stacks() != []  # state kept too


def test_a_failed_up_with_a_vm_azure_has_but_pulumi_never_recorded(profile_file, world):
    """Review of #10.5: `pulumi up` failed while the VM's create was in flight (ARM accepted it,
    Pulumi recorded only the group). "1 resource was created (no VM)" would be false: Azure is
    asked by the VM's name, the VM is recorded and deallocated."""
    world.fake = FakePulumi(world.arm, backend_dir(world.state_dir), project_dir(world.state_dir))
    world.fake.fail_up = "error: update failed: context deadline exceeded"
    world.fake.fail_after_vm = False
    world.fake.vm_in_arm_only = True
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    msg = str(err.value)
    vm_id = (
        f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{VM}"
    )
    assert f"VM {VM} was deallocated" in msg and "no VM" not in msg
    assert world.arm.power[vm_id.lower()] == "deallocated"
    (saved,) = state.read_all(world.state_dir)
    assert saved.ids["vm_id"] == vm_id


def test_a_failed_up_whose_vm_cannot_be_stopped_and_has_no_schedule_says_so(profile_file, world):
    """The VM exists, its shutdown schedule was never created (it depends on the VM), and the
    deallocation fails: the message must not promise the printed stop time."""
    world.fake = FakePulumi(world.arm, backend_dir(world.state_dir), project_dir(world.state_dir))
    world.fake.fail_up = "error: AuthorizationFailed on roleAssignments/write"
    world.arm.fail_next["deallocate"] = {"code": "OperationNotAllowed", "message": "busy"}
    with pytest.raises(CommandError) as err:
        deploy(load_profile(profile_file()), console(), world.deps())
    msg = str(err.value)
    assert "MAY BE RUNNING" in msg and "no shutdown schedule" in msg and "make destroy" in msg
    assert "until 2026" not in msg
