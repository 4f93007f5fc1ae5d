"""rig/aws.py against moto (EC2, STS, CloudFormation, CloudWatch, Scheduler) and botocore's
Stubber where moto has no faithful answer (EC2 service quotas, realistic spot prices).
Nothing here reaches AWS: fake credentials, IMDS off, moto intercepts every call."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from rich.console import Console

from rig import aws
from rig.catalog import load_catalog
from rig.cli import main
from rig.problems import CommandError
from rig.profile import AccessSection, AwsSection, Profile, load_profile
from rig.state import read_all

REGION = "eu-west-1"
NOW = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
STACK = aws.stack_name("g4dn.2xlarge")
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2HLkoRwWMprcPPlIrvT4OvK6fwzYU6kw11zcUB0Sbj t"
MOTO_OWNER = "moto"  # moto's caller identity: arn:aws:sts::123456789012:user/moto


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(PUBKEY + "\n", encoding="utf-8")
    return path


def profile(**aws_fields: Any) -> Profile:
    return Profile(aws=AwsSection(**aws_fields), path=Path("/tmp/rig.toml"))


def quota_stub(session: aws.Aws, value: float, code: str = aws.QUOTA_SPOT) -> Stubber:
    """moto has no EC2 quotas: stub Service Quotas on the client rig.aws uses."""
    client = boto3.client("service-quotas", region_name=REGION)
    stub = Stubber(client)
    stub.add_response(
        "get_service_quota",
        {"Quota": {"QuotaCode": code, "Value": value, "ServiceCode": "ec2"}},
        {"ServiceCode": "ec2", "QuotaCode": code},
    )
    stub.activate()
    session._clients["service-quotas"] = client
    return stub


def spot_history(prices: dict[str, list[tuple[int, str]]]) -> dict[str, Any]:
    """A describe_spot_price_history answer: per AZ, (minutes before NOW, price) entries."""
    return {
        "SpotPriceHistory": [
            {
                "AvailabilityZone": az,
                "InstanceType": "g4dn.2xlarge",
                "ProductDescription": "Linux/UNIX",
                "SpotPrice": price,
                "Timestamp": NOW - dt.timedelta(minutes=ago),
            }
            for az, entries in prices.items()
            for ago, price in entries
        ]
    }


REALISTIC = {
    "eu-west-1a": [(5, "0.3120"), (65, "0.2990")],  # latest first is not guaranteed: by time
    "eu-west-1b": [(12, "0.2706")],
    "eu-west-1c": [(3, "0.2841")],
}


# --- preflight -------------------------------------------------------------------------------


def test_offerings_from_moto(moto: None) -> None:
    ops = aws.Aws(REGION)
    assert ops.offered_azs("g4dn.2xlarge") == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    assert ops.offered_azs("g6.2xlarge") == []


def test_type_not_offered_is_one_line(moto: None) -> None:
    ops = aws.Aws(REGION)
    quota_stub(ops, 64)
    with pytest.raises(CommandError, match=r"g6\.2xlarge is not offered in eu-west-1"):
        aws.preflight(ops, profile(instance_types=["g6.2xlarge"]), load_catalog(), NOW)


def test_spot_prices_latest_per_az_and_cheapest_first(moto: None) -> None:
    ops = aws.Aws(REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    stub = Stubber(ec2)
    stub.add_response(
        "describe_spot_price_history",
        spot_history(REALISTIC),
        {
            "InstanceTypes": ["g4dn.2xlarge"],
            "ProductDescriptions": ["Linux/UNIX"],
            "StartTime": NOW,
        },
    )
    stub.activate()
    ops._clients["ec2"] = ec2
    assert ops.spot_prices("g4dn.2xlarge", NOW) == {
        "eu-west-1a": 0.312,
        "eu-west-1b": 0.2706,
        "eu-west-1c": 0.2841,
    }
    stub.assert_no_pending_responses()


def _stub_preflight(ops: aws.Aws, quota: float, used_types: list[str] = ()) -> Stubber:
    """All of preflight's EC2/STS calls stubbed with realistic answers."""
    sts = boto3.client("sts", region_name=REGION)
    s1 = Stubber(sts)
    s1.add_response(
        "get_caller_identity",
        {"Account": "111122223333", "Arn": "arn:aws:sts::111122223333:assumed-role/Dev/alice"},
    )
    s1.activate()
    ec2 = boto3.client("ec2", region_name=REGION)
    s2 = Stubber(ec2)
    s2.add_response(
        "describe_instance_type_offerings",
        {
            "InstanceTypeOfferings": [
                {
                    "InstanceType": "g4dn.2xlarge",
                    "LocationType": "availability-zone",
                    "Location": az,
                }
                for az in ("eu-west-1a", "eu-west-1b", "eu-west-1c")
            ]
        },
    )
    s2.add_response("describe_spot_price_history", spot_history(REALISTIC))
    s2.add_response(
        "describe_instances",
        {
            "Reservations": [
                {
                    "Instances": [
                        {
                            "InstanceId": f"i-{n:017x}",
                            "InstanceType": t,
                            "InstanceLifecycle": "spot",
                            "CpuOptions": {"CoreCount": 4, "ThreadsPerCore": 2},
                            "State": {"Name": "running", "Code": 16},
                        }
                        for n, t in enumerate(used_types)
                    ]
                }
            ]
        },
    )
    s2.activate()
    ops._clients.update(sts=sts, ec2=ec2)
    quota_stub(ops, quota)
    return s2


def test_preflight_picks_cheapest_az_and_prints_worst_case() -> None:
    ops = aws.Aws(REGION)
    stub = _stub_preflight(ops, quota=16, used_types=["g5.2xlarge", "m6i.2xlarge"])
    prof = profile(instance_types=["g4dn.2xlarge"], disk_gb=200)
    pre = aws.preflight(ops, prof, load_catalog(), NOW)
    stub.assert_no_pending_responses()
    assert pre.owner == "Dev"  # role name, not the session
    (plan,) = pre.plans
    assert plan.azs == ["eu-west-1b", "eu-west-1c", "eu-west-1a"]
    assert plan.hourly == 0.2706
    assert plan.cap == 0.838  # no spot_max_price: the on-demand price from the catalog
    assert pre.used_vcpus == 8  # the g5 counts against the G quota, the m6i does not
    lines = "\n".join(aws.cost_lines(pre, prof))
    extra = aws.disk_usd_per_hour(prof) + aws.PUBLIC_IPV4_HOUR
    assert f"${(0.2706 + extra) * 4:.2f} at today's spot price" in lines
    assert f"${(0.838 + extra) * 4:.2f} if spot rises to its cap" in lines
    assert "disk still bills" in lines


def test_preflight_spot_quota_too_low_names_the_quota_and_link() -> None:
    ops = aws.Aws(REGION)
    _stub_preflight(ops, quota=8, used_types=["g4dn.xlarge"])
    with pytest.raises(CommandError) as err:
        aws.preflight(ops, profile(instance_types=["g4dn.2xlarge"]), load_catalog(), NOW)
    msg = str(err.value)
    assert "L-3819A6DF" in msg and "8 in use" in msg and "need 8" in msg
    assert aws.quota_link(REGION, "L-3819A6DF") in msg
    assert "\n" not in msg


def test_preflight_spot_cap_below_market_fails_early() -> None:
    ops = aws.Aws(REGION)
    _stub_preflight(ops, quota=64)
    with pytest.raises(CommandError, match=r"SpotMaxPriceTooLow"):
        aws.preflight(
            ops,
            profile(instance_types=["g4dn.2xlarge"], spot_max_price=0.2),
            load_catalog(),
            NOW,
        )


def test_quota_falls_back_to_the_default_when_never_set() -> None:
    ops = aws.Aws(REGION)
    client = boto3.client("service-quotas", region_name=REGION)
    stub = Stubber(client)
    stub.add_client_error("get_service_quota", "NoSuchResourceException", "not applied")
    stub.add_response(
        "get_aws_default_service_quota",
        {"Quota": {"QuotaCode": aws.QUOTA_ON_DEMAND, "Value": 0.0}},
        {"ServiceCode": "ec2", "QuotaCode": aws.QUOTA_ON_DEMAND},
    )
    stub.activate()
    ops._clients["service-quotas"] = client
    assert ops.quota_vcpus(aws.QUOTA_ON_DEMAND) == 0.0


def test_no_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    with pytest.raises(CommandError) as err:
        aws.preflight(aws.Aws(REGION), profile(), load_catalog(), NOW)
    assert str(err.value) == aws.NO_CREDENTIALS


@pytest.mark.parametrize(
    ("code", "expect"),
    [
        ("VcpuLimitExceeded", aws.quota_link(REGION, "L-DB2E81BA")),
        ("MaxSpotInstanceCountExceeded", aws.quota_link(REGION, "L-3819A6DF")),
        ("InsufficientInstanceCapacity", "retry later"),
        ("SpotMaxPriceTooLow", "spot_max_price"),
        ("Unsupported", "not offered"),
        ("ExpiredToken", "refresh them"),
        ("UnauthorizedOperation", "lacks a permission"),
    ],
)
def test_error_codes_become_one_line(code: str, expect: str) -> None:
    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "AWS said no"}}, "RunInstances"
    )
    line = str(aws.translate(exc, region=REGION, what="g4dn.2xlarge"))
    assert expect in line and "\n" not in line
    # The same code inside a CloudFormation failure reason is recognised too.
    assert aws.code_in_text(f"Resource handler returned message: ... ({code})") in (code, None)


def test_capacity_code_found_in_cloudformation_reason() -> None:
    reason = (
        'Resource handler returned message: "We currently do not have sufficient g4dn.2xlarge '
        "capacity in the Availability Zone you requested (eu-west-1a). (Service: Ec2, Status "
        'Code: 500, Error Code: InsufficientInstanceCapacity)"'
    )
    assert aws.code_in_text(reason) == "InsufficientInstanceCapacity"


# --- SSH source and key ------------------------------------------------------------------


def test_auto_ssh_source_resolves_to_a_single_address() -> None:
    assert aws.resolve_ssh_cidr(profile(), lambda: "203.0.113.9") == "203.0.113.9/32"
    assert aws.resolve_ssh_cidr(profile(), lambda: "2001:db8::5") == "2001:db8::5/128"
    fixed = Profile(access=AccessSection(ssh_source="198.51.100.7/32"))
    assert aws.resolve_ssh_cidr(fixed, lambda: pytest.fail("no lookup")) == "198.51.100.7/32"
    with pytest.raises(CommandError, match="could not find your public IP"):
        aws.resolve_ssh_cidr(profile(), lambda: "<html>")


def test_key_generated_once_under_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pub, private = aws.ensure_key(profile(), state)
    assert pub.startswith("ssh-ed25519 ") and private == state / "aws-rehearsal_ed25519"
    assert private.stat().st_mode & 0o077 == 0  # ssh-keygen writes the private key 0600
    assert aws.ensure_key(profile(), state) == (pub, private)


# --- deploy ------------------------------------------------------------------------------


class FakeCdk:
    """Stands in for the CDK CLI: "deploys" by launching the instance in moto."""

    def __init__(self, fail_azs: set[str] = frozenset()):
        self.fail_azs = fail_azs
        self.deploys: list[tuple[str, dict[str, str]]] = []
        self.destroys: list[list[str]] = []
        self.on_destroy: list[Any] = []

    def deploy(self, stack: str, context: dict[str, str], outputs: Path, region: str) -> int:
        self.deploys.append((stack, context))
        az = context[aws.CTX_AZ_PREFIX + "g4dn.2xlarge"]
        if az in self.fail_azs:
            return 1
        ec2 = boto3.client("ec2", region_name=region)
        tags = [
            {"Key": aws.TAG_PROJECT, "Value": aws.PROJECT},
            {"Key": aws.TAG_OWNER, "Value": context[aws.CTX_OWNER]},
            {"Key": aws.TAG_STACK, "Value": stack},
        ]
        inst = ec2.run_instances(
            ImageId="ami-12c6146b",
            InstanceType="g4dn.2xlarge",
            MinCount=1,
            MaxCount=1,
            Placement={"AvailabilityZone": az},
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]
        ec2.stop_instances(InstanceIds=[inst["InstanceId"]])  # as if the watchdog stopped it
        outputs.write_text(
            json.dumps(
                {
                    stack: {
                        "InstanceId": inst["InstanceId"],
                        "PublicIp": "192.0.2.99",
                        "AvailabilityZone": az,
                        "Region": region,
                        "SshUser": "ubuntu",
                        "KeyName": f"{stack}-key",
                    }
                }
            )
        )
        return 0

    def destroy(self, stacks: list[str], context: dict[str, str], region: str) -> int:
        self.destroys.append(stacks)
        for hook in self.on_destroy:
            hook()
        cfn = boto3.client("cloudformation", region_name=region)
        for s in stacks:
            cfn.delete_stack(StackName=s)
        return 0


def _deployer(tmp_path: Path, key_file: Path, cdk: FakeCdk, **kw: Any) -> aws.Deployer:
    prof = Profile(
        aws=AwsSection(instance_types=["g4dn.2xlarge"]),
        access=AccessSection(ssh_public_key=str(key_file)),
        path=tmp_path / "rig.toml",
    )
    ops = aws.Aws(REGION)
    quota_stub(ops, 64)
    waited: list[str] = []
    fields: dict[str, Any] = dict(
        profile=prof,
        cat=load_catalog(),
        console=Console(record=True, width=200),
        aws=ops,
        cdk=cdk,
        state_dir=tmp_path / "state",
        ip_lookup=lambda: "203.0.113.9",
        ssh_wait=waited.append,
        yes=True,
        provision=None,
    )
    fields.update(kw)
    deployer = aws.Deployer(**fields)
    deployer.waited = waited  # type: ignore[attr-defined]
    return deployer


def test_deploy_retries_next_az_on_capacity_and_writes_state(
    moto: None, tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdk = FakeCdk(fail_azs={"eu-west-1a"})
    deployer = _deployer(tmp_path, key_file, cdk)
    monkeypatch.setattr(
        deployer.aws,
        "stack_failure",
        lambda name: "We currently do not have sufficient capacity (InsufficientInstanceCapacity)",
    )
    (state,) = deployer.run()
    # moto's spot prices are all equal, so AZs go by name; a fails, b is used.
    assert [c[aws.CTX_AZ_PREFIX + "g4dn.2xlarge"] for _, c in cdk.deploys] == [
        "eu-west-1a",
        "eu-west-1b",
    ]
    ctx = cdk.deploys[-1][1]
    assert ctx[aws.CTX_SSH_CIDR] == "203.0.113.9/32"
    assert ctx[aws.CTX_PUBLIC_KEY] == PUBKEY
    assert ctx[aws.CTX_OWNER] == MOTO_OWNER
    # The stopped VM was started again, and its current address is the SSH host.
    inst = deployer.aws.describe_instance(state.ids["instance"])
    assert inst["State"]["Name"] == "running"
    assert state.host == inst["PublicIpAddress"] and deployer.waited == [state.host]
    (saved,) = read_all(tmp_path / "state")
    assert saved == state
    assert saved.name == "aws-g4dn.2xlarge" and saved.cloud == "aws" and saved.gpu == "t4"
    assert saved.ids["availability_zone"] == "eu-west-1b" and saved.ids["stack"] == STACK
    assert saved.price.kind == "spot" and "describe_spot_price_history" in saved.price.source
    assert saved.price.on_demand_usd_per_hour == 0.838
    start = dt.datetime.fromisoformat(saved.deployed_at)
    assert dt.datetime.fromisoformat(saved.deadline) - start == dt.timedelta(hours=4)
    assert ctx[aws.CTX_DEADLINE] == dt.datetime.fromisoformat(saved.deadline).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    assert saved.provisioned is False
    text = deployer.console.export_text()
    assert "no capacity in eu-west-1a" in text and "NOT provisioned yet" in text


def test_deploy_hands_state_to_provisioning(moto: None, tmp_path: Path, key_file: Path) -> None:
    """rig.provision's shape: updates the state in place, returns None, takes state_dir."""
    seen = []

    def provision(state: Any, prof: Profile, console: Console, *, state_dir: Path) -> None:
        seen.append((state.name, state_dir))
        state.provisioned = True

    deployer = _deployer(tmp_path, key_file, FakeCdk(), provision=provision)
    (state,) = deployer.run()
    assert seen == [("aws-g4dn.2xlarge", tmp_path / "state")] and state.provisioned
    assert read_all(tmp_path / "state")[0].provisioned is True
    assert "NOT provisioned" not in deployer.console.export_text()


def test_deploy_stops_when_declined(moto: None, tmp_path: Path, key_file: Path) -> None:
    cdk = FakeCdk()
    deployer = _deployer(tmp_path, key_file, cdk, yes=False, confirm=lambda q: False)
    with pytest.raises(CommandError, match="nothing was created"):
        deployer.run()
    assert cdk.deploys == []


def test_deploy_other_failure_names_the_reason(
    moto: None, tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployer = _deployer(tmp_path, key_file, FakeCdk(fail_azs={"eu-west-1a"}))
    monkeypatch.setattr(
        deployer.aws, "stack_failure", lambda name: "Error Code: MaxSpotInstanceCountExceeded"
    )
    with pytest.raises(CommandError, match="L-3819A6DF"):
        deployer.run()


# --- destroy and the orphan scan ---------------------------------------------------------


def _owner_tags(stack: str = STACK) -> list[dict[str, str]]:
    return [
        {"Key": aws.TAG_PROJECT, "Value": aws.PROJECT},
        {"Key": aws.TAG_OWNER, "Value": MOTO_OWNER},
        {"Key": aws.TAG_STACK, "Value": stack},
    ]


def _make_stack() -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    cfn.create_stack(
        StackName=STACK,
        TemplateBody=json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}),
        Tags=_owner_tags(),
    )


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text('[aws]\ninstance_types = ["g4dn.2xlarge"]\n', encoding="utf-8")
    return path


def test_destroy_cancels_left_spot_request_and_reports_left_volume(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _make_stack()
    ec2 = boto3.client("ec2", region_name=REGION)
    # What a persistent request looks like after CloudFormation lost track of it.
    req = ec2.request_spot_instances(
        InstanceCount=1,
        Type="persistent",
        InstanceInterruptionBehavior="stop",
        LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "g4dn.2xlarge"},
        TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": _owner_tags()}],
    )["SpotInstanceRequests"][0]
    vol = ec2.create_volume(
        Size=200,
        AvailabilityZone="eu-west-1b",
        VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": _owner_tags()}],
    )
    cdk = FakeCdk()
    order: list[str] = []
    cdk.on_destroy.append(
        lambda: order.append(
            "destroy after cancel"
            if not aws.Aws(REGION).spot_requests([STACK])
            else "destroy while a request was open"
        )
    )
    monkeypatch.setattr(aws, "CdkCli", lambda: cdk)
    rc = main(["destroy", "aws", "--config", str(_config(tmp_path)), "--state-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert cdk.destroys == [[STACK]] and order == ["destroy after cancel"]
    assert f"cancelled spot request {req['SpotInstanceRequestId']}" in out
    assert f"volume {vol['VolumeId']} (200 GB available)" in out
    assert f"aws ec2 delete-volume --volume-id {vol['VolumeId']}" in out
    assert err.strip().count("\n") == 0 and "1 resource(s) still exist" in err
    assert "Traceback" not in out + err
    assert aws.Aws(REGION).spot_requests([STACK]) == []  # none open or active any more


def test_orphan_scan_covers_every_kind(moto: None) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    tags = _owner_tags()
    ec2.run_instances(
        ImageId="ami-12c6146b",
        InstanceType="g4dn.2xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    ec2.create_network_interface(
        SubnetId=subnet, TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}]
    )
    ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags}]
    )
    ec2.import_key_pair(
        KeyName=f"{STACK}-key",
        PublicKeyMaterial=PUBKEY.encode(),
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}],
    )
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName=f"{STACK}-idle-stop",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=300,
        EvaluationPeriods=6,
        Threshold=5,
        ComparisonOperator="LessThanThreshold",
        Tags=tags,
    )
    sched = boto3.client("scheduler", region_name=REGION)
    sched.create_schedule_group(Name=f"{STACK}-stops", Tags=tags)
    # Someone else's resources with the same project tag are not ours to report.
    ec2.create_volume(
        Size=8,
        AvailabilityZone="eu-west-1a",
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": [
                    {"Key": "project", "Value": aws.PROJECT},
                    {"Key": "owner", "Value": "bob"},
                ],
            }
        ],
    )
    kinds = sorted(o.kind for o in aws.Aws(REGION).orphans(MOTO_OWNER))
    assert kinds == [
        "alarm",
        "elastic IP",
        "instance",
        "key pair",
        "network interface",
        "schedule group",
    ]


def test_clean_destroy_reports_zero_and_removes_state(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from rig.state import Price, VmState, write

    _make_stack()
    state_dir = tmp_path / "state"
    write(
        VmState(
            name="aws-g4dn.2xlarge",
            cloud="aws",
            region=REGION,
            instance_type="g4dn.2xlarge",
            gpu="t4",
            host="192.0.2.99",
            ssh_user="ubuntu",
            ssh_key="",
            spot=True,
            price=Price(0.27, "spot", "describe_spot_price_history", NOW.isoformat()),
            deployed_at=NOW.isoformat(),
            deadline=NOW.isoformat(),
            ids={"stack": STACK},
        ),
        state_dir,
    )
    cdk = FakeCdk()
    monkeypatch.setattr(aws, "CdkCli", lambda: cdk)
    config = _config(tmp_path)
    rc = main(["destroy", "aws", "--config", str(config), "--state-dir", str(state_dir)])
    out, _ = capsys.readouterr()
    assert rc == 0, out
    assert "0 left" in out and cdk.destroys == [[STACK]]
    assert read_all(state_dir) == []
    assert load_profile(config).aws.instance_types == ["g4dn.2xlarge"]


def test_destroy_with_nothing_deployed_still_scans(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    cdk = FakeCdk()
    monkeypatch.setattr(aws, "CdkCli", lambda: cdk)
    rc = main(["destroy", "aws", "--config", str(_config(tmp_path)), "--state-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert rc == 0 and cdk.destroys == []
    assert "no gpu-rehearsal stacks" in out and "0 left" in out


def test_destroy_removes_a_stack_no_longer_in_the_profile(
    moto: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _make_stack()  # g4dn.2xlarge, while the profile now lists only g5.2xlarge
    cdk = FakeCdk()
    monkeypatch.setattr(aws, "CdkCli", lambda: cdk)
    config = tmp_path / "rig.toml"
    config.write_text('[aws]\ninstance_types = ["g5.2xlarge"]\n', encoding="utf-8")
    rc = main(["destroy", "aws", "--config", str(config), "--state-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert rc == 0, out
    assert cdk.destroys == []  # the CDK app cannot synthesize it: CloudFormation deletes it
    assert f"destroying {STACK} (not in the profile" in out and "0 left" in out
    assert aws.Aws(REGION).stack_exists(STACK) is None
