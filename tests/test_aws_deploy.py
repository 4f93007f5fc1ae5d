"""`deploy aws` against moto's EC2 and the documented CloudFormation and spot-request behaviour
(tests/aws_fakes.py): pins kept across deploys, replacement refused or done safely, capacity
fallback, interrupted VMs, the confirmation, three candidates in two regions."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import boto3
import pytest
from aws_fakes import MOTO_AMI, FakeAws, FakeCdk
from aws_helpers import DLAMI, MOTO_ACCOUNT, OTHER_PUBKEY, REGION, deployer, write_profile

from rig.aws import names, pricing, scan
from rig.aws.deploy import ask
from rig.aws.preflight import SPOT_VALID_DAYS
from rig.aws.session import Aws
from rig.catalog import load_catalog
from rig.cost import worst_case_text
from rig.problems import CommandError
from rig.profile import Placement, load_profile
from rig.state import read_all, write

pytest_plugins = ["aws_support"]  # fixtures: aws_env, fake, key_file
G4DN = names.stack_name("g4dn.2xlarge")


def live_instances(region: str = REGION) -> list[dict]:
    ec2 = boto3.client("ec2", region_name=region)
    return [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]


def test_first_deploy_pins_ami_and_valid_until_and_prints_the_cost(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    cdk = FakeCdk(fake)
    d = deployer(fake, config, tmp_path / "state", cdk)
    (state,) = d.run()
    ((_, ctx, region),) = cdk.prepares
    assert region == REGION
    # The AMI the SSM parameter names today, and a ValidUntil a year out (botocore documents
    # ValidUntil "Default: 7 days from the current date", after which the VM cannot be stopped).
    assert ctx[names.CTX_AMI_PREFIX + "g4dn.2xlarge"] == MOTO_AMI
    until = dt.datetime.fromisoformat(ctx[names.CTX_VALID_UNTIL_PREFIX + "g4dn.2xlarge"][:-1])
    days = (until.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)).days
    assert SPOT_VALID_DAYS - 2 <= days <= SPOT_VALID_DAYS
    assert state.extra["ami"] == MOTO_AMI
    assert state.extra["spot_valid_until"] == ctx[names.CTX_VALID_UNTIL_PREFIX + "g4dn.2xlarge"]
    req = fake.request_of(REGION, state.ids["instance"])
    assert req is not None and state.ids["spot_request"] == req.id
    assert req.valid_until == state.extra["spot_valid_until"]
    assert state.region == REGION and d.waited == [state.host]
    assert read_all(tmp_path / "state") == [state]
    # The confirmation: account, region, type, $/h and the worst case from rig.cost, disk and
    # IPv4 included (the on-demand price is the spot cap: catalog, eu-west-1).
    text = d.console.export_text()
    cat = load_catalog()
    prof = load_profile(config)
    rates = pricing.rates_for(prof.aws, cat, Placement("g4dn.2xlarge", REGION), 0.838)
    assert f"AWS account {MOTO_ACCOUNT}" in text
    assert "g4dn.2xlarge in eu-west-1 (eu-west-1a): spot $" in text
    assert f"disk ${rates.disk:.3f}/h" in text and "public IPv4 $0.005/h" in text
    assert worst_case_text(rates, 4) in text
    # rig plan's estimate at the spot price just read, ending in the same worst case (#16).
    assert "  estimated " in text and f"; {worst_case_text(rates, 4)}\n" in text
    assert "while stopped (the disk) until make destroy" in text


def test_redeploy_keeps_the_pinned_ami_and_valid_until_and_changes_nothing(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    cdk = FakeCdk(fake)
    (first,) = deployer(fake, config, tmp_path / "state", cdk).run()
    fake.ssm[DLAMI] = "ami-0f0e0d0c0b0a09080"  # a new DLAMI was published meanwhile
    d = deployer(fake, config, tmp_path / "state", cdk)
    (second,) = d.run()
    ctx1, ctx2 = cdk.prepares[0][1], cdk.prepares[1][1]
    for key in (names.CTX_AMI_PREFIX, names.CTX_VALID_UNTIL_PREFIX):
        assert ctx2[key + "g4dn.2xlarge"] == ctx1[key + "g4dn.2xlarge"]
    assert second.ids["instance"] == first.ids["instance"]
    assert second.extra["ami"] == MOTO_AMI
    assert [i["InstanceId"] for i in live_instances()] == [first.ids["instance"]]
    assert fake.relaunched == []


def test_a_change_set_that_replaces_the_vm_is_refused(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    key_file.write_text(OTHER_PUBKEY + "\n")  # a new key: a new key pair, a new template
    d = deployer(fake, load_path := config, tmp_path / "state")
    with pytest.raises(CommandError) as err:
        d.run()
    msg = str(err.value)
    assert "would replace the VM" in msg and first.ids["instance"] in msg
    assert "LaunchTemplate (Always)" in msg and "REPLACE=1" in msg and "\n" not in msg
    assert [i["InstanceId"] for i in live_instances()] == [first.ids["instance"]]
    assert fake.stacks[(REGION, G4DN)].change_set is None  # deleted, not left waiting
    assert read_all(tmp_path / "state")[0].ids == first.ids
    assert load_path.exists()


def test_a_confirmed_replacement_cancels_the_old_request_first(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    old_request = first.ids["spot_request"]
    key_file.write_text(OTHER_PUBKEY + "\n")
    d = deployer(fake, config, tmp_path / "state", replace=True)
    (second,) = d.run()
    assert second.ids["instance"] != first.ids["instance"]
    # The old request was cancelled before CloudFormation terminated its instance, so it did
    # not reopen: one VM, one live request, nothing relaunched.
    assert fake.requests[REGION][old_request].state == "cancelled"
    assert fake.relaunched == []
    assert [i["InstanceId"] for i in live_instances()] == [second.ids["instance"]]
    live = scan.spot_requests(Aws(REGION), stacks=[G4DN])
    assert [r["SpotInstanceRequestId"] for r in live] == [second.ids["spot_request"]]
    assert f"cancelled spot request {old_request}" in d.console.export_text()


def test_the_fake_reopens_a_persistent_request_like_ec2(fake: FakeAws) -> None:
    """The quirk the guard exists for (EC2 User Guide, "Terminate a Spot Instance": the request
    "transitions to the open state so that a new Spot Instance can be launched")."""
    tags = [{"Key": "project", "Value": "gpu-rehearsal"}]
    iid, rid = fake.launch(REGION, "g4dn.2xlarge", "eu-west-1a", tags, "")
    boto3.client("ec2", region_name=REGION).terminate_instances(InstanceIds=[iid])
    assert len(fake.relaunched) == 1 and fake.requests[REGION][rid].instance_id != iid


@pytest.mark.parametrize("spot_message", [False, True], ids=["error-code", "spot-message"])
def test_capacity_failure_moves_to_the_next_az_and_leaves_nothing(
    fake: FakeAws, tmp_path: Path, key_file: Path, spot_message: bool
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    fake.no_capacity_azs = {"eu-west-1a"}
    # "There is no Spot capacity available that matches your request" comes without the
    # InsufficientInstanceCapacity code in some CloudFormation reasons.
    fake.spot_capacity_message = spot_message
    cdk = FakeCdk(fake)
    d = deployer(fake, config, tmp_path / "state", cdk)
    (state,) = d.run()
    assert [c[names.CTX_AZ_PREFIX + "g4dn.2xlarge"] for _, c, _ in cdk.prepares] == [
        "eu-west-1a",
        "eu-west-1b",
    ]
    assert state.ids["availability_zone"] == "eu-west-1b"
    assert "no capacity in eu-west-1a" in d.console.export_text()
    assert [i["InstanceId"] for i in live_instances()] == [state.ids["instance"]]


def test_an_interrupted_vm_is_waited_for_never_started(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    fake.interrupt(REGION, first.ids["instance"])
    d = deployer(fake, config, tmp_path / "state")
    with pytest.raises(CommandError) as err:
        d.run()
    # EC2 User Guide, "Stop interrupted Spot Instances": "Only Amazon EC2 can restart an
    # interrupted stopped Spot Instance" — so no StartInstances, a wait, and the reason.
    assert ("StartInstances", REGION) not in fake.calls
    assert "only EC2 can restart it" in str(err.value)
    assert "instance-stopped-no-capacity" in d.console.export_text()


def test_a_vm_the_watchdog_stopped_is_started(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    boto3.client("ec2", region_name=REGION).stop_instances(InstanceIds=[first.ids["instance"]])
    assert fake.requests[REGION][first.ids["spot_request"]].code == "instance-stopped-by-user"
    d = deployer(fake, config, tmp_path / "state")
    (state,) = d.run()
    assert ("StartInstances", REGION) in fake.calls
    assert f"{first.ids['instance']} was stopped: starting it" in d.console.export_text()
    assert state.host and state.ids["instance"] == first.ids["instance"]


def test_without_a_terminal_and_without_yes_nothing_is_spent(
    fake: FakeAws, tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a tty: CI, a pipe, cron
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    cdk = FakeCdk(fake)
    d = deployer(fake, config, tmp_path / "state", cdk, yes=False, confirm=ask)
    with pytest.raises(CommandError, match=r"needs a yes.*--yes.*YES=1"):
        d.run()
    assert cdk.prepares == [] and live_instances() == []
    assert "worst case 4 h, $" in d.console.export_text()  # the cost came first


def test_three_candidates_in_two_regions_in_one_run(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """The plan's g4dn + g5 in eu-west-1 and g6 in eu-north-1 (not offered in eu-west-1)."""
    config = write_profile(
        tmp_path,
        'instance_types = ["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge@eu-north-1"]',
        key_file,
    )
    cdk = FakeCdk(fake)
    states = deployer(fake, config, tmp_path / "state", cdk).run()
    assert [(s, r) for s, _, r in cdk.prepares] == [
        (names.stack_name("g4dn.2xlarge"), "eu-west-1"),
        (names.stack_name("g5.2xlarge"), "eu-west-1"),
        (names.stack_name("g6.2xlarge"), "eu-north-1"),
    ]
    assert [(s.name, s.region, s.gpu) for s in states] == [
        ("aws-g4dn.2xlarge", "eu-west-1", "t4"),
        ("aws-g5.2xlarge", "eu-west-1", "a10g"),
        ("aws-g6.2xlarge", "eu-north-1", "l4"),
    ]
    assert len(live_instances("eu-north-1")) == 1 and len(live_instances()) == 2
    # The bench reads them all from .state/ and runs them concurrently.
    from bench.targets import from_state_dir

    assert sorted(t.info.name for t in from_state_dir(tmp_path / "state")) == [
        "aws-g4dn.2xlarge",
        "aws-g5.2xlarge",
        "aws-g6.2xlarge",
    ]


def test_moving_a_deployed_type_to_another_region_is_refused(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (state,) = deployer(fake, config, tmp_path / "state").run()
    moved = write_profile(
        tmp_path, 'region = "eu-central-1"\ninstance_types = ["g4dn.2xlarge"]', key_file
    )
    cdk = FakeCdk(fake)
    with pytest.raises(CommandError, match=r"deployed in eu-west-1.*make destroy first"):
        deployer(fake, moved, tmp_path / "state", cdk).run()
    assert cdk.prepares == []
    write(state, tmp_path / "state")  # untouched


def test_a_failed_prepare_is_one_line_and_changes_nothing(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    cdk = FakeCdk(fake, rc=1)
    with pytest.raises(CommandError, match=r"could not prepare its change set \(exit 1\)"):
        deployer(fake, config, tmp_path / "state", cdk).run()
    assert live_instances() == [] and read_all(tmp_path / "state") == []


def test_stale_stack_reads_after_execute_neither_pass_nor_fail_early(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """DescribeStacks may still show the status from before ExecuteChangeSet (the CDK CLI polls
    again on such reads: aws-cdk-cli toolkit-lib cfn-api.ts stabilizeStack, "may be a stale
    read"). botocore's StackUpdateComplete waiter would take a stale UPDATE_COMPLETE as done
    and a stale UPDATE_ROLLBACK_COMPLETE as failed (its acceptors); rig.aws.stacks.settle reads
    again until the operation shows."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    fake.stacks[(REGION, G4DN)].status = "UPDATE_ROLLBACK_COMPLETE"  # an earlier failed update
    fake.stale_reads = 2
    # A longer max_hours moves the deadline schedule: an update (not a replacement).
    longer = write_profile(
        tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file, "[autostop]\nmax_hours = 5\n"
    )
    d = deployer(fake, longer, tmp_path / "state")
    (second,) = d.run()  # an update whose first two reads are stale
    assert fake.stacks[(REGION, G4DN)].status == "UPDATE_COMPLETE"
    assert second.ids["instance"] == first.ids["instance"]


def test_a_stack_that_cannot_take_a_change_set_is_refused_before_the_cdk_cli(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """CreateChangeSet refuses a stack in UPDATE_ROLLBACK_FAILED ("... is in
    UPDATE_ROLLBACK_FAILED state and can not be updated"); the fix is
    continue-update-rollback (CloudFormation User Guide, "Continue rolling back an update"),
    and the VM the stack holds may still bill."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    deployer(fake, config, tmp_path / "state").run()
    fake.stacks[(REGION, G4DN)].status = "UPDATE_ROLLBACK_FAILED"
    cdk = FakeCdk(fake)
    with pytest.raises(CommandError) as err:
        deployer(fake, config, tmp_path / "state", cdk).run()
    msg = str(err.value)
    assert "is UPDATE_ROLLBACK_FAILED and cannot be updated; its VM may still bill" in msg
    assert f"continue-update-rollback --region {REGION} --stack-name {G4DN}" in msg
    assert cdk.prepares == []
    fake.stacks[(REGION, G4DN)].status = "UPDATE_IN_PROGRESS"
    with pytest.raises(CommandError, match=r"another operation is still running"):
        deployer(fake, config, tmp_path / "state", cdk).run()
    assert cdk.prepares == []


def test_a_change_set_still_being_computed_is_never_executed(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """A change set lists its changes only once CREATE_COMPLETE (DescribeChangeSet Status);
    executing one the guard could not read would skip the replacement check."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    deployer(fake, config, tmp_path / "state").run()
    fake.change_set_pending = True
    key_file.write_text(OTHER_PUBKEY + "\n")  # a replacing change, hidden while pending
    with pytest.raises(CommandError, match=r"could not plan .*CREATE_IN_PROGRESS"):
        deployer(fake, config, tmp_path / "state", stack_wait_s=0.05).run()
    assert [op for op, _ in fake.calls].count("ExecuteChangeSet") == 1  # the first deploy's


def test_a_failed_replacement_names_the_vm_that_can_no_longer_be_stopped(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """A confirmed replacement cancels the old request first; if the update then fails and
    rolls back, the old VM stays, running, with a cancelled request — and "You can't stop a
    Spot Instance if the associated Spot Instance request is cancelled" (EC2 User Guide, "Stop
    a Spot Instance"). The deploy exits 1 naming it and the fix."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    key_file.write_text(OTHER_PUBKEY + "\n")
    fake.no_capacity_azs = {first.ids["availability_zone"]}  # the new VM cannot launch
    with pytest.raises(CommandError) as err:
        deployer(fake, config, tmp_path / "state", replace=True).run()
    msg = str(err.value)
    assert f"the old VM {first.ids['instance']} is still running and can no longer be " in msg
    assert "make destroy now" in msg and "\n" not in msg
    assert fake.requests[REGION][first.ids["spot_request"]].state == "cancelled"
    assert [i["InstanceId"] for i in live_instances()] == [first.ids["instance"]]


def test_a_rate_the_catalog_lacks_is_read_from_the_price_list(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """Stockholm's gp3 throughput rate is not in the catalog: the deploy reads it from the
    Price List Query API (GetProducts, us-east-1 endpoint) and prints the worst case with it;
    gp3 throughput is listed per GiBps-mo (51.2 here → $0.05 per MiB/s-month)."""
    config = write_profile(tmp_path, 'instance_types = ["g6.2xlarge@eu-north-1"]', key_file)
    d = deployer(fake, config, tmp_path / "state")
    (state,) = d.run()
    assert ("GetProducts", "us-east-1") in fake.calls
    # Per hour over 672 h, the shortest month (AWS bills a month's price over that month's
    # hours: re:Post Knowledge Center "ebs-volume-charges"), so no figure understates.
    disk = (200 * 0.0836 + (596 - 125) * 51.2 / 1024) / 672
    text = d.console.export_text()
    assert f"disk ${disk:.3f}/h" in text and "(AWS Price List API, read now)" in text
    assert state.extra["disk_usd_per_hour"] == round(disk, 5)


def test_no_price_no_deploy(fake: FakeAws, tmp_path: Path, key_file: Path) -> None:
    """When neither the catalog nor the Price List gives a rate, nothing is created: the worst
    case is never printed from a guessed price."""
    config = write_profile(tmp_path, 'instance_types = ["g6.2xlarge@eu-north-1"]', key_file)
    fake.pricing_denied = True
    cdk = FakeCdk(fake)
    with pytest.raises(CommandError) as err:
        deployer(fake, config, tmp_path / "state", cdk).run()
    msg = str(err.value)
    assert "gp3 throughput above 125 MiB/s per month: price unknown; live price needed" in msg
    assert "AccessDeniedException" in msg and "disk_throughput_mbs = 125" in msg
    assert cdk.prepares == [] and live_instances("eu-north-1") == []
    # At gp3's free baseline no throughput or IOPS rate is needed: the catalog suffices.
    base = write_profile(
        tmp_path,
        'instance_types = ["g6.2xlarge@eu-north-1"]\ndisk_throughput_mbs = 125',
        key_file,
    )
    (state,) = deployer(fake, base, tmp_path / "state", cdk).run()
    assert state.extra["disk_usd_per_hour"] == round(200 * 0.0836 / 672, 5)


def test_a_running_vm_whose_request_ended_is_not_handed_over(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """Past ValidUntil (or cancelled by hand) the request is cancelled while the VM keeps
    running ("request-canceled-and-instance-running": EC2 User Guide, "State changes for a Spot
    request"), and "You can't stop a Spot Instance if the associated Spot Instance request is
    cancelled" ("Stop a Spot Instance"): no idle alarm or max_hours stop works any more. A
    redeploy must say so and exit 1 rather than report the VM ready."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (first,) = deployer(fake, config, tmp_path / "state").run()
    boto3.client("ec2", region_name=REGION).cancel_spot_instance_requests(
        SpotInstanceRequestIds=[first.ids["spot_request"]]
    )
    req = fake.requests[REGION][first.ids["spot_request"]]
    assert (req.state, req.code) == ("cancelled", "request-canceled-and-instance-running")
    with pytest.raises(CommandError) as err:
        deployer(fake, config, tmp_path / "state").run()
    msg = str(err.value)
    assert f"{first.ids['instance']} runs but its spot request" in msg
    assert "nothing can stop it now" in msg and "make destroy" in msg
