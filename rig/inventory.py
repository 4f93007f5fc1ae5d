"""The Ansible inventory, generated from the state files (never a hand-edited hosts file).

Each `.state/<target>.json` becomes one host; the profile and the catalog supply the role
variables (autostop rule, models, VRAM mirroring, what nvidia-smi must show).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rig.catalog import Catalog, load_catalog
from rig.profile import Profile
from rig.state import STATE_DIR, VmState

GIB = 1024**3  # "16 GB" of GDDR is 16 GiB of chips; nvidia-smi reports MiB


def gpu_overhead_bytes(card_vram_gb: float, pc_vram_gb: float) -> int:
    """VRAM to hold back so the cloud card schedules layers like the planned PC's card.

    Marketed VRAM sizes are binary (a 24 GB A10G has 24 GiB of memory), so GiB it is.
    """
    return max(0, round((card_vram_gb - pc_vram_gb) * GIB))


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
        "ansible_port": int(state.extra.get("ssh_port", 22)),
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
        "ollama_gpu_overhead_bytes": gpu_overhead_bytes(card.vram_gb, pc.vram_gb) if card else 0,
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
