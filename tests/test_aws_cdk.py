"""The AWS stack, offline: synth through the pinned CDK CLI (cfn-lint, cdk-nag report) and
in-process through aws_cdk.assertions. Each app is synthesized once per session (jsii is slow).
Heavy: run under `flock /tmp/rehearsal-heavy.lock` with other synth suites."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Template

from rig.aws import names as aws
from rig.aws.cdk_cli import CDK_DIR, CdkCli

REGION = "eu-west-1"
DEADLINE = "2030-01-02T03:04:05"
SSH_CIDR = "203.0.113.7/32"
AMI = "ami-0a1b2c3d4e5f60718"  # pinned at the first deploy (rig.aws.preflight)
VALID_UNTIL = "2027-11-28T00:00:00Z"
G4DN = aws.stack_name("g4dn.2xlarge")
G5 = aws.stack_name("g5.2xlarge")
G6 = aws.stack_name("g6.2xlarge")
TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation CreateStack/CreateChangeSet TemplateBody, bytes
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
instance_types = ["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge@eu-north-1"]
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
    """What a deploy hands the app (rig/aws/deploy.py): g4dn and g6 pinned, g5 left to the
    offline defaults (the AMI as an SSM parameter)."""
    return {
        aws.CTX_CONFIG: str(config),
        aws.CTX_PROFILE_NAME: "cdktest",
        aws.CTX_OWNER: "tester",
        aws.CTX_SSH_CIDR: SSH_CIDR,
        aws.CTX_PUBLIC_KEY: aws.PLACEHOLDER_PUBLIC_KEY,
        aws.CTX_DEADLINE: DEADLINE,
        aws.CTX_AZ_PREFIX + "g4dn.2xlarge": "eu-west-1b",
        aws.CTX_AMI_PREFIX + "g4dn.2xlarge": AMI,
        aws.CTX_VALID_UNTIL_PREFIX + "g4dn.2xlarge": VALID_UNTIL,
        aws.CTX_AMI_PREFIX + "g6.2xlarge": AMI,
        aws.CTX_VALID_UNTIL_PREFIX + "g6.2xlarge": VALID_UNTIL,
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
    cli = CdkCli(output=tmp_path_factory.mktemp("cdk.out"))
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
    assert names == [f"{G4DN}.template.json", f"{G5}.template.json", f"{G6}.template.json"]
    # CDK_HOME lives inside the workspace and is never committed.
    assert ".cdk-home/" in (CDK_DIR / ".gitignore").read_text().splitlines()


def test_cloud_assembly_needs_no_bootstrap(cli_out: Path) -> None:
    """Defect 1: the manifest names no role (BootstraplessSynthesizer still wrote the
    cdk-hnb659fds-cfn-exec-role that the CLI passes to CloudFormation as RoleARN; aws-cdk#20648)
    and no bootstrap version; each template fits CloudFormation's inline TemplateBody."""
    manifest = json.loads((cli_out / "manifest.json").read_text())
    stacks = {k: a for k, a in manifest["artifacts"].items() if a["type"].endswith(":stack")}
    assert sorted(stacks) == [G4DN, G5, G6]
    text = json.dumps(stacks)
    for needle in ("RoleArn", "roleArn", "role-arn", "hnb659fds", "BootstrapVersion", "bootstrap"):
        assert needle not in text, needle
    for name, artifact in stacks.items():
        assert set(artifact["properties"]) <= {
            "templateFile",
            "tags",
            "terminationProtection",
            "validateOnSynth",
        }, name
        template_path = cli_out / artifact["properties"]["templateFile"]
        template = json.loads(template_path.read_text())
        assert "BootstrapVersion" not in template.get("Parameters", {})
        assert "CheckBootstrapVersion" not in template.get("Rules", {})
        # The pinned CLI sends the template inline as YAML when it is at most 50 KiB
        # (aws-cdk lib: makeBodyParameter, LARGE_TEMPLATE_SIZE_KB = 50), else it needs the
        # bootstrap bucket. Both forms stay well under the limit.
        assert template_path.stat().st_size < TEMPLATE_BODY_LIMIT
        assert len(yaml.safe_dump(template).encode()) < TEMPLATE_BODY_LIMIT
    # No assets of any kind: with LegacyStackSynthesizer an asset (a Lambda's code, a custom
    # resource's handler, a file) becomes "aws:cdk:asset" metadata and AssetParameters the CLI
    # can only publish to the bootstrap bucket (aws-cdk CLI deployStack: addMetadataAssetsToManifest
    # → publishAssets). A construct that brings one in later fails this test, not a deploy.
    assert not [a for a in manifest["artifacts"].values() if a["type"] == "cdk:asset-manifest"]
    for name, artifact in stacks.items():
        assert assets_of(cli_out, artifact) == [], name
    # Each stack in its own region: g6 (L4) where it is offered.
    assert stacks[G6]["environment"] == "aws://unknown-account/eu-north-1"
    assert stacks[G4DN]["environment"] == "aws://unknown-account/eu-west-1"


def assets_of(outdir: Path, artifact: dict[str, Any]) -> list[str]:
    """The assets a stack artifact declares: "aws:cdk:asset" metadata (in the manifest, or in
    its additionalMetadataFile, where aws-cdk-lib 2.275 writes it) and AssetParameters."""
    metadata = dict(artifact.get("metadata", {}))
    if "additionalMetadataFile" in artifact:
        metadata |= json.loads((outdir / artifact["additionalMetadataFile"]).read_text())
    found = [
        e["data"]["id"] for es in metadata.values() for e in es if e["type"] == "aws:cdk:asset"
    ]
    template = json.loads((outdir / artifact["properties"]["templateFile"]).read_text())
    found += [p for p in template.get("Parameters", {}) if p.startswith("AssetParameters")]
    return found


def test_the_asset_check_is_live(cdk_app: Any, spot_config: Path, tmp_path: Path) -> None:
    """A stack that gains an asset (here a file; a Lambda-backed construct does the same) is
    caught by assets_of: the no-asset check above is not vacuous."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3_assets as s3_assets

    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    app = cdk.App(context=context(spot_config), outdir=str(tmp_path / "out"))
    _, stacks = cdk_app.build(app)
    s3_assets.Asset(stacks[0], "Payload", path=str(payload))
    app.synth()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    artifact = manifest["artifacts"][stacks[0].artifact_id]
    assert len(assets_of(tmp_path / "out", artifact)) == 4  # 1 asset + its 3 parameters


def test_cfn_lint_clean_in_each_stacks_region(cli_out: Path) -> None:
    from cfnlint.api import ManualArgs, lint_file

    regions = {G4DN: REGION, G5: REGION, G6: "eu-north-1"}
    for stack, region in regions.items():
        # cfn-lint knows which types each region offers (it caught g4dn.99xlarge before).
        matches = lint_file(cli_out / f"{stack}.template.json", config=ManualArgs(regions=[region]))
        assert [str(m) for m in matches] == [], stack


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


def test_spot_persistent_stop_with_cap_and_a_fixed_valid_until(spot: dict[str, Any]) -> None:
    data = lt_data(spot[G4DN])
    assert data["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "persistent",
            "InstanceInterruptionBehavior": "stop",
            "MaxPrice": "0.6",
            # Defect 3: the pinned end, in the form the EC2 API documents for ValidUntil
            # (botocore LaunchTemplateSpotMarketOptionsRequest: "YYYY-MM-DDTHH:MM:SSZ";
            # "Default: 7 days from the current date").
            "ValidUntil": VALID_UNTIL,
        },
    }
    assert data["InstanceInitiatedShutdownBehavior"] == "stop"
    assert data["InstanceType"] == "g4dn.2xlarge"
    assert lt_data(spot[G5])["InstanceType"] == "g5.2xlarge"
    assert lt_data(spot[G6])["InstanceType"] == "g6.2xlarge"
    # Without a pinned value (offline synth), a year from now, never the 7-day default.
    until = lt_data(spot[G5])["InstanceMarketOptions"]["SpotOptions"]["ValidUntil"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", until)
    days = (dt.datetime.fromisoformat(until[:-1]) - dt.datetime.now()).days
    assert 360 <= days <= 366


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
    # The stop action names the stack's own region (PutMetricAlarm AlarmActions:
    # "arn:aws:automate:region:ec2:stop"): eu-north-1 for the g6 stack.
    g6_alarm = one(spot[G6], "AWS::CloudWatch::Alarm")
    assert g6_alarm["AlarmActions"] == [
        {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":automate:eu-north-1:ec2:stop"]]}
    ]


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
    # ActionAfterCompletion stays NONE (AWS::Scheduler::Schedule: NONE | DELETE): with DELETE,
    # Scheduler deletes the one-time schedule after it fires, and the next deploy's update of
    # the CloudFormation-managed schedule (a new deadline) would fail on a missing resource.
    assert max_hours.get("ActionAfterCompletion", "NONE") == "NONE"
    # Scheduler assumes its role only for this account (aws:SourceAccount).
    role = template["Resources"][target["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
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


def test_ami_is_the_pinned_id_not_an_ssm_parameter(spot: dict[str, Any]) -> None:
    """Defect 2: an SSM-parameter AMI is resolved again at every deploy and a new DLAMI would
    replace the VM (CDK API docs, MachineImage.fromSsmParameter); the pinned id is a literal."""
    template = spot[G4DN]
    assert "Parameters" not in template or not template["Parameters"]
    assert lt_data(template)["ImageId"] == AMI
    assert lt_data(spot[G6])["ImageId"] == AMI
    # Offline synth without a pin (g5 here) keeps the public parameter: no credentials needed.
    (param,) = spot[G5]["Parameters"].values()
    assert param == {
        "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
        "Default": "/aws/service/deeplearning/ami/x86_64/"
        "base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
    }


def test_nothing_is_retained_when_the_stack_is_deleted(spot: dict[str, Any]) -> None:
    """destroy relies on DeleteStack removing every resource: a DeletionPolicy or
    UpdateReplacePolicy of Retain/Snapshot would leave it (a volume snapshot, a key pair)
    outside any stack (CloudFormation User Guide, DeletionPolicy attribute)."""
    for template in spot.values():
        for logical, res in template["Resources"].items():
            assert res.get("DeletionPolicy", "Delete") == "Delete", logical
            assert res.get("UpdateReplacePolicy", "Delete") == "Delete", logical


def test_small_vpc_without_nat_or_lambda(spot: dict[str, Any]) -> None:
    for template in spot.values():
        types = {r["Type"] for r in template["Resources"].values()}
        assert len(of_type(template, "AWS::EC2::Subnet")) == 1
        assert one(template, "AWS::EC2::Subnet")["MapPublicIpOnLaunch"] is True
        assert not {t for t in types if t.startswith(("Custom::", "AWS::Lambda"))}
        assert "AWS::EC2::NatGateway" not in types
        assert "AWS::CloudFormation::CustomResource" not in types


def test_key_pair_named_by_key_fingerprint(spot: dict[str, Any]) -> None:
    """Defect 9: a new public key gets a new key-pair name (a fixed custom name cannot be
    replaced: CloudFormation creates the new pair before deleting the old one)."""
    key = one(spot[G4DN], "AWS::EC2::KeyPair")
    assert key["PublicKeyMaterial"] == aws.PLACEHOLDER_PUBLIC_KEY
    assert key["KeyName"] == aws.key_pair_name(G4DN, aws.PLACEHOLDER_PUBLIC_KEY)
    assert key["KeyName"] == f"{G4DN}-key-{aws.key_fingerprint(aws.PLACEHOLDER_PUBLIC_KEY)}"


def test_disk_throughput_auto_is_each_types_ebs_burst(cdk_app: Any, tmp_path: Path) -> None:
    """Defect 8: "auto" asks gp3 for what the instance can use (EC2 User Guide, EBS-optimized
    instances: g4dn.2xlarge 437.5 MB/s maximum; EC2 Instance Types guide: g6.2xlarge 625 MB/s),
    in gp3's unit, MiB/s: 437.5 MB/s = 417 MiB/s, 625 MB/s = 596 MiB/s."""
    path = tmp_path / "rig.toml"
    path.write_text(
        '[aws]\ninstance_types = ["g4dn.2xlarge", "g6.2xlarge@eu-north-1"]\n', encoding="utf-8"
    )
    templates = _templates(cdk_app, path, tmp_path / "out")
    ebs = {k: lt_data(t)["BlockDeviceMappings"][0]["Ebs"] for k, t in templates.items()}
    assert (ebs[G4DN]["Throughput"], ebs[G4DN]["Iops"]) == (417, 3000)
    assert (ebs[G6]["Throughput"], ebs[G6]["Iops"]) == (596, 3000)


def test_same_pins_give_the_same_template_whatever_ssm_says_now(
    cdk_app: Any, tmp_path: Path
) -> None:
    """Defect 2: two deploys, between which the DLAMI's SSM parameter moved on, hand the app
    the same recorded AMI and ValidUntil (tests/test_aws_deploy.py shows the contexts), so the
    synthesized templates are identical: no change set, no replacement."""
    import aws_cdk as cdk
    from aws_fakes import FakeAws, FakeCdk
    from aws_helpers import DLAMI, PUBKEY, deployer, write_profile
    from moto import mock_aws

    key = tmp_path / "id.pub"
    key.write_text(PUBKEY + "\n")
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key)
    contexts = []
    with mock_aws(), FakeAws().installed() as fake:
        cdk_fake = FakeCdk(fake)
        fake.ssm[DLAMI] = "ami-12c6146b"
        deployer(fake, config, tmp_path / "state", cdk_fake).run()
        fake.ssm[DLAMI] = "ami-0f0e0d0c0b0a09080"  # a newer DLAMI, published meanwhile
        deployer(fake, config, tmp_path / "state", cdk_fake).run()
        contexts = [ctx for _, ctx, _ in cdk_fake.prepares]
    assert len(contexts) == 2
    synthesized = []
    for i, ctx in enumerate(contexts):
        app = cdk.App(context=ctx | {aws.CTX_DEADLINE: DEADLINE}, outdir=str(tmp_path / f"o{i}"))
        _, stacks = cdk_app.build(app)
        synthesized.append(Template.from_stack(stacks[0]).to_json())
    assert synthesized[0] == synthesized[1]
    assert lt_data(synthesized[0])["ImageId"] == "ami-12c6146b"


def test_an_ipv6_ssh_source_never_reaches_a_template(cdk_app: Any, spot_config: Path) -> None:
    import aws_cdk as cdk

    app = cdk.App(context=context(spot_config) | {aws.CTX_SSH_CIDR: "2001:db8::5/128"})
    with pytest.raises(Exception, match="IPv4 only"):
        cdk_app.build(app)


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
