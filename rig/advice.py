"""Advisories: things in a valid profile worth knowing before paying for anything."""

from __future__ import annotations

from rig.catalog import Catalog
from rig.profile import Profile


def advisories(profile: Profile, cat: Catalog) -> list[str]:
    out: list[str] = []
    aws_places = [(p.instance_type, p.region) for p in profile.aws.placements()]
    clouds = (
        ("aws", profile.aws, aws_places, "instance_types"),
        (
            "azure",
            profile.azure,
            [(n, profile.azure.location) for n in profile.azure.vm_sizes],
            "vm_sizes",
        ),
    )
    for cloud, section, places, field in clouds:
        if not section.enabled:
            continue
        for i, (name, region) in enumerate(places):
            price = cat.instances[name].price_in(region)
            path = f"{cloud}.{field}[{i}]"
            if price is None:
                out.append(
                    f"{path}: no catalog price for {name} in {region} — the deploy "
                    "preflight looks it up live before asking to continue"
                )
            elif (
                section.spot
                and isinstance(section.spot_max_price, float | int)
                and (section.spot_max_price > price.usd_per_hour)
            ):
                out.append(
                    f"{cloud}.spot_max_price: {section.spot_max_price:g} is above "
                    f"{name}'s on-demand ${price.usd_per_hour:.3f}/h in {region} — "
                    "spot at that cap can cost more than on-demand"
                )
    out += profile.aws.notes(cat)  # e.g. disk throughput the instance type cannot use
    if profile.access.allow_open_ssh:
        out.append(
            "access.allow_open_ssh: true — SSH may be opened wider than your own address;"
            " keep ssh_source as narrow as you can"
        )
    pc = cat.gpus[profile.pc.gpu]
    if pc.role != "planned":
        out.append(
            f"pc.gpu: {pc.key} is a {pc.role} card in the catalog, not one of the planned "
            "PC cards — projections to it rest on fewer calibration points"
        )
    for i, tag in enumerate(profile.bench.models):
        model = cat.models[tag]
        if model.download_gb > pc.vram_gb:
            where = "the CPU" if model.download_gb < pc.vram_gb + profile.pc.ram_gb else "disk"
            out.append(
                f"bench.models[{i}]: {tag} ({model.download_gb:g} GB) is larger than the "
                f"PC's {pc.vram_gb:g} GB VRAM — part of it will run on {where}, slowly"
            )
    return out
