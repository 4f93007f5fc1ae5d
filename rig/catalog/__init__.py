"""The catalog: GPUs, instances, models, the PC's parts and calibration points, each cited.

Data lives in the TOML files beside this module; `load_catalog()` validates them once and
returns an immutable view. Every number names a source from sources.toml (see `Cited`).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pydantic import ValidationError

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
# The user's own models (`rig models add` writes them): beside rig.toml, kept out of git, so an
# upgrade (git pull, a new release) never overwrites them. RIG_MODELS names another file; an
# empty RIG_MODELS means none (the test suite sets that, to see only the shipped catalog).
USER_MODELS = "rig.models.toml"

__all__ = ["Catalog", "CatalogError", "load_catalog", "user_models_path"]


def user_models_path() -> Path | None:
    value = os.environ.get("RIG_MODELS")
    if value is None:
        return Path(USER_MODELS)
    return Path(value) if value else None


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
    user_models: frozenset[str] = field(default_factory=frozenset)  # tags from the user's file

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
        for regions in self.regions.values():  # per-region disk / IPv4 rates (AWS)
            keys.update(rate.source for rate in regions.rates.values())
            if regions.gp3_free is not None:
                keys.add(regions.gp3_free.source)
                keys.add(regions.gp3_free.hours_source)
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
    for cloud, regions in cat.regions.items():
        for region in regions.rates:
            if region not in regions.names:
                problems.append(f"{cloud} rates: unknown region {region!r}")
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


def read_user_models(path: Path) -> tuple[dict[str, Source], dict[str, Model]]:
    """The user's models file; ProfileError (one line per problem, naming the entry) if bad."""
    from rig.problems import Problem, ProfileError, path_of

    def fail(message: str) -> ProfileError:
        return ProfileError(str(path), [Problem("", message)])

    if path.is_dir():
        raise fail(
            "is a directory, not a models file — move it away, or point RIG_MODELS / --file "
            "at a TOML file"
        )
    try:
        # utf-8-sig: a file saved "UTF-8 with BOM" reads the same as one without
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"is not valid TOML ({exc}) — fix the line named there") from None
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text — save it as UTF-8, or run rig models add again") from None
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc}) — check its permissions") from None
    problems: list[Problem] = []
    sources: dict[str, Source] = {}
    models: dict[str, Model] = {}
    unknown = set(doc) - {"sources", "models"}
    problems += [
        Problem(key, 'is not a section of a models file — use [models."TAG"] and [sources.KEY]')
        for key in sorted(unknown)
    ]
    for kind, table, cls, key_field in (
        ("sources", sources, Source, "key"),
        ("models", models, Model, "tag"),
    ):
        section = doc.get(kind) or {}
        if not isinstance(section, dict):
            problems.append(
                Problem(kind, f"must be a section of tables — use [{kind}.KEY] headers")
            )
            continue
        for key, entry in section.items():
            try:
                table[key] = cls(**{key_field: key, **entry})
            except (ValidationError, TypeError) as exc:
                errors = exc.errors() if isinstance(exc, ValidationError) else []
                for err in errors[:3] or [{"loc": (), "msg": str(exc)}]:
                    where = path_of((kind, key, *err["loc"]))
                    # The bad value first, as rig.toml's problems say it (not for a missing one).
                    shown = err.get("type") != "missing" and err["loc"] and "input" in err
                    value = f"{err['input']!r}: " if shown else ""
                    problems.append(
                        Problem(where, f"{value}{err['msg']} — fix it, or run rig models add again")
                    )
    if problems:
        raise ProfileError(str(path), problems)
    return sources, models


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
    user = user_models_path()
    if user is not None and (user.is_file() or user.is_dir()):
        sources, models = read_user_models(user)
        # The user's entry for a tag wins: it describes the very file they run.
        cat = Catalog(
            **{
                **cat.__dict__,
                "sources": {**cat.sources, **sources},
                "models": {**cat.models, **models},
                "unavailable": {k: v for k, v in cat.unavailable.items() if k not in models},
                "user_models": frozenset(models),
            }
        )
        missing = {m.source for m in models.values()} | {
            s for m in models.values() for s in m.field_sources.values()
        }
        missing -= set(cat.sources)
        if missing:
            from rig.problems import Problem, ProfileError

            raise ProfileError(
                str(user),
                [
                    Problem(f"models.{tag}.source", f"{m.source!r} is not a known source")
                    for tag, m in models.items()
                    if m.source in missing
                ]
                or [Problem("", f"unknown sources {sorted(missing)} — add them under [sources]")],
            )
    return cat
