"""Every AWS failure as one line with the fix (`CommandError`), never a traceback."""

from __future__ import annotations

import botocore.exceptions

from rig.aws.names import QUOTA_ON_DEMAND, QUOTA_SPOT, quota_link
from rig.problems import CommandError
from rig.version import RIG

NO_CREDENTIALS = (
    "no AWS credentials found — run `aws configure` (or `aws sso login`), or export "
    "AWS_PROFILE / AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then retry"
)
BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "AuthFailure",
    "RequestExpired",
}
# RunInstances' answer for a spot launch without capacity carries this message (the code may be
# InsufficientInstanceCapacity or none at all inside a CloudFormation reason): both mean "try
# another availability zone" (EC2 User Guide, "Troubleshoot instance launch issues").
SPOT_CAPACITY_MESSAGE = "There is no Spot capacity available that matches your request"
CAPACITY = "InsufficientInstanceCapacity"

KNOWN_CODES = (
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    CAPACITY,
    "SpotMaxPriceTooLow",
    "Unsupported",
    "UnauthorizedOperation",
)


def is_capacity_failure(text: str) -> bool:
    """A failure reason (API message or CloudFormation event) that another AZ may not have."""
    return CAPACITY in text or SPOT_CAPACITY_MESSAGE in text


def explain_code(code: str, message: str, *, region: str, what: str = "") -> str | None:
    """The one-line explanation of an AWS error code (also found in CloudFormation reasons)."""
    subject = what or "the instance"
    if code in BAD_CREDENTIALS:
        return (
            f"AWS rejected the credentials ({code}) — refresh them (`aws sso login`, "
            "`aws configure`) and retry"
        )
    if code == "VcpuLimitExceeded":
        return (
            f"{subject}: the on-demand G and VT vCPU quota ({QUOTA_ON_DEMAND}) in {region} is "
            f"too low — request an increase at {quota_link(region, QUOTA_ON_DEMAND)}"
        )
    if code == "MaxSpotInstanceCountExceeded":
        return (
            f"{subject}: the G and VT spot vCPU quota ({QUOTA_SPOT}) in {region} is too low — "
            f"request an increase at {quota_link(region, QUOTA_SPOT)}, or set aws.spot = false"
        )
    if code == CAPACITY or SPOT_CAPACITY_MESSAGE in message:
        return (
            f"{subject}: AWS has no capacity for it in this availability zone right now "
            f"({code or 'no Spot capacity'}) — retry later, or pick another instance type"
        )
    if code == "SpotMaxPriceTooLow":
        return (
            f"{subject}: the spot price is above aws.spot_max_price (SpotMaxPriceTooLow) — "
            'raise aws.spot_max_price, set it to "" (on-demand price as cap), or spot = false'
        )
    if code == "Unsupported" or "not supported in your requested Availability Zone" in message:
        return (
            f"{subject} is not offered here ({code}) — pick another instance type or region "
            f"(see {RIG} catalog)"
        )
    if code in {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}:
        return (
            f"the AWS identity lacks a permission ({code}: {message[:160]}) — use credentials "
            "allowed to run CloudFormation, EC2, IAM, SSM, CloudWatch and Scheduler"
        )
    return None


def code_in_text(text: str) -> str | None:
    """An EC2 error code named in free text, e.g. a CloudFormation resource status reason."""
    found = next((c for c in KNOWN_CODES if c in text), None)
    if found is None and SPOT_CAPACITY_MESSAGE in text:
        return CAPACITY
    return found


def client_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def describe(exc: BaseException) -> str:
    """The reason only (no fix), for lines that add their own, e.g. "could not verify"."""
    if isinstance(exc, CommandError):
        return str(exc)
    return str(translate(exc, region="?"))


def translate(exc: BaseException, *, region: str, what: str = "") -> CommandError:
    """Any boto3/botocore failure as one line with the fix."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(
        exc,
        botocore.exceptions.NoCredentialsError
        | botocore.exceptions.PartialCredentialsError
        | botocore.exceptions.CredentialRetrievalError
        | botocore.exceptions.TokenRetrievalError
        | botocore.exceptions.SSOError,
    ):
        return CommandError(NO_CREDENTIALS)
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
    ):
        return CommandError(f"cannot reach AWS in {region} ({exc}) — check the network and retry")
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code, message = str(err.get("Code", "")), str(err.get("Message", ""))
        line = explain_code(code, message, region=region, what=what)
        return CommandError(line or f"AWS error {code}: {message} — see the AWS message above")
    if isinstance(exc, botocore.exceptions.WaiterError):
        return CommandError(f"AWS: {exc} — see the AWS console for {region}")
    return CommandError(f"AWS: {exc.__class__.__name__}: {exc}")
