"""Typed shape of the catalog data files; loading validates every entry and its sources."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Cloud = Literal["aws", "azure"]


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML reads nan and inf as floats; no catalog figure is either, and a
    # user's models file (rig models add, or by hand) goes through the same schema.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


TensorGen = Literal[2, 3, 4, 5]


class Gpu(Cited):
    """A graphics card: launch specs, the usable VRAM the driver reports, and for consumer
    cards the launch price. Tensor and INT8 figures are dense unless the field says sparse
    (2:4 structured sparsity, which doubles the peak where the architecture supports it)."""

    key: str
    name: str
    # planned: the PC being considered; alternative: a card the user might buy instead;
    # cloud: a rented stand-in; reference: measured by others, anchors the speed calibration
    role: Literal["planned", "alternative", "cloud", "reference"]
    segment: Literal["consumer", "datacenter"]
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
    tensor_core_gen: TensorGen
    int8_tops_dense: float | None = None
    int8_tops_sparse: float | None = None  # None: not published or no sparsity (say which)
    tdp_w: float | None = None
    launch_date: dt.date | None = None
    launch_msrp_usd: float | None = Field(default=None, gt=0)
    notes: str = ""

    @model_validator(mode="after")
    def _consumer_cards_have_a_price(self) -> Gpu:
        if self.segment == "consumer" and (self.launch_msrp_usd is None or not self.launch_date):
            raise ValueError(f"{self.key}: a consumer card needs launch_msrp_usd and launch_date")
        if self.usable_mib > self.vram_gb * 1024 + 64:
            raise ValueError(f"{self.key}: usable_mib {self.usable_mib} exceeds {self.vram_gb} GB")
        return self

    @property
    def usable_gib(self) -> float:
        return self.usable_mib / 1024

    @property
    def hbm(self) -> bool:
        return "HBM" in self.memory_type.upper()


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
    # EBS bandwidth of the instance (AWS): what a gp3 volume's throughput is capped at. Burst
    # lasts 30 minutes a day on the smaller sizes (EC2 User Guide, EBS-optimized instances).
    ebs_baseline_mbs: float | None = None
    ebs_burst_mbs: float | None = None

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
    # Sizes and shapes are positive: a user's entry with download_gb = -1 or 0 layers would
    # make every fit and pull estimate nonsense.
    parameters_b: float = Field(gt=0)
    quantization: str
    download_gb: float = Field(gt=0)
    context_length: int = Field(gt=0)
    block_count: int = Field(gt=0)
    head_count_kv: int = Field(gt=0)
    key_length: int = Field(gt=0)
    value_length: int = Field(gt=0)
    # Mixture of experts: the parameters one token runs through (shared layers + the routed
    # experts). Decode reads only those, so its speed follows these bytes, not the file size.
    active_parameters_b: float | None = Field(default=None, gt=0)
    remark: str = ""

    @property
    def read_fraction(self) -> float:
        """Share of the weights one decoded token reads (1 for a dense model)."""
        return (
            min(1.0, self.active_parameters_b / self.parameters_b)
            if self.active_parameters_b
            else 1.0
        )


class Unavailable(_Strict):
    tag: str
    reason: str
    replacement: str


Engine = Literal["llama-bench", "llama-server", "llama-cli", "ollama", "localscore"]


class CalibrationPoint(_Strict):
    """One published single-stream decode speed. `series` groups the points one publisher
    measured in one campaign (same engine build, host and method): the back-test projects
    between the GPUs of a series, as the report projects between a cloud VM and the PC."""

    gpu: str
    engine: Engine
    build: str  # engine version or build as published ("" when the source does not say)
    measured: str = Field(pattern=r"^\d{4}-\d{2}$")  # month of the measurement (YYYY-MM)
    model: str
    quant: str
    model_gib: float = Field(gt=0)  # weights read per generated token, GiB
    test: str
    tok_s: float = Field(gt=0)
    use: bool
    series: str
    source: str
    notes: str = ""

    @property
    def model_bytes(self) -> int:
        return round(self.model_gib * 2**30)


class RegionRates(_Strict):
    """What a VM costs in one region besides its compute (USD): the gp3 disk and the public
    IPv4 address. Cited per region: storage prices differ between regions. A rate nobody has
    checked is left out (None), never estimated: the deploy then reads it live (AWS Price List
    API) or refuses, and `rig check` says "price unknown; live price needed"."""

    gp3_gb_month: float | None = Field(None, gt=0)
    gp3_iops_month: float | None = Field(None, gt=0)  # per provisioned IOPS-month above 3000
    gp3_mbs_month: float | None = Field(None, gt=0)  # per provisioned MiB/s-month above 125
    public_ipv4_hour: float | None = Field(None, gt=0)
    source: str


class Gp3Free(_Strict):
    """gp3's free baseline (every region), and the hours a month's price is spread over: AWS
    bills a GB-month as the month's own hours (720 in a 30-day month, 744 in a 31-day one), so
    the shortest month (672 h) gives the highest hourly rate: the bound every figure uses."""

    iops: int
    mbs: int
    hours_per_month: float = Field(gt=0)
    source: str
    hours_source: str


class Regions(_Strict):
    source: str
    names: list[str]
    rates: dict[str, RegionRates] = Field(default_factory=dict)
    gp3_free: Gp3Free | None = None


class AzureDiskTier(_Strict):
    name: str  # billing tier, e.g. "P15": the provisioned size rounds up to the next tier
    size_gib: int
    # Throughput per disk in MB/s as Microsoft's size tables give it (the same documents as the
    # sizes): `mbs` always, `burst_mbs` for the first `burst_min` minutes where a tier bursts
    # by credits (Premium SSD P1-P20: 170 MB/s for 30 min). None: not published here.
    mbs: float | None = Field(default=None, gt=0)
    burst_mbs: float | None = Field(default=None, gt=0)
    burst_min: float | None = Field(default=None, gt=0)


class PublishedPrice(_Strict):
    """One figure as published for one region, with where it was published."""

    usd_per_month: float = Field(gt=0)
    source: str


class AzureDiskPrices(_Strict):
    product: str  # the retail prices API's productName for these meters
    sizes_source: str
    tiers: list[AzureDiskTier]
    # region (armRegionName) -> tier name -> published figure. Only figures a source gives for
    # that region: a missing one means "price unknown; live price needed", never a neighbour's.
    prices: dict[str, dict[str, PublishedPrice]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tiers_ascend(self) -> AzureDiskPrices:
        sizes = [t.size_gib for t in self.tiers]
        if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"{self.product}: tiers must ascend by size_gib")
        names = {t.name for t in self.tiers}
        for region, figures in self.prices.items():
            unknown = set(figures) - names
            if unknown:
                raise ValueError(f"{self.product} {region}: unknown tiers {sorted(unknown)}")
        return self

    def sources(self) -> set[str]:
        return {self.sizes_source} | {
            p.source for figures in self.prices.values() for p in figures.values()
        }


class PublishedHourly(_Strict):
    usd_per_hour: float = Field(gt=0)
    source: str


class AzurePrices(_Strict):
    """What an Azure rehearsal VM costs besides compute: its OS disk and static public IPv4."""

    hours_per_month: float = Field(gt=0)
    hours_source: str
    public_ip: dict[str, PublishedHourly]  # region -> Standard static IPv4 $/h as published
    disks: dict[str, AzureDiskPrices]

    def sources(self) -> set[str]:
        keys = {self.hours_source} | {p.source for p in self.public_ip.values()}
        for disk in self.disks.values():
            keys |= disk.sources()
        return keys
