"""`python -m rig plan`: the PC and every stand-in side by side, differences that matter flagged."""

from __future__ import annotations

import json

from rich.console import Console

from rig import cli
from rig.plan import build_plan, print_plan
from rig.profile import load_profile


def flags_of(plan, target):
    return {f.aspect: f.message for f in plan.flags if f.target == target}


def test_default_profile_side_by_side(profile_file):
    plan = build_plan(load_profile(profile_file()))
    assert [c.target for c in plan.columns] == [
        "pc",
        "aws-g4dn.2xlarge",
        "azure-Standard_NC8as_T4_v3",
    ]
    pc, aws, az = plan.columns
    assert (pc.vram, pc.bandwidth, pc.threads) == ("16 GB", "288 GB/s", "8 cores / 16 threads")
    assert pc.ram.startswith("32 GB DDR5-5600")
    assert (az.gpu, az.vram, az.bandwidth, az.threads, az.ram) == (
        "NVIDIA Tesla T4",
        "16 GB",
        "320 GB/s",
        "8 vCPU",
        "56 GiB",
    )
    assert az.disk == "200 GB Premium_LRS"
    assert az.image.startswith("Canonical Ubuntu Server 22.04 LTS Gen2")
    assert az.pricing == "spot, deallocated if evicted; cap = on-demand"
    assert az.usd_per_hour.startswith("0.840 on-demand in westeurope")
    # No published westeurope P15 figure: the disk is unknown offline, never compute alone
    # (the old "$3.36" left disk and IP out of the one formula).
    assert az.worst_case == (
        "OS disk P15 (Premium_LRS) in westeurope: price unknown offline; read live at deploy"
    )
    # 0.838 on demand + gp3 disk 0.0453 + IPv4 0.005 per hour, x 4 h (rig.cost, catalog rates;
    # the disk's month spread over 672 h, the shortest: re:Post Knowledge Center
    # "ebs-volume-charges" bills a GB-month over the hours of the month it is in)
    assert aws.worst_case == "$3.55 in 4 h (max_hours)"
    assert plan.worst_case_usd is None  # one stand-in cannot be priced offline


def test_differences_that_matter_are_flagged(profile_file):
    plan = build_plan(load_profile(profile_file()))
    az = flags_of(plan, "azure-Standard_NC8as_T4_v3")
    assert "8 vCPU (hardware threads) vs the PC's 8 cores/16 threads" in az["cpu"]
    assert az["ram"].startswith("56 GiB (60 GB) vs 32 GB RAM")
    assert "1.11x" in az["bandwidth"]
    assert "vram" not in az  # same 16 GB as the PC: nothing to mirror
    assert "evicted" in az["spot"]
    aws = flags_of(plan, "aws-g4dn.2xlarge")
    assert "ram" not in aws  # 32 GiB = 34 GB: within 10 % of the PC's 32 GB


def test_larger_vram_is_flagged_with_the_mirror(profile_file):
    profile = load_profile(profile_file(("aws", "instance_types", '["g5.2xlarge"]')))
    aws = flags_of(build_plan(profile, cloud="aws"), "aws-g5.2xlarge")
    assert aws["vram"].startswith("24 GB vs 16 GB VRAM")
    assert "reserves 8 GB (OLLAMA_GPU_OVERHEAD)" in aws["vram"]


def test_cloud_filter_and_on_demand(profile_file):
    profile = load_profile(profile_file(("azure", "spot", "false")))
    plan = build_plan(profile, cloud="azure")
    assert [c.target for c in plan.columns] == ["pc", "azure-Standard_NC8as_T4_v3"]
    assert plan.columns[1].pricing == "on-demand"
    assert "spot" not in flags_of(plan, "azure-Standard_NC8as_T4_v3")


def test_missing_price_is_flagged(profile_file):
    profile = load_profile(profile_file(("azure", "location", '"northeurope"')))
    plan = build_plan(profile, cloud="azure")
    assert "deploy reads it live" in flags_of(plan, "azure-Standard_NC8as_T4_v3")["price"]
    assert plan.worst_case_usd is None
    assert plan.columns[1].worst_case == (
        "on-demand price of Standard_NC8as_T4_v3 in northeurope: price unknown offline; read "
        "live at deploy"
    )


def test_print_plan_for_a_deploy(profile_file):
    console = Console(record=True, width=220)
    plan = print_plan(load_profile(profile_file()), console, cloud="aws")
    text = console.export_text()
    assert [c.target for c in plan.columns] == ["pc", "aws-g4dn.2xlarge"]
    assert "azure-Standard_NC8as_T4_v3" not in text
    assert "differs aws-g4dn.2xlarge cpu" in text
    assert "Worst case for all of the above: $3.55" in text


def test_plan_command_table_and_json(profile_file, capsys):
    path = str(profile_file())
    assert cli.main(["plan", "--config", path, "--offline"]) == 0
    out = capsys.readouterr().out
    for label in ("GPU", "VRAM", "Memory bandwidth", "vCPU / threads", "RAM", "Disk", "Image"):
        assert label in out
    assert "azure-Standard_NC8as_T4_v3" in out and "aws-g4dn.2xlarge" in out
    assert cli.main(["plan", "--config", path, "--json", "--cloud", "azure", "--offline"]) == 0
    data = json.loads(capsys.readouterr().out)["comparison"]
    assert [c["target"] for c in data["columns"]] == ["pc", "azure-Standard_NC8as_T4_v3"]
    assert {f["aspect"] for f in data["flags"]} >= {"cpu", "ram", "bandwidth", "spot"}


def test_plan_with_a_bad_profile_is_exit_2(profile_file, capsys):
    path = str(profile_file(("azure", "vm_sizes", '["Standard_NC99"]')))
    assert cli.main(["plan", "--config", path]) == 2
    assert "azure.vm_sizes[0]" in capsys.readouterr().err
