"""`python -m rig status` (make status): what runs, since when, $ so far, time to auto-stop.

The cloud is the authority, not the state file: each cloud module registers a *live* provider
(`LIVE_PROVIDERS`, "module:function") that asks its cloud for the VM's real state, the hours
billed and the $ so far (compute, and the disk + public IP that bill while stopped). The state
file only says what to ask about. When a cloud cannot be asked (no credentials, no SDK, an API
error), the row says so — `verified: False` with the reason — and the command exits 1: a status
that cannot see the cloud must never read as "all is well".
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from rig.problems import CommandError
from rig.state import VmState

# A provider takes the state and "now" and returns the fields it learned from the cloud, e.g.
# {"state": "stopped", "hours_billed": 1.2, "usd_compute": 0.31, "usd_stopped_extras": 0.02,
#  "usd_per_hour": 0.30, "note": "..."}; it raises CommandError (one line) when it cannot ask.
LiveProvider = Callable[[VmState, dt.datetime], dict[str, Any]]
LIVE_PROVIDERS: dict[str, str] = {}  # cloud -> "module:function", filled by the cloud modules


def register_live(cloud: str, target: str) -> None:
    LIVE_PROVIDERS[cloud] = target


def _provider(cloud: str) -> LiveProvider | None:
    target = LIVE_PROVIDERS.get(cloud)
    if target is None:
        return None
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def _parse(t: str) -> dt.datetime:
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))


def file_row(s: VmState, now: dt.datetime) -> dict[str, Any]:
    """What the state file alone says: an upper bound, never the cloud's word."""
    since = _parse(s.deployed_at)
    deadline = _parse(s.deadline)
    hours = max((now - since).total_seconds(), 0) / 3600
    return {
        "name": s.name,
        "cloud": s.cloud,
        "region": s.region,
        "type": s.instance_type,
        "gpu": s.gpu,
        "host": s.host,
        "since": s.deployed_at,
        "hours_up": round(hours, 2),
        "usd_per_hour": s.price.usd_per_hour,
        "price_kind": s.price.kind,
        # An upper bound: billing stops earlier if the idle watchdog stopped the VM.
        "usd_so_far_at_most": round(hours * s.price.usd_per_hour, 2),
        "deadline": s.deadline,
        "minutes_to_deadline": round(max((deadline - now).total_seconds(), 0) / 60),
        "provisioned": s.provisioned,
        "state": "unknown",
        "verified": False,
        "note": "",
    }


def status_rows(
    states: list[VmState], now: dt.datetime, *, ask_cloud: bool = True
) -> list[dict[str, Any]]:
    rows = []
    for s in states:
        row = file_row(s, now)
        try:
            provider = _provider(s.cloud) if ask_cloud else None
        except ModuleNotFoundError as exc:
            # The cloud's extra is not installed here (a lean setup): say so, keep the others.
            row["note"] = (
                f"could not ask {s.cloud}: {exc.name} is not installed — "
                f"make setup-{s.cloud} (or pip install -e '.[{s.cloud}]')"
            )
            rows.append(row)
            continue
        if provider is None:
            row["note"] = "not asked: figures from the state file only (upper bound)"
        else:
            try:
                row.update(provider(s, now))
                row["verified"] = True
            except CommandError as exc:
                row["note"] = f"could not ask {s.cloud}: {exc}"
        rows.append(row)
    return rows


def print_status(console: Console, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("Nothing deployed (no state files in .state/).")
        return
    table = Table(title="Deployed rehearsal VMs")
    for col in (
        "target",
        "region",
        "GPU",
        "state",
        "up since",
        "h",
        "$/h",
        "$ so far",
        "stops by max_hours in",
        "provisioned",
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        so_far = r.get("usd_total", r["usd_so_far_at_most"])
        table.add_row(
            r["name"],
            r["region"],
            r["gpu"],
            r["state"] if r["verified"] else "unknown",
            r["since"],
            f"{r.get('hours_billed', r['hours_up']):.2f}",
            f"{r['usd_per_hour']:.3f} {r['price_kind']}",
            f"{so_far:.2f}" + ("" if r["verified"] else " (max)"),
            f"{r['minutes_to_deadline']} min",
            "yes" if r["provisioned"] else "no",
        )
    console.print(table)
    for r in rows:
        if r["note"]:
            console.print(f"{r['name']}: {r['note']}", highlight=False, soft_wrap=True)
    console.print(
        "Idle VMs stop sooner: the watchdog stops them after autostop.idle_minutes.", style="dim"
    )
