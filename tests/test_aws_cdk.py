"""The AWS stack, offline: synth through the pinned CDK CLI (cfn-lint, cdk-nag report) and
in-process through aws_cdk.assertions. Each app is synthesized once per session (jsii is slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rig import aws

CDK_DIR = aws.CDK_DIR
REGION = "eu-west-1"
DEADLINE = "2030-01-02T03:04:05"
SSH_CIDR = "203.0.113.7/32"
G4DN = aws.stack_name("g4dn.2xlarge")
G5 = aws.stack_name("g5.2xlarge")
TAGS = {"project": "gpu-rehearsal", "profile": "cdktest", "owner": "tester"}
# Resource types that accept Tags in CloudFormation and that this stack creates.
TAGGABLE = {
    "AWS::EC2::VPC",
    "AWS::EC2::Subnet",
    "AWS::EC2::RouteTable",
    "AWS::EC2::InternetGateway",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::KeyPair",
    "AWS::EC2::Instance",
    "AWS::IAM::Role",
    "AWS::CloudWatch::Alarm",
    "AWS::Scheduler::ScheduleGroup",
}

SPOT_PROFILE = """
[aws]
region = "eu-west-1"
instance_types = ["g4dn.2xlarge", "g5.2xlarge"]
spot = true
spot_max_price = 0.6
disk_gb = 250
disk_throughput_mbs = 1000
disk_iops = 5000

[autostop]
idle_minutes = 30
max_hours = 4
daily_shutdown = "19:00"
timezone = "Europe/Dublin"
"""

ON_DEMAND_PROFILE = """
[aws]
instance_types = ["g4dn.xlarge"]
spot = false
image = "ubuntu-24.04"

[access]
ssh_source = "198.51.100.0/28"

[autostop]
idle_minutes = 12
daily_shutdown = "off"
"""


def context(config: Path) -> dict[str, str]:
    return {
        aws.CTX_CONFIG: str(config),
        aws.CTX_PROFILE_NAME: "cdktest",
        aws.CTX_OWNER: "tester",
        aws.CTX_SSH_CIDR: SSH_CIDR,
        aws.CTX_PUBLIC_KEY: aws.PLACEHOLDER_PUBLIC_KEY,
        aws.CTX_DEADLINE: DEADLINE,
        aws.CTX_AZ_PREFIX + "g4dn.2xlarge": "eu-west-1b",
    }


def _load_cdk_app() -> Any:
    spec = importlib.util.spec_from_file_location("rehearsal_cdk_app", CDK_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def spot_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cdkprofile") / "rig.toml"
    path.write_text(SPOT_PROFILE, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cli_out(tmp_path_factory: pytest.TempPathFactory, spot_config: Path) -> Path:
    """`cdk synth` through the pinned npm CLI, offline (telemetry, notices, version check off)."""
    cli = aws.CdkCli(output=tmp_path_factory.mktemp("cdk.out"))
    assert cli.binary.exists(), "the pinned CDK CLI is missing: run `npm ci --prefix cdk`"
    cmd = cli.command("synth", "--quiet", context=context(spot_config))
    proc = subprocess.run(
        cmd, cwd=CDK_DIR, env=cli.env(REGION), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert cli.output is not None
    return cli.output


@pytest.fixture(scope="session")
def cdk_app() -> Any:
    return _load_cdk_app()


def _templates(app_module: Any, config: Path, outdir: Path) -> dict[str, dict[str, Any]]:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    app = cdk.App(context=context(config), outdir=str(outdir))
    _, stacks = app_module.build(app)
    return {s.stack_name: Template.from_stack(s).to_json() for s in stacks}


@pytest.fixture(scope="session")
def spot(cdk_app: Any, spot_config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _templates(cdk_app, spot_config, tmp_path_factory.mktemp("spot.out"))


@pytest.fixture(scope="session")
def on_demand(cdk_app: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("odprofile") / "rig.toml"
    path.write_text(ON_DEMAND_PROFILE, encoding="utf-8")
    return _templates(cdk_app, path, tmp_path_factory.mktemp("od.out"))


def of_type(template: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [r for r in template["Resources"].values() if r["Type"] == rtype]


def one(template: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = of_type(template, rtype)
    assert len(found) == 1, f"{rtype}: {len(found)}"
    return found[0]["Properties"]


def lt_data(template: dict[str, Any]) -> dict[str, Any]:
    return one(template, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]


# --- the CLI synth -----------------------------------------------------------------------


def test_cli_synth_writes_one_template_per_instance_type(cli_out: Path) -> None:
    names = sorted(p.name for p in cli_out.glob("*.template.json"))
    assert names == [f"{G4DN}.template.json", f"{G5}.template.json"]
    # CDK_HOME lives inside the workspace and is never committed.
    assert ".cdk-home/" in (CDK_DIR / ".gitignore").read_text().splitlines()
    for path in cli_out.glob("*.template.json"):
        template = json.loads(path.read_text())
        # Bootstrapless: no bootstrap version check, and small enough to deploy inline.
        assert "BootstrapVersion" not in template.get("Parameters", {})
        assert path.stat().st_size < 51_200 * 0.8


def test_cfn_lint_clean_for_eu_west_1(cli_out: Path) -> None:
    from cfnlint.api import ManualArgs, lint_file

    files = sorted(cli_out.glob("*.template.json"))
    assert len(files) == 2
    for path in files:
        matches = lint_file(path, config=ManualArgs(regions=[REGION]))
        assert [str(m) for m in matches] == []


def test_cfn_lint_catches_a_typo(cli_out: Path, tmp_path: Path) -> None:
    """The lint is live: a misspelt enum (the reference's own example) is reported."""
    from cfnlint.api import ManualArgs, lint_file

    bad = tmp_path / "bad.template.json"
    text = (cli_out / f"{G4DN}.template.json").read_text().replace('"persistent"', '"persistant"')
    bad.write_text(text)
    matches = lint_file(bad, config=ManualArgs(regions=[REGION]))
    assert any("persistant" in str(m) for m in matches)


def test_cdk_nag_passes_with_only_reasoned_acknowledgements(cli_out: Path) -> None:
    sys.path.insert(0, str(CDK_DIR))
    from nag_acknowledgements import REASONS

    report = json.loads((cli_out / "validation-report.json").read_text())
    nag = next(r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions")
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    suppressed = nag["suppressedViolations"]
    assert {s["acknowledgedId"] for s in suppressed} == set(REASONS)  # no stale ones either
    for s in suppressed:
        assert len(s["reason"]) > 40 and s["reason"] == REASONS[s["acknowledgedId"]]


def test_cdk_nag_fails_synth_on_a_new_finding(
    cdk_app: Any, spot_config: Path, tmp_path: Path
) -> None:
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    app = cdk.App(context=context(spot_config), outdir=str(tmp_path))
    _, stacks = cdk_app.build(app)
    s3.Bucket(stacks[0], "Unreviewed")  # logs off, no SSL policy: AwsSolutions-S1, S10
    with pytest.raises(RuntimeError, match=r"ValidationFailed(.|\n)*AwsSolutions-S1"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    nag = next(r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions")
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= {v["ruleName"] for v in nag["violations"]}


# --- assertions on the templates ---------------------------------------------------------


def test_spot_persistent_stop_with_cap(spot: dict[str, Any]) -> None:
    data = lt_data(spot[G4DN])
    assert data["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "persistent",
            "InstanceInterruptionBehavior": "stop",
            "MaxPrice": "0.6",
        },
    }
    assert data["InstanceInitiatedShutdownBehavior"] == "stop"
    assert data["InstanceType"] == "g4dn.2xlarge"
    assert lt_data(spot[G5])["InstanceType"] == "g5.2xlarge"


def test_on_demand_has_no_market_options(on_demand: dict[str, Any]) -> None:
    data = lt_data(on_demand[aws.stack_name("g4dn.xlarge")])
    assert "InstanceMarketOptions" not in data
    assert data["InstanceInitiatedShutdownBehavior"] == "stop"


def test_imdsv2_required_and_root_disk_encrypted_gp3(spot: dict[str, Any]) -> None:
    data = lt_data(spot[G4DN])
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {
                "DeleteOnTermination": True,
                "Encrypted": True,
                "Iops": 5000,
                "Throughput": 1000,
                "VolumeSize": 250,
                "VolumeType": "gp3",
            },
        }
    ]


def _ingress(template: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for sg in of_type(template, "AWS::EC2::SecurityGroup"):
        rules += sg["Properties"].get("SecurityGroupIngress", [])
    rules += [r["Properties"] for r in of_type(template, "AWS::EC2::SecurityGroupIngress")]
    return rules


@pytest.mark.parametrize("which", ["spot", "on_demand"])
def test_ssh_only_from_one_source_never_open(which: str, request: pytest.FixtureRequest) -> None:
    templates = request.getfixturevalue(which)
    expected = SSH_CIDR  # the context's resolved /32 wins over the profile's CIDR
    for template in templates.values():
        rules = _ingress(template)
        assert rules == [
            {
                "CidrIp": expected,
                "Description": "SSH from the deployer",
                "FromPort": 22,
                "IpProtocol": "tcp",
                "ToPort": 22,
            }
        ]
        text = json.dumps(template["Resources"])
        for rule in rules:
            assert rule.get("CidrIp") != "0.0.0.0/0" and rule.get("CidrIpv6") != "::/0"
        assert "::/0" not in text


def test_profile_cidr_used_when_no_context(cdk_app: Any, tmp_path: Path) -> None:
    """Synth without deploy context: a fixed ssh_source is used; "auto" → an unroutable /32."""
    import aws_cdk as cdk

    path = tmp_path / "rig.toml"
    path.write_text(ON_DEMAND_PROFILE, encoding="utf-8")
    app = cdk.App(context={aws.CTX_CONFIG: str(path)}, outdir=str(tmp_path / "out"))
    _, stacks = cdk_app.build(app)
    props = stacks[0].props
    assert props.ssh_cidr == "198.51.100.0/28"
    assert props.public_key == aws.PLACEHOLDER_PUBLIC_KEY
    assert props.availability_zone == "eu-west-1a"
    assert props.ami_ssm_parameter.startswith("/aws/service/canonical/ubuntu/server/24.04/")


def test_idle_alarm_stops_the_instance(spot: dict[str, Any]) -> None:
    alarm = one(spot[G4DN], "AWS::CloudWatch::Alarm")
    assert alarm["AlarmActions"] == [
        {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":automate:{REGION}:ec2:stop"]]}
    ]
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": {"Ref": "Instance"}}]
    assert alarm["MetricName"] == "CPUUtilization" and alarm["Namespace"] == "AWS/EC2"
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 30 * 60
    assert alarm["TreatMissingData"] == "notBreaching"


def test_alarm_periods_round_idle_minutes_up(on_demand: dict[str, Any]) -> None:
    alarm = one(on_demand[aws.stack_name("g4dn.xlarge")], "AWS::CloudWatch::Alarm")
    assert alarm["Period"] == 300 and alarm["EvaluationPeriods"] == 3  # 12 min → 15 min


def _stop_statement_for_instance(statement: dict[str, Any]) -> bool:
    resource = json.dumps(statement["Resource"])
    return (
        statement["Effect"] == "Allow"
        and statement["Action"] == "ec2:StopInstances"
        and '":instance/", {"Ref": "Instance"}' in resource
        and "*" not in resource
    )


def test_max_hours_schedule_stops_the_instance(spot: dict[str, Any]) -> None:
    template = spot[G4DN]
    schedules = {
        s["Properties"]["Name"]: s["Properties"]
        for s in of_type(template, "AWS::Scheduler::Schedule")
    }
    max_hours = schedules[f"{G4DN}-max-hours"]
    assert max_hours["ScheduleExpression"] == f"at({DEADLINE})"
    assert max_hours["ScheduleExpressionTimezone"] == "UTC"
    target = max_hours["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
    assert target["Input"] == {
        "Fn::Sub": ['{"InstanceIds": ["${Id}"]}', {"Id": {"Ref": "Instance"}}]
    }
    daily = schedules[f"{G4DN}-daily"]
    assert daily["ScheduleExpression"] == "cron(0 19 * * ? *)"
    assert daily["ScheduleExpressionTimezone"] == "Europe/Dublin"
    # The scheduler's role may stop exactly this instance and nothing else.
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]
        for p in of_type(template, "AWS::IAM::Policy")
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    assert len(policies) == 1
    (statement,) = policies[0]["PolicyDocument"]["Statement"]
    assert _stop_statement_for_instance(statement)


def test_daily_stop_off_means_no_daily_schedule(on_demand: dict[str, Any]) -> None:
    template = on_demand[aws.stack_name("g4dn.xlarge")]
    names = [s["Properties"]["Name"] for s in of_type(template, "AWS::Scheduler::Schedule")]
    assert names == [f"{aws.stack_name('g4dn.xlarge')}-max-hours"]


def test_instance_role_ssm_core_and_stops_only_itself(spot: dict[str, Any]) -> None:
    template = spot[G4DN]
    roles = {
        k: r["Properties"]
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role"
        and "ec2.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    }
    ((role_id, role),) = roles.items()
    assert "AmazonSSMManagedInstanceCore" in json.dumps(role["ManagedPolicyArns"])
    assert "Policies" not in role
    policies = [
        p["Properties"]
        for p in of_type(template, "AWS::IAM::Policy")
        if p["Properties"]["Roles"] == [{"Ref": role_id}]
    ]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    assert len(statements) == 1 and _stop_statement_for_instance(statements[0])


def test_instance_from_launch_template_in_the_chosen_az(spot: dict[str, Any]) -> None:
    template = spot[G4DN]
    inst = one(template, "AWS::EC2::Instance")
    lt_id = next(
        k for k, r in template["Resources"].items() if r["Type"].endswith("LaunchTemplate")
    )
    assert inst["LaunchTemplate"] == {
        "LaunchTemplateId": {"Ref": lt_id},
        "Version": {"Fn::GetAtt": [lt_id, "LatestVersionNumber"]},
    }
    assert one(template, "AWS::EC2::Subnet")["AvailabilityZone"] == "eu-west-1b"
    assert one(spot[G5], "AWS::EC2::Subnet")["AvailabilityZone"] == "eu-west-1a"  # default


def test_ami_from_public_ssm_parameter(spot: dict[str, Any]) -> None:
    template = spot[G4DN]
    params = list(template["Parameters"].values())
    assert params == [
        {
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": "/aws/service/deeplearning/ami/x86_64/"
            "base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        }
    ]
    assert lt_data(template)["ImageId"] == {"Ref": next(iter(template["Parameters"]))}


def test_small_vpc_without_nat_or_lambda(spot: dict[str, Any]) -> None:
    for template in spot.values():
        types = {r["Type"] for r in template["Resources"].values()}
        assert len(of_type(template, "AWS::EC2::Subnet")) == 1
        assert one(template, "AWS::EC2::Subnet")["MapPublicIpOnLaunch"] is True
        assert not {t for t in types if t.startswith(("Custom::", "AWS::Lambda"))}
        assert "AWS::EC2::NatGateway" not in types
        assert "AWS::CloudFormation::CustomResource" not in types


def test_key_pair_imported_from_public_key(spot: dict[str, Any]) -> None:
    key = one(spot[G4DN], "AWS::EC2::KeyPair")
    assert key["PublicKeyMaterial"] == aws.PLACEHOLDER_PUBLIC_KEY
    assert key["KeyName"] == f"{G4DN}-key"


def test_tags_on_every_resource(spot: dict[str, Any]) -> None:
    template = spot[G4DN]
    want = TAGS | {"rehearsal-stack": G4DN}
    seen = set()
    for rid, res in template["Resources"].items():
        if res["Type"] in TAGGABLE:
            tags = {t["Key"]: t["Value"] for t in res["Properties"]["Tags"]}
            assert want.items() <= tags.items(), rid
            seen.add(res["Type"])
    assert seen == TAGGABLE
    # What RunInstances creates (CloudFormation never sees it) is tagged by the template.
    specs = lt_data(template)["TagSpecifications"]
    assert {s["ResourceType"] for s in specs} == {
        "instance",
        "volume",
        "network-interface",
        "spot-instances-request",
    }
    for spec in specs:
        assert want.items() <= {t["Key"]: t["Value"] for t in spec["Tags"]}.items()


def test_outputs(spot: dict[str, Any]) -> None:
    outputs = spot[G4DN]["Outputs"]
    assert {"InstanceId", "PublicIp", "PublicDnsName", "AvailabilityZone", "Region", "SshUser"} <= (
        set(outputs)
    )
    assert outputs["SshUser"]["Value"] == "ubuntu"
    assert outputs["Region"]["Value"] == REGION
    assert outputs["PublicIp"]["Value"] == {"Fn::GetAtt": ["Instance", "PublicIp"]}
