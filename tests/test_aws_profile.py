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
    """Defect 8 (EC2 User Guide, EBS-optimized instances: g4dn.2xlarge 437.5 MB/s maximum,
    143.75 baseline; g5.xlarge 437.5; g6.2xlarge 625 per DescribeInstanceTypes)."""
    cat = load_catalog()
    section = AwsSection()
    assert section.disk_throughput_mbs == "auto" and section.disk_iops == 3000
    assert section.throughput_for("g4dn.2xlarge", cat) == 437
    assert section.throughput_for("g5.xlarge", cat) == 437
    assert section.throughput_for("g6.2xlarge", cat) == 625
    g4dn = cat.instances["g4dn.2xlarge"]
    assert (g4dn.ebs_baseline_mbs, g4dn.ebs_burst_mbs) == (143.75, 437.5)
    assert g4dn.source_of("ebs_burst_mbs") == "aws-ebs-optimized-2023"


def test_asking_for_more_throughput_than_the_instance_can_use_is_warned(tmp_path: Path) -> None:
    prof = load(tmp_path, "[aws]\ndisk_throughput_mbs = 1000\ndisk_iops = 4000\n")
    notes = [n for n in advisories(prof, load_catalog()) if n.startswith("aws.disk_throughput")]
    assert notes == [
        "aws.disk_throughput_mbs: 1000 MB/s is more than g4dn.2xlarge can use (EBS 437.5 MB/s "
        "burst, 143.75 baseline; source aws-ebs-optimized-2023) — the rest is billed and unused: "
        'set disk_throughput_mbs = "auto"'
    ]
    # ... and it costs: (1000 - 437) MB/s x 0.044 $/month in eu-west-1 (catalog rates).
    cat = load_catalog()
    place = Placement("g4dn.2xlarge", "eu-west-1")
    waste = pricing.disk_usd_per_hour(prof.aws, cat, place) - pricing.disk_usd_per_hour(
        AwsSection(), cat, place
    )
    assert round(waste * 730, 2) == round((1000 - 437) * 0.044 + 1000 * 0.0055, 2)


def test_throughput_words_other_than_auto_are_one_line(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, '[aws]\ndisk_throughput_mbs = "fast"\n')
    assert "aws.disk_throughput_mbs: 'fast' is not a number or \"auto\"" in line


def test_readme_aws_costs_come_from_the_one_formula() -> None:
    """The README's figures are rig.cost's output (worst_case_text) for the defaults."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- aws-costs:start -->")[1].split("<!-- aws-costs:end -->")[0]
    cat = load_catalog()
    section = AwsSection(instance_types=["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge@eu-north-1"])
    expected = []
    for place in section.placements():
        _, rates = pricing.worst_case(section, cat, place, 4)
        assert rates is not None
        expected.append(
            f"- {place.instance_type} ({place.region}): {pricing.cost_summary(rates, 4)}"
        )
    assert [line for line in block.strip().splitlines()] == expected
    _, g4dn = pricing.worst_case(section, cat, Placement("g4dn.2xlarge", "eu-west-1"), 4)
    assert g4dn is not None
    stopped = re.search(r"g4dn\.2xlarge: (\$[\d.]+/day)", readme)
    assert stopped and pricing.stopped_text(g4dn).startswith(stopped.group(1))
