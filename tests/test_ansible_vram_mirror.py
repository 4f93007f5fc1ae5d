"""The ollama role's own Jinja, rendered with Ansible's templar (no VM): the VRAM reserve from
nvidia-smi's memory.total, the T4 shortfall, the archive name and checksum per version, and
which placement mechanism a version gets.

Figures: nvidia-smi memory.total with ECC on, T4 15,360 MiB, A10G 23,028, L4 23,034; a 16 GB
GeForce (RTX 4060 Ti) 16,380 (project REFERENCE.md; catalog usable_mib). Placement at the
pinned tags (ollama/ollama): v0.24.0 llm/server.go:1004 subtracts envconfig.GpuOverhead() when
fitting layers; v0.32.15 llm/llama_server.go:12 "llama-server auto-detects GPU layers" with
--fit, LLAMA_ARG_FIT_TARGET (llm/llama_server.go:83) passed through its environment, while
server/sched.go:616 only logs GpuOverhead. llama.cpp's --fit-target default is 1024 MiB
(common/common.h, "target margin per device for --fit ... default: 1024").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parent.parent / "ansible/roles/ollama"
MIB = 1024**2


def _trust(value: Any) -> Any:
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trust(v) for v in value]
    if isinstance(value, dict):
        return {k: _trust(v) for k, v in value.items()}
    return value


def role_vars(**overrides: Any) -> dict[str, Any]:
    data = _trust(yaml.safe_load((ROLE / "defaults/main.yml").read_text()))
    data |= _trust(yaml.safe_load((ROLE / "vars/main.yml").read_text()))
    return data | overrides


def gpu_facts(smi_lines: list[str] | None, pc_mib: int) -> dict[str, Any]:
    """The set_fact of tasks/gpu.yml, given what nvidia-smi printed (None = not installed)."""
    task = next(
        t
        for t in yaml.safe_load((ROLE / "tasks/gpu.yml").read_text())
        if "ansible.builtin.set_fact" in t
    )
    smi = {"rc": 0, "stdout_lines": smi_lines} if smi_lines is not None else {"rc": 2}
    variables = role_vars(ollama_smi=smi, ollama_pc_usable_mib=pc_mib) | _trust(task["vars"])
    templar = Templar(loader=DataLoader(), variables=variables)
    facts = {k: templar.template(_trust(v)) for k, v in task["ansible.builtin.set_fact"].items()}
    report = next(
        t
        for t in yaml.safe_load((ROLE / "tasks/gpu.yml").read_text())
        if t["name"] == "Report the VRAM mirror"
    )
    templar = Templar(
        loader=DataLoader(),
        variables=role_vars(
            ollama_pc_usable_mib=pc_mib,
            ollama_pc_gpu_name="NVIDIA GeForce RTX 4060 Ti 16GB",
            ollama_version="0.32.15",
            **facts,
        ),
    )
    facts["report"] = " ".join(
        str(templar.template(_trust(report["ansible.builtin.debug"]["msg"]))).split()
    )
    return facts


@pytest.mark.parametrize(
    ("smi", "reserve", "shortfall"),
    [
        (["NVIDIA A10G, 23028"], 23028 - 16380, 0),
        (["NVIDIA L4, 23034"], 23034 - 16380, 0),
        (["Tesla T4, 15360"], 0, 16380 - 15360),
        (["NVIDIA GeForce RTX 4060 Ti, 16380"], 0, 0),
    ],
)
def test_reserve_is_measured_total_minus_the_pcs_usable_mib(
    smi: list[str], reserve: int, shortfall: int
) -> None:
    facts = gpu_facts(smi, 16380)
    assert facts["ollama_gpu_present"] is True
    assert int(facts["ollama_reserve_mib"]) == reserve
    assert int(facts["ollama_shortfall_mib"]) == shortfall


def test_a_t4_gets_no_reserve_and_a_reported_shortfall() -> None:
    report = gpu_facts(["Tesla T4, 15360"], 16380)["report"]
    assert report.startswith(
        "ollama: SHORTFALL — Tesla T4 reports 15360 MiB, 1020 MiB less than the planned NVIDIA "
        "GeForce RTX 4060 Ti 16GB (16380 MiB): nothing is held back"
    )


def test_an_a10g_reports_the_reserve_and_the_mechanism() -> None:
    report = gpu_facts(["NVIDIA A10G, 23028"], 16380)["report"]
    assert "holding back 6648 MiB (LLAMA_ARG_FIT_TARGET=7672 MiB for llama-server --fit, " in report
    assert f"OLLAMA_GPU_OVERHEAD={6648 * MIB} bytes)" in report


def test_no_gpu_and_no_pc_card_mean_no_reserve() -> None:
    none = gpu_facts(None, 16380)
    assert none["ollama_gpu_present"] is False and int(none["ollama_reserve_mib"]) == 0
    assert none["report"].startswith("ollama: no GPU answers nvidia-smi")
    unmirrored = gpu_facts(["NVIDIA A10G, 23028"], 0)
    assert int(unmirrored["ollama_reserve_mib"]) == 0
    assert "no planned card to mirror" in unmirrored["report"]


def test_several_gpus_use_the_smallest() -> None:
    facts = gpu_facts(["NVIDIA L4, 23034", "NVIDIA A10G, 23028"], 16380)
    assert int(facts["ollama_gpu_total_mib"]) == 23028


def render(expr: str, **overrides: Any) -> Any:
    templar = Templar(loader=DataLoader(), variables=role_vars(**overrides))
    return templar.template(trust_as_template(expr))


@pytest.mark.parametrize(
    ("version", "archive", "placement"),
    [
        ("0.13.5", "ollama-linux-amd64.tgz", "gpu_overhead"),
        ("0.14.0", "ollama-linux-amd64.tar.zst", "gpu_overhead"),
        ("0.24.0", "ollama-linux-amd64.tar.zst", "gpu_overhead"),
        ("0.30.0", "ollama-linux-amd64.tar.zst", "fit_target"),
        ("0.32.15", "ollama-linux-amd64.tar.zst", "fit_target"),
        ("0.33.0", "ollama-linux-amd64.tar.zst", "unchecked"),
    ],
)
def test_archive_name_and_placement_follow_the_version(
    version: str, archive: str, placement: str
) -> None:
    assert render("{{ ollama_archive_name }}", ollama_version=version) == archive
    assert render("{{ ollama_placement_effective }}", ollama_version=version) == placement
    assert render("{{ ollama_url_effective }}", ollama_version=version) == (
        f"https://github.com/ollama/ollama/releases/download/v{version}/{archive}"
    )


def test_checksums_come_from_the_pinned_table_or_are_refused() -> None:
    # v0.32.15 ollama-linux-amd64.tar.zst (1,422,416,084 bytes): the release's sha256sum.txt
    # value as recorded independently (e.g. chromebrew packages/ollama.rb at 3886338f).
    assert render("{{ ollama_checksum }}") == (
        "sha256:50539c5fe9bf85887733355098dcdb266b433cb8c73fa180713417e9ed6e42bb"
    )
    assert render("{{ ollama_checksum }}", ollama_version="0.32.13") == ""  # refused
    assert render("{{ ollama_checksum }}", ollama_version="0.32.13", ollama_sha256="ab" * 32) == (
        "sha256:" + "ab" * 32
    )
    assert render(
        "{{ ollama_checksum }}", ollama_version="0.32.13", ollama_allow_unpinned_checksum=True
    ) == ("sha256:https://github.com/ollama/ollama/releases/download/v0.32.13/sha256sum.txt")


def override_conf(version: str, reserve: int) -> str:
    source = (ROLE / "templates/override.conf.j2").read_text()
    templar = Templar(
        loader=DataLoader(),
        variables=role_vars(
            ollama_version=version,
            ollama_reserve_mib=reserve,
            ollama_gpu_total_mib=16380 + reserve,
            ollama_pc_usable_mib=16380,
            ansible_managed="managed",
        ),
    )
    return str(templar.template(trust_as_template(source)))


def test_the_unit_gets_the_mechanism_its_version_honours() -> None:
    new = override_conf("0.32.15", 6648)
    assert f'Environment="OLLAMA_GPU_OVERHEAD={6648 * MIB}"' in new
    assert 'Environment="LLAMA_ARG_FIT_TARGET=7672"' in new
    old = override_conf("0.24.0", 6648)
    assert f'Environment="OLLAMA_GPU_OVERHEAD={6648 * MIB}"' in old
    assert "LLAMA_ARG_FIT_TARGET" not in old
    for pinned in (
        "OLLAMA_NUM_PARALLEL=1",
        "OLLAMA_MAX_LOADED_MODELS=1",
        "OLLAMA_CONTEXT_LENGTH=4096",
    ):
        assert f'Environment="{pinned}"' in new


def test_the_unit_accounts_cpu_and_io_for_the_idle_watchdog() -> None:
    # The watchdog reads ollama.service's cgroup: cpu.stat always exists on cgroup v2, io.stat
    # only where the io controller is on for the unit (Documentation/admin-guide/cgroup-v2.rst),
    # and cgroup v1 accounts CPU per unit only with CPUAccounting=yes (systemd.resource-control).
    source = (ROLE / "templates/ollama.service.j2").read_text()
    templar = Templar(loader=DataLoader(), variables=role_vars(ansible_managed="managed"))
    unit = str(templar.template(trust_as_template(source))).splitlines()
    service = unit[unit.index("[Service]") :]
    assert "CPUAccounting=yes" in service and "IOAccounting=yes" in service
    assert "After=network-online.target nvidia-persistenced.service" in unit


def test_the_vision_model_limit_of_the_mirror_is_written_down() -> None:
    # v0.32.15 llm/llama_server.go:692-719 (extraEnvsForStart): for a model with a projector
    # Ollama raises the fit target by the projector's size + 1 GiB only when
    # LLAMA_ARG_FIT_TARGET is not inherited; the mirror sets it, so a vision model keeps about
    # the projector's size more VRAM for layers here than on the PC. No per-model hook exists
    # (extraEnvs come from ml.GetDevicesEnv only), so it is documented, not corrected.
    conf = override_conf("0.32.15", 6648)
    assert "projector" in conf and "text-only models" in conf
    readme = (ROLE / "README.md").read_text()
    assert "projector" in readme
