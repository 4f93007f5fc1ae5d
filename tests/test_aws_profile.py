"""The [aws] part of the profile: per-type regions, the disk throughput the instance can use,
the IPv4-only SSH source, and the README's cost figures from the one formula."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rig.advice import advisories
from rig.aws import pricing
from rig.catalog import load_catalog
from rig.problems import ProfileError
from rig.profile import AwsSection, Placement, load_profile

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, body: str):
    path = tmp_path / "rig.toml"
    path.write_text(body, encoding="utf-8")
    return load_profile(path)


def problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ProfileError) as err:
        load(tmp_path, body)
    return err.value.lines()


def test_a_type_may_carry_its_own_region(tmp_path: Path) -> None:
    """Defect 11: the plan's three candidates in one profile, one run."""
    prof = load(
        tmp_path,
        '[aws]\ninstance_types = ["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge@eu-north-1"]\n',
    )
    assert prof.aws.placements() == [
        Placement("g4dn.2xlarge", "eu-west-1"),
        Placement("g5.2xlarge", "eu-west-1"),
        Placement("g6.2xlarge", "eu-north-1"),
    ]


def test_a_type_not_offered_names_its_cheapest_region(tmp_path: Path) -> None:
    """Validated against the catalog's offerings; the fix is the cheapest region offering it."""
    (line,) = problems(tmp_path, '[aws]\ninstance_types = ["g6.2xlarge"]\n')
    cheapest = load_catalog().instances["g6.2xlarge"].cheapest_price()
    assert cheapest is not None and cheapest.region == "us-east-1"  # $0.978 (catalog)
    assert "aws.instance_types[0]: 'g6.2xlarge' is not offered in eu-west-1 (catalog)" in line
    assert '"g6.2xlarge@us-east-1" (its cheapest region in the catalog, $0.978/h' in line
    assert "set aws.region to one of:" in line and "eu-north-1" in line


def test_an_explicit_region_that_does_not_offer_the_type(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, '[aws]\ninstance_types = ["g6.2xlarge@eu-west-1"]\n')
    assert "not offered in eu-west-1" in line and "the region in 'g6.2xlarge@eu-west-1'" in line


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        ("g6.2xlarge@eu-west-9", "'eu-west-9' in 'g6.2xlarge@eu-west-9' is not an AWS region"),
        ("g6.2xlarge@eu-north-1@x", 'is not "TYPE" or "TYPE@REGION"'),
        ("g6.2xlarge@", 'is not "TYPE" or "TYPE@REGION"'),
        # Hostile spellings: each one line naming the entry, never a traceback or a guess.
        ("g6.2xlarge@@eu-north-1", 'is not "TYPE" or "TYPE@REGION"'),
        ("g6.2xlarge@ ", 'is not "TYPE" or "TYPE@REGION"'),
        ("@eu-north-1", "'' is not a known instance type"),
        ("g6.2xlarge@eu\u2010north\u20101", "is not an AWS region"),  # U+2010 hyphens
        ("G6.2XLARGE@eu-north-1", "'G6.2XLARGE' is not a known instance type"),
    ],
)
def test_bad_placements_are_one_line(tmp_path: Path, entry: str, hint: str) -> None:
    (line,) = problems(tmp_path, f'[aws]\ninstance_types = ["{entry}"]\n')
    assert hint in line and "aws.instance_types[0]" in line


def test_one_type_in_two_regions_is_refused(tmp_path: Path) -> None:
    (line,) = problems(
        tmp_path, '[aws]\ninstance_types = ["g5.2xlarge", "g5.2xlarge@eu-north-1"]\n'
    )
    assert "aws.instance_types[1]: 'g5.2xlarge' is listed twice (eu-west-1 and eu-north-1)" in line


def test_an_ipv6_ssh_source_is_refused_while_aws_is_on(tmp_path: Path) -> None:
    """Defect 9: the VPC has no IPv6; the fix is an IPv4 /32 or "auto"."""
    (line,) = problems(tmp_path, '[access]\nssh_source = "2001:db8::5/128"\n')
    assert "access.ssh_source: '2001:db8::5/128' is IPv6, but the AWS VPC has no IPv6" in line
    assert '"203.0.113.7/32"' in line
    off = load(tmp_path, '[aws]\nenabled = false\n[access]\nssh_source = "2001:db8::5/128"\n')
    assert off.access.ssh_source == "2001:db8::5/128"  # nothing of it reaches AWS then


def test_throughput_auto_is_the_instances_ebs_burst() -> None:
    """Defect 8. EC2 User Guide, EBS-optimized instances (and the EC2 Instance Types guide,
    Accelerated computing, Amazon EBS specifications): g4dn.2xlarge 1150 / 3500 Mbps = 143.75 /
    437.5 MB/s, g5.xlarge 437.5 MB/s maximum, g6.xlarge 1000 / 5000 Mbps = 125 / 625 MB/s,
    g6.2xlarge 2000 / 5000 Mbps = 250 / 625 MB/s. The table's MB/s are decimal (3500 Mbps / 8 =
    437.5); gp3 throughput is provisioned in MiB/s (EC2 API Reference, CreateVolume Throughput:
    "in MiB/s"), so "auto" asks for 437.5e6 / 2^20 = 417 MiB/s, not 437."""
    cat = load_catalog()
    section = AwsSection()
    assert section.disk_throughput_mbs == "auto" and section.disk_iops == 3000
    assert section.throughput_for("g4dn.2xlarge", cat) == 417
    assert section.throughput_for("g5.xlarge", cat) == 417
    assert section.throughput_for("g6.2xlarge", cat) == 596
    assert section.throughput_for("g6.xlarge", cat) == 596
    g4dn = cat.instances["g4dn.2xlarge"]
    assert (g4dn.ebs_baseline_mbs, g4dn.ebs_burst_mbs) == (143.75, 437.5)
    assert g4dn.source_of("ebs_burst_mbs") == "aws-ebs-optimized-2023"
    g6 = cat.instances["g6.2xlarge"]
    assert (g6.ebs_baseline_mbs, g6.ebs_burst_mbs) == (250.0, 625.0)
    assert g6.source_of("ebs_burst_mbs") == "aws-ec2-instance-types-2024"  # not moto's data
    assert (
        cat.instances["g6.xlarge"].ebs_baseline_mbs,
        cat.instances["g6.xlarge"].ebs_burst_mbs,
    ) == (125.0, 625.0)


def test_gp3_limits_are_the_current_ones() -> None:
    """gp3 today (botocore 1.44 EC2 model, LaunchTemplateEbsBlockDeviceRequest: Throughput
    125-2,000 MiB/s, Iops 3,000-80,000; aws-cdk-lib 2.275 aws-ec2 volume.js: at most 0.25 MiB/s
    per IOPS and 500 IOPS per GiB)."""
    cat = load_catalog()

    def disk(**kw: object) -> list[str]:
        section = AwsSection(**kw)  # type: ignore[arg-type]
        return [f"{p.path}: {p.message}" for p in section.check(cat, ROOT)]

    assert disk(disk_throughput_mbs=2000, disk_iops=8000) == []
    assert any("outside gp3's 125-2000 MiB/s" in p for p in disk(disk_throughput_mbs=2001))
    assert any("outside gp3's 3000-80000 IOPS" in p for p in disk(disk_iops=80001))
    (iops,) = disk(disk_throughput_mbs=1000, disk_iops=3999)
    assert "3999 IOPS allow at most 999 MiB/s on gp3, not 1000 — set disk_iops = 4000" in iops
    (ratio,) = disk(disk_gb=20, disk_iops=16000)
    assert ratio.startswith("aws.disk_iops: 16000 IOPS need a gp3 volume of at least 32 GB")


def test_asking_for_more_throughput_than_the_instance_can_use_is_warned(tmp_path: Path) -> None:
    prof = load(tmp_path, "[aws]\ndisk_throughput_mbs = 1000\ndisk_iops = 4000\n")
    notes = [n for n in advisories(prof, load_catalog()) if n.startswith("aws.disk_throughput")]
    assert notes == [
        "aws.disk_throughput_mbs: 1000 MiB/s is more than g4dn.2xlarge can use (EBS 437.5 MB/s "
        "burst = 417 MiB/s, 143.75 baseline; source aws-ebs-optimized-2023) — the rest is billed "
        'and unused: set disk_throughput_mbs = "auto"'
    ]
    # ... and it costs: (1000 - 417) MiB/s x 0.044 $/month in eu-west-1 (catalog rates), per
    # hour over 672 h: AWS spreads a month's price over that month's hours (re:Post Knowledge
    # Center "ebs-volume-charges": 720 h in a 30-day month); the shortest month is the bound.
    cat = load_catalog()
    place = Placement("g4dn.2xlarge", "eu-west-1")
    more = pricing.disk_usd_per_hour(prof.aws, cat, place)
    auto = pricing.disk_usd_per_hour(AwsSection(), cat, place)
    assert more is not None and auto is not None
    assert round((more - auto) * 672, 2) == round((1000 - 417) * 0.044 + 1000 * 0.0055, 2)


def test_throughput_words_other_than_auto_are_one_line(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, '[aws]\ndisk_throughput_mbs = "fast"\n')
    assert "aws.disk_throughput_mbs: 'fast' is not a number or \"auto\"" in line


def test_readme_aws_costs_come_from_the_one_formula() -> None:
    """The README's figures are rig.cost's output (worst_case_text) for the defaults; a VM the
    catalog cannot price says so (pricing.UNKNOWN) instead of a guessed figure."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- aws-costs:start -->")[1].split("<!-- aws-costs:end -->")[0]
    cat = load_catalog()
    section = AwsSection(instance_types=["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge@eu-north-1"])
    expected = []
    for place in section.placements():
        _, rates = pricing.worst_case(section, cat, place, 4)
        summary = (
            pricing.cost_summary(rates, 4)
            if rates is not None
            else pricing.unknown_text(section, cat, place)
        )
        expected.append(f"- {place.instance_type} ({place.region}): {summary}")
    assert [line for line in block.strip().splitlines()] == expected
    _, g4dn = pricing.worst_case(section, cat, Placement("g4dn.2xlarge", "eu-west-1"), 4)
    assert g4dn is not None
    stopped = re.search(r"g4dn\.2xlarge: (\$[\d.]+/day)", readme)
    assert stopped and pricing.stopped_text(g4dn).startswith(stopped.group(1))


def test_a_rate_nobody_checked_is_unknown_not_estimated() -> None:
    """Stockholm's gp3 IOPS and throughput rates are in no source checked here: the catalog
    leaves them out, "auto" throughput (596 MiB/s on a g6.2xlarge) needs one, so no worst case
    is printed from the catalog; at the free baseline (125 MiB/s, 3000 IOPS) none is needed.
    A region the catalog does not list borrows nobody's rates."""
    cat = load_catalog()
    g6 = Placement("g6.2xlarge", "eu-north-1")
    stockholm = cat.regions["aws"].rates["eu-north-1"]
    assert stockholm.gp3_iops_month is None and stockholm.gp3_mbs_month is None
    assert pricing.worst_case(AwsSection(), cat, g6, 4) == (None, None)
    assert pricing.unknown_text(AwsSection(), cat, g6) == (
        "gp3 throughput above 125 MiB/s per month in eu-north-1: price unknown; live price "
        "needed (read at deploy)"
    )
    baseline = AwsSection(disk_throughput_mbs=125, disk_iops=3000)
    worst, rates = pricing.worst_case(baseline, cat, g6, 4)
    # 672 h: the shortest month (re:Post Knowledge Center "ebs-volume-charges")
    assert rates is not None and rates.disk == pytest.approx(200 * 0.0836 / 672)
    assert worst == round((1.037 + rates.disk + 0.005) * 4, 2)
    # us-west-2 has no disk rates in the catalog: unknown, not borrowed from another region.
    oregon = Placement("g5.2xlarge", "us-west-2")
    assert pricing.missing_rates(baseline, cat, oregon) == ["gp3_gb_month", "public_ipv4_hour"]
    assert pricing.worst_case(AwsSection(spot_max_price=0.5), cat, oregon, 4) == (None, None)
