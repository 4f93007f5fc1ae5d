"""How close each cloud stand-in is to the planned PC, and what it costs. Lives once, here:
the catalog command, the check command and both deploys print from it."""

from __future__ import annotations

from dataclasses import dataclass

from rig.catalog import Catalog
from rig.catalog.schema import Cloud, Gpu, Instance, Price


@dataclass(frozen=True)
class Offer:
    instance: Instance
    price: Price
    vram_gb_per_gpu: float

    @property
    def usd_per_vram_gb_hour(self) -> float:
        return self.price.usd_per_hour / (self.instance.gpu_count * self.vram_gb_per_gpu)


GIB = 2**30 / 1e9  # GB per GiB


def decode_efficiency(cat: Catalog, gpu_key: str) -> float | None:
    """The highest share of the bandwidth bound a published decode speed reached on this GPU.

    Decode reads every weight once per token, so tok/s x model bytes / bandwidth is the share
    of peak bandwidth achieved. The best run, not the mean: the points come from different
    engines and builds, and a slow engine says little about the card. None without a usable
    point. (The projection itself uses bench/speed.py's fitted model, not this figure.)
    """
    bandwidth = cat.gpus[gpu_key].bandwidth_gbs
    shares = [
        p.tok_s * p.model_gib * GIB / bandwidth
        for p in cat.calibration
        if p.gpu == gpu_key and p.use
    ]
    return max(shares) if shares else None


@dataclass(frozen=True)
class Closeness:
    gpu: Gpu
    pc: Gpu
    offer: Offer | None  # cheapest listed price for an instance with this GPU
    efficiency: float | None = None  # published decode share of bandwidth, this GPU
    pc_efficiency: float | None = None

    @property
    def vram_delta_gb(self) -> float:
        return self.gpu.vram_gb - self.pc.vram_gb

    @property
    def bandwidth_ratio(self) -> float:
        return self.gpu.bandwidth_gbs / self.pc.bandwidth_gbs

    def summary(self) -> str:
        g = self.gpu
        if self.vram_delta_gb > 0:
            vram = (
                f"{self.vram_delta_gb:+g} GB VRAM vs the PC: mirrored by reserving "
                f"{self.vram_delta_gb:g} GB (OLLAMA_GPU_OVERHEAD)"
            )
        elif self.vram_delta_gb < 0:
            vram = f"{self.vram_delta_gb:g} GB VRAM vs the PC: models that fit the PC may spill"
        else:
            vram = "same VRAM as the PC"
        bw = f"{self.bandwidth_ratio:.2f}x the PC's memory bandwidth"
        if self.efficiency is not None and self.pc_efficiency is not None:
            bw += (
                f" (published decode reaches up to {self.efficiency:.0%} of it vs "
                f"{self.pc_efficiency:.0%} on the PC's card)"
            )
        cost = "no listed price"
        if self.offer is not None:
            o = self.offer
            cost = (
                f"from ${o.price.usd_per_hour:.3f}/h ({o.instance.key}, {o.price.region}) = "
                f"${o.usd_per_vram_gb_hour:.4f} per GB VRAM per hour"
            )
        return f"{g.name} ({g.vram_gb:g} GB, {g.bandwidth_gbs:g} GB/s): {vram}; {bw}; {cost}"

    def as_dict(self) -> dict[str, object]:
        offer = None
        if self.offer is not None:
            offer = {
                "instance": self.offer.instance.key,
                "cloud": self.offer.instance.cloud,
                "region": self.offer.price.region,
                "usd_per_hour": self.offer.price.usd_per_hour,
                "usd_per_vram_gb_hour": round(self.offer.usd_per_vram_gb_hour, 5),
                "source": self.offer.price.source,
            }
        return {
            "gpu": self.gpu.key,
            "pc_gpu": self.pc.key,
            "vram_delta_gb": self.vram_delta_gb,
            "bandwidth_ratio": round(self.bandwidth_ratio, 3),
            "decode_efficiency": None if self.efficiency is None else round(self.efficiency, 3),
            "pc_decode_efficiency": None
            if self.pc_efficiency is None
            else round(self.pc_efficiency, 3),
            "cheapest": offer,
            "summary": self.summary(),
        }


def cheapest_offer(
    cat: Catalog, gpu_key: str, regions: dict[Cloud, str] | None = None
) -> Offer | None:
    """Cheapest listed on-demand price among instances carrying `gpu_key`.

    With `regions`, prices in the profile's region of each cloud win; other regions are used
    only when no instance with this GPU is priced there.
    """
    vram = cat.gpus[gpu_key].vram_gb
    offers = [
        Offer(inst, price, vram)
        for inst in cat.gpu_instances()
        if inst.gpu == gpu_key
        for price in inst.prices
    ]
    if regions:
        local = [o for o in offers if regions.get(o.instance.cloud) == o.price.region]
        offers = local or offers
    return min(offers, key=lambda o: o.price.usd_per_hour, default=None)


def closeness(
    cat: Catalog, pc_gpu: str, regions: dict[Cloud, str] | None = None
) -> list[Closeness]:
    pc = cat.gpus[pc_gpu]
    pc_eff = decode_efficiency(cat, pc_gpu)
    return [
        Closeness(gpu, pc, cheapest_offer(cat, key, regions), decode_efficiency(cat, key), pc_eff)
        for key, gpu in cat.gpus.items()
        if gpu.role == "cloud"
    ]
