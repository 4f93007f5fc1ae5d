"""The one cost formula: what a rehearsal VM costs per hour and at worst.

Every figure a user reads — `rig check`, `rig plan`, the deploy confirmations, the README — comes
from `worst_case_usd`, so they cannot disagree. Per-cloud code only supplies the rates (live spot
price or catalog figure, disk, public IP); the arithmetic lives here.

The worst case is bounded by what the *cloud-side* stops enforce (AWS: EventBridge Scheduler at
the max_hours deadline; Azure: the shutdown schedule at the deadline), not by the on-VM watchdog,
which may never have been installed. Disk and public IP bill while the VM is stopped too, until
`make destroy`: `stopped_usd_per_day` says how much.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HourlyRates:
    """USD per hour for one VM. `compute` stops when the VM stops (AWS) or is deallocated
    (Azure); the rest bill until the resources are deleted."""

    compute: float
    disk: float = 0.0
    public_ip: float = 0.0
    other: float = 0.0  # any further per-hour charge a cloud adds (say what in the caller)

    @property
    def running(self) -> float:
        return self.compute + self.disk + self.public_ip + self.other

    @property
    def stopped(self) -> float:
        return self.disk + self.public_ip + self.other


def worst_case_usd(rates: HourlyRates, hours: float) -> float:
    """The most one VM can cost if nothing but the cloud-side deadline stops it after `hours`."""
    return round(rates.running * hours, 2)


def stopped_usd_per_day(rates: HourlyRates) -> float:
    """What a stopped (or deallocated) VM still costs per day until it is destroyed."""
    return round(rates.stopped * 24, 2)


def worst_case_text(rates: HourlyRates, hours: float) -> str:
    """The phrase every surface prints, e.g. "worst case 4 h, $3.71"."""
    return f"worst case {hours:g} h, ${worst_case_usd(rates, hours):.2f}"
