"""`python -m rig plan`: the spending plan first, then the planned PC and every stand-in side by
side with the differences that matter flagged.

The spending plan (per stand-in and in total): setup, model pulls, disk space against disk_gb,
bench time per model, the idle stop, the whole against max_hours (which models the window does
not reach, and a split that fits), and $ at today's price — live when it can be read
(rig.live_prices), else the catalog's with its date — next to the worst case from rig.cost.
Every figure comes from rig.estimate.estimate, the one function the deploy confirmations and the
bench use too; every figure names its source.

The side-by-side lives once, here: `python -m rig plan` prints it, and the Azure deploy prints
it before it spends anything (`print_plan(profile, console, cloud="azure")`). Prices and the
worst case come from rig.render.resolved, closeness facts from the catalog.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rig.catalog import Catalog, load_catalog
from rig.catalog.schema import Cloud
from rig.clihelp import path_arg
from rig.estimate import (
    DEFAULT_DOWNLOAD_MBS,
    Standin,
    TargetEstimate,
    duration,
    estimate,
)
from rig.live_prices import priced_standins
from rig.problems import CommandError
from rig.profile import DEFAULT_PROFILE, Profile, load_profile
from rig.render import resolved
from rig.version import BENCH, RIG

__all__ = ["SpendingPlan", "build_plan", "estimate", "print_plan", "spending_plan"]

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


# ------------------------------------------------------------------------- spending plan


@dataclass
class SpendingPlan:
    """The estimate of every stand-in, and the total (they run side by side)."""

    profile: str
    work: str  # "10 models x chat-en, ... x 3 repetitions"
    targets: list[TargetEstimate]
    price_notes: list[str]
    live: bool
    download_mbs: float

    @property
    def wall_s(self) -> float:
        """Wall time until every VM has stopped: each runs until its idle stop, or until the
        max_hours stop when that comes first."""
        return max((min(t.total_s, t.window_h * 3600) for t in self.targets), default=0.0)

    @property
    def worst_floor_usd(self) -> float:
        """The known part of the total worst case (where a rate is unknown offline)."""
        return round(sum(t.worst_usd if t.worst_usd is not None else (t.worst_floor_usd or 0.0)
                         for t in self.targets), 2)  # fmt: skip

    @property
    def stopped_usd_per_day(self) -> float | None:
        known = [t.stopped_usd_per_day for t in self.targets]
        return None if None in known else round(sum(k or 0.0 for k in known), 2)

    @property
    def stopped_floor_usd_per_day(self) -> float:
        return round(
            sum(
                t.stopped_usd_per_day
                if t.stopped_usd_per_day is not None
                else (t.stopped_floor_usd_per_day or 0.0)
                for t in self.targets
            ),
            2,
        )

    @property
    def usd(self) -> float | None:
        known = [t.usd for t in self.targets]
        return None if None in known else round(sum(u or 0.0 for u in known), 2)

    @property
    def usd_floor(self) -> float:
        return round(sum(t.usd if t.usd is not None else (t.usd_floor or 0.0)
                         for t in self.targets), 2)  # fmt: skip

    @property
    def worst_usd(self) -> float | None:
        known = [t.worst_usd for t in self.targets]
        return None if None in known else round(sum(w or 0.0 for w in known), 2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "work": self.work,
            "prices": {"live": self.live, "notes": self.price_notes},
            "assumptions": {"download_mbs": self.download_mbs},
            "targets": [t.as_dict() for t in self.targets],
            "total": {
                "wall_s": self.wall_s,
                "usd": self.usd,
                "usd_floor": self.usd_floor,
                "worst_usd": self.worst_usd,
                "worst_floor_usd": self.worst_floor_usd,
                "stopped_usd_per_day": self.stopped_usd_per_day,
                "stopped_floor_usd_per_day": self.stopped_floor_usd_per_day,
                "fits_window": all(t.fits_window for t in self.targets),
            },
        }


def spending_plan(
    profile: Profile,
    cat: Catalog | None = None,
    cloud: Cloud | None = None,
    offline: bool = False,
    download_mbs: float = DEFAULT_DOWNLOAD_MBS,
    setup_min: float | None = None,
    aws_for: Any = None,
    http: Any = None,
) -> SpendingPlan:
    cat = cat or load_catalog()
    priced = priced_standins(profile, cat, offline, aws_for, http)
    chosen: list[Standin] = [s for s in priced.standins if cloud is None or s.cloud == cloud]
    targets = [
        estimate(profile, cat, s, download_mbs=download_mbs, setup_min=setup_min) for s in chosen
    ]
    b = profile.bench
    work = f"{len(b.models)} models x {', '.join(b.workloads)} x {b.repetitions} repetitions"
    return SpendingPlan(str(profile.path), work, targets, priced.notes, priced.live, download_mbs)


def _usd(t: TargetEstimate) -> str:
    hours = f"{t.billed_h:.2f} h"
    if t.usd is not None and t.usd_per_hour is not None:
        return f"${t.usd_per_hour:.3f}/h x {hours} = ${t.usd:.2f}"
    if t.usd_floor is not None:
        return f"at least ${t.usd_floor:.2f} ({hours}) + the disk: {t.unknown}"
    return f"unknown: {t.unknown}"


def _rates_text(t: TargetEstimate) -> str:
    if not t.rates:
        return ""
    r = t.rates
    parts = [f"compute ${r['compute']:.4g}/h ({t.sources.get('compute', '')})"]
    if t.usd is not None:
        parts.append(f"disk ${r['disk']:.3f}/h ({t.sources.get('disk', '')})")
    parts.append(f"public IP ${r['public_ip']:.3f}/h ({t.sources.get('public_ip', 'catalog')})")
    if r.get("other"):
        parts.append(f"other ${r['other']:.3f}/h")
    return " + ".join(parts)


def _stopped(t: TargetEstimate) -> str:
    """What the stopped VM still costs per day until make destroy."""
    if t.stopped_usd_per_day is not None:
        return f"${t.stopped_usd_per_day:.2f}/day ({t.stopped_what}) until make destroy"
    if t.stopped_floor_usd_per_day is not None:
        return (
            f"at least ${t.stopped_floor_usd_per_day:.2f}/day ({t.stopped_what}; the disk's "
            "price is read live at deploy) until make destroy"
        )
    return f"{t.stopped_what or 'the disk'}: price unknown offline, until make destroy"


def _target_lines(t: TargetEstimate, gpu_name: str) -> list[str]:
    src = t.sources
    window = (
        f"the bench ends {duration(t.window_h * 3600 - t.work_s)} before the max_hours stop "
        f"({t.window_h:g} h)"
        if t.fits_window
        else f"[red]the bench needs more than max_hours {t.window_h:g} h[/red]: the VM stops "
        "before it ends"
    )
    disk = "fits" if t.disk_fits else "[red]does NOT fit[/red]"
    lines = [
        f"[bold]{escape(t.target)}[/bold] — {gpu_name}, {t.region}",
        f"  setup      {duration(t.setup_s):>11}  {escape(src.get('setup', ''))}",
        f"  pulls      {duration(t.pull_s):>11}  {escape(src.get('pulls', ''))}",
        f"  bench      {duration(t.bench_s):>11}  range {duration(t.bench_low_s)} – "
        f"{duration(t.bench_high_s)}; {sum(m.requests for m in t.models)} requests + "
        f"{sum(m.warmups for m in t.models)} warm-ups (projection, per model below)",
        f"  {'':11}{'':>11}  per workload: "
        + ", ".join(f"{w} {duration(sec)}" for w, sec in t.by_workload().items()),
        f"  idle stop  {duration(t.idle_s):>11}  {escape(src.get('idle', ''))}",
        f"  total      {duration(t.total_s):>11}  {window}",
        f"  disk       {t.disk_needed_gb:>8g} GB  of disk_gb {t.disk_gb:g}: {disk} "
        f"({escape(src.get('disk_space', ''))})",
        f"  $ estimate {'':>11}  {escape(_usd(t))}",
    ]
    if rates := _rates_text(t):
        lines.append(f"             {'':>11}  {escape(rates)}")
    lines += [
        f"  {escape(t.worst_text)} (rig.cost: compute at its cap + disk + IP until the "
        "cloud-side stop)",
        f"  after the stop {escape(_stopped(t))}",
    ]
    if t.not_reached:
        late = escape(", ".join(t.not_reached))
        lines.append(f"  [red]not reached before the max_hours stop[/red]: {late}")
    if t.runs:
        lines.append(f"  split into {len(t.runs)} windows that each fit {t.window_h:g} h:")
        for i, run in enumerate(t.runs, 1):
            lines.append(
                f"    window {i}: {BENCH} run --models {escape(' '.join(run))}"
                if run
                else f"    window {i}: setup and model pulls only"
            )
        lines.append(
            "    (before each further run: make deploy-" + t.cloud + " again, which starts the "
            "VM and moves the max_hours stop)"
        )
    if t.hours_needed is not None:
        worst = (
            f", worst case then ${t.worst_needed_usd:.2f}" if t.worst_needed_usd is not None else ""
        )
        lines.append(
            f"  or in one run: autostop.max_hours = {t.hours_needed:g}{worst}"
            + (" (above 24 also needs allow_long_runs = true)" if t.hours_needed > 24 else "")
        )
    lines += [f"  [yellow]note[/yellow] {escape(n)}" for n in t.notes]
    lines.append(f"  decode: {escape(src.get('decode', ''))}")
    lines.append(f"  prefill: {escape(src.get('prefill', ''))}")
    lines.append(f"  requests: {escape(src.get('requests', ''))}")
    return lines


def model_table(t: TargetEstimate) -> Table:
    """Per model: size, share on the GPU, projected rates, requests + warm-ups, time, and when
    it is done counted from boot (late: after the max_hours stop)."""
    table = Table(
        title=f"{t.target}: bench time per model (projection; done at = h:mm from the deploy)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("model", overflow="fold", min_width=18)
    # on GPU: share of weights + KV in VRAM; t/s: decode and prompt; requests + warm-ups
    for col in ("GB", "GPU", "dec t/s", "pre t/s", "req", "time", "done at"):
        table.add_column(col, justify="right", no_wrap=True)
    for m in t.models:
        table.add_row(
            escape(m.model),
            f"{m.download_gb:g}",
            "—" if m.verdict == "no" else f"{m.gpu_share:.0%}",
            "—" if m.decode_tok_s is None else f"{m.decode_tok_s:.1f}",
            "—" if m.prefill_tok_s is None else f"{m.prefill_tok_s:.0f}",
            f"{m.requests}+{m.warmups}",
            duration(m.seconds),
            _clock(m.end_s) + ("" if m.in_window else " late"),
        )
    return table


def _clock(seconds: float) -> str:
    """Time since boot as h:mm."""
    minutes = round(seconds / 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def _skipped_line(t: TargetEstimate) -> str | None:
    """The long-context cases beyond a model's context, skipped by the bench as here."""
    parts = [
        f"{m.model} ({', '.join(c.split('/')[1] for c in m.skipped_cases)})"
        for m in t.models
        if m.skipped_cases
    ]
    return "  skipped, beyond the model's context: " + "; ".join(parts) if parts else None


def print_spending(sp: SpendingPlan, console: Console, cat: Catalog) -> None:
    say = console.print
    say(f"[bold]Spending plan[/bold] for {escape(sp.profile)}: {escape(sp.work)}", highlight=False)
    for note in sp.price_notes:
        say(f"  [dim]{escape(note)}[/dim]", highlight=False)
    for t in sp.targets:
        say("")
        for line in _target_lines(t, cat.gpus[t.gpu].name):
            say(line, highlight=False, soft_wrap=True)
        say(model_table(t))
        if (skipped := _skipped_line(t)) is not None:
            say(escape(skipped), highlight=False, soft_wrap=True)
    if len(sp.targets) > 1:
        usd = f"${sp.usd:.2f}" if sp.usd is not None else f"at least ${sp.usd_floor:.2f}"
        worst = (
            f"${sp.worst_usd:.2f}"
            if sp.worst_usd is not None
            else f"at least ${sp.worst_floor_usd:.2f} + what is read live at deploy"
        )
        stopped = (
            f"${sp.stopped_usd_per_day:.2f}/day"
            if sp.stopped_usd_per_day is not None
            else f"at least ${sp.stopped_floor_usd_per_day:.2f}/day"
        )
        cut = "" if all(t.fits_window for t in sp.targets) else " (cut short by max_hours)"
        say(
            f"[bold]All {len(sp.targets)} stand-ins[/bold] (they run side by side): "
            f"{duration(sp.wall_s)} wall time{cut}, {usd} estimated; worst case {worst}; "
            f"after the stops {stopped} until make destroy",
            highlight=False,
            soft_wrap=True,
        )
    say(
        f"[dim]Sources: live = read now; catalog KEY, DATE = rig/catalog ({RIG} catalog); "
        "assumption = a stated default (override with --download-mbs / --setup-minutes); "
        "projection = bench/speed.py from published points.[/dim]",
        highlight=False,
        soft_wrap=True,
    )


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    profile = load_profile(args.config)
    window_min = profile.autostop.max_hours * 60
    if args.setup_minutes is not None and args.setup_minutes >= window_min:
        raise CommandError(
            f"--setup-minutes {args.setup_minutes:g}: not less than autostop.max_hours = "
            f"{profile.autostop.max_hours:g} h ({window_min:g} min), so nothing would be benched "
            "— give the minutes a deploy takes to a provisioned VM (default 10 with the driver "
            "in the image, 20 without), or raise autostop.max_hours",
            exit_code=2,
        )
    cat = load_catalog()
    sp = spending_plan(
        profile, cat, args.cloud, args.offline, args.download_mbs, args.setup_minutes
    )
    if args.json:
        out = sp.as_dict()
        out["comparison"] = build_plan(profile, cat, cloud=args.cloud).as_dict()
        print(json.dumps(out, indent=2))
    else:
        print_spending(sp, console, cat)
        console.print("")
        print_plan(profile, console, args.cloud, cat)
    return 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number, e.g. 100")
    return value


# A model download between a slow home line and a fast cloud network: below 0.1 MB/s the plan
# reads in years, above 12,500 MB/s (100 Gbit/s) no VM here downloads.
DOWNLOAD_MBS_RANGE = (0.1, 12_500.0)


def _download_mbs(text: str) -> float:
    value = _positive(text)
    low, high = DOWNLOAD_MBS_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"{text!r} MB/s is outside {low:g}-{high:,.0f} MB/s — give the rate a model pull "
            f"reaches, e.g. {DEFAULT_DOWNLOAD_MBS:g}"
        )
    return value


def add_commands(commands: Any) -> None:
    plan = commands.top.add_parser(
        "plan",
        help="the spending plan (time and $ per stand-in and in total), then the planned PC "
        "and every cloud stand-in side by side",
    )
    plan.add_argument("--config", type=path_arg, default=DEFAULT_PROFILE, help="profile (rig.toml)")
    plan.add_argument("--cloud", choices=["aws", "azure"], help="only this cloud's stand-ins")
    plan.add_argument("--json", action="store_true", help="print JSON instead of tables")
    plan.add_argument(
        "--offline", action="store_true", help="catalog prices only (no live spot/retail lookup)"
    )
    plan.add_argument(
        "--download-mbs",
        type=_download_mbs,
        default=DEFAULT_DOWNLOAD_MBS,
        metavar="MB/S",
        help=f"assumed model download rate (default {DEFAULT_DOWNLOAD_MBS:g} MB/s)",
    )
    plan.add_argument(
        "--setup-minutes",
        type=_positive,
        metavar="MIN",
        help="assumed boot + Ansible time (default 10 with the driver in the image, else 20)",
    )
    plan.set_defaults(func=cmd_plan)
