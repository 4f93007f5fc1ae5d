"""`destroy aws` with boto3 alone: every recorded region, requests cancelled by id before their
instances are terminated, a failed stack delete reported with exit 1, "0 left" only after a
scan, and no Node.js anywhere on the way (issue #10 item 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
from aws_fakes import FakeAws
from aws_helpers import MOTO_OWNER, PUBKEY, REGION, deployer, write_profile

from rig.aws import names, scan
from rig.aws.session import Aws
from rig.cli import main
from rig.state import read_all

pytest_plugins = ["aws_support"]  # fixtures: aws_env, fake, key_file
ROOT = Path(__file__).resolve().parent.parent
THREE = 'instance_types = ["g4dn.2xlarge", "g5.2xlarge", "g6.2xlarge@eu-north-1"]'


def live_instances(region: str) -> list[str]:
    ec2 = boto3.client("ec2", region_name=region)
    return [
        i["InstanceId"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]


def destroy(config: Path, state_dir: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(["destroy", "aws", "--config", str(config), "--state-dir", str(state_dir)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def test_destroy_in_two_regions_cancels_then_terminates_then_deletes(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_profile(tmp_path, THREE, key_file)
    states = deployer(fake, config, tmp_path / "state").run()
    fake.calls.clear()
    rc, out, err = destroy(config, tmp_path / "state", capsys)
    assert rc == 0, out + err
    assert live_instances("eu-west-1") == [] and live_instances("eu-north-1") == []
    for s in states:
        assert fake.requests[s.region][s.ids["spot_request"]].state == "cancelled"
        assert f"cancelled spot request {s.ids['spot_request']}" in out
        assert fake.stacks[(s.region, s.ids["stack"])].status == "DELETE_COMPLETE"
    # Cancelled before terminated (else the persistent request relaunches): nothing relaunched.
    ops = [op for op, _ in fake.calls]
    assert ops.index("CancelSpotInstanceRequests") < ops.index("TerminateInstances")
    assert ops.index("TerminateInstances") < ops.index("DeleteStack")
    assert fake.relaunched == []
    assert "orphan scan in eu-north-1, eu-west-1: 0 left" in out
    assert read_all(tmp_path / "state") == []


def test_destroy_covers_the_region_a_state_file_names(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    """Defect 4: aws.region changed after a deploy; the old VM is still found and removed."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (state,) = deployer(fake, config, tmp_path / "state").run()
    moved = write_profile(
        tmp_path, 'region = "eu-central-1"\ninstance_types = ["g4dn.2xlarge"]', key_file
    )
    rc, out, _ = destroy(moved, tmp_path / "state", capsys)
    assert rc == 0
    assert live_instances(REGION) == []
    assert "orphan scan in eu-central-1, eu-west-1: 0 left" in out
    assert state.ids["instance"] in out


def test_a_failed_stack_delete_still_stops_the_billing_and_exits_1(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    """Defect 5: the VM is terminated directly (its request cancelled by id first), the stack
    that would not delete is reported with its reason and the command that removes it."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (state,) = deployer(fake, config, tmp_path / "state").run()
    stack = state.ids["stack"]
    fake.fail_delete = {stack}
    rc, out, err = destroy(config, tmp_path / "state", capsys)
    assert rc == 1
    assert live_instances(REGION) == []  # no compute bills, whatever CloudFormation did
    assert fake.requests[REGION][state.ids["spot_request"]].state == "cancelled"
    assert f"stack {stack} in eu-west-1 (DELETE_FAILED: The vpc 'vpc-0abc' has dependencies" in out
    assert f"aws cloudformation delete-stack --region eu-west-1 --stack-name {stack}" in out
    assert "0 left" not in out
    assert "1 resource(s) still exist" in err and err.strip().count("\n") == 0
    assert [s.name for s in read_all(tmp_path / "state")] == [state.name]  # kept: not gone


def test_destroy_runs_with_python_alone(fake: FakeAws, tmp_path: Path, key_file: Path) -> None:
    """Issue #10 item 2: no node, npx or cdk on PATH, and destroy still removes everything."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    script = textwrap.dedent(
        f"""
        import shutil, sys
        sys.path[:0] = [{str(ROOT / "tests")!r}, {str(ROOT)!r}]
        from moto import mock_aws
        from aws_fakes import MOTO_AMI, FakeAws
        from aws_helpers import DLAMI, deployer
        from rig.cli import main

        assert [shutil.which(x) for x in ("node", "npx", "cdk", "npm")] == [None] * 4
        with mock_aws(), FakeAws().installed() as fake:
            fake.ssm[DLAMI] = MOTO_AMI
            deployer(fake, __import__("pathlib").Path({str(config)!r}),
                     __import__("pathlib").Path({str(tmp_path / "state")!r})).run()
            sys.exit(main(["destroy", "aws", "--config", {str(config)!r},
                           "--state-dir", {str(tmp_path / "state")!r}]))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "PATH": str(empty_bin),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "orphan scan in eu-west-1: 0 left" in proc.stdout
    assert "deleting stack gpu-rehearsal-g4dn-2xlarge" in proc.stdout


def test_make_destroy_does_not_need_the_cdk_cli() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (rule,) = re.findall(r"^destroy:([^#\n]*)", makefile, re.M)
    assert "cdk-cli" not in rule.split()
    dry = subprocess.run(
        ["make", "-n", "-B", "destroy"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "npm" not in dry and "node_modules" not in dry
    assert "-m rig destroy all" in dry  # both clouds, one exit status (rig destroy all)


def test_aws_disabled_and_nothing_recorded_claims_no_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: an Azure-only user: nothing to do, and it does not pretend to have looked."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    config = write_profile(tmp_path, "enabled = false")
    rc, out, _ = destroy(config, tmp_path / "state", capsys)
    assert rc == 0
    assert "nothing to destroy (no scan ran)" in out
    assert "0 left" not in out


def test_without_credentials_destroy_cannot_verify_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: "could not verify" is exit 1 with the reason and the console link."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]')
    rc, out, err = destroy(config, tmp_path / "state", capsys)
    assert rc == 1
    assert "0 left" not in out + err
    assert "could not verify eu-west-1" in err and "no AWS credentials found" in err
    assert names.console_link(REGION) in err
    assert err.strip().count("\n") == 0


def test_a_stray_request_of_a_deleted_stack_is_cancelled_and_its_vm_terminated(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    """A request tagged ours whose stack is gone (e.g. deleted by hand in the console) still
    launches VMs: destroy finds it by tag, cancels it, terminates its VM, then scans."""
    tags = [
        {"Key": names.TAG_PROJECT, "Value": names.PROJECT},
        {"Key": names.TAG_OWNER, "Value": MOTO_OWNER},
        {"Key": names.TAG_STACK, "Value": names.stack_name("g4dn.2xlarge")},
    ]
    iid, rid = fake.launch(REGION, "g4dn.2xlarge", "eu-west-1b", tags, "")
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    rc, out, _ = destroy(config, tmp_path / "state", capsys)
    assert rc == 0, out
    assert fake.requests[REGION][rid].state == "cancelled" and live_instances(REGION) == []
    assert fake.relaunched == [] and iid in out and "0 left" in out


def test_a_left_volume_is_reported_with_its_fix_and_exit_1(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    vol = ec2.create_volume(
        Size=200,
        AvailabilityZone="eu-west-1b",
        VolumeType="gp3",
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": [
                    {"Key": names.TAG_PROJECT, "Value": names.PROJECT},
                    {"Key": names.TAG_OWNER, "Value": MOTO_OWNER},
                ],
            }
        ],
    )
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    rc, out, err = destroy(config, tmp_path / "state", capsys)
    assert rc == 1
    assert f"volume {vol['VolumeId']} in eu-west-1 (200 GB available)" in out
    assert f"aws ec2 delete-volume --region eu-west-1 --volume-id {vol['VolumeId']}" in out
    assert "1 resource(s) still exist" in err


def test_orphan_scan_covers_every_kind(fake: FakeAws) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    stack = names.stack_name("g4dn.2xlarge")
    tags = [
        {"Key": names.TAG_PROJECT, "Value": names.PROJECT},
        {"Key": names.TAG_OWNER, "Value": MOTO_OWNER},
        {"Key": names.TAG_STACK, "Value": stack},
    ]
    fake.launch(REGION, "g4dn.2xlarge", "eu-west-1a", tags, "")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    ec2.create_network_interface(
        SubnetId=subnet, TagSpecifications=[{"ResourceType": "network-interface", "Tags": tags}]
    )
    ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tags}]
    )
    ec2.import_key_pair(
        KeyName=f"{stack}-key-0123456789ab",
        PublicKeyMaterial=PUBKEY.encode(),
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}],
    )
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName=f"{stack}-idle-stop",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=300,
        EvaluationPeriods=6,
        Threshold=5,
        ComparisonOperator="LessThanThreshold",
        Tags=tags,
    )
    boto3.client("scheduler", region_name=REGION).create_schedule_group(
        Name=f"{stack}-stops", Tags=tags
    )
    # What a failed stack delete leaves that bills nothing but must not read as "0 left".
    vpc = ec2.create_vpc(
        CidrBlock="10.42.0.0/24", TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}]
    )["Vpc"]["VpcId"]
    ec2.create_security_group(
        GroupName=f"{stack}-ssh",
        Description="SSH from the deployer address only",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )
    # A launch template is found by the stack's name prefix even without tags.
    ec2.create_launch_template(
        LaunchTemplateName=f"{stack}-template", LaunchTemplateData={"InstanceType": "g4dn.2xlarge"}
    )
    # An idle alarm that lost its tags is still ours by its name (reported, not assumed away).
    boto3.client("cloudwatch", region_name=REGION).put_metric_alarm(
        AlarmName=f"{names.stack_name('g5.2xlarge')}-idle-stop",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=300,
        EvaluationPeriods=6,
        Threshold=5,
        ComparisonOperator="LessThanThreshold",
    )
    # Someone else's resources with the same project tag are not ours to report.
    ec2.create_volume(
        Size=8,
        AvailabilityZone="eu-west-1a",
        TagSpecifications=[
            {
                "ResourceType": "volume",
                "Tags": [
                    {"Key": "project", "Value": names.PROJECT},
                    {"Key": "owner", "Value": "bob"},
                ],
            }
        ],
    )
    kinds = sorted(o.kind for o in scan.orphans(Aws(REGION), MOTO_OWNER))
    assert kinds == [
        "VPC",
        "alarm",
        "alarm",
        "elastic IP",
        "instance",
        "key pair",
        "launch template",
        "network interface",
        "schedule group",
        "security group",
        "spot request",
        "volume",  # the instance's root volume, tagged by the launch template
    ]


def test_a_recorded_request_ec2_has_forgotten_does_not_block_destroy(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    """EC2 answers InvalidSpotInstanceRequestID.NotFound for a request it no longer keeps (EC2
    API Reference, error codes); the other ids and the stack are still handled."""
    from rig.state import write

    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (state,) = deployer(fake, config, tmp_path / "state").run()
    real = state.ids["spot_request"]
    state.ids["spot_request"] = "sir-0gone000"
    write(state, tmp_path / "state")
    rc, out, _ = destroy(config, tmp_path / "state", capsys)
    assert rc == 0, out
    assert fake.requests[REGION][real].state == "cancelled" and live_instances(REGION) == []
    assert "0 left" in out


def test_aws_disabled_after_a_deploy_still_destroys_what_the_state_names(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    deployer(fake, config, tmp_path / "state").run()
    disabled = write_profile(tmp_path, "enabled = false", key_file)
    rc, out, _ = destroy(disabled, tmp_path / "state", capsys)
    assert rc == 0 and live_instances(REGION) == []
    assert "orphan scan in eu-west-1: 0 left" in out


def test_destroy_is_not_fooled_by_stale_stack_reads(
    fake: FakeAws, tmp_path: Path, key_file: Path
) -> None:
    """Right after DeleteStack, DescribeStacks may still show UPDATE_COMPLETE (eventual
    consistency; the CDK CLI polls again on such reads: toolkit-lib cfn-api.ts stabilizeStack).
    botocore's StackDeleteComplete waiter lists UPDATE_COMPLETE as a failure state and stops
    at the first read: destroy would report a stack that is being deleted as left behind."""
    from rich.console import Console

    from rig.aws.destroy import Destroyer, report_lines
    from rig.profile import load_profile

    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    deployer(fake, config, tmp_path / "state").run()
    # As after any redeploy that changed something (e.g. the max_hours stop moved).
    fake.stacks[(REGION, names.stack_name("g4dn.2xlarge"))].status = "UPDATE_COMPLETE"
    fake.stale_reads = 2
    console = Console(record=True, width=250)
    report = Destroyer(
        load_profile(config), console, state_dir=tmp_path / "state", poll_s=0.01
    ).run()
    lines, error = report_lines(report)
    assert error is None, lines
    assert lines == ["orphan scan in eu-west-1: 0 left"]
    assert "could not delete" not in console.export_text()


def test_termination_protection_is_reported_not_hidden(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture
) -> None:
    """DeleteStack on a protected stack is refused ("cannot be deleted while
    TerminationProtection is enabled"; CloudFormation User Guide, "Protect a stack from being
    deleted"). The VM is terminated first anyway; the stack is listed and the exit is 1."""
    config = write_profile(tmp_path, 'instance_types = ["g4dn.2xlarge"]', key_file)
    (state,) = deployer(fake, config, tmp_path / "state").run()
    fake.protected = {state.ids["stack"]}
    rc, out, err = destroy(config, tmp_path / "state", capsys)
    assert rc == 1
    assert live_instances(REGION) == []
    assert "TerminationProtection is enabled" in out
    assert f"stack {state.ids['stack']} in eu-west-1" in out and "1 resource(s) still exist" in err


@pytest.mark.parametrize("code", ["OptInRequired", "UnauthorizedOperation"])
def test_a_region_that_cannot_be_asked_is_could_not_verify(
    fake: FakeAws, tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture, code: str
) -> None:
    """A recorded region whose APIs refuse the caller (EC2 API Reference, common client
    errors: OptInRequired "You are not authorized to use the requested service. Ensure that
    you have subscribed to the service", UnauthorizedOperation) cannot be scanned: exit 1 with
    "could not verify" for it, never "0 left", while the region that answers is cleaned."""
    config = write_profile(tmp_path, THREE, key_file)
    deployer(fake, config, tmp_path / "state").run()
    fake.denied_regions = {"eu-north-1": code}
    rc, out, err = destroy(config, tmp_path / "state", capsys)
    assert rc == 1
    assert live_instances("eu-west-1") == []
    assert "0 left" not in out + err
    assert "could not verify eu-north-1" in out and code in out
    assert names.console_link("eu-north-1") in out + err
    assert "could not verify eu-north-1" in err and err.strip().count("\n") == 0
    # The state of the unverified region is kept: the next destroy tries it again.
    assert [s.region for s in read_all(tmp_path / "state")] == ["eu-north-1"]
