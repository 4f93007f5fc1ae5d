"""Rich tables for the terminal; JSON shapes for scripts. Presentation only."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rig.catalog import Catalog
from rig.catalog.schema import Cloud
from rig.compare import closeness
from rig.profile import Profile, toml_literal

GPU_ROWS: list[tuple[str, str]] = [
    ("role", "Role"),
    ("arch", "Architecture"),
    ("compute_capability", "Compute capability"),
    ("vram_gb", "VRAM (GB)"),
    ("usable_mib", "Usable VRAM (MiB, nvidia-smi)"),
    ("memory_type", "Memory"),
    ("bus_width_bits", "Bus (bit)"),
    ("bandwidth_gbs", "Bandwidth (GB/s)"),
    ("cuda_cores", "CUDA cores"),
    ("fp32_tflops", "FP32 TFLOPS"),
    ("tensor_fp16_tflops", "Tensor FP16 TFLOPS (dense)"),
    ("int8_tops_dense", "INT8 TOPS (dense)"),
    ("int8_tops_sparse", "INT8 TOPS (sparse, 2:4)"),
    ("tensor_core_gen", "Tensor cores (generation)"),
    ("tdp_w", "TDP (W)"),
    ("launch_date", "Launch"),
    ("launch_msrp_usd", "Launch MSRP ($)"),
    ("source", "Source"),
]
# Rows whose figures are derived somewhere: the cell is marked so (see the GPU's notes).
ESTIMATE_MARK = "*"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def gpu_table(cat: Catalog) -> Table:
    """GPUs side by side, one column each: the conversation's first table, with the INT8 TOPS
    and tensor-core generation the plan asked for. A figure marked * is derived, not published
    by the vendor (the source list names rehearsal-estimate; the GPU's notes say how)."""
    table = Table(
        title="GPUs: the planned PC's cards, the alternatives, the cloud stand-ins and the "
        "reference cards (* = derived, see notes)"
    )
    table.add_column("")
    for gpu in cat.gpus.values():
        table.add_column(gpu.name.replace("NVIDIA ", "").replace("GeForce ", ""), justify="right")
    for field, label in GPU_ROWS:
        cells = []
        for g in cat.gpus.values():
            value = getattr(g, field)
            derived = field != "source" and g.source_of(field) == "rehearsal-estimate"
            cells.append(_cell(value) + (ESTIMATE_MARK if derived and value is not None else ""))
        table.add_row(label, *cells)
    return table


def instance_table(cat: Catalog, regions: dict[Cloud, str]) -> Table:
    table = Table(title="Cloud GPU instances (on-demand Linux $/h; spot is read live at deploy)")
    for col in ("Cloud", "Type", "GPU", "VRAM", "vCPU", "RAM GiB", "Local NVMe GB"):
        table.add_column(col, justify="right" if col not in ("Cloud", "Type", "GPU") else "left")
    table.add_column("$/h (profile region)", justify="right")
    table.add_column("$/h elsewhere", justify="left")
    table.add_column("Source")
    for inst in cat.gpu_instances():
        gpu = cat.gpus[inst.gpu or ""]
        here = inst.price_in(regions[inst.cloud])
        others = ", ".join(f"{p.region} {p.usd_per_hour:g}" for p in inst.prices if p is not here)
        table.add_row(
            inst.cloud,
            inst.key,
            gpu.key,
            f"{gpu.vram_gb * inst.gpu_count:g} GB",
            str(inst.vcpu),
            f"{inst.ram_gib:g}",
            _cell(inst.local_nvme_gb),
            f"{here.usd_per_hour:.3f} ({here.region})" if here else "—",
            others or "—",
            here.source if here else (inst.prices[0].source if inst.prices else inst.source),
        )
    return table


def print_catalog(console: Console, cat: Catalog, pc_gpu: str, regions: dict[Cloud, str]) -> None:
    console.print(gpu_table(cat))
    console.print(instance_table(cat, regions))
    console.print(f"[bold]Closeness to the planned PC ({cat.gpus[pc_gpu].name})[/bold]")
    for item in closeness(cat, pc_gpu, regions):
        console.print(f"  • {item.summary()}")
    sources = Table(
        title="Sources (every figure above names one)",
        title_justify="left",
        box=None,
        show_header=False,
        style="dim",
    )
    for src in cat.sources.values():
        sources.add_row(src.key, str(src.as_of), escape(src.title))
    console.print(sources)


def catalog_json(cat: Catalog, pc_gpu: str, regions: dict[Cloud, str]) -> dict[str, Any]:
    def dump(entry: Any) -> dict[str, Any]:
        return entry.model_dump(mode="json")

    return {
        "pc_gpu": pc_gpu,
        "regions": regions,
        "gpus": [dump(g) for g in cat.gpus.values()],
        "instances": [dump(i) for i in cat.instances.values()],
        "cpus": [dump(c) for c in cat.cpus.values()],
        "ram": [dump(r) for r in cat.ram.values()],
        "images": [dump(i) for i in cat.images.values()],
        "models": [dump(m) for m in cat.models.values()],
        "unavailable": [dump(u) for u in cat.unavailable.values()],
        "calibration": [dump(p) for p in cat.calibration],
        "closeness": [c.as_dict() for c in closeness(cat, pc_gpu, regions)],
        "sources": {k: dump(s) for k, s in cat.sources.items()},
    }


def aws_machines(profile: Profile, cat: Catalog) -> list[dict[str, Any]]:
    """The AWS stand-ins, each in its own region ("TYPE@REGION"), with the worst case from the
    one cost formula (rig.cost via rig.aws.pricing: compute at its cap + gp3 disk + IPv4)."""
    from rig.aws import pricing  # no boto3: the catalog's rates only

    out = []
    hours = profile.autostop.max_hours
    for placement in profile.aws.placements():
        inst = cat.instances[placement.instance_type]
        gpu = cat.gpus[inst.gpu or ""]
        od, source = pricing.on_demand_price(cat, placement)
        worst, rates = pricing.worst_case(profile.aws, cat, placement, hours)
        out.append(
            {
                "type": placement.instance_type,
                "region": placement.region,
                "gpu": gpu.key,
                "vram_gb": gpu.vram_gb * inst.gpu_count,
                "vcpu": inst.vcpu,
                "ram_gib": inst.ram_gib,
                "on_demand_usd_per_hour": od,
                "price_source": source if od is not None else None,
                "disk_usd_per_hour": round(rates.disk, 4) if rates else None,
                "public_ipv4_usd_per_hour": rates.public_ip if rates else None,
                "worst_case_usd": worst,
                # Why no worst case: a rate the catalog lacks is never guessed (rig.aws.pricing)
                "price_unknown": pricing.unknown_text(profile.aws, cat, placement)
                if worst is None
                else None,
                "worst_case_floor_usd": _worst_floor(profile, cat, "aws", placement)
                if worst is None
                else None,
            }
        )
    return out


def _worst_floor(profile: Profile, cat: Catalog, cloud: str, what: Any) -> float | None:
    """The known part of a worst case a rate is missing from (compute at its cap + the IP), as
    `rig plan` shows it: the same stand-in, the same formula (rig.cost)."""
    from rig.cost import worst_case_usd
    from rig.standin import aws_standin, azure_standin

    s = (
        aws_standin(profile, cat, what.instance_type, what.region)
        if cloud == "aws"
        else azure_standin(profile, cat, what)
    )
    return worst_case_usd(s.worst_known, s.worst_h) if s.worst_known else None


def resolved(profile: Profile, cat: Catalog) -> dict[str, Any]:
    """What the profile's keys mean once looked up in the catalog."""
    pc = cat.gpus[profile.pc.gpu]
    ram = cat.ram[profile.pc.ram]

    def machines(cloud: str, names: list[str], region: str, section: Any) -> list[dict[str, Any]]:
        # The worst case from the one formula (rig.cost via rig.azure.pricing): compute at its
        # cap + OS disk + public IP, each from a figure published for this very region.
        from rig.azure import pricing as az_pricing

        out = []
        for name in names:
            inst = cat.instances[name]
            gpu = cat.gpus[inst.gpu or ""]
            price = inst.price_in(region)
            unknown = az_pricing.offline_unknown_text(profile, name)
            rates = None if unknown else az_pricing.catalog_cost(profile, name).worst
            out.append(
                {
                    "type": name,
                    "gpu": gpu.key,
                    "vram_gb": gpu.vram_gb * inst.gpu_count,
                    "vcpu": inst.vcpu,
                    "ram_gib": inst.ram_gib,
                    "on_demand_usd_per_hour": price.usd_per_hour if price else None,
                    "price_source": price.source if price else None,
                    "disk_usd_per_hour": round(rates.disk, 4) if rates else None,
                    "public_ipv4_usd_per_hour": rates.public_ip if rates else None,
                    "worst_case_usd": az_pricing.offline_worst_case_usd(profile, name),
                    "price_unknown": unknown,
                    "worst_case_floor_usd": _worst_floor(profile, cat, "azure", name)
                    if unknown
                    else None,
                }
            )
        return out

    net = profile.access.network()
    return {
        "pc": {
            "gpu": pc.name,
            "vram_gb": pc.vram_gb,
            "bandwidth_gbs": pc.bandwidth_gbs,
            "cpu": cat.cpus[profile.pc.cpu].name,
            "ram": f"{profile.pc.ram_gb} GB {ram.name}",
            "ram_bandwidth_gbs": ram.bandwidth_gbs,
        },
        "aws": aws_machines(profile, cat) if profile.aws.enabled else [],
        "azure": machines("azure", profile.azure.vm_sizes, profile.azure.location, profile.azure)
        if profile.azure.enabled
        else [],
        "ssh_source": str(net)
        if net is not None
        else "auto: your public IP /32, looked up at deploy time",
        "models_download_gb": round(
            sum(cat.models[m].download_gb for m in profile.bench.models), 1
        ),
    }


def print_profile(console: Console, profile: Profile, cat: Catalog, notes: list[str]) -> None:
    console.print(f"[green]{profile.path}: valid[/green]")
    for name, values in profile.as_toml_dict().items():
        table = Table(
            title=escape(f"[{name}]"),
            title_justify="left",
            show_header=False,
            box=None,
            title_style="bold",
        )
        table.add_column(style="cyan")
        table.add_column()
        for key, value in values.items():
            table.add_row(key, escape(toml_literal(value)))
        console.print(table)
    res = resolved(profile, cat)
    pc = res["pc"]
    console.print(
        f"[bold]Planned PC[/bold]: {pc['gpu']} ({pc['vram_gb']:g} GB, "
        f"{pc['bandwidth_gbs']:g} GB/s), {pc['cpu']}, {pc['ram']} "
        f"({pc['ram_bandwidth_gbs']:g} GB/s)"
    )
    for cloud in ("aws", "azure"):
        for m in res[cloud]:
            price = m["on_demand_usd_per_hour"]
            cost = "price: looked up live at deploy"
            if price:
                extras = ""
                if m.get("disk_usd_per_hour") is not None:
                    side = m["disk_usd_per_hour"] + m["public_ipv4_usd_per_hour"]
                    extras = f" + disk and IPv4 ${side:.3f}/h"
                worst = (
                    f"at most ${m['worst_case_usd']:.2f} before max_hours stops it"
                    if m.get("worst_case_usd") is not None
                    else m.get("price_unknown") or "worst case: price unknown; live price needed"
                )
                if m.get("worst_case_usd") is None and m.get("worst_case_floor_usd") is not None:
                    worst = f"worst case at least ${m['worst_case_floor_usd']:.2f} + {worst}"
                cost = f"on-demand ${price:.3f}/h ({m['price_source']}){extras}; {worst}"
            where = f" in {m['region']}" if m.get("region") else ""
            console.print(
                f"[bold]{cloud}[/bold] {m['type']}{where}: {m['gpu']} {m['vram_gb']:g} GB, "
                f"{m['vcpu']} vCPU, {m['ram_gib']:g} GiB, {cost}",
                highlight=False,
            )
    console.print(
        f"[bold]SSH from[/bold]: {res['ssh_source']}; models to pull: "
        f"{res['models_download_gb']:g} GB"
    )
    for note in notes:
        console.print(f"[yellow]note[/yellow] {note}")
