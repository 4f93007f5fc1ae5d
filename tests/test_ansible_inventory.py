"""The inventory generated from .state/*.json, and the provision command's error handling."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from rig.catalog import load_catalog
from rig.cli import main
from rig.inventory import gpu_check_model, inventory, pc_default_context, write_inventory
from rig.problems import CommandError
from rig.profile import Profile, load_profile
from rig.provision import failure_line, parse_recap, provision
from rig.state import Price, VmState, write

ROOT = Path(__file__).resolve().parent.parent


def vm(name: str, cloud: str, gpu: str, **extra: object) -> VmState:
    return VmState(
        name=name,
        cloud=cloud,  # type: ignore[arg-type]
        region="eu-west-1" if cloud == "aws" else "westeurope",
        instance_type="g5.xlarge" if gpu == "a10g" else "g4dn.2xlarge",
        gpu=gpu,
        host="203.0.113.7",
        ssh_user="ubuntu" if cloud == "aws" else "azureuser",
        ssh_key=".state/id_ed25519",
        spot=True,
        price=Price(0.3, "spot", "test", "2026-01-01T00:00:00+00:00"),
        deployed_at="2026-01-01T00:00:00+00:00",
        deadline="2026-01-01T04:00:00+00:00",
        extra=dict(extra),
    )


def test_pc_default_context_follows_ollamas_vram_tiers() -> None:
    # ollama server/routes.go:2047-2057 at v0.32.15: >= 47 GiB 262144, >= 23 GiB 32768, else 4096
    assert pc_default_context(16380) == 4096  # RTX 4060 Ti 16GB
    assert pc_default_context(23 * 1024) == 32768
    assert pc_default_context(23028) == 4096  # an A10G is just under 23 GiB
    assert pc_default_context(24564) == 32768  # RTX 4090
    assert pc_default_context(81920) == 262144


def test_gpu_check_model_is_the_smallest_catalog_model() -> None:
    cat = load_catalog()
    assert gpu_check_model(["llama3:8b", "phi3:mini", "phi3:medium"], cat) == "phi3:mini"
    assert gpu_check_model(["my/own:model"], cat) == "my/own:model"
    assert gpu_check_model([], cat) == ""


def test_inventory_from_state_files(tmp_path: Path) -> None:
    profile = load_profile(ROOT / "rig.toml")
    states = [vm("aws-g5.xlarge", "aws", "a10g"), vm("azure-nc8", "azure", "t4", ssh_port=2222)]
    inv = inventory(states, profile, load_catalog(), state_dir=tmp_path)
    aws, azure = (inv["all"]["hosts"][s.name] for s in states)
    assert inv["all"]["children"]["aws"]["hosts"] == {"aws-g5.xlarge": {}}
    assert aws["ansible_host"] == "203.0.113.7" and aws["ansible_port"] == 22
    assert aws["ansible_user"] == "ubuntu"
    # The reserve is measured on the VM; only the planned card's usable MiB is passed.
    assert "ollama_gpu_overhead_bytes" not in aws
    assert aws["ollama_pc_usable_mib"] == load_catalog().gpus[profile.pc.gpu].usable_mib == 16380
    assert aws["ollama_context_length"] == 4096 and aws["ollama_gpu_check_model"] == "phi3:mini"
    assert aws["nvidia_driver_preinstalled"] is True  # profile: dlami-ubuntu-22.04
    assert (
        aws["nvidia_driver_expected_gpu"] == "A10G" and aws["nvidia_driver_expected_vram_gb"] == 24
    )
    assert aws["ollama_models"] == list(profile.bench.models)
    assert (aws["autostop_cloud"], aws["autostop_idle_minutes"], aws["autostop_max_hours"]) == (
        "aws",
        30,
        4,
    )
    assert azure["autostop_cloud"] == "azure" and azure["ansible_port"] == 2222
    assert azure["nvidia_driver_preinstalled"] is False and azure["ollama_pc_usable_mib"] == 16380
    assert (
        f"UserKnownHostsFile={tmp_path.resolve()}/azure-nc8.known_hosts"
        in (azure["ansible_ssh_common_args"])
    )
    path = write_inventory(states, profile, tmp_path)
    assert path.name == "_inventory.json" and path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == json.loads(json.dumps(inv))


RECAP = (
    "PLAY RECAP ****\n"
    "aws-g5.xlarge              : ok=52   changed=19   unreachable=0    failed=0    "
    "skipped=6    rescued=0    ignored=0   \n"
)


def test_parse_recap() -> None:
    assert parse_recap(RECAP)["aws-g5.xlarge"]["changed"] == 19


def test_failure_line_one_line_json_form() -> None:
    out = 'TASK [ollama : Wait]\nfatal: [h]: FAILED! => {"changed": false, "msg": "boom"}\n'
    assert failure_line(out) == "task 'ollama : Wait': boom"


def test_provision_unreachable_is_one_clear_line(tmp_path: Path) -> None:
    # Nothing listens on 127.0.0.1:9 (discard): SSH is refused at once.
    state = vm("aws-g4dn.2xlarge", "aws", "t4", ssh_port=9)
    state.host, state.ssh_key = "127.0.0.1", str(tmp_path / "missing_key")
    with pytest.raises(
        CommandError,
        match=r"did not answer over SSH .* rerun \.venv/bin/rig "
        r"provision aws-g4dn.2xlarge",
    ):
        provision(state, Profile(), Console(file=io.StringIO()), state_dir=tmp_path)
    assert state.provisioned is False


def test_provision_with_the_default_relative_state_dir_finds_its_inventory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make provision` runs with state_dir=.state (relative) while ansible-playbook runs in
    ansible/: the inventory must still be the one just written, not ansible/.state/..."""
    monkeypatch.chdir(tmp_path)
    state = vm("aws-g4dn.2xlarge", "aws", "t4", ssh_port=9)
    state.host, state.ssh_key = "127.0.0.1", str(tmp_path / "missing_key")
    out = io.StringIO()
    with pytest.raises(CommandError, match="did not answer over SSH"):
        provision(state, Profile(), Console(file=out, width=300), state_dir=Path(".state"))
    log = out.getvalue()
    assert "Unable to parse" not in log and "no hosts matched" not in log, log
    assert "fatal: [aws-g4dn.2xlarge]: UNREACHABLE!" in log, log


def test_cli_provision_unknown_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(vm("aws-g4dn.2xlarge", "aws", "t4"), tmp_path)
    rc = main(
        ["provision", "nope", "--state-dir", str(tmp_path), "--config", str(ROOT / "rig.toml")]
    )
    assert rc == 2  # a name that is not deployed is bad input
    err = capsys.readouterr().err
    assert "'nope' is not a deployed target" in err and "use one of: aws-g4dn.2xlarge" in err
