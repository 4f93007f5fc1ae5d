"""deploy/destroy azure end to end with fakes: Pulumi CLI, Azure, SSH and Ansible are stand-ins;
the state files, the passphrase file and the flow's decisions are real. Everything under tmp_path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rig import azure, azure_cli, cli, state
from rig.profile import load_profile

SUB = "00000000-0000-0000-0000-000000000001"
T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
CREDS = azure.Credentials("az-cli", SUB, "tenant")
NC8 = azure.SkuInfo("Standard_NC8as_T4_v3", "standardNCASv3_T4Family", 8, True)
USAGES = [azure.Usage("lowPriorityCores", "Total Regional Spot vCPUs", 0, 24)]


class FakePulumi:
    """Records the CLI calls as the real wrapper would issue them, and a tiny stack store."""

    def __init__(self, backend: Path):
        self.calls: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.backend = backend
        self.config: dict[str, dict[str, str]] = {}
        self.fail_up: str | None = None

    def run(self, args: list[str], env: dict[str, str], capture: bool) -> Any:
        self.calls.append(args)
        self.envs.append(env)
        stack = args[args.index("--stack") + 1] if "--stack" in args else ""
        out = ""
        if args[:2] == ["stack", "select"]:
            (self.backend / f"{stack}.json").write_text("{}")
        elif args[:2] == ["config", "set-all"]:
            pairs = [args[i + 1] for i, a in enumerate(args) if a == "--plaintext"]
            self.config[stack] = dict(p.split("=", 1) for p in pairs)
        elif args[0] == "up" and self.fail_up:
            return subprocess.CompletedProcess(args, 255, self.fail_up, "")
        elif args[:2] == ["stack", "output"]:
            rg = "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
            out = json.dumps(
                {
                    "public_ip": "198.51.100.20",
                    "vm_id": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/"
                    "Microsoft.Compute/virtualMachines/vm-rehearsal-nc8as-t4-v3",
                    "vm_name": "vm-rehearsal-nc8as-t4-v3",
                    "resource_group": rg,
                    "location": "westeurope",
                    "size": "Standard_NC8as_T4_v3",
                    "ssh_user": "azureuser",
                }
            )
        elif args[:2] == ["stack", "ls"]:
            out = json.dumps([{"name": p.stem} for p in sorted(self.backend.glob("*.json"))])
        elif args[:2] == ["stack", "rm"]:
            (self.backend / f"{stack}.json").unlink()
        return subprocess.CompletedProcess(args, 0, out, "")


class FakeApi:
    subscription_id = SUB

    def __init__(self) -> None:
        self.groups: set[str] = set()
        self.tagged: list[str] = []

    def usages(self, location: str) -> list[azure.Usage]:
        return USAGES

    def vm_sku(self, location: str, size: str) -> azure.SkuInfo | None:
        return NC8

    def resource_group_exists(self, name: str) -> bool:
        return name in self.groups

    def tagged_resources(self, tag: tuple[str, str]) -> list[str]:
        return self.tagged


class World:
    """Fakes for every Deps seam, plus what each saw."""

    def __init__(self, tmp_path: Path):
        self.state_dir = tmp_path / "state"
        self.api = FakeApi()
        self.fake: FakePulumi | None = None
        self.ssh_waited: list[str] = []
        self.provisioned: list[state.VmState] = []
        self.provision_fn: Any = None
        self.creds: azure.Credentials | None = CREDS
        self.missing: str | None = None
        self.price = azure.PriceQuote(0.84, 0.19, "azure retail prices API", "2026-11-28T09:00")

    def deps(self) -> azure_cli.Deps:
        def pulumi(state_dir: Path, creds: azure.Credentials) -> azure_cli.Pulumi:
            env = azure_cli.backend_env(state_dir) | azure_cli.secrets_env(state_dir, {})
            self.fake = self.fake or FakePulumi(state_dir / "pulumi")
            return azure_cli.Pulumi(self.fake.run, env | creds.pulumi_env())

        def keygen(private: Path) -> None:
            private.parent.mkdir(parents=True, exist_ok=True)
            private.write_text("PRIVATE")
            private.with_suffix(".pub").write_text("ssh-ed25519 AAAAtest gpu-rehearsal\n")

        return azure_cli.Deps(
            state_dir=self.state_dir,
            tools_missing=lambda: self.missing,
            credentials=lambda: self.creds,
            api=lambda c: self.api,
            pulumi=pulumi,
            price=lambda loc, size: self.price,
            public_ip=lambda: "203.0.113.7",
            wait_ssh=self.ssh_waited.append,
            keygen=keygen,
            provisioner=lambda: self.provision_fn,
            confirm=lambda q: True,
            now=lambda: T0,
            sleep=lambda s: None,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def console() -> Console:
    return Console(record=True, width=200)


def test_deploy_runs_preflight_pulumi_and_writes_the_state(profile_file, world):
    out = console()
    (vm,) = azure_cli.deploy(load_profile(profile_file()), out, world.deps())
    fake = world.fake
    assert fake is not None
    stack = "nc8as-t4-v3-westeurope"
    assert [c[:2] for c in fake.calls] == [
        ["stack", "select"],
        ["config", "set-all"],
        ["up", "--yes"],
        ["stack", "output"],
    ]
    assert fake.calls[0] == [
        "stack",
        "select",
        "--create",
        "--stack",
        stack,
        "--secrets-provider",
        "passphrase",
    ]
    config = fake.config[stack]
    assert config["gpu-rehearsal-azure:sshSource"] == "203.0.113.7/32"
    assert config["gpu-rehearsal-azure:vmSize"] == "Standard_NC8as_T4_v3"
    assert config["gpu-rehearsal-azure:sshPublicKey"] == "ssh-ed25519 AAAAtest gpu-rehearsal"
    assert Path(config["gpu-rehearsal-azure:profile"]).is_absolute()
    env = fake.envs[0]
    assert env["PULUMI_BACKEND_URL"] == (world.state_dir / "pulumi").resolve().as_uri()
    passphrase = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert passphrase.parent == world.state_dir.resolve()
    assert oct(passphrase.stat().st_mode & 0o777) == "0o600"
    assert len(passphrase.read_text().strip()) >= 40
    assert env["ARM_SUBSCRIPTION_ID"] == SUB

    assert vm.name == "azure-Standard_NC8as_T4_v3"
    (saved,) = state.read_all(world.state_dir)
    assert saved == vm
    assert (saved.cloud, saved.region, saved.gpu, saved.host) == (
        "azure",
        "westeurope",
        "t4",
        "198.51.100.20",
    )
    assert saved.ssh_user == "azureuser"
    assert saved.ssh_key == str(world.state_dir / "keys" / "id_ed25519")
    assert saved.price == state.Price(
        0.19, "spot", "azure retail prices API", "2026-11-28T09:00", 0.84
    )
    assert saved.deadline == state.iso(T0 + dt.timedelta(hours=4))
    assert saved.ids["stack"] == stack
    assert saved.ids["resource_group"] == "rg-gpu-rehearsal-nc8as-t4-v3-westeurope"
    assert saved.extra["deallocate_url"].endswith(
        "/virtualMachines/vm-rehearsal-nc8as-t4-v3/deallocate?api-version=2024-07-01"
    )
    assert saved.provisioned is False
    assert world.ssh_waited == ["198.51.100.20"]
    text = out.export_text()
    assert "The planned PC and its cloud stand-ins" in text  # the plan is printed first
    assert "not provisioned yet" in text
    assert "Worst case: $0.76" in text  # 0.19 $/h spot x 4 h
    assert "ssh -i" in text and "11434:127.0.0.1:11434 azureuser@198.51.100.20" in text


def test_deploy_hands_the_state_to_provisioning(profile_file, world):
    def provision(vm: state.VmState, profile: Any, con: Console, *, state_dir: Path) -> None:
        # As rig/provision.py does: mark the state and rewrite it in the given state dir.
        world.provisioned.append(vm)
        vm.provisioned = True
        state.write(vm, state_dir)

    world.provision_fn = provision
    azure_cli.deploy(load_profile(profile_file()), console(), world.deps())
    assert [v.name for v in world.provisioned] == ["azure-Standard_NC8as_T4_v3"]
    (saved,) = state.read_all(world.state_dir)
    assert saved.provisioned is True


def test_deploy_without_a_live_price_records_the_cap_from_the_catalog(profile_file, world):
    world.price = None  # type: ignore[assignment]
    (vm,) = azure_cli.deploy(load_profile(profile_file()), console(), world.deps())
    assert vm.price.usd_per_hour == 0.84 and vm.price.kind == "spot"
    assert vm.price.source.startswith("conversation-azure-price")
    assert "cap as upper bound" in vm.price.source


def test_missing_pulumi_cli_prints_the_install_command_and_creates_nothing(profile_file, world):
    world.missing = "the Pulumi CLI is not installed — install it with: curl ..."
    with pytest.raises(azure.CommandError) as err:
        azure_cli.deploy(load_profile(profile_file()), console(), world.deps())
    assert str(err.value) == world.missing
    assert world.fake is None and not (world.state_dir / "pulumi").exists()


def test_pulumi_missing_names_the_exact_install_command(monkeypatch):
    monkeypatch.setattr(azure_cli.shutil, "which", lambda name: None)
    msg = azure_cli.pulumi_missing()
    assert msg is not None
    assert "curl -fsSL https://get.pulumi.com | sh -s -- --version 3.272.0" in msg


def test_cli_deploy_without_pulumi_is_one_line_exit_1(profile_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(azure_cli.shutil, "which", lambda name: None)
    code = cli.main(
        ["deploy", "azure", "--config", str(profile_file()), "--state-dir", str(tmp_path / "s")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert "Pulumi CLI is not installed" in err and "get.pulumi.com" in err
    assert not (tmp_path / "s").exists()


def test_no_credentials_is_a_clear_error(profile_file, world):
    world.creds = None
    with pytest.raises(azure.CommandError, match="az login"):
        azure_cli.deploy(load_profile(profile_file()), console(), world.deps())


def test_spot_refused_stops_before_pulumi(profile_file, world):
    world.api.vm_sku = lambda loc, size: azure.SkuInfo(NC8.name, NC8.family, 8, False)  # type: ignore[method-assign]
    with pytest.raises(azure.CommandError, match="spot = false"):
        azure_cli.deploy(load_profile(profile_file()), console(), world.deps())
    assert world.fake is None


def test_unknown_time_zone_stops_before_anything(profile_file, world):
    profile = load_profile(profile_file(("autostop", "timezone", '"America/Argentina/Ushuaia"')))
    with pytest.raises(azure.CommandError, match="Windows time-zone id"):
        azure_cli.deploy(profile, console(), world.deps())


def test_failed_up_names_the_fix(profile_file, world):
    world.fake = FakePulumi(world.state_dir / "pulumi")
    (world.state_dir / "pulumi").mkdir(parents=True)
    world.fake.fail_up = "error: Code=OperationNotAllowed: This size does not support Azure Spot"
    with pytest.raises(azure.CommandError) as err:
        azure_cli.deploy(load_profile(profile_file()), console(), world.deps())
    assert "pulumi up" in str(err.value) and "spot = false" in str(err.value)
    assert state.read_all(world.state_dir) == []


def test_user_passphrase_is_respected(tmp_path):
    assert azure_cli.secrets_env(tmp_path, {"PULUMI_CONFIG_PASSPHRASE": "mine"}) == {}
    first = azure_cli.secrets_env(tmp_path, {})
    again = azure_cli.secrets_env(tmp_path, {})
    assert first == again  # generated once, then reused (the stack's secrets depend on it)


def test_destroy_removes_stacks_verifies_and_clears_state(profile_file, world):
    profile = load_profile(profile_file())
    azure_cli.deploy(profile, console(), world.deps())
    world.api.groups = {"unrelated-group"}
    out = console()
    assert azure_cli.destroy(profile, out, world.deps()) == 0
    assert world.fake is not None
    destroyed = [c for c in world.fake.calls if c[0] == "destroy"]
    assert destroyed == [
        ["destroy", "--yes", "--skip-preview", "--stack", "nc8as-t4-v3-westeurope"]
    ]
    assert ["stack", "rm", "--yes", "--stack", "nc8as-t4-v3-westeurope"] in world.fake.calls
    assert state.read_all(world.state_dir) == []
    assert "0 left" in out.export_text()


def test_destroy_lists_leftovers_and_exits_1(profile_file, world):
    profile = load_profile(profile_file())
    azure_cli.deploy(profile, console(), world.deps())
    world.api.groups = {"rg-gpu-rehearsal-nc8as-t4-v3-westeurope"}
    world.api.tagged = ["/subscriptions/x/resourceGroups/other/providers/disk-1"]
    out = console()
    with pytest.raises(azure.CommandError) as err:
        azure_cli.destroy(profile, out, world.deps())
    assert err.value.exit_code == 1 and "2 left" in str(err.value)
    text = out.export_text()
    assert "resource group rg-gpu-rehearsal-nc8as-t4-v3-westeurope" in text
    assert "disk-1" in text
    assert len(state.read_all(world.state_dir)) == 1  # kept: something may still bill


def test_destroy_with_nothing_anywhere(profile_file, world):
    world.creds = None
    out = console()
    assert azure_cli.destroy(load_profile(profile_file()), out, world.deps()) == 0
    assert "0 left" in out.export_text()


def test_cli_lists_the_azure_commands_and_plan(capsys):
    with pytest.raises(SystemExit):
        cli.main(["deploy", "--help"])
    assert "azure" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "plan" in capsys.readouterr().out


def test_nothing_written_to_the_repo_state(profile_file, world):
    repo_state = Path(__file__).resolve().parent.parent / ".state"
    before = sorted(os.listdir(repo_state)) if repo_state.exists() else None
    azure_cli.deploy(load_profile(profile_file()), console(), world.deps())
    after = sorted(os.listdir(repo_state)) if repo_state.exists() else None
    assert before == after
