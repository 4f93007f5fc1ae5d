"""The catalog: GPUs, instances, models, the PC's parts and calibration points, each cited.

Data lives in the TOML files beside this module; `load_catalog()` validates them once and
returns an immutable view. Every number names a source from sources.toml (see `Cited`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rig.catalog.schema import (
    AzurePrices,
    CalibrationPoint,
    Cloud,
    Cpu,
    Gpu,
    Image,
    Instance,
    Model,
    Ram,
    Regions,
    Source,
    Unavailable,
)

DATA_DIR = Path(__file__).parent

__all__ = ["Catalog", "CatalogError", "load_catalog"]


class CatalogError(Exception):
    """The catalog's own data is inconsistent (a bug in the data files, not in user input)."""


@dataclass(frozen=True)
class Catalog:
    sources: dict[str, Source]
    gpus: dict[str, Gpu]
    instances: dict[str, Instance]  # keyed by type / size name; names never clash across clouds
    cpus: dict[str, Cpu]
    ram: dict[str, Ram]
    images: dict[tuple[Cloud, str], Image]
    regions: dict[Cloud, Regions]
    models: dict[str, Model]
    unavailable: dict[str, Unavailable]
    calibration: list[CalibrationPoint]
    azure_prices: AzurePrices  # OS disk tiers and public IPv4 (what bills besides compute)

    def instances_of(self, cloud: Cloud) -> list[Instance]:
        return [i for i in self.instances.values() if i.cloud == cloud]

    def gpu_instances(self, cloud: Cloud | None = None) -> list[Instance]:
        return [i for i in self.instances.values() if i.gpu and (cloud is None or i.cloud == cloud)]

    def images_of(self, cloud: Cloud) -> dict[str, Image]:
        return {k: v for (c, k), v in self.images.items() if c == cloud}

    def cited_sources(self) -> set[str]:
        """Every source key the data refers to (for the integrity check)."""
        keys: set[str] = set()
        cited = [
            *self.gpus.values(),
            *self.instances.values(),
            *self.cpus.values(),
            *self.ram.values(),
            *self.images.values(),
            *self.models.values(),
        ]
        for entry in cited:
            keys.add(entry.source)
            keys.update(entry.field_sources.values())
        for inst in self.instances.values():
            keys.update(p.source for p in inst.prices)
        keys.update(p.source for p in self.calibration)
        keys.update(r.source for r in self.regions.values())
        keys.update(self.azure_prices.sources())
        return keys


def _read(name: str) -> dict:
    with (DATA_DIR / name).open("rb") as fh:
        return tomllib.load(fh)


def _check(cat: Catalog) -> None:
    problems: list[str] = []
    missing = cat.cited_sources() - set(cat.sources)
    problems += [f"unknown source {key!r}" for key in sorted(missing)]
    for inst in cat.instances.values():
        if inst.gpu and inst.gpu not in cat.gpus:
            problems.append(f"{inst.key}: unknown gpu {inst.gpu!r}")
        if inst.gpu and inst.gpu_count < 1:
            problems.append(f"{inst.key}: gpu set but gpu_count < 1")
        known_regions = set(cat.regions[inst.cloud].names)
        for region in inst.regions:
            if region not in known_regions:
                problems.append(f"{inst.key}: unknown region {region!r}")
        for price in inst.prices:
            if price.region not in inst.regions:
                problems.append(f"{inst.key}: priced in {price.region} but not offered there")
    for point in cat.calibration:
        if point.gpu not in cat.gpus:
            problems.append(f"calibration: unknown gpu {point.gpu!r}")
    for tag, gone in cat.unavailable.items():
        if gone.replacement not in cat.models:
            problems.append(f"unavailable {tag}: replacement {gone.replacement!r} not in models")
        if tag in cat.models:
            problems.append(f"{tag} is both a model and unavailable")
    if problems:
        raise CatalogError("catalog data is inconsistent: " + "; ".join(problems))


@cache
def load_catalog() -> Catalog:
    sources = {k: Source(key=k, **v) for k, v in _read("sources.toml").items()}
    gpus = {k: Gpu(key=k, **v) for k, v in _read("gpus.toml").items()}
    instances: dict[str, Instance] = {}
    for cloud, entries in _read("instances.toml").items():
        for key, entry in entries.items():
            if key in instances:
                raise CatalogError(f"instance {key} listed twice")
            instances[key] = Instance(cloud=cloud, key=key, **entry)
    hardware = _read("hardware.toml")
    images = {
        (cloud, key): Image(cloud=cloud, key=key, **entry)
        for cloud, entries in _read("images.toml").items()
        for key, entry in entries.items()
    }
    models_doc = _read("models.toml")
    cat = Catalog(
        sources=sources,
        gpus=gpus,
        instances=instances,
        cpus={k: Cpu(key=k, **v) for k, v in hardware["cpus"].items()},
        ram={k: Ram(key=k, **v) for k, v in hardware["ram"].items()},
        images=images,
        regions={c: Regions(**v) for c, v in _read("regions.toml").items()},
        models={k: Model(tag=k, **v) for k, v in models_doc["models"].items()},
        unavailable={k: Unavailable(tag=k, **v) for k, v in models_doc["unavailable"].items()},
        calibration=[CalibrationPoint(**p) for p in _read("calibration.toml")["points"]],
        azure_prices=AzurePrices(**_read("azure_prices.toml")),
    )
    _check(cat)
    return cat
