"""The pinned CDK CLI (cdk/node_modules, `npm ci`): synth, and the deploy's change set.

Only synth and deploy need it (and so Node.js); destroy is plain boto3 (rig.aws.destroy).
The stacks use LegacyStackSynthesizer: the cloud assembly names no bootstrap role and no
bootstrap version, so the CLI deploys with the caller's own credentials and sends the template
inline (CloudFormation's TemplateBody takes up to 51,200 bytes): no `cdk bootstrap`, ever.
`cdk deploy --method=prepare-change-set` only creates the change set; rig reads it
(rig.aws.changeset) and executes it itself, or refuses it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rig.aws.names import CHANGE_SET_NAME
from rig.problems import CommandError

ROOT = Path(__file__).resolve().parent.parent.parent
CDK_DIR = ROOT / "cdk"


class CdkRunner(Protocol):
    def prepare(self, stack: str, context: dict[str, str], region: str) -> int:
        """Create the change set CHANGE_SET_NAME for the stack; 0 when it exists (or the CLI
        found nothing to change and made none)."""
        ...


@dataclass
class CdkCli:
    """The pinned CDK CLI with offline-safe settings."""

    cdk_dir: Path = CDK_DIR
    python: str = sys.executable
    output: Path | None = None  # cloud assembly dir; default cdk/cdk.out

    @property
    def binary(self) -> Path:
        return self.cdk_dir / "node_modules" / ".bin" / "cdk"

    def env(self, region: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            # not ~/.cdk: keep the workspace self-contained
            CDK_HOME=str(self.cdk_dir / ".cdk-home"),
            CDK_DISABLE_CLI_TELEMETRY="true",
            CDK_DISABLE_VERSION_CHECK="true",
            JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
            JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        )
        if region:
            env.update(AWS_REGION=region, AWS_DEFAULT_REGION=region, CDK_DEFAULT_REGION=region)
        return env

    def command(self, verb: str, *args: str, context: dict[str, str]) -> list[str]:
        if not self.binary.exists():
            raise CommandError(
                f"the CDK CLI is not installed in {self.cdk_dir}/node_modules — run "
                "`make cdk-cli` (npm ci --prefix cdk; Node.js 20 or newer), then retry"
            )
        cmd = [
            str(self.binary),
            verb,
            *args,
            "--app",
            f"{self.python} app.py",
            "--no-notices",
            "--no-version-reporting",
        ]
        if self.output is not None:
            cmd += ["--output", str(self.output)]
        for key, value in context.items():
            cmd += ["--context", f"{key}={value}"]
        return cmd

    def deploy_command(self, stack: str, context: dict[str, str]) -> list[str]:
        """`cdk deploy` as the deploy runs it: prepare the change set only, never execute."""
        return self.command(
            "deploy",
            stack,
            "--exclusively",
            "--require-approval",
            "never",
            "--method=prepare-change-set",
            "--change-set-name",
            CHANGE_SET_NAME,
            context=context,
        )

    def synth(self, context: dict[str, str], region: str | None = None, quiet: bool = True) -> int:
        args = ("--quiet",) if quiet else ()
        cmd = self.command("synth", *args, context=context)
        return subprocess.run(cmd, cwd=self.cdk_dir, env=self.env(region), check=False).returncode

    def prepare(self, stack: str, context: dict[str, str], region: str) -> int:
        cmd = self.deploy_command(stack, context)
        return subprocess.run(cmd, cwd=self.cdk_dir, env=self.env(region), check=False).returncode
