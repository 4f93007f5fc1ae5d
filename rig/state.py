"""Deploy state: one `.state/<cloud>-<type>.json` per deployed VM, written by the deploys and read
by `make status`, provisioning (the Ansible inventory) and the bench (bench/targets.py).

Never committed (.gitignore). Files are written atomically with mode 0600: they name hosts and
key paths. Keys and generated secrets live beside them under .state/.

Every reader goes through `load` (one file) or `read_all` (the folder): a file this version
cannot use — empty, not JSON, missing or mistyped fields, a newer `schema`, a name that does
not match the file — raises `CommandError` with one line naming the file, what is wrong and the
fix, so no command that reads state ends in a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError

from rig.problems import CommandError

STATE_DIR = Path(".state")
STATE_DIR_HELP = "where the deploys keep their state files"
# Bump when a field is added, removed or changes meaning; readers refuse newer files. Files
# written before the field existed have the same shape as schema 1 and carry no `schema` key.
SCHEMA = 1
SSH_PORT = 22  # the default; a stack may name another (state.extra["ssh_port"])


@dataclass
class Price:
    __pydantic_config__ = ConfigDict(extra="forbid")

    usd_per_hour: float
    kind: Literal["spot", "on-demand"]
    source: str  # e.g. "describe_spot_price_history", "azure retail prices API", a catalog key
    at: str  # ISO 8601 UTC when the price was read
    on_demand_usd_per_hour: float | None = None


@dataclass
class VmState:
    """What a deploy leaves behind for everything after it. `name` is the bench target name."""

    __pydantic_config__ = ConfigDict(extra="forbid")

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
    schema: int = SCHEMA  # the state file format version (see SCHEMA)

    @property
    def ssh_port(self) -> int:
        """Where the VM's sshd answers: `extra.ssh_port` as the deploy read it from the stack's
        outputs, 22 when the file has none (every file written before the field existed)."""
        port = self.extra.get("ssh_port", SSH_PORT)
        return int(port)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VmState:
        return _ADAPTER.validate_python(data)


_ADAPTER = TypeAdapter(VmState)


class StateError(CommandError):
    """A state file this version cannot use; exit 2 like any other invalid input."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


def path_for(name: str, state_dir: Path = STATE_DIR) -> Path:
    return state_dir / f"{name}.json"


def ensure_writable(state_dir: Path) -> None:
    """A deploy writes its state file once the VM exists: a state dir that cannot take it would
    leave a billing VM that no file names. So it is checked before anything is created, and
    nothing is left behind by the check (a directory that does not exist yet stays absent)."""

    def refuse(why: str) -> CommandError:
        return CommandError(
            f"--state-dir {state_dir}: {why} — move it away or fix it, or pass --state-dir DIR "
            "(nothing was created)",
            exit_code=2,
        )

    if state_dir.exists() and not state_dir.is_dir():
        raise refuse("is a file, not a directory")
    if state_dir.is_dir():
        probe = state_dir / f".write-check-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise refuse(f"cannot write there ({exc.strerror or exc})") from None
        return
    parent = state_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(f"{parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise refuse(f"cannot create it in {parent} (permission denied)")


def write(state: VmState, state_dir: Path = STATE_DIR) -> Path:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = path_for(state.name, state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(state.to_json(), fh, indent=2)
    os.replace(tmp, path)
    return path


def _set_aside(path: Path) -> str:
    return (
        f"if that VM still exists, make destroy finds it by its tags; move the file out of the "
        f"way (mv {path} {path.parent / ('_' + path.name + '.broken')}: names starting with _ "
        "are ignored), then run the command again"
    )


def _why(exc: ValidationError) -> str:
    missing, other = [], []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        if err["type"] == "missing":
            missing.append(where)
        elif err["type"] == "unexpected_keyword_argument":
            other.append(f"{where} is not a state field")
        else:
            other.append(
                f"{where}: {err['msg'][0].lower()}{err['msg'][1:]} (got {err['input']!r:.40})"
            )
    parts = other[:2]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        parts.insert(0, f"missing {shown}")
    return "; ".join(parts) + (f"; and {len(other) - 2} more" if len(other) > 2 else "")


def load(path: Path) -> VmState:
    """One state file, validated; CommandError (one line: file, problem, fix) if unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: cannot be read ({exc}) — {_set_aside(path)}") from None
    if not text.strip():
        raise StateError(f"{path}: the state file is empty — {_set_aside(path)}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}) — "
            f"{_set_aside(path)}"
        ) from None
    if not isinstance(data, dict):
        raise StateError(
            f"{path}: holds a JSON {type(data).__name__}, not a state object — {_set_aside(path)}"
        )
    schema = data.get("schema", SCHEMA)
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA:
        raise StateError(
            f"{path}: written by a newer gpu-rehearsal (state schema {schema}; this one reads "
            f"up to {SCHEMA}) — update this checkout (git pull, then make setup) and run the "
            "command again; nothing was changed"
        )
    try:
        state = VmState.from_json(data)
    except ValidationError as exc:
        raise StateError(
            f"{path}: not a state file this version can use ({_why(exc)}) — {_set_aside(path)}"
        ) from None
    if state.schema < 1:
        raise StateError(f"{path}: schema {state.schema} is not a version — {_set_aside(path)}")
    port = state.extra.get("ssh_port", SSH_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise StateError(
            f"{path}: extra.ssh_port is {port!r}, not a TCP port (1-65535) — {_set_aside(path)}"
        )
    if state.name != path.stem:
        # remove() and the deploys find a VM's file by its name: a mismatch would lose track.
        raise StateError(
            f"{path}: records the VM {state.name!r} but is named {path.name!r} — rename it to "
            f"{path_for(state.name, path.parent).name}, then run the command again"
        )
    return state


def read_all(state_dir: Path = STATE_DIR) -> list[VmState]:
    """Every VM recorded under state_dir (both clouds: callers filter by `cloud`).

    Fails closed: a file that cannot be read raises CommandError rather than being skipped, so
    status never reads "nothing deployed" and destroy never says "done" while a VM it could not
    read about may still bill.
    """
    if not state_dir.is_dir():
        return []
    return [load(p) for p in sorted(state_dir.glob("*.json")) if not p.name.startswith("_")]


def remove(name: str, state_dir: Path = STATE_DIR) -> None:
    path_for(name, state_dir).unlink(missing_ok=True)
