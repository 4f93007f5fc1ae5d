"""The Ansible inventory, generated from the state files (never a hand-edited hosts file).

Each `.state/<target>.json` becomes one host; the profile and the catalog supply the role
variables (autostop rule, models, the planned card to mirror, what nvidia-smi must show). The
VRAM reserve itself is computed on the VM from its own nvidia-smi (the ollama role): only the
planned card's usable MiB travels from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rig.catalog import Catalog, load_catalog
from rig.profile import Profile
from rig.state import STATE_DIR, VmState

MIB = 1024**2


def pc_default_context(pc_usable_mib: int) -> int:
    """The context length the PC's Ollama uses when a request names none.

    Ollama picks it from the total VRAM (server/routes.go:2047-2057 at v0.32.15): 262144 from
    47 GiB, 32768 from 23 GiB, else 4096. Pinned on the VM (OLLAMA_CONTEXT_LENGTH), so a 24 GB
    cloud card does not default to 32k while the 16 GB PC would use 4k.
    """
    total = pc_usable_mib * MIB
    if total >= 47 * 1024 * MIB:
        return 262144
    if total >= 23 * 1024 * MIB:
        return 32768
    return 4096


def gpu_check_model(models: list[str], cat: Catalog) -> str:
    """The model the role loads to check that Ollama runs on the GPU: the smallest known one."""
    known = [m for m in models if m in cat.models]
    if not known:
        return models[0] if models else ""
    return min(known, key=lambda m: cat.models[m].download_gb)


def image_of(state: VmState, profile: Profile) -> str:
    """The catalog image the VM was deployed from: the deploy records it, else the profile's."""
    image = state.extra.get("image")
    if isinstance(image, str) and image:
        return image
    return profile.aws.image if state.cloud == "aws" else profile.azure.image


def host_vars(
    state: VmState, profile: Profile, cat: Catalog, state_dir: Path = STATE_DIR
) -> dict[str, Any]:
    card = cat.gpus.get(state.gpu)
    pc = cat.gpus[profile.pc.gpu]
    image = cat.images_of(state.cloud).get(image_of(state, profile))
    known_hosts = (state_dir / f"{state.name}.known_hosts").resolve()
    return {
        "ansible_host": state.host,
        "ansible_port": state.ssh_port,
        "ansible_user": state.ssh_user,
        "ansible_ssh_private_key_file": str(Path(state.ssh_key).expanduser().resolve()),
        # One known_hosts per target: a cloud reuses IPs, a shared file would then refuse.
        "ansible_ssh_common_args": (
            f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={known_hosts}"
        ),
        "nvidia_driver_preinstalled": bool(image and image.driver_preinstalled),
        # nvidia-smi names the cloud cards "Tesla T4", "NVIDIA A10G", "NVIDIA L4".
        "nvidia_driver_expected_gpu": state.gpu.upper() if card else "",
        "nvidia_driver_expected_vram_gb": card.vram_gb if card else 0,
        "ollama_models": list(profile.bench.models),
        "ollama_gpu_check_model": gpu_check_model(list(profile.bench.models), cat),
        # The planned card as nvidia-smi reports it; the VM subtracts it from its own GPU's.
        "ollama_pc_usable_mib": pc.usable_mib,
        "ollama_pc_gpu_name": pc.name,
        "ollama_context_length": pc_default_context(pc.usable_mib),
        "autostop_cloud": state.cloud,
        "autostop_idle_minutes": profile.autostop.idle_minutes,
        "autostop_max_hours": profile.autostop.max_hours,
        "autostop_gpu_idle_percent": profile.autostop.gpu_idle_percent,
    }


def inventory(
    states: list[VmState],
    profile: Profile,
    cat: Catalog | None = None,
    state_dir: Path = STATE_DIR,
) -> dict[str, Any]:
    cat = cat or load_catalog()
    return {
        "all": {
            "hosts": {s.name: host_vars(s, profile, cat, state_dir) for s in states},
            "children": {
                cloud: {"hosts": {s.name: {} for s in states if s.cloud == cloud}}
                for cloud in ("aws", "azure")
            },
        }
    }


def write_inventory(
    states: list[VmState],
    profile: Profile,
    state_dir: Path = STATE_DIR,
) -> Path:
    """Write `.state/_inventory.json` (JSON is YAML: Ansible's yaml plugin reads it).

    The leading underscore keeps it out of rig.state.read_all; mode 0600 like the state files.
    """
    data = inventory(states, profile, state_dir=state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / "_inventory.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    return path
