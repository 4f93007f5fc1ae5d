"""The NVIDIA driver packages the nvidia_driver role installs on Ubuntu, rendered from the role's
own vars/Ubuntu.yml with Ansible's templar (no network, no VM), checked against the names the
Ubuntu archive publishes.

Archive facts (packages.ubuntu.com, read 2026-08/12):
- linux-modules-nvidia-580-server-aws / -azure: "Extra drivers for nvidia-580-server for the aws
  (azure) flavour", source linux-restricted-modules-aws (-azure), in jammy(-updates) and
  noble(-updates); they depend on linux-modules-nvidia-580-server-<abi>-<flavour> (signed,
  prebuilt for that kernel) and nvidia-kernel-common-580-server.
- linux-modules-nvidia-550-server-aws on noble: "dummy transitional package", depends on
  linux-modules-nvidia-580-server-aws; nvidia-headless-565-server likewise pulls
  nvidia-headless-580-server.
- nvidia-graphics-drivers-580-server (jammy-updates, noble-updates) builds
  nvidia-headless-no-dkms-580-server, nvidia-utils-580-server, nvidia-compute-utils-580-server
  (nvidia-persistenced) and nvidia-dkms-580-server; nvidia-headless-<branch>-server depends on
  nvidia-dkms-<branch>-server (e.g. nvidia-headless-470: "dep: nvidia-dkms-470"), the DKMS build
  that Secure Boot refuses.
- Ollama v0.32.15 docs/gpu.mdx: "driver version 550 and newer".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

VARS = Path(__file__).resolve().parent.parent / "ansible/roles/nvidia_driver/vars/Ubuntu.yml"
DEFAULTS = VARS.parent.parent / "defaults/main.yml"

# (release, running kernel) -> what must be installed: Canonical's documented names.
ARCHIVE = {
    ("22.04", "6.8.0-1021-aws"): [
        "linux-modules-nvidia-580-server-aws",
        "nvidia-headless-no-dkms-580-server",
        "nvidia-utils-580-server",
    ],
    ("22.04", "6.5.0-1025-azure"): [
        "linux-modules-nvidia-580-server-azure",
        "nvidia-headless-no-dkms-580-server",
        "nvidia-utils-580-server",
    ],
    ("24.04", "6.8.0-1031-aws"): [
        "linux-modules-nvidia-580-server-aws",
        "nvidia-headless-no-dkms-580-server",
        "nvidia-utils-580-server",
    ],
    ("24.04", "6.8.0-1041-azure"): [
        "linux-modules-nvidia-580-server-azure",
        "nvidia-headless-no-dkms-580-server",
        "nvidia-utils-580-server",
    ],
}
# Branches the archive no longer builds for a release (transitional to 580).
TRANSITIONAL = {"24.04": {"550", "565", "570", "535"}}


def _trust(value: Any) -> Any:
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, list):
        return [_trust(v) for v in value]
    if isinstance(value, dict):
        return {k: _trust(v) for k, v in value.items()}
    return value


def render(expr: str, release: str, kernel: str, **overrides: str) -> Any:
    role_vars = _trust(yaml.safe_load(DEFAULTS.read_text())) | _trust(
        yaml.safe_load(VARS.read_text())
    )
    role_vars |= overrides
    role_vars["ansible_facts"] = {"distribution_version": release, "kernel": kernel}
    return Templar(loader=DataLoader(), variables=role_vars).template(trust_as_template(expr))


@pytest.mark.parametrize(("release", "kernel"), list(ARCHIVE))
def test_packages_are_the_signed_prebuilt_ones_the_archive_names(release: str, kernel: str) -> None:
    packages = render("{{ nvidia_driver_packages }}", release, kernel)
    assert packages == ARCHIVE[(release, kernel)]
    assert not [p for p in packages if "dkms" in p and "no-dkms" not in p]
    assert "nvidia-headless-580-server" not in packages  # would pull nvidia-dkms-580-server
    branch = render("{{ nvidia_driver_branch_effective }}", release, kernel)
    assert int(branch) >= 550  # Ollama's minimum
    assert branch not in TRANSITIONAL.get(release, set())
    assert render("{{ nvidia_driver_running_kernel_package }}", release, kernel) == (
        f"linux-modules-nvidia-{branch}-server-{kernel}"
    )


def test_flavour_comes_from_the_running_kernel_and_must_be_known() -> None:
    flavour = "{{ nvidia_driver_flavour_effective }}"
    assert render(flavour, "24.04", "6.8.0-1021-aws") == "aws"
    assert render(flavour, "22.04", "5.15.0-1073-azure") == "azure"
    assert render(flavour, "24.04", "6.8.0-45-generic") == "generic"
    known = render("{{ nvidia_driver_known_flavours }}", "24.04", "6.8.0-45-generic")
    assert render(flavour, "24.04", "6.8.0-45-lowlatency") not in known  # the role refuses it


def test_an_explicit_branch_and_flavour_win() -> None:
    packages = render(
        "{{ nvidia_driver_packages }}",
        "22.04",
        "6.8.0-1021-aws",
        nvidia_driver_branch="570",
        nvidia_driver_flavour="azure",
    )
    assert packages[0] == "linux-modules-nvidia-570-server-azure"


def test_an_unknown_release_has_no_branch() -> None:
    assert render("{{ nvidia_driver_branch_effective }}", "20.04", "5.15.0-1050-aws") == ""


ROLE = VARS.parent.parent


def _tasks(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((ROLE / "tasks" / name).read_text())


def test_the_ubuntu_install_checks_secure_boot_and_the_loaded_module() -> None:
    install = _tasks("install-Ubuntu.yml")
    commands = [t.get("ansible.builtin.command") for t in install]
    assert "mokutil --sb-state" in commands
    names = [t["name"] for t in install]
    assert names.index("Read the Secure Boot state") < names.index(
        "Install the signed driver, branch {{ nvidia_driver_branch_effective }}"
    )
    verify = _tasks("verify.yml")
    assert {"src": "/sys/module/nvidia/version"} in [t.get("ansible.builtin.slurp") for t in verify]
    check = next(t for t in verify if t["name"].startswith("Check the GPU name"))
    assert any(
        "_module.split('.')[0] == nvidia_driver_branch_effective" in c
        for c in check["ansible.builtin.assert"]["that"]
    )
    # persistence through nvidia-persistenced at boot, not a one-off nvidia-smi -pm 1
    enable = next(t for t in verify if t.get("block"))["block"]
    assert any(t.get("ansible.builtin.systemd_service", {}).get("enabled") for t in enable)


def test_a_driver_without_a_persistenced_unit_gets_one() -> None:
    # NVIDIA's .run installer ships nvidia-persistenced but its unit only as a sample
    # (/usr/share/doc/NVIDIA_GLX-1.0/samples/nvidia-persistenced-init.tar.bz2,
    # systemd/nvidia-persistenced.service.template: Type=forking, ExecStart=
    # /usr/bin/nvidia-persistenced --user __USER__). Enabling a unit that does not exist fails
    # the role on such an image (a vendor AMI with the driver preinstalled), so the role asks
    # systemd (LoadState) and writes one only where it is "not-found".
    verify = _tasks("verify.yml")
    names = [t["name"] for t in verify]
    ask = verify[names.index("Ask systemd whether nvidia-persistenced.service exists")]
    # ansible.builtin.systemd_service with a name only returns `systemctl show` as `status`
    # and acts on nothing (state/enabled/masked unset).
    assert ask["ansible.builtin.systemd_service"] == {"name": "nvidia-persistenced.service"}
    assert ask["check_mode"] is False
    block = next(t for t in verify if t.get("block"))["block"]
    install = block[0]
    assert install["ansible.builtin.template"]["dest"] == (
        "/etc/systemd/system/nvidia-persistenced.service"
    )
    assert install["when"] == (
        "nvidia_driver_persistenced_unit.status.LoadState | default('not-found') == 'not-found'"
    )
    assert names.index(ask["name"]) < names.index(
        "Run nvidia-persistenced at boot with persistence mode on"
    )
    unit = (ROLE / "templates/nvidia-persistenced.service.j2").read_text()
    assert "Type=forking" in unit and "ExecStart=/usr/bin/nvidia-persistenced" in unit
    # no --no-persistence-mode: the daemon then keeps persistence mode on by itself
    assert "--no-persistence-mode" not in unit
    assert "WantedBy=multi-user.target" in unit


def test_a_preinstalled_working_driver_is_left_alone() -> None:
    # The AWS Deep Learning AMI ships the driver (595.x in its 2026 release notes): when
    # nvidia-smi answers with a branch >= 550 nothing is installed over it.
    main = yaml.safe_load((ROLE / "tasks/main.yml").read_text())
    install = next(t for t in main if t["name"] == "Install the driver for this OS")
    assert "not nvidia_driver_ok" in install["when"]
    refuse = next(t for t in main if t["name"].startswith("Refuse to install over"))
    assert "nvidia_driver_preinstalled | bool" in refuse["when"]
