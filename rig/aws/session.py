"""One region's boto3 clients. Tests hand in a moto- or fake-backed `boto3.Session`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import botocore.config
import botocore.loaders
import botocore.session

# One loader of botocore's service models for every session: parsing the EC2 model takes about
# half a second, and a run opens a session per region. Credentials stay per session.
_LOADER: botocore.loaders.Loader | None = None

# Throttling (RequestLimitExceeded, Throttling) and transient errors are retried by botocore's
# "standard" mode with exponential backoff (botocore/retries/standard.py lists RequestLimitExceeded
# among its throttling codes); its default of 3 attempts is too few for a destroy that walks
# several regions at once, and a destroy that gives up early reports "could not verify".
# (Config's max_attempts counts retries: 10 retries, 11 attempts.)
RETRIES = botocore.config.Config(retries={"mode": "standard", "max_attempts": 10})
# The Price List Query API has two endpoints, us-east-1 and ap-south-1 (AWS SDK API docs for
# the Price List Service, "Service Endpoint"); the prices it returns cover every region.
PRICING_REGION = "us-east-1"


def new_session(region: str) -> boto3.Session:
    global _LOADER
    core = botocore.session.get_session()
    if _LOADER is None:
        _LOADER = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _LOADER)
    return boto3.Session(botocore_session=core, region_name=region)


class Aws:
    """The boto3 clients of one region, created once each."""

    def __init__(self, region: str, session: boto3.Session | None = None):
        self.region = region
        self.session = session or new_session(region)
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            region = PRICING_REGION if service == "pricing" else self.region
            self._clients[service] = self.session.client(
                service, region_name=region, config=RETRIES
            )
        return self._clients[service]

    def caller(self) -> tuple[str, str]:
        """(account id, ARN) of the credentials in use."""
        ident = self.client("sts").get_caller_identity()
        return ident["Account"], ident["Arn"]


# How a command gets the clients of a region (tests pass a factory over their own session).
AwsFactory = Callable[[str], Aws]


def owner_of(arn: str) -> str:
    """A stable owner tag from an STS ARN: the IAM user or role name (not the session)."""
    resource = arn.split(":", 5)[-1]  # user/alice, assumed-role/Admin/session, root
    parts = resource.split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def tags_of(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or []}
