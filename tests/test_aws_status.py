"""`rig status` for AWS asks EC2 (rig/aws/status.py). Payloads are shaped as the EC2 API
Reference shows them (DescribeInstances → Instance: State, StateReason, StateTransitionReason,
LaunchTime, SpotInstanceRequestId; DescribeSpotInstanceRequests → SpotInstanceRequest: State,
Status.Code, ValidUntil; DescribeSpotPriceHistory → SpotPrice), with the state / status-code
pairs of the EC2 User Guide, "Spot request status" (State changes for a Spot request)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_fakes import FakeAws
from aws_helpers import REGION, deployer, write_profile
from botocore.stub import ANY, Stubber

from rig.aws.errors import NO_CREDENTIALS
from rig.aws.session import Aws
from rig.aws.status import live_row
from rig.problems import CommandError
from rig.state import Price, VmState, iso
from rig.status import LIVE_PROVIDERS, status_rows

pytest_plugins = ["aws_support"]  # fixtures: aws_env, fake, key_file
T0 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
IID = "i-0598c7d356eba48d7"
RID = "sir-08b93456"
DISK = 0.0417  # $/h: 200 GB gp3 at 417 MiB/s in eu-west-1 (catalog rates)
IPV4 = 0.005


def state(spot: bool = True, **extra: Any) -> VmState:
    return VmState(
        name="aws-g4dn.2xlarge",
        cloud="aws",
        region=REGION,
        instance_type="g4dn.2xlarge",
        gpu="t4",
        host="203.0.113.10",
        ssh_user="ubuntu",
        ssh_key="",
        spot=spot,
        price=Price(0.30 if spot else 0.838, "spot" if spot else "on-demand", "x", iso(T0), 0.838),
        deployed_at=iso(T0),
        deadline=iso(T0 + dt.timedelta(hours=4)),
        ids={"instance": IID, "stack": "gpu-rehearsal-g4dn-2xlarge"}
        | ({"spot_request": RID} if spot else {}),
        extra={
            "disk_usd_per_hour": DISK,
            "public_ipv4_usd_per_hour": IPV4,
            "spot_valid_until": "2027-11-25T00:00:00Z",
        }
        | extra,
    )


def instance(name: str, launched: dt.datetime, spot: bool = True, **more: Any) -> dict:
    codes = {"pending": 0, "running": 16, "stopping": 64, "stopped": 80, "terminated": 48}
    inst = {
        "InstanceId": IID,
        "InstanceType": "g4dn.2xlarge",
        "LaunchTime": launched,
        "State": {"Code": codes[name], "Name": name},
        "Placement": {"AvailabilityZone": "eu-west-1b"},
        "StateTransitionReason": "",
    } | more
    if spot:
        inst |= {"SpotInstanceRequestId": RID, "InstanceLifecycle": "spot"}
    return {"Reservations": [{"ReservationId": "r-1234567890abcdef0", "Instances": [inst]}]}


def request(state_: str, code: str, valid_until: dt.datetime | None = None) -> dict:
    req: dict[str, Any] = {
        "SpotInstanceRequestId": RID,
        "State": state_,
        "Status": {"Code": code, "Message": code, "UpdateTime": T0},
        "Type": "persistent",
        "InstanceInterruptionBehavior": "stop",
        "InstanceId": IID,
        "LaunchedAvailabilityZone": "eu-west-1b",
        "ProductDescription": "Linux/UNIX",
    }
    if valid_until is not None:
        req["ValidUntil"] = valid_until
    return {"SpotInstanceRequests": [req]}


def prices(*points: tuple[dt.datetime, str]) -> dict:
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": "eu-west-1b",
                "InstanceType": "g4dn.2xlarge",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": p,
                "Timestamp": t,
            }
            for t, p in reversed(points)  # newest first, as EC2 returns them
        ]
    }


def stubbed(*responses: tuple[str, dict]) -> tuple[Aws, Stubber]:
    ec2 = boto3.client("ec2", region_name=REGION)
    stub = Stubber(ec2)
    for op, body in responses:
        expected = None
        if op == "describe_spot_price_history":
            # The AZ's own history over the run (EC2 API Reference, DescribeSpotPriceHistory).
            expected = {
                "InstanceTypes": ["g4dn.2xlarge"],
                "ProductDescriptions": ["Linux/UNIX"],
                "AvailabilityZone": "eu-west-1b",
                "StartTime": ANY,
                "EndTime": ANY,
            }
        stub.add_response(op, body, expected)
    stub.activate()
    aws = Aws(REGION, boto3.Session(region_name=REGION))
    aws._clients["ec2"] = ec2
    return aws, stub


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_running_spot_vm_costs_what_the_price_history_says() -> None:
    launched = T0
    now = T0 + dt.timedelta(hours=2, minutes=30)
    aws, stub = stubbed(
        ("describe_instances", instance("running", launched)),
        ("describe_spot_instance_requests", request("active", "fulfilled")),
        # In force at the start (the last change before StartTime), then a rise after 1 h.
        (
            "describe_spot_price_history",
            prices((T0 - dt.timedelta(hours=1), "0.3000"), (T0 + dt.timedelta(hours=1), "0.3600")),
        ),
    )
    row = live_row(state(), now, aws)
    stub.assert_no_pending_responses()
    assert row["state"] == "running" and row["hours_billed"] == 2.5
    assert row["usd_compute"] == round(1 * 0.30 + 1.5 * 0.36, 2)  # 0.84
    assert row["usd_ipv4"] == round(2.5 * IPV4, 2)
    assert row["usd_stopped_extras"] == round(2.5 * DISK, 2)
    assert row["usd_total"] == round(0.84 + 2.5 * IPV4 + 2.5 * DISK, 2)
    assert row["usd_per_hour"] == round(0.36 + DISK + IPV4, 4)
    assert row["minutes_to_deadline"] == 90
    assert f"spot request {RID} active (fulfilled)" in row["note"]


def test_a_vm_stopped_days_ago_shows_its_real_hours_not_the_files() -> None:
    """The issue's example: three days past the deadline the file said "72 h up, $22.32"."""
    now = T0 + dt.timedelta(hours=72)
    stopped_at = T0 + dt.timedelta(hours=4)
    aws, _ = stubbed(
        (
            "describe_instances",
            instance(
                "stopped",
                T0,
                StateTransitionReason=f"User initiated ({stopped_at:%Y-%m-%d %H:%M:%S} GMT)",
                StateReason={
                    "Code": "Client.UserInitiatedShutdown",
                    "Message": "Client.UserInitiatedShutdown: User initiated shutdown",
                },
            ),
        ),
        ("describe_spot_instance_requests", request("disabled", "instance-stopped-by-user")),
        ("describe_spot_price_history", prices((T0 - dt.timedelta(hours=2), "0.2706"))),
    )
    row = live_row(state(), now, aws)
    assert row["state"] == "stopped" and row["hours_billed"] == 4.0
    assert row["usd_compute"] == round(4 * 0.2706, 2)
    assert row["usd_stopped_extras"] == round(72 * DISK, 2)  # the disk bills while stopped
    assert row["usd_per_hour"] == DISK and row["minutes_to_deadline"] == 0
    assert "only the disk bills" in row["note"]


def test_an_interrupted_vm_says_only_ec2_can_restart_it() -> None:
    now = T0 + dt.timedelta(hours=3)
    aws, _ = stubbed(
        (
            "describe_instances",
            instance(
                "stopped",
                T0,
                StateTransitionReason=f"Service initiated ({T0 + dt.timedelta(hours=1):%Y-%m-%d %H:%M:%S} GMT)",  # noqa: E501
                StateReason={
                    "Code": "Server.SpotInstanceShutdown",
                    "Message": "Server.SpotInstanceShutdown: Spot Instance shutdown",
                },
            ),
        ),
        ("describe_spot_instance_requests", request("disabled", "instance-stopped-no-capacity")),
        ("describe_spot_price_history", prices((T0, "0.2706"))),
    )
    row = live_row(state(), now, aws)
    assert row["state"] == "interrupted" and row["hours_billed"] == 1.0
    assert "only EC2 can restart an interrupted spot instance" in row["note"]
    assert "instance-stopped-no-capacity" in row["note"]


def test_a_terminated_vm_bills_nothing_and_points_to_destroy() -> None:
    now = T0 + dt.timedelta(hours=5)
    aws, _ = stubbed(
        (
            "describe_instances",
            instance(
                "terminated",
                T0,
                StateTransitionReason=f"User initiated ({T0 + dt.timedelta(hours=2):%Y-%m-%d %H:%M:%S} GMT)",  # noqa: E501
            ),
        ),
        ("describe_spot_instance_requests", request("closed", "instance-terminated-by-user")),
        ("describe_spot_price_history", prices((T0, "0.25"))),
    )
    row = live_row(state(), now, aws)
    assert row["state"] == "terminated" and row["usd_per_hour"] == 0.0
    assert row["hours_billed"] == 2.0 and "make destroy" in row["note"]


def test_a_running_vm_whose_request_was_cancelled_cannot_be_stopped() -> None:
    now = T0 + dt.timedelta(hours=1)
    aws, _ = stubbed(
        ("describe_instances", instance("running", T0)),
        (
            "describe_spot_instance_requests",
            request("cancelled", "request-canceled-and-instance-running"),
        ),
        ("describe_spot_price_history", prices((T0, "0.25"))),
    )
    row = live_row(state(), now, aws)
    assert row["state"] == "running"
    assert "can no longer be stopped" in row["note"] and "make destroy" in row["note"]


def test_an_expired_request_is_named() -> None:
    """ "The request state is cancelled if your Spot Instance is stopped and the request
    expires" (User Guide, Spot request status)."""
    now = T0 + dt.timedelta(days=10)
    aws, _ = stubbed(
        (
            "describe_instances",
            instance(
                "stopped",
                T0,
                StateTransitionReason=f"User initiated ({T0 + dt.timedelta(hours=1):%Y-%m-%d %H:%M:%S} GMT)",  # noqa: E501
            ),
        ),
        (
            "describe_spot_instance_requests",
            request("cancelled", "instance-stopped-by-user", T0 + dt.timedelta(days=7)),
        ),
        ("describe_spot_price_history", prices((T0, "0.25"))),
    )
    row = live_row(state(), now, aws)
    assert "the spot request expired (ValidUntil)" in row["note"]


def test_an_open_request_relaunches_and_is_said_so() -> None:
    now = T0 + dt.timedelta(hours=1)
    aws, _ = stubbed(
        ("describe_instances", instance("terminated", T0)),
        ("describe_spot_instance_requests", request("open", "pending-evaluation")),
        ("describe_spot_price_history", prices((T0, "0.25"))),
    )
    row = live_row(state(), now, aws)
    assert "the spot request is open: EC2 launches a new VM" in row["note"]


def test_valid_until_close_is_warned() -> None:
    now = T0 + dt.timedelta(hours=1)
    aws, _ = stubbed(
        ("describe_instances", instance("running", T0)),
        ("describe_spot_instance_requests", request("active", "fulfilled")),
        ("describe_spot_price_history", prices((T0, "0.25"))),
    )
    row = live_row(state(spot_valid_until=iso(T0 + dt.timedelta(days=5))), now, aws)
    assert "the spot request ends 2026-11-30 (ValidUntil)" in row["note"]


def test_on_demand_vm_uses_the_recorded_rate() -> None:
    now = T0 + dt.timedelta(hours=2)
    aws, stub = stubbed(("describe_instances", instance("running", T0, spot=False)))
    row = live_row(state(spot=False), now, aws)
    stub.assert_no_pending_responses()
    assert row["usd_compute"] == round(2 * 0.838, 2) and row["spot_request_state"] == ""


def test_a_vanished_instance_is_gone_not_running() -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    stub = Stubber(ec2)
    stub.add_client_error(
        "describe_instances",
        "InvalidInstanceID.NotFound",
        f"The instance ID '{IID}' does not exist",
    )
    stub.activate()
    aws = Aws(REGION, boto3.Session(region_name=REGION))
    aws._clients["ec2"] = ec2
    row = live_row(state(), T0, aws)
    assert row["state"] == "gone" and "make destroy" in row["note"]


def test_without_credentials_it_cannot_ask(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(CommandError) as err:
        live_row(state(), T0)
    assert str(err.value) == NO_CREDENTIALS


def test_rig_status_asks_ec2_through_the_registered_provider(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    from rig.cli import _parser

    _parser()  # what `python -m rig status` builds first: the AWS commands register EC2
    assert LIVE_PROVIDERS["aws"] == "rig.aws.status:live_row"
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (st,) = deployer(fake, config, tmp_path / "state").run()
    boto3.client("ec2", region_name=REGION).stop_instances(InstanceIds=[st.ids["instance"]])
    now = dt.datetime.fromisoformat(st.deadline) + dt.timedelta(days=3)
    (row,) = status_rows([st], now)
    assert row["verified"] is True
    assert row["state"] == "stopped" and row["minutes_to_deadline"] == 0
    assert row["hours_billed"] < 1  # stopped right after deploy, not "75 h up"


def test_an_experiment_interruption_is_an_interruption() -> None:
    """AWS FIS stops a spot VM with the code instance-stopped-by-experiment (request state
    disabled): EC2 User Guide, "State changes for a Spot request", Interruption experiments.
    Like any interruption, only EC2 restarts it."""
    now = T0 + dt.timedelta(hours=3)
    aws, _ = stubbed(
        (
            "describe_instances",
            instance(
                "stopped",
                T0,
                StateTransitionReason=f"Service initiated ({T0 + dt.timedelta(hours=1):%Y-%m-%d %H:%M:%S} GMT)",  # noqa: E501
            ),
        ),
        ("describe_spot_instance_requests", request("disabled", "instance-stopped-by-experiment")),
        ("describe_spot_price_history", prices((T0, "0.2706"))),
    )
    row = live_row(state(), now, aws)
    assert row["state"] == "interrupted"
    assert "only EC2 can restart an interrupted spot instance" in row["note"]


def test_the_two_minute_notice_is_said() -> None:
    """marked-for-stop (request active, instance running): EC2 is about to stop the VM
    (EC2 User Guide, "State changes for a Spot request", Fulfilled-terminal)."""
    now = T0 + dt.timedelta(hours=1)
    aws, _ = stubbed(
        ("describe_instances", instance("running", T0)),
        ("describe_spot_instance_requests", request("active", "marked-for-stop")),
        ("describe_spot_price_history", prices((T0, "0.2706"))),
    )
    row = live_row(state(), now, aws)
    assert row["state"] == "running"
    assert "2-minute interruption notice (marked-for-stop)" in row["note"]


def test_the_disk_bills_from_its_volume_not_from_the_last_redeploy() -> None:
    """A redeploy rewrites deployed_at, but the root volume (and its bill) dates from the first
    deploy: its CreateTime (EC2 API Reference, DescribeVolumes → Volume.CreateTime; the root
    device from Instance.RootDeviceName and BlockDeviceMappings)."""
    created = T0 - dt.timedelta(days=2)
    now = T0 + dt.timedelta(hours=1)
    aws, stub = stubbed(
        (
            "describe_instances",
            instance(
                "running",
                T0,
                RootDeviceName="/dev/sda1",
                BlockDeviceMappings=[
                    {
                        "DeviceName": "/dev/sda1",
                        "Ebs": {
                            "VolumeId": "vol-049df61146c4d7901",
                            "AttachTime": created,
                            "DeleteOnTermination": True,
                            "Status": "attached",
                        },
                    }
                ],
            ),
        ),
        ("describe_spot_instance_requests", request("active", "fulfilled")),
        ("describe_spot_price_history", prices((T0, "0.2706"))),
        (
            "describe_volumes",
            {
                "Volumes": [
                    {
                        "VolumeId": "vol-049df61146c4d7901",
                        "CreateTime": created,
                        "Size": 200,
                        "State": "in-use",
                        "VolumeType": "gp3",
                        "AvailabilityZone": "eu-west-1b",
                        "Encrypted": True,
                    }
                ]
            },
        ),
    )
    row = live_row(state(), now, aws)  # deployed_at = T0, the redeploy
    stub.assert_no_pending_responses()
    assert row["usd_stopped_extras"] == round(49 * DISK, 2)  # 2 days + 1 h, not 1 h
