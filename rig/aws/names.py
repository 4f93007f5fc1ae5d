"""Names shared by the AWS parts: stacks, targets, tags, CDK context keys, console links.

No boto3 here: cdk/app.py, the profile checks and `rig status` import this without the SDK.
"""

from __future__ import annotations

import base64
import hashlib

PROJECT = "gpu-rehearsal"
STACK_PREFIX = f"{PROJECT}-"

# Tags on every resource (the orphan scan finds leftovers by them).
TAG_PROJECT = "project"
TAG_PROFILE = "profile"
TAG_OWNER = "owner"
TAG_STACK = "rehearsal-stack"

# Context keys: what deploy resolves and hands to cdk/app.py (synth itself looks nothing up).
CTX_CONFIG = "rig:config"
CTX_SSH_CIDR = "rig:sshCidr"
CTX_PUBLIC_KEY = "rig:publicKey"
CTX_AZ_PREFIX = "rig:az:"  # + instance type
CTX_AMI_PREFIX = "rig:ami:"  # + instance type: the AMI id pinned at the first deploy
CTX_VALID_UNTIL_PREFIX = "rig:validUntil:"  # + instance type: the spot request's end, pinned
CTX_DEADLINE = "rig:deadline"
CTX_OWNER = "rig:owner"
CTX_PROFILE_NAME = "rig:profileName"

# Used by `synth-aws` and tests when "auto" is not resolved: TEST-NET-1 (RFC 5737) is routed
# nowhere, and nobody holds the placeholder key's private half, so a template synthesized with
# them and deployed by mistake fails closed.
PLACEHOLDER_SSH_CIDR = "192.0.2.1/32"
PLACEHOLDER_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2HLkoRwWMprcPPlIrvT4OvK6fwzYU6kw11zcUB0Sbj "
    "synth-placeholder-no-private-key"
)

# Service Quotas (service code ec2), both counted in vCPUs and often 0 on new accounts.
QUOTA_ON_DEMAND = "L-DB2E81BA"  # Running On-Demand G and VT instances
QUOTA_SPOT = "L-3819A6DF"  # All G and VT Spot Instance Requests

# The change set the CDK CLI prepares and rig inspects before anything changes.
CHANGE_SET_NAME = "gpu-rehearsal-deploy"


def stack_name(instance_type: str) -> str:
    """CloudFormation stack of one instance type: "gpu-rehearsal-g4dn-2xlarge".

    One stack per type (the profile refuses a type listed twice), in the type's own region:
    stack names are unique per region, so the name does not carry the region."""
    return STACK_PREFIX + instance_type.replace(".", "-")


def target_name(instance_type: str) -> str:
    """The bench target / state file name: "aws-g4dn.2xlarge"."""
    return f"aws-{instance_type}"


def type_of_stack(stack: str) -> str:
    """gpu-rehearsal-g4dn-2xlarge → g4dn.2xlarge (type names have exactly one dot)."""
    family, _, size = stack.removeprefix(STACK_PREFIX).partition("-")
    return f"{family}.{size}"


def key_fingerprint(public_key: str) -> str:
    """A short, stable id of an OpenSSH public key: hex SHA-256 of its key blob, 12 digits.

    The EC2 key pair is named after it ("<stack>-key-<fingerprint>"): CloudFormation replaces a
    key pair whose PublicKeyMaterial changes by creating the new one first, which fails for a
    fixed custom name that already exists. A name per key lets the new pair coexist."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        blob = public_key.encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def key_pair_name(stack: str, public_key: str) -> str:
    return f"{stack}-key-{key_fingerprint(public_key)}"


def quota_link(region: str, code: str) -> str:
    return f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code}"


def console_link(region: str) -> str:
    """Where to look by hand: the region's EC2 instances, filtered by the project tag."""
    return (
        f"https://{region}.console.aws.amazon.com/ec2/home?region={region}"
        f"#Instances:tag:{TAG_PROJECT}={PROJECT}"
    )
