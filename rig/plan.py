"""`python -m rig plan`: the planned PC and every cloud stand-in side by side, differences flagged.

Lives once, here: `python -m rig plan` prints it, and both deploys print it before they spend
anything (AWS: `print_plan(profile, console, cloud="aws")`, Azure: `cloud="azure"`). Prices and
the worst case come from rig.render.resolved, closeness facts from the catalog: nothing is
computed twice.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import Cloud
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.render import resolved

GB_PER_GIB = 2**30 / 1e9
# Within this share of the PC's figure a difference does not change what the rehearsal shows.
TOLERANCE = 0.10

ROWS: list[tuple[str, str]] = [
    ("gpu", "GPU"),
    ("vram", "VRAM"),
    ("bandwidth", "Memory bandwidth"),
    ("cpu", "CPU"),
    ("threads", "vCPU / threads"),
    ("ram", "RAM"),
    ("disk", "Disk"),
    ("image", "Image"),
    ("pricing", "Pricing"),
    ("usd_per_hour", "$/h"),
    ("worst_case", "Worst case $"),
]


@dataclass(frozen=True)
class Column:
    """One machine as the table shows it (every value already a display string)."""

    target: str  # "pc", or the state/bench target name "aws-g4dn.2xlarge", "azure-..."
    gpu: str
    vram: str
    bandwidth: str
    cpu: str
    threads: str
    ram: str
    disk: str
    image: str
    pricing: str
    usd_per_hour: str
    worst_case: str


@dataclass(frozen=True)
class Flag:
    target: str
    aspect: str  # "vram", "bandwidth", "cpu", "ram", "disk", "spot", "price"
    message: str


@dataclass
class Plan:
    columns: list[Column]
    flags: list[Flag] = field(default_factory=list)
    worst_case_usd: float | None = None  # sum over the stand-ins shown, when every one is priced

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct_off(value: float, reference: float) -> float:
    return abs(value - reference) / reference


def build_plan(profile: Profile, cat: Catalog | None = None, cloud: Cloud | None = None) -> Plan:
    """The PC plus the profile's enabled stand-ins (only `cloud`'s when given)."""
    cat = cat or load_catalog()
    pc_gpu = cat.gpus[profile.pc.gpu]
    cpu = cat.cpus[profile.pc.cpu]
    ram = cat.ram[profile.pc.ram]
    columns = [
        Column(
            target="pc",
            gpu=pc_gpu.name,
            vram=f"{pc_gpu.vram_gb:g} GB",
            bandwidth=f"{pc_gpu.bandwidth_gbs:g} GB/s",
            cpu=cpu.name,
            threads=f"{cpu.cores} cores / {cpu.threads} threads",
            ram=f"{profile.pc.ram_gb} GB {ram.name} ({ram.bandwidth_gbs:g} GB/s)",
            disk="your SSD",
            image="your OS",
            pricing="bought once",
            usd_per_hour="—",
            worst_case="—",
        )
    ]
    flags: list[Flag] = []
    res = resolved(profile, cat)
    total: float | None = 0.0
    hours = profile.autostop.max_hours
    for which in ("aws", "azure"):
        if cloud is not None and which != cloud:
            continue
        section = profile.aws if which == "aws" else profile.azure
        image = cat.images_of(which)[section.image]
        for m in res[which]:
            # An AWS type may run in its own region ("g6.2xlarge@eu-north-1").
            region = m.get("region") or (
                profile.aws.region if which == "aws" else profile.azure.location
            )
            if which == "aws":
                mbs = profile.aws.throughput_for(m["type"], cat)
                disk = f"{section.disk_gb} GB gp3, {mbs} MiB/s"
            else:
                disk = f"{section.disk_gb} GB {profile.azure.disk_type}"
            target = f"{which}-{m['type']}"
            inst = cat.instances[m["type"]]
            gpu = cat.gpus[m["gpu"]]
            if section.spot:
                cap = section.spot_max_price
                evicted = "deallocated" if which == "azure" else "stopped"
                pricing = f"spot, {evicted} if evicted; "
                pricing += "cap = on-demand" if cap == "" else f"cap ${float(cap):.3f}/h"
            else:
                pricing = "on-demand"
            price = m["on_demand_usd_per_hour"]
            per_hour = (
                f"{price:.3f} on-demand in {region}" if price else f"not in catalog for {region}"
            )
            if section.spot:
                per_hour += "; spot read live at deploy"
            worst = m["worst_case_usd"]
            if worst is None:
                total = None
            elif total is not None:
                total += worst
            columns.append(
                Column(
                    target=target,
                    gpu=gpu.name,
                    vram=f"{m['vram_gb']:g} GB",
                    bandwidth=f"{gpu.bandwidth_gbs:g} GB/s",
                    cpu=inst.host_cpu or "—",
                    threads=f"{inst.vcpu} vCPU",
                    ram=f"{inst.ram_gib:g} GiB",
                    disk=disk,
                    image=f"{image.name} (driver by Ansible)"
                    if not image.driver_preinstalled
                    else image.name,
                    pricing=pricing,
                    usd_per_hour=per_hour,
                    worst_case=f"${worst:.2f} in {hours:g} h (max_hours)"
                    if worst is not None
                    else (m.get("price_unknown") or "unknown until the live price"),
                )
            )
            flags += _differences(profile, cat, which, m)
    return Plan(columns, flags, None if total is None or len(columns) == 1 else round(total, 2))


def _differences(profile: Profile, cat: Catalog, cloud: str, m: dict[str, Any]) -> list[Flag]:
    """Each difference that changes what the rehearsal shows, with what the tool does about it."""
    target = f"{cloud}-{m['type']}"
    pc_gpu = cat.gpus[profile.pc.gpu]
    cpu = cat.cpus[profile.pc.cpu]
    inst = cat.instances[m["type"]]
    gpu = cat.gpus[m["gpu"]]
    out: list[Flag] = []

    def flag(aspect: str, message: str) -> None:
        out.append(Flag(target, aspect, message))

    vram, pc_vram = m["vram_gb"], pc_gpu.vram_gb
    if vram > pc_vram:
        flag(
            "vram",
            f"{vram:g} GB vs {pc_vram:g} GB VRAM: the bench reserves {vram - pc_vram:g} GB "
            "(OLLAMA_GPU_OVERHEAD) so models offload as they would on the PC",
        )
    elif vram < pc_vram:
        flag(
            "vram",
            f"{vram:g} GB vs {pc_vram:g} GB VRAM: models that fit the PC may spill to the CPU here",
        )
    if _pct_off(gpu.bandwidth_gbs, pc_gpu.bandwidth_gbs) > TOLERANCE:
        flag(
            "bandwidth",
            f"{gpu.bandwidth_gbs:g} vs {pc_gpu.bandwidth_gbs:g} GB/s "
            f"({gpu.bandwidth_gbs / pc_gpu.bandwidth_gbs:.2f}x): raw decode speed differs; the "
            "report projects to the PC with per-GPU calibrated efficiency",
        )
    if inst.vcpu < cpu.threads:
        flag(
            "cpu",
            f"{inst.vcpu} vCPU (hardware threads) vs the PC's {cpu.cores} cores/{cpu.threads} "
            "threads: layers offloaded to the CPU run slower here than on the PC",
        )
    ram_gb = inst.ram_gib * GB_PER_GIB
    pc_ram = profile.pc.ram_gb
    if _pct_off(ram_gb, pc_ram) > TOLERANCE:
        if ram_gb > pc_ram:
            msg = (
                f"{inst.ram_gib:g} GiB ({ram_gb:.0f} GB) vs {pc_ram} GB RAM: a model too big for "
                "the PC's RAM still loads here — judge fit by the report's PC fit column"
            )
        else:
            msg = (
                f"{inst.ram_gib:g} GiB ({ram_gb:.0f} GB) vs {pc_ram} GB RAM: a model that fits "
                "the PC may fail to load here"
            )
        flag("ram", msg)
    if cloud == "azure" and profile.azure.disk_type != "Premium_LRS":
        flag("disk", f"{profile.azure.disk_type}: model loads take longer than on the PC's SSD")
    section = profile.aws if cloud == "aws" else profile.azure
    if section.spot:
        flag("spot", "may be evicted mid-run (results measured so far are kept)")
    if m["on_demand_usd_per_hour"] is None:
        flag("price", "no catalog price in this region: the deploy reads it live before going on")
    return out


def plan_table(plan: Plan) -> Table:
    table = Table(title="The planned PC and its cloud stand-ins")
    table.add_column("", overflow="fold")
    for col in plan.columns:
        table.add_column(escape(col.target), overflow="fold")
    for key, label in ROWS:
        table.add_row(label, *(escape(getattr(col, key)) for col in plan.columns))
    return table


def print_plan(
    profile: Profile, console: Console, cloud: Cloud | None = None, cat: Catalog | None = None
) -> Plan:
    """Print the side-by-side and the flagged differences; return them for the caller."""
    plan = build_plan(profile, cat, cloud)
    console.print(plan_table(plan))
    if len(plan.columns) == 1:
        what = f"{cloud} is" if cloud else "both clouds are"
        console.print(f"No stand-ins: {what} disabled in {profile.path}.")
    for f in plan.flags:
        console.print(
            f"[yellow]differs[/yellow] {escape(f.target)} {f.aspect}: {escape(f.message)}",
            highlight=False,
        )
    if plan.worst_case_usd is not None:
        console.print(
            f"Worst case for all of the above: ${plan.worst_case_usd:.2f} "
            f"(each stops after autostop.max_hours = {profile.autostop.max_hours:g} h)",
            highlight=False,
        )
    return plan


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    profile = load_profile(args.config)
    if args.json:
        print(json.dumps(build_plan(profile, cloud=args.cloud).as_dict(), indent=2))
    else:
        print_plan(profile, console, args.cloud)
    return 0


def add_commands(commands: Any) -> None:
    plan = commands.top.add_parser(
        "plan", help="the planned PC and every cloud stand-in side by side, differences flagged"
    )
    plan.add_argument("--config", type=Path, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    plan.add_argument("--cloud", choices=["aws", "azure"], help="only this cloud's stand-ins")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.set_defaults(func=cmd_plan)
