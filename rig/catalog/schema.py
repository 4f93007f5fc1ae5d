"""Typed shape of the catalog data files; loading validates every entry and its sources."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Cloud = Literal["aws", "azure"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    key: str
    title: str
    url: str
    as_of: dt.date


class Cited(_Strict):
    """An entry whose numbers come from `source`, or from `field_sources[field]` where given."""

    source: str
    field_sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _field_sources_name_fields(self) -> Cited:
        unknown = set(self.field_sources) - set(type(self).model_fields)
        if unknown:
            raise ValueError(f"field_sources names unknown fields: {sorted(unknown)}")
        return self

    def source_of(self, field: str) -> str:
        return self.field_sources.get(field, self.source)


class Gpu(Cited):
    key: str
    name: str
    role: Literal["planned", "cloud", "reference"]
    arch: Literal["turing", "ampere", "ada", "hopper", "blackwell"]
    chip: str
    compute_capability: str
    vram_gb: float
    usable_mib: int = Field(gt=0)  # nvidia-smi memory.total (ECC cards report less)
    memory_type: str
    bus_width_bits: int
    bandwidth_gbs: float
    cuda_cores: int | None = None
    fp32_tflops: float | None = None
    tensor_fp16_tflops: float | None = None
    tdp_w: float | None = None
    notes: str = ""


class Price(_Strict):
    region: str
    usd_per_hour: float = Field(gt=0)
    source: str


class Instance(Cited):
    cloud: Cloud
    key: str
    gpu: str | None = None
    gpu_count: int = 0
    vcpu: int
    ram_gib: float
    local_nvme_gb: float | None = None
    host_cpu: str = ""
    regions: list[str]
    prices: list[Price] = Field(default_factory=list)

    def price_in(self, region: str) -> Price | None:
        return next((p for p in self.prices if p.region == region), None)

    def cheapest_price(self) -> Price | None:
        return min(self.prices, key=lambda p: p.usd_per_hour, default=None)


class Cpu(Cited):
    key: str
    name: str
    cores: int
    threads: int
    base_ghz: float
    boost_ghz: float
    tdp_w: float
    memory: str


class Ram(Cited):
    key: str
    name: str
    mts: int
    channels: int
    bandwidth_gbs: float

    @model_validator(mode="after")
    def _bandwidth_is_arithmetic(self) -> Ram:
        expected = self.mts * 8 * self.channels / 1000
        if abs(expected - self.bandwidth_gbs) > 0.05:
            raise ValueError(f"{self.key}: bandwidth_gbs {self.bandwidth_gbs} != {expected}")
        return self


class Image(Cited):
    cloud: Cloud
    key: str
    name: str
    ssh_user: str
    driver_preinstalled: bool
    os_disk_gb: float
    ssm_parameter: str = ""
    publisher: str = ""
    offer: str = ""
    sku: str = ""
    notes: str = ""


class Model(Cited):
    tag: str
    name: str
    family: str
    categories: list[Literal["general", "ja", "code", "long-context"]]
    parameters_b: float
    quantization: str
    download_gb: float
    context_length: int
    block_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    remark: str = ""


class Unavailable(_Strict):
    tag: str
    reason: str
    replacement: str


class CalibrationPoint(_Strict):
    gpu: str
    engine: str
    model: str
    model_gib: float
    test: str
    tok_s: float
    use: bool
    source: str
    notes: str = ""


class Regions(_Strict):
    source: str
    names: list[str]
