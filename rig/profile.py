"""The profile: rig.toml loaded, type-checked (pydantic) and checked against the catalog.

Each section is validated on its own so that one run reports every problem, each as one line
naming the field path, the bad value and the fix. Nothing here touches a cloud: "auto" SSH
sources are resolved at deploy time.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rig.catalog import Catalog, load_catalog
from rig.problems import Problem, ProfileError, known, path_of, show
from rig.version import RIG

DEFAULT_PROFILE = Path("rig.toml")
# bench.repetitions and `bench run --repetitions`: one range for both (20 measured requests per
# case already bound a mean well; more only spends cloud time).
REPETITIONS_RANGE = (1, 20)
WORKLOADS = ("chat-en", "chat-ja", "code", "long-context")
DEFAULT_MODELS = [
    "llama3:8b",
    "qwen2:7b",
    "gemma:7b",
    "hf.co/elyza/Llama-3-ELYZA-JP-8B-GGUF:Q4_K_M",
    "deepseek-coder-v2:16b",
    "codellama:13b-instruct-q4_K_M",
    "mixtral:8x7b-instruct-v0.1-q4_K_M",
    "phi3:mini",
    "phi3:medium",
    "phi3:3.8b-mini-128k-instruct-q4_K_M",
]
# Disk the models need beyond their download size (Ollama's manifests, logs, journal), and a
# fixed headroom so that a pull does not fill the root volume to the last byte.
MODEL_DISK_FACTOR = 1.1
DISK_HEADROOM_GB = 10
MAX_HOURS_HARD_LIMIT = 168  # a week: beyond this a rehearsal is a server, not a rehearsal
OPEN_PREFIX = {4: 16, 6: 48}  # an SSH source broader than this is "open" and needs the opt-in
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


class Section(BaseModel):
    """A [section] of rig.toml. Strict: TOML already carries types, so no silent coercion."""

    # allow_inf_nan=False: TOML writes nan and inf as plain floats, and no setting here means
    # either (a max_hours or spot cap of nan passed every range check).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
    name: ClassVar[str]

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        return []

    def p(self, field: str, message: str) -> Problem:
        return Problem(f"{self.name}.{field}", message)


class PcSection(Section):
    name: ClassVar[str] = "pc"
    gpu: str = Field("rtx-4060-ti-16gb", description="The planned card (catalog GPU key).")
    cpu: str = Field("ryzen-7-9700x", description="The planned CPU (catalog key).")
    ram_gb: int = Field(32, description="System memory in GB.")
    ram: str = Field("ddr5-5600", description="Memory kind; sets the CPU-side bandwidth.")

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        out = []
        if self.gpu not in cat.gpus:
            planned = [k for k, g in cat.gpus.items() if g.role == "planned"]
            out.append(
                self.p(
                    "gpu",
                    f"{show(self.gpu)} is not a known GPU — known: "
                    f"{known(cat.gpus)}; the planned cards are {', '.join(planned)} "
                    f"(see {RIG} catalog)",
                )
            )
        if self.cpu not in cat.cpus:
            out.append(
                self.p(
                    "cpu",
                    f"{show(self.cpu)} is not a known CPU — known: "
                    f"{known(cat.cpus)} (add it to rig/catalog/hardware.toml with a source)",
                )
            )
        if self.ram not in cat.ram:
            out.append(
                self.p(
                    "ram", f"{show(self.ram)} is not a known memory kind — known: {known(cat.ram)}"
                )
            )
        if not 4 <= self.ram_gb <= 1024:
            out.append(
                self.p(
                    "ram_gb",
                    f"{self.ram_gb} GB is not a plausible amount of memory — "
                    "write the PC's RAM in GB, e.g. ram_gb = 32",
                )
            )
        return out


def _spot_cap_problem(section: Section, value: float | str) -> Problem | None:
    if value == "":
        return None
    if isinstance(value, str) or not value > 0:
        return section.p(
            "spot_max_price",
            f"{show(value)} is not a positive number — write the "
            'USD per hour cap, e.g. spot_max_price = 0.5, or "" for the on-demand '
            "price as cap",
        )
    if not section.spot:  # type: ignore[attr-defined]
        return section.p(
            "spot_max_price",
            f'{show(value)} is set but spot = false — set spot = true, or spot_max_price = ""',
        )
    return None


def _machine_problems(
    section: Section,
    field: str,
    names: list[str],
    region_field: str,
    region: str,
    cloud: Literal["aws", "azure"],
    cat: Catalog,
) -> list[Problem]:
    what = "instance type" if cloud == "aws" else "VM size"
    out: list[Problem] = []
    if not names:
        example = "g4dn.2xlarge" if cloud == "aws" else "Standard_NC8as_T4_v3"
        return [
            section.p(
                field,
                f"is empty — list at least one {what}, e.g. "
                f'{field} = ["{example}"], or set enabled = false',
            )
        ]
    gpu_names = sorted(i.key for i in cat.gpu_instances(cloud))
    seen: set[str] = set()
    for i, name in enumerate(names):
        path = f"{field}[{i}]"
        inst = cat.instances.get(name)
        if name in seen:
            out.append(section.p(path, f"{show(name)} is listed twice — remove the duplicate"))
        seen.add(name)
        if inst is not None and inst.cloud != cloud:
            other = "[azure] vm_sizes" if cloud == "aws" else "[aws] instance_types"
            out.append(
                section.p(
                    path,
                    f"{show(name)} belongs to {inst.cloud.upper()} — move it "
                    f"to {other}; known here: {known(gpu_names)}",
                )
            )
        elif inst is None:
            out.append(
                section.p(
                    path,
                    f"{show(name)} is not a known {what} — known: "
                    f"{known(gpu_names)} (see {RIG} catalog)",
                )
            )
        elif not inst.gpu:
            out.append(
                section.p(
                    path,
                    f"{show(name)} has no GPU and cannot stand in for the PC — "
                    f"use a GPU {what}: {known(gpu_names)}",
                )
            )
        elif region in cat.regions[cloud].names and region not in inst.regions:
            out.append(
                section.p(
                    path,
                    f"{show(name)} is not offered in {region} (catalog) — "
                    f"pick another {what} or set {section.name}.{region_field} to "
                    f"one of: {known(inst.regions)}",
                )
            )
    return out


def _disk_problem(
    section: Section,
    cat: Catalog,
    cloud: Literal["aws", "azure"],
    image: str,
    disk_gb: int,
    models: list[str],
) -> Problem | None:
    img = cat.images_of(cloud).get(image)
    if img is None:
        return None
    model_gb = sum(cat.models[m].download_gb for m in models if m in cat.models)
    need = img.os_disk_gb + model_gb * MODEL_DISK_FACTOR + DISK_HEADROOM_GB
    if disk_gb >= need:
        return None
    suggest = int(-(-need // 10) * 10)
    return section.p(
        "disk_gb",
        f"{disk_gb} GB is too small for the image and bench.models — "
        f"they need about {need:.0f} GB (image {img.os_disk_gb:g} + models "
        f"{model_gb:.1f} x {MODEL_DISK_FACTOR} + {DISK_HEADROOM_GB} headroom); set "
        f"disk_gb = {suggest} or more, or list fewer models",
    )


@dataclass(frozen=True)
class Placement:
    """One AWS stack: an instance type and the region it runs in."""

    instance_type: str
    region: str

    def __str__(self) -> str:
        return f"{self.instance_type}@{self.region}"


# An instance type may carry its own region: "g6.2xlarge@eu-north-1". Chosen over a separate
# per-type table because the type and where it runs stay in one list entry, in the one list a
# user edits to change the side-by-side (g6/L4 is not offered in eu-west-1, so the plan's three
# candidates need two regions). Entries without "@" run in aws.region.
PLACEMENT_SEPARATOR = "@"
# gp3 limits (botocore 1.44 EC2 model, LaunchTemplateEbsBlockDeviceRequest: Throughput "Valid
# Range: Minimum value of 125. Maximum value of 2,000", Iops "gp3: 3,000 - 80,000 IOPS";
# aws-cdk-lib 2.275 aws-ec2 volume.js: at most 0.25 MiB/s per provisioned IOPS and 500 IOPS per
# GiB of volume size). Throughput is in MiB/s.
GP3_MIN_MBS, GP3_MAX_MBS = 125, 2000
GP3_MIN_IOPS, GP3_MAX_IOPS = 3000, 80000
GP3_MBS_PER_IOPS = 0.25  # gp3: at most 0.25 MiB/s of throughput per provisioned IOPS
GP3_IOPS_PER_GIB = 500  # gp3: at most 500 IOPS per GiB of volume size
# The EC2 User Guide's EBS-optimized table gives instance throughput in MB/s (10^6 bytes: its
# 3,500 Mbps row reads 437.5 MB/s); gp3 throughput is provisioned in MiB/s (2^20 bytes).
MIB = 1024 * 1024


def mb_to_mib(mb_per_s: float) -> int:
    """Whole MiB/s that fit in a MB/s figure (rounded down: more would be paid, never used)."""
    return int(mb_per_s * 1_000_000 // MIB)


def split_placement(entry: str, default_region: str) -> Placement:
    instance_type, sep, region = entry.partition(PLACEMENT_SEPARATOR)
    return Placement(instance_type.strip(), region.strip() if sep else default_region)


def cheapest_region(inst: Any) -> tuple[str, float | None]:
    """Where the catalog offers a type at the lowest on-demand price (else its first region)."""
    price = inst.cheapest_price()
    if price is not None:
        return price.region, price.usd_per_hour
    return (inst.regions[0] if inst.regions else "?"), None


class AwsSection(Section):
    name: ClassVar[str] = "aws"
    enabled: bool = Field(True, description="Deploy to AWS with make deploy-aws.")
    region: str = Field("eu-west-1", description="AWS region.")
    instance_types: list[str] = Field(
        default_factory=lambda: ["g4dn.2xlarge"],
        description='One stack per type (g4dn = T4, g5 = A10G, g6 = L4); "TYPE@REGION" runs '
        'one in another region, e.g. "g6.2xlarge@eu-north-1".',
    )
    spot: bool = Field(True, description="Spot (stoppable, persistent) instead of on-demand.")
    spot_max_price: float | str = Field(
        "", description='USD/h cap for spot; "" = the on-demand price as cap.'
    )
    disk_gb: int = Field(200, description="Encrypted gp3 root volume size in GB.")
    disk_throughput_mbs: int | str = Field(
        "auto",
        description='gp3 MiB/s; "auto" = what the instance type can use (its EBS burst limit).',
    )
    disk_iops: int = Field(
        3000, description="gp3 IOPS (3000 are free; throughput may be at most IOPS / 4)."
    )
    image: str = Field(
        "dlami-ubuntu-22.04",
        description='"dlami-ubuntu-22.04" (driver preinstalled) or "ubuntu-24.04".',
    )

    def placements(self) -> list[Placement]:
        """The stacks to deploy: each type with its own region or aws.region."""
        return [split_placement(e, self.region) for e in self.instance_types]

    def placement_of(self, instance_type: str) -> Placement | None:
        return next((p for p in self.placements() if p.instance_type == instance_type), None)

    def throughput_for(self, instance_type: str, cat: Catalog) -> int:
        """gp3 throughput (MiB/s) for a type: the profile's number, or for "auto" the type's
        EBS burst limit in MiB/s (more is billed and never used), within gp3's range."""
        if isinstance(self.disk_throughput_mbs, int):
            return self.disk_throughput_mbs
        inst = cat.instances.get(instance_type)
        burst = inst.ebs_burst_mbs if inst is not None else None
        if burst is None:
            return GP3_MIN_MBS
        return min(max(mb_to_mib(burst), GP3_MIN_MBS), GP3_MAX_MBS)

    def notes(self, cat: Catalog) -> list[str]:
        """Advisories (not errors): disk throughput that is paid for but cannot be used."""
        out: list[str] = []
        if not self.enabled or not isinstance(self.disk_throughput_mbs, int):
            return out
        for p in self.placements():
            inst = cat.instances.get(p.instance_type)
            if inst is None or inst.ebs_burst_mbs is None:
                continue
            if self.disk_throughput_mbs > mb_to_mib(inst.ebs_burst_mbs):
                out.append(
                    f"aws.disk_throughput_mbs: {self.disk_throughput_mbs} MiB/s is more than "
                    f"{p.instance_type} can use (EBS {inst.ebs_burst_mbs:g} MB/s burst = "
                    f"{mb_to_mib(inst.ebs_burst_mbs)} MiB/s, "
                    f"{inst.ebs_baseline_mbs:g} baseline; source "
                    f"{inst.source_of('ebs_burst_mbs')}) — the rest is billed and unused: set "
                    'disk_throughput_mbs = "auto"'
                )
        return out

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        out: list[Problem] = []
        regions = cat.regions["aws"].names
        if self.region not in regions:
            out.append(
                self.p(
                    "region",
                    f"{show(self.region)} is not an AWS region — known: "
                    f"{known(regions)}; the plan uses eu-west-1 (Ireland)",
                )
            )
        out += self._type_problems(cat)
        if (cap := _spot_cap_problem(self, self.spot_max_price)) is not None:
            out.append(cap)
        images = cat.images_of("aws")
        if self.image not in images:
            out.append(
                self.p(
                    "image",
                    f"{show(self.image)} is not a known AWS image — use one of: {known(images)}",
                )
            )
        if not 8 <= self.disk_gb <= 16384:
            out.append(
                self.p(
                    "disk_gb",
                    f"{self.disk_gb} is outside gp3's 8-16384 GB — "
                    "write the size in GB, e.g. disk_gb = 200",
                )
            )
        out += self._disk_problems(cat)
        return out

    def _disk_problems(self, cat: Catalog) -> list[Problem]:
        out: list[Problem] = []
        mbs = self.disk_throughput_mbs
        if isinstance(mbs, str) and mbs != "auto":
            return [
                self.p(
                    "disk_throughput_mbs",
                    f'{show(mbs)} is not a number or "auto" — write "auto" (what the instance '
                    "type can use) or MiB/s, e.g. disk_throughput_mbs = 250",
                )
            ]
        if isinstance(mbs, int) and not GP3_MIN_MBS <= mbs <= GP3_MAX_MBS:
            out.append(
                self.p(
                    "disk_throughput_mbs",
                    f"{mbs} is outside gp3's {GP3_MIN_MBS}-{GP3_MAX_MBS} MiB/s — write "
                    '"auto" or e.g. disk_throughput_mbs = 250',
                )
            )
            return out
        if not GP3_MIN_IOPS <= self.disk_iops <= GP3_MAX_IOPS:
            out.append(
                self.p(
                    "disk_iops",
                    f"{self.disk_iops} is outside gp3's {GP3_MIN_IOPS}-{GP3_MAX_IOPS} IOPS — "
                    "e.g. disk_iops = 3000",
                )
            )
            return out
        if self.disk_iops > self.disk_gb * GP3_IOPS_PER_GIB:
            out.append(
                self.p(
                    "disk_iops",
                    f"{self.disk_iops} IOPS need a gp3 volume of at least "
                    f"{-(-self.disk_iops // GP3_IOPS_PER_GIB)} GB ({GP3_IOPS_PER_GIB} IOPS per "
                    f"GB at most), not {self.disk_gb} — lower disk_iops or raise disk_gb",
                )
            )
            return out
        known_types = [
            p.instance_type for p in self.placements() if p.instance_type in cat.instances
        ]
        need = max((self.throughput_for(t, cat) for t in known_types), default=0)
        if need > self.disk_iops * GP3_MBS_PER_IOPS:
            out.append(
                self.p(
                    "disk_iops",
                    f"{self.disk_iops} IOPS allow at most {int(self.disk_iops * GP3_MBS_PER_IOPS)}"
                    f" MiB/s on gp3, not {need} — set disk_iops = {int(need / GP3_MBS_PER_IOPS)} "
                    "or more",
                )
            )
        return out

    def _type_problems(self, cat: Catalog) -> list[Problem]:
        field = "instance_types"
        if not self.instance_types:
            return [
                self.p(
                    field,
                    "is empty — list at least one instance type, e.g. instance_types = "
                    '["g4dn.2xlarge"], or set enabled = false',
                )
            ]
        out: list[Problem] = []
        gpu_names = sorted(i.key for i in cat.gpu_instances("aws"))
        regions = cat.regions["aws"].names
        seen: dict[str, str] = {}
        for i, entry in enumerate(self.instance_types):
            path = f"{field}[{i}]"
            if entry.count(PLACEMENT_SEPARATOR) > 1 or entry.strip().endswith(PLACEMENT_SEPARATOR):
                out.append(
                    self.p(
                        path,
                        f'{show(entry)} is not "TYPE" or "TYPE@REGION" — e.g. '
                        '"g6.2xlarge@eu-north-1"',
                    )
                )
                continue
            place = split_placement(entry, self.region)
            name, region = place.instance_type, place.region
            inst = cat.instances.get(name)
            if name in seen:
                where = f" ({seen[name]} and {region})" if seen[name] != region else ""
                out.append(
                    self.p(
                        path,
                        f"{show(name)} is listed twice{where} — remove the duplicate: stacks, "
                        "state files and bench targets are named by type, one region each",
                    )
                )
            seen.setdefault(name, region)
            explicit = PLACEMENT_SEPARATOR in entry
            if explicit and region not in regions:
                out.append(
                    self.p(
                        path,
                        f"{show(region)} in {show(entry)} is not an AWS region — known: "
                        f"{known(regions)}",
                    )
                )
            elif inst is not None and inst.cloud != "aws":
                out.append(
                    self.p(
                        path,
                        f"{show(name)} belongs to {inst.cloud.upper()} — move it to "
                        f"[azure] vm_sizes; known here: {known(gpu_names)}",
                    )
                )
            elif inst is None:
                out.append(
                    self.p(
                        path,
                        f"{show(name)} is not a known instance type — known: "
                        f"{known(gpu_names)} (see {RIG} catalog)",
                    )
                )
            elif not inst.gpu:
                out.append(
                    self.p(
                        path,
                        f"{show(name)} has no GPU and cannot stand in for the PC — "
                        f"use a GPU instance type: {known(gpu_names)}",
                    )
                )
            elif region in regions and region not in inst.regions:
                best, price = cheapest_region(inst)
                cost = f", ${price:.3f}/h on demand" if price is not None else ""
                where = "aws.region" if not explicit else f"the region in {show(entry)}"
                out.append(
                    self.p(
                        path,
                        f"{show(name)} is not offered in {region} (catalog) — write "
                        f'"{name}@{best}" (its cheapest region in the catalog{cost}), or set '
                        f"{where} to one of: {known(inst.regions)}",
                    )
                )
        return out


class AzureSection(Section):
    name: ClassVar[str] = "azure"
    enabled: bool = Field(True, description="Deploy to Azure with make deploy-azure.")
    location: str = Field("westeurope", description="Azure region (location name).")
    vm_sizes: list[str] = Field(
        default_factory=lambda: ["Standard_NC8as_T4_v3"],
        description="One VM per size (NCasT4_v3 = one T4).",
    )
    spot: bool = Field(True, description="Spot priority with eviction = Deallocate.")
    spot_max_price: float | str = Field(
        "", description='USD/h cap for spot; "" = -1 (never evicted for price).'
    )
    disk_gb: int = Field(200, description="OS disk size in GB.")
    disk_type: Literal["Premium_LRS", "StandardSSD_LRS", "Standard_LRS"] = Field(
        "Premium_LRS", description="OS disk type (Premium_LRS loads models fastest)."
    )
    image: str = Field("ubuntu-22.04", description='"ubuntu-22.04" (Gen2) or "ubuntu-24.04".')
    subscription: str = Field(
        "", description='Subscription id to deploy to; "" = the signed-in default.'
    )

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        out: list[Problem] = []
        if self.subscription and not _GUID.fullmatch(self.subscription):
            out.append(
                self.p(
                    "subscription",
                    f"{show(self.subscription)} is not a subscription id — write the GUID "
                    '`az account list -o table` shows, or "" for the signed-in default',
                )
            )
        regions = cat.regions["azure"].names
        if self.location not in regions:
            out.append(
                self.p(
                    "location",
                    f"{show(self.location)} is not an Azure location — "
                    f"known: {known(regions)}; the plan uses westeurope",
                )
            )
        out += _machine_problems(
            self, "vm_sizes", self.vm_sizes, "location", self.location, "azure", cat
        )
        if (cap := _spot_cap_problem(self, self.spot_max_price)) is not None:
            out.append(cap)
        images = cat.images_of("azure")
        if self.image not in images:
            out.append(
                self.p(
                    "image",
                    f"{show(self.image)} is not a known Azure image — use one of: {known(images)}",
                )
            )
        if not 30 <= self.disk_gb <= 4095:
            out.append(
                self.p(
                    "disk_gb",
                    f"{self.disk_gb} is outside 30-4095 GB for an OS disk "
                    "— write the size in GB, e.g. disk_gb = 200",
                )
            )
        return out


class AccessSection(Section):
    name: ClassVar[str] = "access"
    ssh_source: str = Field(
        "auto", description='"auto" = your public IP /32 at deploy time, or a CIDR.'
    )
    allow_open_ssh: bool = Field(
        False, description="Required to accept a world-open (or very broad) ssh_source."
    )
    ssh_public_key: str = Field(
        "", description='Public key file; "" = generate a key pair under .state/.'
    )

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The SSH source as a network; None for "auto" (resolved at deploy time)."""
        if self.ssh_source == "auto":
            return None
        return ipaddress.ip_network(self.ssh_source, strict=True)

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        out: list[Problem] = []
        if self.ssh_source != "auto":
            try:
                net = self.network()
            except ValueError:
                out.append(self.p("ssh_source", self._cidr_hint()))
            else:
                assert net is not None
                if net.prefixlen < OPEN_PREFIX[net.version] and not self.allow_open_ssh:
                    world = (
                        "the whole internet"
                        if net.prefixlen == 0
                        else (f"{net.num_addresses:,} addresses")
                    )
                    out.append(
                        self.p(
                            "ssh_source",
                            f"{show(self.ssh_source)} opens SSH to "
                            f'{world} — use "auto" (your IP /32) or a narrow CIDR, '
                            "or set access.allow_open_ssh = true if you really mean it",
                        )
                    )
        if self.ssh_public_key:
            out += self._key_problems(base_dir)
        return out

    def _cidr_hint(self) -> str:
        value = self.ssh_source
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return (
                f'{show(value)} is not a CIDR — write "auto", an address range like '
                '"203.0.113.7/32", or an IPv6 range like "2001:db8::/64"'
            )
        host = value.split("/")[0]
        return (
            f'{show(value)} has host bits set — did you mean "{loose}" (the range) or '
            f'"{host}/{loose.max_prefixlen}" (one address)?'
        )

    def key_path(self, base_dir: Path) -> Path:
        path = Path(self.ssh_public_key).expanduser()
        return path if path.is_absolute() else base_dir / path

    def _key_problems(self, base_dir: Path) -> list[Problem]:
        path = self.key_path(base_dir)
        if path.is_dir():
            return [
                self.p(
                    "ssh_public_key",
                    f"{show(self.ssh_public_key)} is a directory — point to the public key file "
                    'in it, e.g. "~/.ssh/id_ed25519.pub", or "" to generate one under .state/',
                )
            ]
        if not path.is_file():
            return [
                self.p(
                    "ssh_public_key",
                    f"{show(self.ssh_public_key)} does not exist — point "
                    'to a public key such as "~/.ssh/id_ed25519.pub", or "" to '
                    "generate one under .state/",
                )
            ]
        head = path.read_text(errors="replace")[:200]
        if "PRIVATE KEY" in head:
            return [
                self.p(
                    "ssh_public_key",
                    f"{show(self.ssh_public_key)} is a PRIVATE key — "
                    "point to its .pub file; the private key never leaves your machine",
                )
            ]
        if not re.match(r"(ssh-(ed25519|rsa)|ecdsa-sha2-\S+|sk-\S+) ", head):
            return [
                self.p(
                    "ssh_public_key",
                    f"{show(self.ssh_public_key)} is not an OpenSSH "
                    "public key (ssh-ed25519 / ssh-rsa / ecdsa-…) — point to a .pub file",
                )
            ]
        return []


class AutostopSection(Section):
    name: ClassVar[str] = "autostop"
    idle_minutes: int = Field(30, description="Stop after this many idle minutes in a row.")
    max_hours: float = Field(4, description="Stop this many hours after boot, busy or not.")
    allow_long_runs: bool = Field(False, description="Required for max_hours above 24.")
    daily_shutdown: str = Field(
        "19:00", description='Cloud-side daily stop "HH:MM" (24 h), or "off".'
    )
    timezone: str = Field("UTC", description="IANA time zone of daily_shutdown, e.g. Asia/Tokyo.")
    gpu_idle_percent: int = Field(10, description="GPU utilisation below this counts as idle.")

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        out: list[Problem] = []
        if not 5 <= self.idle_minutes <= 1440:
            out.append(
                self.p(
                    "idle_minutes",
                    f"{self.idle_minutes} must be between 5 and 1440 "
                    "minutes — e.g. idle_minutes = 30 (model pulls take minutes)",
                )
            )
        if self.max_hours <= 0:
            out.append(
                self.p(
                    "max_hours",
                    f"{show(self.max_hours)} must be a positive number of "
                    "hours — e.g. max_hours = 4",
                )
            )
        elif self.max_hours > MAX_HOURS_HARD_LIMIT:
            out.append(
                self.p(
                    "max_hours",
                    f"{show(self.max_hours)} is over "
                    f"{MAX_HOURS_HARD_LIMIT} h — a rehearsal stops within a week; "
                    "lower it and redeploy when needed",
                )
            )
        elif self.max_hours > 24 and not self.allow_long_runs:
            out.append(
                self.p(
                    "max_hours",
                    f"{show(self.max_hours)} h is over 24 h — lower it, "
                    "or set autostop.allow_long_runs = true to accept the cost",
                )
            )
        if self.daily_shutdown != "off" and not re.fullmatch(
            r"([01]\d|2[0-3]):[0-5]\d", self.daily_shutdown
        ):
            out.append(
                self.p(
                    "daily_shutdown",
                    f"{show(self.daily_shutdown)} is not a 24-hour "
                    'time — write "HH:MM", e.g. daily_shutdown = "19:00", or "off"',
                )
            )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            out.append(
                self.p(
                    "timezone",
                    f"{show(self.timezone)} is not an IANA time zone — "
                    'write e.g. timezone = "UTC" or "Asia/Tokyo"',
                )
            )
        if not 0 <= self.gpu_idle_percent <= 100:
            out.append(
                self.p(
                    "gpu_idle_percent",
                    f"{self.gpu_idle_percent} is not a percentage "
                    "— write 0-100, e.g. gpu_idle_percent = 10",
                )
            )
        return out


class BenchSection(Section):
    name: ClassVar[str] = "bench"
    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="Ollama tags to pull and bench (catalog models).",
    )
    workloads: list[Literal["chat-en", "chat-ja", "code", "long-context"]] = Field(
        default_factory=lambda: list(WORKLOADS), description="Workloads run on every model."
    )
    repetitions: int = Field(3, description="Measured requests per model and workload.")
    idle_timeout_s: int = Field(
        60, description="Fail a request whose stream sends no line for this many seconds."
    )
    request_timeout_s: int = Field(
        900, description="Fail a request still running after this many seconds (load included)."
    )

    def check(self, cat: Catalog, base_dir: Path) -> list[Problem]:
        out: list[Problem] = []
        if not 1 <= self.idle_timeout_s <= 3600:
            out.append(
                self.p(
                    "idle_timeout_s",
                    f"{self.idle_timeout_s} must be between 1 and 3600 — e.g. idle_timeout_s = 60",
                )
            )
        if not self.idle_timeout_s <= self.request_timeout_s <= 86400:
            out.append(
                self.p(
                    "request_timeout_s",
                    f"{self.request_timeout_s} must be at least idle_timeout_s "
                    f"({self.idle_timeout_s}) and at most 86400 — e.g. request_timeout_s = 900",
                )
            )
        if not self.models:
            out.append(
                self.p("models", 'is empty — list at least one model, e.g. models = ["llama3:8b"]')
            )
        seen: set[str] = set()
        for i, tag in enumerate(self.models):
            path = f"models[{i}]"
            if tag in seen:
                out.append(self.p(path, f"{show(tag)} is listed twice — remove the duplicate"))
            seen.add(tag)
            if tag in cat.models:
                continue
            if (gone := cat.unavailable.get(tag)) is not None:
                out.append(
                    self.p(
                        path,
                        f"{show(tag)} does not exist in Ollama ({gone.reason}) — "
                        f"use {show(gone.replacement)}",
                    )
                )
            else:
                out.append(
                    self.p(
                        path,
                        f"{show(tag)} is not a known model tag — known: "
                        f"{known(cat.models, limit=20)} (add it to "
                        "rig/catalog/models.toml with its size and source)",
                    )
                )
        if not self.workloads:
            out.append(self.p("workloads", 'is empty — e.g. workloads = ["chat-en"]'))
        low, high = REPETITIONS_RANGE
        if not low <= self.repetitions <= high:
            out.append(
                self.p(
                    "repetitions",
                    f"{self.repetitions} must be between {low} and {high} — e.g. repetitions = 3",
                )
            )
        return out


SECTIONS: dict[str, type[Section]] = {
    s.name: s
    for s in (PcSection, AwsSection, AzureSection, AccessSection, AutostopSection, BenchSection)
}


class Profile(BaseModel):
    """The validated profile: what every other part of gpu-rehearsal reads."""

    model_config = ConfigDict(frozen=True)
    pc: PcSection = PcSection()
    aws: AwsSection = AwsSection()
    azure: AzureSection = AzureSection()
    access: AccessSection = AccessSection()
    autostop: AutostopSection = AutostopSection()
    bench: BenchSection = BenchSection()
    path: Path = DEFAULT_PROFILE

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent

    def as_toml_dict(self) -> dict[str, dict[str, Any]]:
        return {name: getattr(self, name).model_dump() for name in SECTIONS}


# --- turning pydantic's type errors into our one-line form ---------------------------------

_TYPE_WORDS = {
    "finite_number": "a finite number",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "string": "text in quotes",
    "list": "a list [ ... ]",
    "dict": "a table",
}


def _example(section: type[Section], field: str) -> str:
    info = section.model_fields[field]
    default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
    if isinstance(default, list):
        default = default[:1]
    return f"{field} = {toml_literal(default)}"


def toml_literal(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return show(value)


def _from_pydantic(section: type[Section], err: dict[str, Any]) -> Problem:
    loc = tuple(err["loc"])
    # For unions pydantic appends the tried branch ("float", "str") to loc: drop it.
    loc = tuple(
        part
        for part in loc
        if not (isinstance(part, str) and part not in section.model_fields and part != loc[0])
    )
    path = path_of((section.name, *loc))
    field = str(loc[0]) if loc else ""
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        return Problem(
            path,
            f"unknown key {show(field)} in [{section.name}] — known keys: "
            f"{', '.join(section.model_fields)}; check the spelling",
        )
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return Problem(path, f"{show(value)} is not allowed — use one of: {expected}")
    word = next((w for k, w in _TYPE_WORDS.items() if kind.startswith(k)), None)
    if word is None and kind.endswith("_type"):
        word = "the right type"
    if word is not None and field in section.model_fields:
        return Problem(path, f"{show(value)} is not {word} — write e.g. {_example(section, field)}")
    return Problem(path, f"{show(value)}: {err['msg']} — see the comments in rig.toml")


def _type_problems(section: type[Section], errors: list[dict[str, Any]]) -> list[Problem]:
    """One line per field: a union field (spot_max_price: number or "") fails once per branch,
    and those become one "is not a number or text in quotes" line."""
    merged: dict[str, Problem] = {}
    for err in errors:
        problem = _from_pydantic(section, err)
        first = merged.get(problem.path)
        if first is None:
            merged[problem.path] = problem
            continue
        head, sep, _ = problem.message.partition(" — ")
        first_head, first_sep, first_fix = first.message.partition(" — ")
        value = show(err.get("input"))
        extra = head.removeprefix(f"{value} is not ")
        if sep and first_sep and extra != head and first_head.startswith(f"{value} is not "):
            merged[problem.path] = Problem(problem.path, f"{first_head} or {extra} — {first_fix}")
    return list(merged.values())


# --- loading ---------------------------------------------------------------------------------


def parse_toml(path: Path, filename: str) -> dict[str, Any]:
    if path.is_dir():
        raise ProfileError(
            filename,
            [Problem("", "is a directory, not a TOML file — pass --config with a rig.toml file")],
        )
    try:
        # utf-8-sig: an editor that saves "UTF-8 with BOM" (Windows Notepad did by default)
        # puts U+FEFF first, which TOML reads as a syntax error at line 1, column 1.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ProfileError(
            filename,
            [
                Problem(
                    "",
                    "no such file — run from the project root, "
                    "pass --config PATH, or restore the default with "
                    "`git checkout rig.toml`",
                )
            ],
        ) from None
    except UnicodeDecodeError:
        raise ProfileError(
            filename,
            [Problem("", "is not UTF-8 text — save it as UTF-8 (e.g. not UTF-16) and run again")],
        ) from None
    except OSError as exc:
        raise ProfileError(
            filename,
            [
                Problem(
                    "",
                    f"cannot be read ({exc.strerror or exc.__class__.__name__}) "
                    "— pass --config with a readable UTF-8 TOML file",
                )
            ],
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        where = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        place = f"line {where.group(1)}, column {where.group(2)}" if where else "end of file"
        raise ProfileError(
            filename,
            [
                Problem(
                    "",
                    f"TOML syntax error at {place}: {reason} — "
                    "fix the syntax there (strings need quotes, "
                    "key = value)",
                )
            ],
        ) from None


def validate(
    data: dict[str, Any], path: Path = DEFAULT_PROFILE, cat: Catalog | None = None
) -> Profile:
    """Validate parsed TOML; raise ProfileError listing every problem found."""
    cat = cat or load_catalog()
    filename = str(path)
    base_dir = path.resolve().parent
    problems: list[Problem] = []
    for key in data:
        if key not in SECTIONS:
            problems.append(
                Problem(
                    key,
                    f"unknown section [{key}] — known sections: "
                    f"{', '.join(f'[{s}]' for s in SECTIONS)}; check the spelling",
                )
            )
    sections: dict[str, Section] = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.append(
                Problem(
                    name,
                    f"{show(raw)} must be a section — write [{name}] on "
                    "its own line, then its keys",
                )
            )
            continue
        try:
            sections[name] = cls.model_validate(raw)
        except ValidationError as exc:
            type_problems = _type_problems(cls, exc.errors())  # type: ignore[arg-type]
            problems += type_problems
            problems += _check_remaining(cls, raw, exc, type_problems, cat, base_dir)
            continue
        problems += sections[name].check(cat, base_dir)
    bench = sections.get("bench")
    if bench is not None:
        models = [m for m in bench.models if m in cat.models]  # type: ignore[attr-defined]
        for cloud in ("aws", "azure"):
            sec = sections.get(cloud)
            if sec is not None and sec.enabled:  # type: ignore[attr-defined]
                disk = _disk_problem(sec, cat, cloud, sec.image, sec.disk_gb, models)  # type: ignore[attr-defined]
                if disk is not None:
                    problems.append(disk)
    ipv6 = _aws_ipv6_problem(sections)
    if ipv6 is not None and not any(p.path == ipv6.path for p in problems):
        problems.append(ipv6)
    if problems:
        raise ProfileError(filename, problems)
    return Profile(**sections, path=path)  # type: ignore[arg-type]


def _aws_ipv6_problem(sections: dict[str, Section]) -> Problem | None:
    """The AWS stack's VPC and subnet are IPv4 only: an IPv6 SSH source would open nothing
    that the VM answers on, so the deploy could never reach SSH. Say so before it costs."""
    aws, access = sections.get("aws"), sections.get("access")
    if aws is None or access is None or not aws.enabled:  # type: ignore[attr-defined]
        return None
    try:
        net = access.network()  # type: ignore[attr-defined]
    except ValueError:
        return None  # reported by [access] itself
    if net is None or net.version == 4:
        return None
    return Problem(
        "access.ssh_source",
        f"{show(access.ssh_source)} is IPv6, but the AWS VPC has no IPv6 — "  # type: ignore[attr-defined]
        'write your IPv4 address as "203.0.113.7/32", or "auto" (looked up over IPv4)',
    )


def _check_remaining(
    cls: type[Section],
    raw: dict[str, Any],
    exc: ValidationError,
    reported: list[Problem],
    cat: Catalog,
    base_dir: Path,
) -> list[Problem]:
    """Check a section's well-typed fields too, so one run reports every problem."""
    bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
    try:
        partial = cls.model_validate({k: v for k, v in raw.items() if k not in bad})
    except ValidationError:
        return []
    bad_paths = {f"{cls.name}.{field}" for field in bad}
    return [
        p
        for p in partial.check(cat, base_dir)
        if not any(p.path == b or p.path.startswith((b + ".", b + "[")) for b in bad_paths)
    ]


def load_profile(path: Path | str = DEFAULT_PROFILE, cat: Catalog | None = None) -> Profile:
    path = Path(path)
    return validate(parse_toml(path, str(path)), path, cat)
