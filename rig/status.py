"""`python -m rig status` (make status): what runs, since when, $ so far, time to auto-stop.

Read from the state files alone, so it answers instantly and offline; the deploys' preflight
and destroy talk to the clouds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from rig.state import VmState


def _parse(t: str) -> dt.datetime:
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))


def status_rows(states: list[VmState], now: dt.datetime) -> list[dict[str, Any]]:
    rows = []
    for s in states:
        since = _parse(s.deployed_at)
        deadline = _parse(s.deadline)
        hours = max((now - since).total_seconds(), 0) / 3600
        rows.append(
            {
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
            }
        )
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
        "up since",
        "h",
        "$/h",
        "$ so far (max)",
        "stops by max_hours in",
        "provisioned",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            r["region"],
            r["gpu"],
            r["since"],
            f"{r['hours_up']:.2f}",
            f"{r['usd_per_hour']:.3f} {r['price_kind']}",
            f"{r['usd_so_far_at_most']:.2f}",
            f"{r['minutes_to_deadline']} min",
            "yes" if r["provisioned"] else "no",
        )
    console.print(table)
    console.print(
        "Idle VMs stop sooner: the watchdog stops them after autostop.idle_minutes.", style="dim"
    )
