"""One rehearsal VM on AWS: a stoppable spot GPU instance that stops itself when idle.

Everything the stack needs arrives in `RehearsalProps`, built by app.py from the validated
profile and the deploy-time context; nothing here looks anything up, so `cdk synth` runs
offline and without credentials. No Lambda-backed custom resources anywhere: every stop path
is a native AWS action (alarm action, EventBridge Scheduler universal target).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

# Average CPU below this for idle_minutes counts as idle. Ollama decoding on the GPU keeps one
# core busy (12.5 % of 8 vCPU), an idle Ubuntu host sits under 1 %.
CPU_IDLE_PERCENT = 5
# Basic EC2 monitoring publishes one datapoint per 5 minutes: finer periods see no data.
ALARM_PERIOD_MINUTES = 5
ROOT_DEVICE = "/dev/sda1"  # the root device name of Ubuntu AMIs and the DLAMI
VPC_CIDR = "10.42.0.0/24"
STOP_INSTANCES_TARGET = "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
# The launch template tags every resource RunInstances creates, so that the orphan scan in
# rig/aws/scan.py finds them by tag after the stack is gone (CloudFormation does not see them).
LAUNCHED_RESOURCE_TYPES = ("instance", "volume", "network-interface", "spot-instances-request")


@dataclass(frozen=True)
class RehearsalProps:
    instance_type: str
    availability_zone: str
    ssh_cidr: str  # an IPv4 CIDR, normally one address: "203.0.113.7/32"
    public_key: str  # OpenSSH public key material
    key_name: str  # "<stack>-key-<fingerprint>": a new key gets a new name (see rig.aws.names)
    ami_id: str | None  # pinned at the first deploy; None: the SSM parameter (offline synth)
    ami_ssm_parameter: str
    ssh_user: str
    disk_gb: int
    disk_throughput_mbs: int
    disk_iops: int
    spot: bool
    spot_max_price: float | None  # None: the on-demand price is the cap
    spot_valid_until: str  # "YYYY-MM-DDTHH:MM:SSZ", pinned at the first deploy
    idle_minutes: int
    deadline_utc: str  # "YYYY-MM-DDTHH:MM:SS": the max_hours stop
    daily_shutdown: str | None  # "HH:MM" or None
    timezone: str
    tags: dict[str, str] = field(default_factory=dict)


def stop_self_statement(instance_arn: str) -> iam.PolicyStatement:
    """ec2:StopInstances on exactly one instance ARN (no wildcard, no other action)."""
    return iam.PolicyStatement(actions=["ec2:StopInstances"], resources=[instance_arn])


class RehearsalStack(cdk.Stack):
    def __init__(self, scope: Construct, stack_id: str, props: RehearsalProps, **kwargs) -> None:
        super().__init__(scope, stack_id, **kwargs)
        self.props = props
        name = self.stack_name
        for key, value in props.tags.items():
            cdk.Tags.of(self).add(key, value)

        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            # The AZ is the cheapest one that offers the type (chosen by preflight).
            availability_zones=[props.availability_zone],
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=26
                )
            ],
            # The restricting variant deploys a Lambda custom resource; the default SG is unused.
            restrict_default_security_group=False,
        )

        sg = ec2.SecurityGroup(
            self,
            "SshOnly",
            vpc=vpc,
            description="SSH from the deployer address only; Ollama is reached by SSH tunnel",
            allow_all_outbound=True,  # apt, model pulls from the Ollama registry
        )
        if ":" in props.ssh_cidr:
            # The VPC has no IPv6: such a rule would admit nobody (rig check refuses it first).
            raise ValueError(f"ssh_cidr {props.ssh_cidr} is IPv6; the VPC is IPv4 only")
        sg.add_ingress_rule(
            ec2.Peer.ipv4(props.ssh_cidr), ec2.Port.tcp(22), "SSH from the deployer"
        )

        key = ec2.KeyPair(
            self,
            "Key",
            key_pair_name=props.key_name,
            public_key_material=props.public_key,  # imported: the private key stays local
        )

        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="Rehearsal VM: SSM Session Manager, and stopping itself only",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")
            ],
        )

        spot_options = None
        if props.spot:
            spot_options = ec2.LaunchTemplateSpotOptions(
                # persistent + stop: AWS stops the VM on interruption and restarts it when
                # capacity returns, keeping the disk and its pulled models.
                request_type=ec2.SpotRequestType.PERSISTENT,
                interruption_behavior=ec2.SpotInstanceInterruption.STOP,
                max_price=props.spot_max_price,
            )
        template = ec2.LaunchTemplate(
            self,
            "Template",
            launch_template_name=f"{name}-template",
            instance_type=ec2.InstanceType(props.instance_type),
            # The AMI id pinned at the first deploy, as a literal: an SSM parameter would be
            # resolved again at every deploy and a new DLAMI would replace the VM (CDK API
            # docs, MachineImage.fromSsmParameter). Offline synth keeps the parameter.
            machine_image=ec2.MachineImage.generic_linux({self.region: props.ami_id})
            if props.ami_id
            else ec2.MachineImage.from_ssm_parameter(props.ami_ssm_parameter),
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        props.disk_gb,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        iops=props.disk_iops,
                        throughput=props.disk_throughput_mbs,
                        delete_on_termination=True,
                    ),
                )
            ],
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            role=role,
            key_pair=key,
            spot_options=spot_options,
            # The idle watchdog on the VM runs `shutdown`: that must stop, not terminate.
            instance_initiated_shutdown_behavior=ec2.InstanceInitiatedShutdownBehavior.STOP,
        )
        cfn_template = template.node.default_child
        assert isinstance(cfn_template, ec2.CfnLaunchTemplate)
        all_tags = [{"Key": k, "Value": v} for k, v in {**props.tags, "Name": name}.items()]
        cfn_template.add_property_override(
            "LaunchTemplateData.TagSpecifications",
            [{"ResourceType": rt, "Tags": all_tags} for rt in LAUNCHED_RESOURCE_TYPES],
        )
        if props.spot:
            # A far, fixed end for the persistent request (rig.aws.preflight: the 7-day default
            # would leave a VM that cannot be stopped). Set as an override because the L2
            # renders Expiration with toUTCString ("Tue, 01 Dec 2027 ..."), not the
            # YYYY-MM-DDTHH:MM:SSZ form the EC2 API documents for ValidUntil.
            cfn_template.add_property_override(
                "LaunchTemplateData.InstanceMarketOptions.SpotOptions.ValidUntil",
                props.spot_valid_until,
            )

        instance = ec2.CfnInstance(
            self,
            "Instance",
            launch_template=ec2.CfnInstance.LaunchTemplateSpecificationProperty(
                launch_template_id=template.launch_template_id,
                version=template.latest_version_number,
            ),
            subnet_id=vpc.public_subnets[0].subnet_id,
            security_group_ids=[sg.security_group_id],
        )
        # The route to the internet gateway must exist before the VM boots, or cloud-init's
        # first apt run and the SSH wait fail.
        for subnet in vpc.public_subnets:
            instance.node.add_dependency(subnet.internet_connectivity_established)
        self.instance = instance
        instance_arn = self.format_arn(
            service="ec2", resource="instance", resource_name=instance.ref
        )

        # Created after the instance (it names its ARN), so the role cannot stop anything else.
        iam.Policy(
            self,
            "StopSelf",
            roles=[role],
            statements=[stop_self_statement(instance_arn)],
        )

        # Backstop 1: idle CPU for idle_minutes → the EC2 stop action (works if the VM hangs).
        periods = max(1, -(-props.idle_minutes // ALARM_PERIOD_MINUTES))
        alarm = cloudwatch.Alarm(
            self,
            "IdleAlarm",
            alarm_name=f"{name}-idle-stop",
            alarm_description=(
                f"Stops the rehearsal VM after {props.idle_minutes} min below "
                f"{CPU_IDLE_PERCENT}% CPU"
            ),
            metric=cloudwatch.Metric(
                namespace="AWS/EC2",
                metric_name="CPUUtilization",
                dimensions_map={"InstanceId": instance.ref},
                statistic="Average",
                period=cdk.Duration.minutes(ALARM_PERIOD_MINUTES),
            ),
            threshold=CPU_IDLE_PERCENT,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            # A stopped VM sends no data: that must not keep (or put) the alarm in ALARM.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(cw_actions.Ec2Action(cw_actions.Ec2InstanceAction.STOP))

        # Backstop 2: EventBridge Scheduler stops the VM at the max_hours deadline (and daily,
        # when asked), through the universal ec2:stopInstances target: no Lambda.
        scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            ),
            description="EventBridge Scheduler: stop the rehearsal VM, nothing else",
        )
        iam.Policy(
            self,
            "SchedulerStopPolicy",
            roles=[scheduler_role],
            statements=[stop_self_statement(instance_arn)],
        )
        # Schedules carry no tags; the group does, and deleting the group deletes them.
        group = scheduler.CfnScheduleGroup(
            self,
            "Schedules",
            name=f"{name}-stops",
            tags=[cdk.CfnTag(key=k, value=v) for k, v in props.tags.items()],
        )
        target = scheduler.CfnSchedule.TargetProperty(
            arn=STOP_INSTANCES_TARGET,
            role_arn=scheduler_role.role_arn,
            input=cdk.Fn.sub(json.dumps({"InstanceIds": ["${Id}"]}), {"Id": instance.ref}),
            retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                maximum_retry_attempts=5, maximum_event_age_in_seconds=3600
            ),
        )
        off = scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF")
        scheduler.CfnSchedule(
            self,
            "MaxHoursStop",
            name=f"{name}-max-hours",
            group_name=group.ref,  # also orders the schedules after their group
            description="Stops the rehearsal VM at the max_hours deadline, busy or not",
            schedule_expression=f"at({props.deadline_utc})",
            schedule_expression_timezone="UTC",
            flexible_time_window=off,
            target=target,
        )
        if props.daily_shutdown:
            hh, mm = props.daily_shutdown.split(":")
            scheduler.CfnSchedule(
                self,
                "DailyStop",
                name=f"{name}-daily",
                group_name=group.ref,
                description=f"Stops the rehearsal VM daily at {props.daily_shutdown}",
                schedule_expression=f"cron({int(mm)} {int(hh)} * * ? *)",
                schedule_expression_timezone=props.timezone,
                flexible_time_window=off,
                target=target,
            )

        for out_id, value, description in (
            ("InstanceId", instance.ref, "EC2 instance id"),
            ("PublicIp", instance.attr_public_ip, "public IPv4 address for SSH"),
            ("PublicDnsName", instance.attr_public_dns_name, "public DNS name"),
            ("AvailabilityZone", instance.attr_availability_zone, "availability zone"),
            ("Region", self.region, "region"),
            ("SshUser", props.ssh_user, "SSH login user"),
            ("KeyName", key.key_pair_name, "EC2 key pair name"),
            ("LaunchTemplateId", template.launch_template_id or "", "launch template id"),
        ):
            cdk.CfnOutput(self, out_id, value=value, description=description)
