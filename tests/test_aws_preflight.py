"""Preflight, prices and one-line errors (rig/aws/preflight.py, pricing.py, errors.py, access.py)
against moto and botocore's Stubber with payloads shaped as the AWS API references show them
(STS GetCallerIdentity, EC2 DescribeInstanceTypeOfferings / DescribeSpotPriceHistory /
DescribeInstances, Service Quotas GetServiceQuota, SSM GetParameter)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from aws_helpers import DLAMI, REGION
from botocore.stub import Stubber
from moto import mock_aws

from rig.aws import errors, names, pricing
from rig.aws.access import ensure_key, resolve_ssh_cidr
from rig.aws.preflight import confirmation_lines, offered_azs, preflight, quota_vcpus
from rig.aws.session import Aws
from rig.catalog import load_catalog
from rig.cost import worst_case_text
from rig.problems import CommandError
from rig.profile import AccessSection, AwsSection, Placement, Profile

pytest_plugins = ["aws_support"]  # fixtures: aws_env
NOW = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
REALISTIC = {
    "eu-west-1a": [(5, "0.3120"), (65, "0.2990")],  # latest first is not guaranteed: by time
    "eu-west-1b": [(12, "0.2706")],
    "eu-west-1c": [(3, "0.2841")],
}


@pytest.fixture(autouse=True)
def _env(aws_env: None) -> None:
    return None


def profile(**aws_fields: Any) -> Profile:
    return Profile(aws=AwsSection(**aws_fields), path=Path("/tmp/rig.toml"))


def spot_history(prices: dict[str, list[tuple[int, str]]]) -> dict[str, Any]:
    """A DescribeSpotPriceHistory answer: per AZ, (minutes before NOW, price) entries."""
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


def stubbed_aws(quota: float, used_types: list[str] = ()) -> tuple[Aws, dict[str, Stubber]]:
    """A region whose every preflight call answers as AWS documents it."""
    aws = Aws(REGION, boto3.Session(region_name=REGION))
    stubs: dict[str, Stubber] = {}

    def client(service: str) -> Stubber:
        c = boto3.client(service, region_name=REGION)
        aws._clients[service] = c
        stubs[service] = Stubber(c)
        return stubs[service]

    client("sts").add_response(
        "get_caller_identity",
        {
            "UserId": "AROA3XFRBF535PLBIFPI4:alice",
            "Account": "111122223333",
            "Arn": "arn:aws:sts::111122223333:assumed-role/Dev/alice",
        },
    )
    ec2 = client("ec2")
    ec2.add_response(
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
    ec2.add_response("describe_spot_price_history", spot_history(REALISTIC))
    client("cloudformation").add_client_error(
        "describe_stack_resources",
        "ValidationError",
        "Stack with id gpu-rehearsal-g4dn-2xlarge does not exist",
    )
    client("ssm").add_response(
        "get_parameter",
        {
            "Parameter": {
                "Name": DLAMI,
                "Type": "String",
                "Value": "ami-0a1b2c3d4e5f60718",
                "Version": 97,
                "DataType": "aws:ec2:image",
            }
        },
        {"Name": DLAMI},
    )
    client("service-quotas").add_response(
        "get_service_quota",
        {"Quota": {"QuotaCode": names.QUOTA_SPOT, "Value": quota, "ServiceCode": "ec2"}},
        {"ServiceCode": "ec2", "QuotaCode": names.QUOTA_SPOT},
    )
    ec2.add_response(
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
    for s in stubs.values():
        s.activate()
    return aws, stubs


def test_offerings_from_moto() -> None:
    with mock_aws():
        aws = Aws(REGION)
        assert offered_azs(aws, "g4dn.2xlarge") == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
        assert offered_azs(aws, "g6.2xlarge") == []  # the reason for "g6.2xlarge@eu-north-1"


def test_preflight_picks_the_cheapest_az_pins_the_ami_and_prints_the_worst_case() -> None:
    aws, stubs = stubbed_aws(quota=16, used_types=["g5.2xlarge", "m6i.2xlarge"])
    prof = profile(instance_types=["g4dn.2xlarge"])
    pre = preflight(lambda region: aws, prof, load_catalog(), [], NOW)
    for s in stubs.values():
        s.assert_no_pending_responses()
    assert pre.owner == "Dev" and pre.account == "111122223333"  # role name, not the session
    (plan,) = pre.plans
    assert plan.azs == ["eu-west-1b", "eu-west-1c", "eu-west-1a"]
    assert plan.hourly == 0.2706
    assert plan.cap == 0.838  # no spot_max_price: the on-demand price from the catalog
    assert plan.pins.ami == "ami-0a1b2c3d4e5f60718" and plan.pins.source == "new"
    assert pre.quotas[REGION].used == 8  # the g5 counts against the G quota, the m6i does not
    text = "\n".join(confirmation_lines(pre, prof, load_catalog()))
    rates = pricing.rates_for(prof.aws, load_catalog(), Placement("g4dn.2xlarge", REGION), 0.838)
    assert "AWS account 111122223333" in text
    assert worst_case_text(rates, 4) in text
    assert "g4dn.2xlarge in eu-west-1 (eu-west-1b): spot $0.2706/h now" in text


def test_spot_quota_too_low_names_the_quota_and_link() -> None:
    aws, _ = stubbed_aws(quota=8, used_types=["g4dn.xlarge"])
    with pytest.raises(CommandError) as err:
        preflight(lambda r: aws, profile(instance_types=["g4dn.2xlarge"]), load_catalog(), [], NOW)
    msg = str(err.value)
    assert "L-3819A6DF" in msg and "8 in use" in msg and "need 8" in msg
    assert names.quota_link(REGION, "L-3819A6DF") in msg and "\n" not in msg


def test_spot_cap_below_market_fails_early() -> None:
    aws, _ = stubbed_aws(quota=64)
    with pytest.raises(CommandError, match=r"SpotMaxPriceTooLow"):
        preflight(
            lambda r: aws,
            profile(instance_types=["g4dn.2xlarge"], spot_max_price=0.2),
            load_catalog(),
            [],
            NOW,
        )


def test_no_known_cap_refuses_rather_than_printing_an_unbounded_worst_case() -> None:
    aws, _ = stubbed_aws(quota=64)
    # g4dn.2xlarge has no catalog price in eu-west-2: without spot_max_price, nothing bounds it.
    with pytest.raises(CommandError, match=r"no on-demand price for eu-west-2.*spot_max_price"):
        preflight(
            lambda r: aws,
            profile(region="eu-west-2", instance_types=["g4dn.2xlarge"]),
            load_catalog(),
            [],
            NOW,
        )


def test_quota_falls_back_to_the_default_when_never_set() -> None:
    aws = Aws(REGION, boto3.Session(region_name=REGION))
    client = boto3.client("service-quotas", region_name=REGION)
    stub = Stubber(client)
    stub.add_client_error("get_service_quota", "NoSuchResourceException", "not applied")
    stub.add_response(
        "get_aws_default_service_quota",
        {"Quota": {"QuotaCode": names.QUOTA_ON_DEMAND, "Value": 0.0}},
        {"ServiceCode": "ec2", "QuotaCode": names.QUOTA_ON_DEMAND},
    )
    stub.activate()
    aws._clients["service-quotas"] = client
    assert quota_vcpus(aws, names.QUOTA_ON_DEMAND) == 0.0


def test_no_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    with pytest.raises(CommandError) as err:
        preflight(Aws, profile(), load_catalog(), [], NOW)
    assert str(err.value) == errors.NO_CREDENTIALS


def test_spot_prices_latest_per_az() -> None:
    aws = Aws(REGION, boto3.Session(region_name=REGION))
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
    aws._clients["ec2"] = ec2
    assert pricing.spot_prices_now(aws, "g4dn.2xlarge", NOW) == {
        "eu-west-1a": 0.312,
        "eu-west-1b": 0.2706,
        "eu-west-1c": 0.2841,
    }


@pytest.mark.parametrize(
    ("code", "message", "expect"),
    [
        ("VcpuLimitExceeded", "", names.quota_link(REGION, "L-DB2E81BA")),
        ("MaxSpotInstanceCountExceeded", "", names.quota_link(REGION, "L-3819A6DF")),
        ("InsufficientInstanceCapacity", "", "retry later"),
        # RunInstances' spot answer (EC2 User Guide, troubleshooting launches).
        ("", "There is no Spot capacity available that matches your request.", "retry later"),
        ("SpotMaxPriceTooLow", "", "spot_max_price"),
        ("Unsupported", "", "not offered"),
        ("ExpiredToken", "", "refresh them"),
        ("UnauthorizedOperation", "", "lacks a permission"),
    ],
)
def test_error_codes_become_one_line(code: str, message: str, expect: str) -> None:
    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message or "AWS said no"}}, "RunInstances"
    )
    line = str(errors.translate(exc, region=REGION, what="g4dn.2xlarge"))
    assert expect in line and "\n" not in line


@pytest.mark.parametrize(
    "reason",
    [
        'Resource handler returned message: "We currently do not have sufficient g4dn.2xlarge '
        "capacity in the Availability Zone you requested (eu-west-1a). (Service: Ec2, Status "
        'Code: 500, Error Code: InsufficientInstanceCapacity)"',
        'Resource handler returned message: "There is no Spot capacity available that matches '
        'your request. (Service: Ec2, Status Code: 500, Request ID: 5a1c9d2e)"',
    ],
)
def test_capacity_found_in_a_cloudformation_reason(reason: str) -> None:
    assert errors.is_capacity_failure(reason)
    assert errors.code_in_text(reason) == "InsufficientInstanceCapacity"


# --- SSH source and key ----------------------------------------------------------------------


def test_auto_ssh_source_is_one_ipv4_address() -> None:
    assert resolve_ssh_cidr(profile(), lambda: "203.0.113.9") == "203.0.113.9/32"
    fixed = Profile(access=AccessSection(ssh_source="198.51.100.7/32"))
    assert resolve_ssh_cidr(fixed, lambda: pytest.fail("no lookup")) == "198.51.100.7/32"
    with pytest.raises(CommandError, match="could not find your public IP"):
        resolve_ssh_cidr(profile(), lambda: "<html>")


def test_an_ipv6_address_is_refused_with_the_fix() -> None:
    """Defect 9: the stack's VPC is IPv4 only; an IPv6 rule would admit nobody."""
    with pytest.raises(CommandError) as err:
        resolve_ssh_cidr(profile(), lambda: "2001:db8::5")
    assert "IPv6" in str(err.value) and '"203.0.113.7/32"' in str(err.value)
    fixed = Profile(access=AccessSection(ssh_source="2001:db8::5/128"))
    with pytest.raises(CommandError, match="no IPv6"):
        resolve_ssh_cidr(fixed, lambda: "203.0.113.9")


def test_key_generated_once_under_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pub, private = ensure_key(profile(), state)
    assert pub.startswith("ssh-ed25519 ") and private == state / "aws-rehearsal_ed25519"
    assert private.stat().st_mode & 0o077 == 0  # ssh-keygen writes the private key 0600
    assert ensure_key(profile(), state) == (pub, private)


def test_key_pair_names_follow_the_key() -> None:
    """Defect 9: a changed key gets a new name, so CloudFormation can create it beside the old
    one instead of failing on a custom name that already exists (CloudFormation reference,
    AWS::EC2::KeyPair: PublicKeyMaterial "Update requires: Replacement"; a replacement creates
    the new resource before deleting the old, which a fixed KeyName cannot do)."""
    from aws_helpers import OTHER_PUBKEY, PUBKEY

    stack = names.stack_name("g4dn.2xlarge")
    a, b = names.key_pair_name(stack, PUBKEY), names.key_pair_name(stack, OTHER_PUBKEY)
    assert a != b and a.startswith(f"{stack}-key-") and len(a.rsplit("-", 1)[1]) == 12
    assert names.key_pair_name(stack, PUBKEY + " another comment") == a  # the key, not its label


def test_clients_retry_throttling_with_backoff() -> None:
    """RequestLimitExceeded (EC2's throttling code) is one of the throttling errors botocore's
    "standard" retry mode backs off on (botocore/retries/standard.py, _THROTTLED_ERROR_CODES);
    its default of 3 attempts is raised to 10 retries (11 attempts) so that a destroy across
    regions does not give up ("could not verify") on a burst of throttling."""
    from botocore.retries import standard

    assert "RequestLimitExceeded" in standard.ThrottledRetryableChecker._THROTTLED_ERROR_CODES
    with mock_aws():
        aws = Aws(REGION)
        for service in ("ec2", "cloudformation", "cloudwatch", "scheduler"):
            retries = aws.client(service).meta.config.retries
            assert retries == {"mode": "standard", "total_max_attempts": 11}, service
        # The Price List is asked at its own endpoint, whatever the VM's region.
        assert aws.client("pricing").meta.region_name == "us-east-1"
