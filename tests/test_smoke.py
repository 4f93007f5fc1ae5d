"""`python -m rig smoke`: the choice (cheapest size, smallest model, one hour), the profile it
writes, and — for AWS, in process against moto and the documented CloudFormation / spot
behaviour of tests/aws_fakes.py — a deploy whose bench fails mid-way still ending in a verified
destroy. The Azure smoke runs end to end as a process against a booted guest in
tests/test_journey.py (happy path, failure mid-way, Ctrl-C)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import boto3
import pytest
from aws_fakes import FakeAws, FakeCdk
from aws_helpers import REGION, write_profile
from rich.console import Console

from rig import smoke
from rig.aws.session import Aws
from rig.catalog import load_catalog
from rig.problems import CommandError
from rig.profile import load_profile
from rig.state import Price, VmState, read_all, write

pytest_plugins = ["aws_support"]  # fixtures: aws_env, fake, key_file
CAT = load_catalog()


def test_the_cheapest_aws_gpu_type_of_the_region_by_catalog_price(profile_file):
    # eu-west-1 on demand (REFERENCE.md, instances.vantage.sh 2026-01-21): g4dn.xlarge $0.587,
    # g4dn.2xlarge $0.838, g5.xlarge $1.123, g5.2xlarge $1.353; g6 is not offered there.
    choice = smoke.cheapest(load_profile(profile_file()), "aws", CAT)
    assert (choice.instance, choice.region, choice.usd_per_hour) == (
        "g4dn.xlarge",
        "eu-west-1",
        0.587,
    )
    assert choice.source.startswith("catalog ")


def test_azure_takes_the_live_price_and_never_guesses_one(profile_file):
    profile = load_profile(profile_file())
    # Offline, only NC8as_T4_v3 has a published westeurope figure: NC4as is left out, not guessed.
    offline = smoke.cheapest(profile, "azure", CAT, live=lambda region, size: None)
    assert (offline.instance, offline.usd_per_hour) == ("Standard_NC8as_T4_v3", 0.84)
    live = {"Standard_NC4as_T4_v3": 0.526, "Standard_NC8as_T4_v3": 0.84}
    online = smoke.cheapest(profile, "azure", CAT, live=lambda r, s: (live[s], "azure retail"))
    assert (online.instance, online.source) == ("Standard_NC4as_T4_v3", "azure retail")
    with pytest.raises(
        CommandError, match=r"no GPU size of azure has a known price in northeurope"
    ):
        smoke.cheapest(
            load_profile(profile_file(("azure", "location", '"northeurope"'))),
            "azure",
            CAT,
            live=lambda r, s: None,
        )


def test_the_smoke_profile_is_the_users_narrowed_and_validated(profile_file, tmp_path):
    key = tmp_path / "keys" / "me.pub"
    key.parent.mkdir()
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2HLkoRwWMprcPPlIrvT4OvK6fwzYU6kw11zc t\n")
    profile = load_profile(profile_file(("access", "ssh_public_key", '"keys/me.pub"')))
    model = smoke.smallest_model(profile, CAT)
    # The provisioning's own GPU-check choice: the smallest download of the list.
    assert model == min(profile.bench.models, key=lambda m: CAT.models[m].download_gb)
    choice = smoke.cheapest(profile, "aws", CAT)
    out = tmp_path / ".state" / "smoke" / "rig.toml"
    written = load_profile(smoke.smoke_profile(profile, "aws", choice, model, out), CAT)
    assert written.aws.instance_types == ["g4dn.xlarge"] and written.azure.enabled is False
    assert written.autostop.max_hours == 1
    assert (written.bench.models, written.bench.workloads, written.bench.repetitions) == (
        [model],
        ["chat-en"],
        1,
    )
    # Everything else is the user's: region, spot, disk, timeouts; the key path still resolves.
    assert written.aws.region == profile.aws.region and written.aws.disk_gb == profile.aws.disk_gb
    assert written.access.key_path(written.base_dir) == key
    assert tomllib.loads(out.read_text())["pc"] == profile.as_toml_dict()["pc"]


def test_a_vm_already_deployed_on_that_cloud_is_refused_before_anything(profile_file, tmp_path):
    state_dir = tmp_path / ".state"
    write(
        VmState(
            name="aws-g4dn.2xlarge",
            cloud="aws",
            region="eu-west-1",
            instance_type="g4dn.2xlarge",
            gpu="t4",
            host="203.0.113.10",
            ssh_user="ubuntu",
            ssh_key="k",
            spot=True,
            price=Price(0.3, "spot", "test", "2026-11-28T10:00:00+00:00"),
            deployed_at="2026-11-28T10:00:00+00:00",
            deadline="2026-11-28T14:00:00+00:00",
        ),
        state_dir,
    )
    run = smoke.Smoke(load_profile(profile_file()), "aws", Console(), state_dir=state_dir)
    with pytest.raises(CommandError, match=r"aws-g4dn.2xlarge is deployed on aws .*make destroy"):
        run.run()
    assert not (state_dir / "smoke").exists()


def test_nothing_created_means_nothing_to_destroy(profile_file, tmp_path):
    """A deploy that stops in its preflight (no credentials) never reaches `pulumi`: the smoke
    says so and runs no destroy (which would need the missing credentials)."""
    run = smoke.Smoke(
        load_profile(profile_file()),
        "azure",
        Console(record=True, width=200),
        state_dir=tmp_path / ".state",
        yes=True,
        live_price=lambda r, s: None,
        deploy_options={"tools_missing": lambda: None, "credentials": lambda sub: None},
        destroy_options={"credentials": lambda sub: pytest.fail("destroy was attempted")},
    )
    with pytest.raises(CommandError) as err:
        run.run()
    assert "no Azure credentials" in str(err.value) and "nothing was created" in str(err.value)
    assert run.touched is False


def live_instances() -> list[dict]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def aws_smoke(fake: FakeAws, tmp_path: Path, key_file: Path, bench) -> smoke.Smoke:
    config = write_profile(tmp_path, 'instance_types = ["g5.2xlarge"]', key_file)
    return smoke.Smoke(
        load_profile(config),
        "aws",
        Console(record=True, width=250),
        state_dir=tmp_path / ".state",
        results_dir=tmp_path / "results",
        yes=True,
        deploy_options=dict(
            aws_for=Aws,
            cdk=FakeCdk(fake),
            ip_lookup=lambda: "203.0.113.9",
            ssh_wait=lambda host: None,  # moto's instance has no sshd: the journey covers SSH
            provision=None,
            poll_s=0.01,
            stack_wait_s=5,
        ),
        destroy_options=dict(poll_s=0.01, wait_s=5),
        bench=bench,
    )


def test_aws_smoke_deploys_the_cheapest_type_for_one_hour_and_destroys_after_a_failure(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    seen: list[VmState] = []

    def bench_fails(state, state_dir, profile, results_dir, console):
        # What the bench meets when the tunnel cannot open (the VM's sshd is not up).
        seen.append(state)
        assert live_instances() and read_all(state_dir) == [state]
        raise CommandError("smoke: SSH tunnel to ubuntu@203.0.113.9 did not open: timeout")

    run = aws_smoke(fake, tmp_path, key_file, bench_fails)
    with pytest.raises(CommandError) as err:
        run.run()
    msg = str(err.value)
    assert err.value.exit_code == 1 and "\n" not in msg
    assert msg.startswith("smoke failed: SSH tunnel to ubuntu@203.0.113.9 did not open")
    assert "destroyed everything it created (verified: 0 left)" in msg
    (state,) = seen
    # The cheapest type of the region, not the profile's g5.2xlarge; the 1 h deadline.
    assert state.instance_type == "g4dn.xlarge" and state.extra["worst_case_usd"] > 0
    until = dt.datetime.fromisoformat(state.deadline) - dt.datetime.fromisoformat(state.deployed_at)
    hours = until.total_seconds() / 3600
    assert hours == smoke.SMOKE_MAX_HOURS
    # Verified gone: no instance, no open spot request, no stack, no state file.
    assert live_instances() == []
    requests = fake.requests.get(REGION, {}).values()
    assert requests and all(r.state == "cancelled" for r in requests)
    assert all(s.status == "DELETE_COMPLETE" for s in fake.stacks.values())
    assert read_all(tmp_path / ".state") == []
    text = run.console.export_text()
    assert "smoke: g4dn.xlarge in eu-west-1" in text and "max_hours 1" in text
    # rig plan's estimate for the smoke (catalog-priced), before the deploy even reads prices.
    assert "smoke estimate (aws-g4dn.xlarge, chat-en, one request): estimated " in text
    assert "worst case 1 h, $" in text
    assert text.index("smoke estimate") < text.index("preflight in eu-west-1")
    assert "orphan scan in eu-west-1: 0 left" in text


def test_aws_smoke_that_passes_prints_the_figures_and_destroys(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    def bench_ok(state, state_dir, profile, results_dir, console):
        run_dir = results_dir / "20261128T100000Z"
        run_dir.mkdir(parents=True)
        return smoke.Measured(0.42, 35.5, "server", 64, run_dir)

    run = aws_smoke(fake, tmp_path, key_file, bench_ok)
    assert run.run() == 0
    text = run.console.export_text()
    assert "time to first token 0.42 s, decode 35.5 tok/s (server), 64 tokens" in text
    assert "smoke: cost so far " in text and "smoke: passed" in text
    assert live_instances() == [] and read_all(tmp_path / ".state") == []
