"""Deploy state: one `.state/<cloud>-<type>.json` per deployed VM, written by the deploys and read
by `make status`, provisioning (the Ansible inventory) and the bench (bench/targets.py).

Never committed (.gitignore). Files are written atomically with mode 0600: they name hosts and
key paths. Keys and generated secrets live beside them under .state/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

STATE_DIR = Path(".state")


@dataclass
class Price:
    usd_per_hour: float
    kind: Literal["spot", "on-demand"]
    source: str  # e.g. "describe_spot_price_history", "azure retail prices API", a catalog key
    at: str  # ISO 8601 UTC when the price was read
    on_demand_usd_per_hour: float | None = None


@dataclass
class VmState:
    """What a deploy leaves behind for everything after it. `name` is the bench target name."""

    name: str  # "<cloud>-<type>", e.g. "aws-g4dn.2xlarge", "azure-Standard_NC8as_T4_v3"
    cloud: Literal["aws", "azure"]
    region: str
    instance_type: str
    gpu: str  # catalog GPU key
    host: str  # public IP or DNS name for SSH
    ssh_user: str
    ssh_key: str  # path of the private key on this machine
    spot: bool
    price: Price
    deployed_at: str
    deadline: str  # deployed_at + max_hours: the watchdog stops the VM then, busy or not
    ids: dict[str, str] = field(default_factory=dict)  # instance id, stack name, VM id, ...
    provisioned: bool = False  # set once Ansible converged (driver, Ollama, models, watchdog)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VmState:
        data = dict(data)
        data["price"] = Price(**data["price"])
        return cls(**data)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


def path_for(name: str, state_dir: Path = STATE_DIR) -> Path:
    return state_dir / f"{name}.json"


def write(state: VmState, state_dir: Path = STATE_DIR) -> Path:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = path_for(state.name, state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state.to_json(), fh, indent=2)
    os.replace(tmp, path)
    return path


def read_all(state_dir: Path = STATE_DIR) -> list[VmState]:
    if not state_dir.is_dir():
        return []
    return [
        VmState.from_json(json.loads(p.read_text(encoding="utf-8")))
        for p in sorted(state_dir.glob("*.json"))
        if not p.name.startswith("_")
    ]


def remove(name: str, state_dir: Path = STATE_DIR) -> None:
    path_for(name, state_dir).unlink(missing_ok=True)
