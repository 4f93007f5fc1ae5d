"""Pulumi entry point: read the stack config that `python -m rig deploy azure` set, then declare.

Kept thin on purpose: every decision lives in rehearsal_vm.declare (tested with mocks) and in
rig's validated profile, never here.
"""

from __future__ import annotations

import pulumi
from rehearsal_vm import declare

from rig.profile import load_profile

config = pulumi.Config()
declared = declare(
    load_profile(config.require("profile")),
    vm_size=config.require("vmSize"),
    ssh_source=config.require("sshSource"),
    ssh_public_key=config.require("sshPublicKey"),
    shutdown_time=config.require("shutdownTime"),
    shutdown_time_zone=config.require("shutdownTimeZone"),
)
for key, value in declared.outputs.items():
    pulumi.export(key, value)
