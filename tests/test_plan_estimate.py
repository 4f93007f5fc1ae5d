"""The spending plan (issue #16 §1): rig/estimate.py, rig/plan.py, rig/live_prices.py, the
deploy confirmations' estimate line, the bench's stored estimate and the report's estimate vs
actual. Figures are asserted from the formula they come from (the bench's own plan, the speed
model, rig.cost), not from remembered numbers.

Vendor payloads: EC2 API Reference, DescribeSpotPriceHistory (SpotPriceHistory[] of
AvailabilityZone, InstanceType, ProductDescription, SpotPrice as a string, Timestamp); Azure
Retail Prices REST API (tests/fixtures/azure/retail_*.json, see that folder's README).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "azure"))

from fake_arm import fixture
from fake_ollama import FakeOllama
from rich.console import Console

from bench import cli as bench_cli
from bench import speed
from bench.report import build_sections, load_run, write_report
from bench.report.sections.cost import _hms
from bench.runner import plan_work
from bench.schema import RunMeta, TargetInfo
from bench.targets import TargetSpec
from rig import cli
from rig.aws import pricing as aws_pricing
from rig.aws.preflight import Pins, Preflight, TypePlan, confirmation_lines
from rig.aws.session import Aws
from rig.azure import pricing as az_pricing
from rig.azure.deploy import _cost_lines
from rig.azure.http import Response
from rig.azure.schedule import cloud_stop
from rig.catalog import load_catalog
from rig.compare import GIB
from rig.cost import HourlyRates, worst_case_text, worst_case_usd
from rig.estimate import (
    DEFAULT_DOWNLOAD_MBS,
    SETUP_MIN,
    aws_standin,
    azure_standin,
    bench_plan,
    estimate,
    standins,
)
from rig.live_prices import priced_standins
from rig.plan import print_spending, spending_plan
from rig.problems import CommandError
from rig.profile import AwsSection, AzureSection, Placement, Profile, load_profile

pytest_plugins = ["aws_support"]  # fixtures: aws_env
CAT = load_catalog()
ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
G4DN = "g4dn.2xlarge"
NC8 = "Standard_NC8as_T4_v3"


def block(name: str) -> list[str]:
    text = README.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    return text.strip().splitlines()


def g4dn_rates(profile: Profile, compute: float) -> HourlyRates:
    rates = aws_pricing.rates_for(profile.aws, CAT, Placement(G4DN, "eu-west-1"), compute)
    assert rates is not None
    return rates


# --------------------------------------------------------------------- the default profile


def test_default_plan_counts_what_the_bench_runs_and_adds_up(profile_file):
    profile = load_profile(profile_file())
    aws, _ = standins(profile, CAT)
    est = estimate(profile, CAT, aws)
    plan = bench_plan(profile, CAT)
    # Exactly the bench's own requests: bench.runner.plan_work, per model; a warm-up at every
    # context change, as the runner warms up.
    assert sum(m.requests for m in est.models) == len(plan_work(plan, plan.models))
    for m in est.models:
        works = plan_work(plan, [m.model])
        ctx = [w.request.num_ctx for w in works]
        assert m.requests == len(works)
        assert m.warmups == 1 + sum(a != b for a, b in itertools.pairwise(ctx))
        assert m.seconds == pytest.approx(m.load_s + m.prefill_s + m.decode_s)
        assert sum(m.by_workload.values()) == pytest.approx(m.seconds)
        assert set(m.by_workload) == {w.request.workload for w in works}
        assert m.end_s == pytest.approx(m.start_s + m.seconds)
    llama = next(m for m in est.models if m.model == "llama3:8b")
    # llama3:8b's context is 8192 (catalog): the bench skips the 16k and 32k cases, so does this.
    assert llama.skipped_cases == ["long-context/ctx16k", "long-context/ctx32k"]
    # The phases add up; setup and idle are the stated assumption and the profile's minutes.
    assert est.setup_s == SETUP_MIN[True] * 60  # the DLAMI brings the driver
    assert est.idle_s == profile.autostop.idle_minutes * 60
    assert est.total_s == pytest.approx(est.setup_s + est.pull_s + est.bench_s + est.idle_s)
    # Pulls: the slower of the assumed download and the disk write (gp3 "auto" = 417 MiB/s,
    # within g4dn.2xlarge's EBS burst of 437.5 MB/s for the first 30 min: the catalog's).
    gb = sum(CAT.models[m].download_gb for m in profile.bench.models)
    burst = min(417 * 2**20 / 1e6, CAT.instances[G4DN].ebs_burst_mbs)
    assert est.pull_gb == round(gb, 1)
    assert est.pull_s == pytest.approx(max(gb * 1000 / DEFAULT_DOWNLOAD_MBS, gb * 1000 / burst))
    # Decode: the speed model for the T4 (bytes / (bandwidth x efficiency) + fixed cost).
    t4 = CAT.gpus["t4"]
    model = speed.speed_model(CAT)
    t = model.seconds_per_token(t4, 4.7 / GIB, speed.engine_key("ollama", t4))
    assert llama.decode_tok_s == pytest.approx(1 / t)
    # Sanity against a published figure: Ollama on a T4 (EC2), llama3.1 8B 35.5 t/s on the GPU
    # (ollama/ollama issue 12770, REFERENCE.md): inside the back-test's range.
    band = math.exp(speed.back_test(CAT).band)
    assert 35.5 / band <= llama.decode_tok_s <= 35.5 * band
    # Mixtral (26 GB) spills past 16 GB: partial, decoded at its partial-offload rate.
    mix = next(m for m in est.models if m.model.startswith("mixtral"))
    assert mix.verdict == "partial" and mix.gpu_share < 1
    assert mix.decode_tok_s < llama.decode_tok_s / 3
    # $: the running rates (compute at its cap offline: spot bills at most on-demand) x the
    # hours billed; the worst case is rig.cost's, for the max_hours window.
    rates = g4dn_rates(profile, 0.838)
    assert est.fits_window and est.billed_h == pytest.approx(est.total_s / 3600)
    assert est.usd == round(rates.running * est.total_s / 3600, 2)
    assert est.worst_usd == worst_case_usd(rates, 4)
    assert est.worst_text == worst_case_text(rates, 4)
    assert est.disk_fits and est.disk_needed_gb == round(75 + gb * 1.1 + 10, 1)  # as rig check
    # Every figure says where it comes from.
    assert "catalog vantage-2026-01-21, 2026-01-21" in est.sources["compute"]
    assert "assumption" in est.sources["pulls"] and "assumption" in est.sources["setup"]
    assert est.sources["decode"].startswith("projection")


def test_azure_default_says_the_disk_price_is_read_live_not_a_guess(profile_file):
    """westeurope P15 has no published figure in the catalog: no $ is made up for it."""
    profile = load_profile(profile_file())
    est = estimate(profile, CAT, azure_standin(profile, CAT, NC8))
    unknown = "OS disk P15 (Premium_LRS) in westeurope: price unknown offline; read live at deploy"
    assert est.unknown == unknown and est.usd is None and est.worst_usd is None
    # What is known (compute at its cap, the cited westeurope IP) is a floor, said to be one:
    # in the estimate and in the worst case, never a figure that looks complete.
    floor = worst_case_usd(HourlyRates(0.84, 0.0, 0.005), 4)
    assert est.worst_floor_usd == floor == 3.38
    assert est.worst_text == f"worst case 4 h: at least ${floor:.2f} + {unknown}"
    assert est.usd_floor == round((0.84 + 0.005) * est.total_s / 3600, 2)
    # Deallocated, the VM still pays the disk and the static IP (Microsoft Learn: a static
    # public IP bills while allocated to a resource group, VM running or not): the IP is known.
    assert est.stopped_usd_per_day is None and est.stopped_floor_usd_per_day == 0.12
    assert est.line().endswith(f"at least ${est.usd_floor:.2f} + the disk; {est.worst_text}")
    assert est.setup_s == SETUP_MIN[False] * 60  # stock Ubuntu: Ansible installs the driver
    # Premium P15: 125 MB/s, 170 MB/s for 30 min (MicrosoftDocs/azure-docs
    # includes/disk-storage-premium-ssd-sizes.md).
    assert "125 MB/s, 170 MB/s for the first 30 min" in est.sources["load"]


def test_disk_that_does_not_fit_is_flagged(profile_file, capsys):
    """The plan counts disk space as `rig check` does (image + models x 1.1 + 10 GB); a profile
    check refuses is never planned, so the flag shows for models beyond the profile's (a
    bench run with --models, or a Profile built in code) — and in the printed plan."""
    profile = load_profile(profile_file())
    est = estimate(profile, CAT, G4DN)
    gb = sum(CAT.models[m].download_gb for m in profile.bench.models)
    assert est.disk_needed_gb == round(75 + gb * 1.1 + 10, 1) and est.disk_fits
    every = sorted(CAT.models)  # every catalog model: more than 200 GB holds
    more = estimate(profile, CAT, G4DN, models=every)
    assert not more.disk_fits and more.disk_needed_gb > 200
    fix = math.ceil(more.disk_needed_gb / 10) * 10
    assert any("disk_gb = 200" in n and f"aws.disk_gb = {fix}" in n for n in more.notes)
    small = Profile(aws=AwsSection(disk_gb=100), azure=AzureSection(enabled=False))
    plan = spending_plan(small, CAT, offline=True)
    (target,) = plan.targets
    assert not target.disk_fits and plan.as_dict()["targets"][0]["disk_fits"] is False
    out = Console(record=True, width=200)
    print_spending(plan, out, CAT)
    assert "of disk_gb 100: does NOT fit" in out.export_text()


def test_a_run_longer_than_max_hours_names_what_is_late_and_a_split_that_fits(profile_file, capsys):
    path = profile_file(("autostop", "max_hours", "1.5"))
    profile = load_profile(path)
    est = estimate(profile, CAT, G4DN)
    window = 1.5 * 3600
    assert not est.fits_window and est.work_s > window
    assert est.not_reached == [m.model for m in est.models if m.end_s > window]
    assert est.not_reached  # the window ends before the last model
    # The runs keep the bench's order and each fits its own window: the first after setup and
    # pulls, each next one after make deploy-aws again (setup again). The idle tail needs no
    # room: the max_hours stop may cut it short, which only saves.
    assert [m for run in est.runs for m in run] == [m.model for m in est.models]
    seconds = {m.model: m.seconds for m in est.models}
    for i, run in enumerate(est.runs):
        used = est.setup_s + sum(seconds[m] for m in run) + (est.pull_s if i == 0 else 0.0)
        assert used <= window
    # One window for all: the max_hours that fits the bench's upper range, and the worst case
    # there (rig.cost).
    upper = est.setup_s + est.pull_s + est.bench_high_s
    assert est.hours_needed == math.ceil(upper / 3600 * 2) / 2 >= upper / 3600
    rates = g4dn_rates(profile, 0.838)
    assert est.worst_needed_usd == worst_case_usd(rates, est.hours_needed)
    # The VM stops at max_hours: the estimate never bills past it.
    assert est.usd == round(rates.running * 1.5, 2)
    assert "the VM stops after 1.5 h, before the bench ends" in est.line()
    assert cli.main(["plan", "--config", str(path), "--offline", "--cloud", "aws"]) == 0
    out = capsys.readouterr().out
    assert "not reached before the max_hours stop" in out
    assert f"window 1: .venv/bin/bench run --models {' '.join(est.runs[0])}" in out
    assert f"autostop.max_hours = {est.hours_needed:g}" in out


def test_only_the_idle_tail_past_max_hours_is_no_overrun(profile_file):
    """The bench ends inside the window and only the idle tail would run past it: that fits
    (the stop ends the idle tail early, which only saves); the bill stops at max_hours."""
    profile = load_profile(profile_file())
    full = estimate(profile, CAT, G4DN)
    hours = math.ceil(full.work_s / 60 + 1) / 60  # one minute more than the bench needs
    assert hours * 3600 < full.total_s  # the idle tail would run past it
    short = estimate(
        load_profile(profile_file(("autostop", "max_hours", f"{hours:.4f}"))), CAT, G4DN
    )
    assert short.fits_window and not short.runs and not short.not_reached
    assert short.billed_h == pytest.approx(short.window_h)
    assert "before the bench ends" not in short.line()


def test_no_split_is_offered_when_none_can_fit(profile_file, capsys):
    """max_hours = 0.25: setup (10 min) + one model's requests do not fit any window, so no
    "split into runs that fit" is printed (it could not be kept); the notes say what to do."""
    path = profile_file(("autostop", "max_hours", "0.25"))
    est = estimate(load_profile(path), CAT, G4DN)
    assert not est.fits_window and est.runs == []
    assert est.not_reached == [m.model for m in est.models]
    (note,) = [n for n in est.notes if "longer than one max_hours window" in n]
    assert "raise autostop.max_hours" in note
    assert cli.main(["plan", "--config", str(path), "--offline", "--cloud", "aws"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "split into" not in out
    assert f"or in one run: autostop.max_hours = {est.hours_needed:g}" in out
    # All targets together: the wall time ends at the stop, and says it was cut short.
    plan = spending_plan(load_profile(path), CAT, offline=True)
    assert plan.wall_s == pytest.approx(0.25 * 3600)


def test_setup_minutes_that_fill_the_window_are_one_line(profile_file, capsys):
    path = str(profile_file())
    assert cli.main(["plan", "--config", path, "--offline", "--setup-minutes", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("--setup-minutes 100000: not less than autostop.max_hours = 4 h")
    assert "give the minutes a deploy takes" in err
    # Just under the window: a plan, whose note says setup leaves no room for the bench.
    assert cli.main(["plan", "--config", path, "--offline", "--setup-minutes", "239"]) == 0
    assert "longer than one max_hours window" in capsys.readouterr().out


def test_plan_shows_what_a_stopped_vm_costs_per_day(profile_file, capsys):
    """After the stop the disk (AWS; the auto-assigned IPv4 is released on stop: EC2 User
    Guide, "Public IPv4 addresses") or the disk and static IP (Azure) bill until make destroy:
    the plan says how much, per stand-in and in total, with rig.cost's one formula."""
    profile = load_profile(profile_file(("azure", "location", '"eastus"')))
    plan = spending_plan(profile, CAT, offline=True)
    aws, az = plan.targets
    g4dn = g4dn_rates(profile, 0.838)
    assert aws.stopped_usd_per_day == round(g4dn.disk * 24, 2) == 1.09
    east = az_pricing.catalog_cost(profile, NC8).worst
    assert az.stopped_usd_per_day == round((east.disk + east.public_ip) * 24, 2)
    assert plan.stopped_usd_per_day == round(aws.stopped_usd_per_day + az.stopped_usd_per_day, 2)
    print_spending(plan, Console(width=400), CAT)
    out = capsys.readouterr().out
    assert f"after the stop ${aws.stopped_usd_per_day:.2f}/day (the disk;" in out
    assert f"after the stops ${plan.stopped_usd_per_day:.2f}/day until make destroy" in out
    # The default westeurope profile: the disk is unknown offline, the IP is a floor; the
    # total worst case is the known part, said to be one.
    default = spending_plan(load_profile(profile_file()), CAT, offline=True)
    aws_d, az_d = default.targets
    assert default.worst_usd is None
    assert default.worst_floor_usd == round(aws_d.worst_usd + az_d.worst_floor_usd, 2)
    print_spending(default, Console(width=400), CAT)
    out = capsys.readouterr().out
    assert f"worst case at least ${default.worst_floor_usd:.2f} + what is read live" in out
    assert "after the stop at least $0.12/day (the OS disk and the static public IP" in out


def test_azure_window_ends_where_the_shutdown_schedule_can_hold_it(profile_file):
    """max_hours = 30 (allow_long_runs): Azure's daily shutdown schedule deallocates the VM
    after 23 h 59 min at most (rig/azure/schedule.py), so the plan's window, bill and worst case
    stop there; the watchdog's shorter max_hours (0.25) still ends the window sooner, while the
    schedule's earliest (its 60-minute lead + 10 minutes to answer the deploy) bounds the worst
    case."""
    long = load_profile(
        profile_file(("autostop", "max_hours", "30"), ("autostop", "allow_long_runs", "true"))
    )
    s = azure_standin(long, CAT, NC8)
    assert s.window_h == s.worst_h == 23.98
    short = azure_standin(load_profile(profile_file(("autostop", "max_hours", "0.25"))), CAT, NC8)
    assert (short.window_h, short.worst_h) == (0.25, 1.17)


def test_daily_shutdown_is_planned_for(profile_file):
    """Both clouds also stop the VMs daily at autostop.daily_shutdown (AWS: the stack's
    EventBridge Scheduler cron; Azure: the shutdown schedule): the plan says by when to deploy
    for the bench's upper range to end first."""
    profile = load_profile(profile_file())  # daily_shutdown 19:00 UTC
    est = estimate(profile, CAT, G4DN)
    upper = math.ceil((est.setup_s + est.pull_s + est.bench_high_s) / 60)
    latest = 19 * 60 - upper
    (note,) = [n for n in est.notes if n.startswith("autostop.daily_shutdown")]
    assert f"by {latest // 60:02d}:{latest % 60:02d} UTC" in note
    # An early daily stop wraps round midnight: 01:00 and a run of ~2 h -> deploy by ~23:00.
    early = estimate(
        load_profile(profile_file(("autostop", "daily_shutdown", '"01:00"'))), CAT, G4DN
    )
    latest = (24 * 60 + 60 - upper) % (24 * 60)
    (note,) = [n for n in early.notes if n.startswith("autostop.daily_shutdown")]
    assert f"deploy after 01:00 or by {latest // 60:02d}:{latest % 60:02d} UTC" in note
    off = load_profile(profile_file(("autostop", "daily_shutdown", '"off"')))
    assert not [n for n in estimate(off, CAT, G4DN).notes if "daily_shutdown" in n]


def test_json_schema(profile_file, capsys):
    path = str(profile_file())
    assert cli.main(["plan", "--config", path, "--json", "--offline", "--download-mbs", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"profile", "work", "prices", "assumptions", "targets", "total",
                         "comparison"}  # fmt: skip
    assert data["assumptions"] == {"download_mbs": 100.0}
    assert data["prices"] == {"live": False, "notes": ["prices: catalog only (--offline)"]}
    aws, az = data["targets"]
    assert (aws["target"], az["target"]) == (f"aws-{G4DN}", f"azure-{NC8}")
    for key, kind in {
        "setup_s": float, "pull_s": float, "pull_gb": float, "bench_s": float,
        "bench_low_s": float, "bench_high_s": float, "idle_s": float, "total_s": float,
        "window_h": float, "disk_gb": int, "disk_needed_gb": float, "worst_h": float,
        "worst_text": str, "sources": dict, "models": list, "disk_fits": bool,
        "fits_window": bool, "notes": list, "runs": list, "not_reached": list,
    }.items():  # fmt: skip
        assert isinstance(aws[key], kind), key
    assert aws["bench_low_s"] < aws["bench_s"] < aws["bench_high_s"]
    assert set(aws["by_workload"]) == {"chat-en", "chat-ja", "code", "long-context"}
    assert sum(aws["by_workload"].values()) == pytest.approx(aws["bench_s"])
    assert isinstance(aws["usd"], float) and az["usd"] is None and az["usd_floor"] > 0
    assert set(aws["rates"]) == {"compute", "disk", "public_ip", "other"}
    model = aws["models"][0]
    wanted = {"model", "requests", "warmups", "gpu_share", "verdict", "decode_tok_s",
              "prefill_tok_s", "seconds", "end_s", "in_window", "skipped_cases"}  # fmt: skip
    assert wanted <= set(model)
    # 100 MB/s halves the assumed download time (still slower than the disk's write).
    assert aws["pull_s"] == pytest.approx(aws["pull_gb"] * 1000 / 100)
    total = data["total"]
    assert total["wall_s"] == max(aws["total_s"], az["total_s"])
    assert total["usd"] is None and total["worst_usd"] is None  # Azure's disk is unknown offline
    assert total["usd_floor"] == round(aws["usd"] + az["usd_floor"], 2)
    assert data["comparison"]["columns"][0]["target"] == "pc"


def test_a_bad_assumption_flag_is_refused(profile_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plan", "--config", str(profile_file()), "--download-mbs", "0"])
    assert exit_.value.code == 2
    assert "--download-mbs: '0' is not a positive number" in capsys.readouterr().err


# --------------------------------------------------------------------- live vs offline prices


def spot_history(prices: dict[str, str]) -> dict[str, Any]:
    """DescribeSpotPriceHistory as the EC2 API Reference shows it (SpotPrice is a string)."""
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": az,
                "InstanceType": G4DN,
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": price,
                "Timestamp": NOW - dt.timedelta(minutes=5),
            }
            for az, price in prices.items()
        ],
        "NextToken": "",
    }


def stubbed_ec2(answer: dict[str, Any] | None) -> tuple[Aws, Stubber]:
    aws = Aws("eu-west-1", boto3.Session(region_name="eu-west-1"))
    client = boto3.client("ec2", region_name="eu-west-1")
    aws._clients["ec2"] = client
    stub = Stubber(client)
    if answer is None:
        stub.add_client_error("describe_spot_price_history", "UnauthorizedOperation", "denied")
    else:
        stub.add_response("describe_spot_price_history", answer)
    stub.activate()
    return aws, stub


def unreachable(*_a: Any) -> Response:
    raise CommandError("cannot reach prices.azure.com")


def retail(method: str, url: str, headers: Any, form: Any) -> Response:
    """prices.azure.com as its documentation shows it (the fixtures' payloads)."""
    if "Virtual+Machines" in url:
        return Response(200, fixture("retail_prices.json"))
    if "Storage" in url:
        return Response(200, fixture("retail_disk.json"))
    if "Virtual+Network" in url:
        return Response(200, fixture("retail_ip.json"))
    return Response(200, {"Items": []})


def test_aws_spot_price_read_live_when_credentials_exist(profile_file, aws_env):
    profile = load_profile(profile_file())
    aws, stub = stubbed_ec2(spot_history({"eu-west-1a": "0.3120", "eu-west-1b": "0.2706"}))
    priced = priced_standins(profile, CAT, aws_for=lambda region: aws, http=unreachable, now=NOW)
    stub.assert_no_pending_responses()
    live, az = priced.standins
    # The cheapest AZ's price now: where the deploy goes.
    assert live.now is not None and live.now.compute == 0.2706
    assert live.compute_source.startswith("live: describe_spot_price_history")
    assert "eu-west-1b" in live.compute_source and priced.live
    est = estimate(profile, CAT, live)
    assert est.usd == round(g4dn_rates(profile, 0.2706).running * est.total_s / 3600, 2)
    # The worst case stays compute at its cap (on-demand): live spot prices move.
    assert est.worst_usd == worst_case_usd(g4dn_rates(profile, 0.838), 4)
    # Azure did not answer: catalog prices, and the plan says why.
    assert az.now is None and az.unknown is not None
    assert any("prices.azure.com did not answer" in n for n in priced.notes)


def test_aws_spot_price_that_cannot_be_read_falls_back_to_the_catalog(profile_file, aws_env):
    profile = load_profile(profile_file())
    aws, _ = stubbed_ec2(None)
    priced = priced_standins(profile, CAT, aws_for=lambda region: aws, http=unreachable, now=NOW)
    offline = aws_standin(profile, CAT, G4DN)
    assert priced.standins[0] == offline and not priced.live
    assert any("UnauthorizedOperation" in n and "catalog prices" in n for n in priced.notes)


def test_azure_retail_prices_read_live(profile_file, aws_env):
    profile = load_profile(profile_file(("aws", "enabled", "false")))
    priced = priced_standins(profile, CAT, http=retail, now=NOW)
    (s,) = priced.standins
    est = estimate(profile, CAT, s)
    # Retail fixtures: NC8as T4 v3 0.84 on demand, Spot 0.1932; P15 LRS Disk 41.82/month; the
    # static IP 0.005/h. Spot bills the spot price now, at most on-demand (max_price -1).
    disk = round(41.82 / 730, 5)
    assert s.now == HourlyRates(0.1932, disk, 0.005)
    assert est.usd == round(HourlyRates(0.1932, disk, 0.005).running * est.total_s / 3600, 2)
    assert est.worst_usd == worst_case_usd(HourlyRates(0.84, disk, 0.005), 4)
    assert est.sources["compute"].startswith("azure retail prices API")
    assert est.unknown is None and priced.live


def test_azure_offline_when_not_signed_in(profile_file, monkeypatch):
    import rig.azure.credentials as creds

    monkeypatch.setattr(creds, "find_credentials", lambda **_: None)
    profile = load_profile(profile_file(("aws", "enabled", "false")))
    priced = priced_standins(profile, CAT)
    assert priced.notes == ["Azure: not signed in (az login): catalog prices"]
    assert priced.standins == [azure_standin(profile, CAT, NC8)]


# ------------------------------------------------------------ one figure everywhere (§1 Done)


def test_readme_check_plan_and_confirmations_show_one_worst_case(profile_file, capsys):
    """The README's default-profile worst case, `rig check`, `rig plan` and the deploy
    confirmations: the same figure, from rig.cost through the same rates."""
    path = profile_file()
    profile = load_profile(path)
    # AWS, default g4dn.2xlarge: the README's cost line ...
    (readme_g4dn,) = [line for line in block("aws-costs") if line.startswith(f"- {G4DN} ")]
    readme_worst = re.search(r"worst case 4 h, \$([\d.]+)", readme_g4dn)
    assert readme_worst
    # ... rig plan (offline: catalog) ...
    plan = spending_plan(profile, CAT, offline=True)
    aws_est, az_est = plan.targets
    assert aws_est.worst_text == f"worst case 4 h, ${readme_worst.group(1)}"
    # ... rig check ...
    assert cli.main(["check", "--config", str(path)]) == 0
    check = " ".join(capsys.readouterr().out.split())
    assert f"at most ${readme_worst.group(1)} before max_hours stops it" in check
    # ... and the deploy confirmation, at a live spot price: same worst case, and the estimate
    # line is rig plan's estimate at that price.
    cap = g4dn_rates(profile, 0.838)
    type_plan = TypePlan(
        placement=Placement(G4DN, "eu-west-1"), gpu="t4", vcpu=8, azs=["eu-west-1b"],
        spot_prices={"eu-west-1b": 0.2706}, on_demand=0.838,
        on_demand_source="vantage-2026-01-21", spot=True, cap=0.838, worst=cap,
        throughput_mbs=417, pins=Pins("ami-0a1b2c3d4e5f60718", "2027-11-28T09:00:00Z", "new"),
    )  # fmt: skip
    pre = Preflight("111122223333", "arn:aws:sts::111122223333:assumed-role/Dev/a", "Dev",
                    [type_plan], at="2026-11-28T09:00:00+00:00")  # fmt: skip
    confirmation = "\n".join(confirmation_lines(pre, profile, CAT))
    at_spot = estimate(profile, CAT, aws_standin(profile, CAT, G4DN, None, 0.2706, "live"))
    assert f"  {aws_est.worst_text} (compute at its cap" in confirmation
    assert f"  {at_spot.line()}" in confirmation
    assert at_spot.line().endswith(f"; {aws_est.worst_text}")
    # The README's example of that line is this very line.
    assert f"`{at_spot.line()}` at a spot price of $0.2706/h" in " ".join(README.split())
    # Azure, default westeurope: no published P15 figure — every surface says so.
    (readme_we, readme_east) = block("azure-costs")
    unknown = az_pricing.offline_unknown_text(profile, NC8)
    assert readme_we == f"- {NC8} (westeurope): {az_pricing.cost_summary(profile, NC8)}"
    assert unknown is not None and unknown in readme_we
    floor = f"at least ${az_est.worst_floor_usd:.2f}"
    assert az_est.worst_text == f"worst case 4 h: {floor} + {unknown}" and unknown in check
    assert f"worst case {floor} + {unknown}" in check  # rig check: the same known part
    # eastus, where every rate is published: the README's figure = check = plan.
    east_path = profile_file(("azure", "location", '"eastus"'))
    east = load_profile(east_path)
    assert readme_east == f"- {NC8} (eastus): {az_pricing.cost_summary(east, NC8)}"
    east_est = estimate(east, CAT, azure_standin(east, CAT, NC8))
    figure = re.search(r"worst case 4 h, \$([\d.]+)", readme_east)
    assert figure and east_est.worst_text == f"worst case 4 h, ${figure.group(1)}"
    assert cli.main(["check", "--config", str(east_path)]) == 0
    assert f"at most ${figure.group(1)} before" in " ".join(capsys.readouterr().out.split())
    # The Azure deploy's confirmation, with live retail prices: the plan reading the same
    # prices shows the same worst case and estimate.
    quote = az_pricing.parse_retail(fixture("retail_prices.json")["Items"], NOW)
    cost = az_pricing.vm_cost(profile, NC8, quote, az_pricing.Extras(41.82, 0.005), NOW, CAT)
    stop = cloud_stop(profile.autostop, NOW)
    lines = _cost_lines(NC8, cost, stop, profile, CAT)
    live_plan = spending_plan(profile, CAT, cloud="azure", http=retail)
    (live_az,) = live_plan.targets
    assert live_az.worst_text == worst_case_text(cost.worst, stop.hours)
    assert lines[1].strip().startswith(live_az.worst_text)
    assert lines[2].strip() == live_az.line()


def test_deploy_lines_bill_at_most_until_the_daily_stop(profile_file):
    """A deploy at 17:30 UTC with daily_shutdown 19:00 UTC: both clouds stop the VM at 19:00
    (AWS: the stack's DailyStop cron; Azure: the shutdown schedule, cloud_stop), 1.5 h in, so
    both confirmations' estimate lines bill at most 1.5 h and say the bench is cut short; the
    worst case stays the max_hours bound (AWS) or the schedule's own hours (Azure)."""
    profile = load_profile(profile_file())
    late = dt.datetime(2026, 11, 28, 17, 30, tzinfo=dt.UTC)
    rates = g4dn_rates(profile, 0.838)
    type_plan = TypePlan(
        placement=Placement(G4DN, "eu-west-1"), gpu="t4", vcpu=8, azs=["eu-west-1b"],
        spot_prices={"eu-west-1b": 0.2706}, on_demand=0.838,
        on_demand_source="vantage-2026-01-21", spot=True, cap=0.838, worst=rates,
        throughput_mbs=417, pins=Pins("ami-0a1b2c3d4e5f60718", "2027-11-28T09:00:00Z", "new"),
    )  # fmt: skip
    pre = Preflight("111122223333", "arn:aws:sts::111122223333:assumed-role/Dev/a", "Dev",
                    [type_plan], at=late.isoformat())  # fmt: skip
    (line,) = [x for x in confirmation_lines(pre, profile, CAT) if "estimated" in x]
    at_spot = HourlyRates(0.2706, rates.disk, rates.public_ip)
    assert "the VM stops after 1.5 h, before the bench ends" in line
    assert f", ${round(at_spot.running * 1.5, 2):.2f}; worst case 4 h, $" in line
    quote = az_pricing.parse_retail(fixture("retail_prices.json")["Items"], late)
    cost = az_pricing.vm_cost(profile, NC8, quote, az_pricing.Extras(41.82, 0.005), late, CAT)
    stop = cloud_stop(profile.autostop, late)
    assert stop.hours == 1.5
    az_line = _cost_lines(NC8, cost, stop, profile, CAT)[2]
    assert "the VM stops after 1.5 h, before the bench ends" in az_line
    assert f", ${round(cost.now.running * 1.5, 2):.2f}; worst case 1.5 h, $" in az_line


def test_readme_default_plan_lines_are_the_plans(profile_file):
    profile = load_profile(profile_file())
    plan = spending_plan(profile, CAT, offline=True)
    assert block("plan-default") == [f"- {t.target}: {t.line()}" for t in plan.targets]


# --------------------------------------------------------------- the bench and the report


def test_bench_estimate_needs_no_cloud_sdk():
    """The bench computes the estimate from the catalog and the state's prices: importing and
    running it loads neither boto3 nor an Azure SDK."""
    code = (
        "import sys\n"
        "from bench.cli import _estimates\n"
        "from bench.runner import Plan\n"
        "from bench.schema import TargetInfo\n"
        "from types import SimpleNamespace\n"
        "from pathlib import Path\n"
        "from rich.console import Console\n"
        "info = TargetInfo('aws-g4dn.2xlarge', '', 'ollama', kind='cloud', gpu='t4', "
        "cloud='aws', instance_type='g4dn.2xlarge', region='eu-west-1', usd_per_hour=0.27, "
        "disk_usd_per_hour=0.042, public_ip_usd_per_hour=0.005)\n"
        "plan = Plan(['llama3:8b'], ['chat-en'], 1, model_ctx={'llama3:8b': 8192})\n"
        "out = _estimates([SimpleNamespace(info=info)], plan, Path('/nonexistent'), Console())\n"
        "assert out['aws-g4dn.2xlarge']['models'][0]['requests'] == 2, out\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', "
        "'azure', 'pulumi', 'pulumi_azure_native')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_bench_run_stores_the_estimate_and_the_report_compares_it(tmp_path, monkeypatch):
    """A real `bench run` (in process) against the Ollama stand-in, as a deployed g4dn.2xlarge:
    meta.json gets the plan's estimate at the state's prices and the wall-time span; the
    report shows estimate vs actual in English and Japanese."""
    with FakeOllama(token_delay_s=0.001) as fake:
        info = TargetInfo(
            name=f"aws-{G4DN}", url=fake.url, backend="ollama", label=f"aws {G4DN}",
            kind="cloud", gpu="t4", cloud="aws", instance_type=G4DN, region="eu-west-1",
            spot=True, usd_per_hour=0.2706, price_source="describe_spot_price_history",
            disk_usd_per_hour=0.04207, public_ip_usd_per_hour=0.005,
        )  # fmt: skip
        deployed = ("deployed", [TargetSpec(info)])
        monkeypatch.setattr(bench_cli, "_choose", lambda args, console: deployed)
        code = bench_cli.main([
            "run", "--models", "llama3:8b", "--workloads", "chat-en", "--repetitions", "1",
            "--quick", "--results-dir", str(tmp_path / "results"), "--no-report",
        ])  # fmt: skip
    assert code == 0
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if not p.is_symlink()]
    meta = RunMeta.from_json(json.loads((run_dir / "meta.json").read_text()))
    est = meta.estimates[f"aws-{G4DN}"]
    # The bench part only (setup and pulls happened at deploy), at the state's prices.
    assert (est["setup_s"], est["pull_s"], est["idle_s"]) == (0.0, 0.0, 0.0)
    assert est["rates"] == {"compute": 0.2706, "disk": 0.04207, "public_ip": 0.005, "other": 0.0}
    assert [m["requests"] for m in est["models"]] == [1]  # quick: one chat-en case, 1 rep
    assert "the price the deploy recorded" in est["sources"]["compute"]
    ((start, end),) = meta.spans[f"aws-{G4DN}"]
    assert start <= end
    run = load_run(run_dir)
    en = {s.key: s for s in build_sections(run, "en", CAT)}["estimate"]
    ja = {s.key: s for s in build_sections(run, "ja", CAT)}["estimate"]
    assert en.title == "Estimate vs actual" and ja.title == "見積もりと実績"
    (row,) = en.blocks[1].rows
    actual_s = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
    assert row[1] == _hms(est["total_s"] / 3600) and row[3] == _hms(actual_s / 3600)
    rate = 0.2706 + 0.04207 + 0.005
    assert row[5] == f"{rate:.3f}" and row[7] == f"{rate * actual_s / 3600:.2f}"
    assert en.blocks[2] == "actual = the run's wall time on the target (meta.json spans)"
    assert ja.blocks[1].rows == en.blocks[1].rows and ja.blocks[0] != en.blocks[0]


def test_report_estimate_section_on_the_fixture_run(tmp_path):
    """The fixture run (tests/fixtures/run-mirror) with estimates as a bench would have stored
    them, and no spans (a run from before they were recorded): actual = first request to last
    answer; per-model detail needs spans, so none."""
    run_dir = tmp_path / "run"
    shutil.copytree(ROOT / "tests" / "fixtures" / "run-mirror", run_dir)
    meta_path = run_dir / "meta.json"
    meta = RunMeta.from_json(json.loads(meta_path.read_text()))
    profile = Profile.model_validate({"bench": meta.profile["bench"]})
    plan = bench_plan(profile, CAT)
    targets = [SimpleNamespace(info=t) for t in meta.targets]
    meta.estimates = bench_cli._estimates(targets, plan, tmp_path / "none.toml", Console())
    assert set(meta.estimates) == {"aws-g4dn.2xlarge", "aws-g5.xlarge"}  # not the CPU demo
    meta_path.write_text(json.dumps(meta.to_json()))
    for lang, title in (("en", "Estimate vs actual"), ("ja", "見積もりと実績")):
        (section,) = [
            s for s in build_sections(load_run(run_dir), lang, CAT) if s.key == "estimate"
        ]
        assert section.title == title
        assert len(section.blocks[1].rows) == 2 and len(section.blocks) == 3
    paths = write_report(run_dir, "ja")
    assert "見積もりと実績" in paths[0].read_text(encoding="utf-8")
