"""`rig status` for AWS: ask EC2, not the state file (registered in rig.status as "aws").

From EC2: the instance's state and launch time (LaunchTime is the last start), its state
reason, the spot request's state and status code (EC2 User Guide, "Spot request status"), and
the spot price history of its AZ for the compute $ of the current run. The disk bills from
deploy to now, running or stopped; the auto-assigned public IPv4 only while running (AWS
releases it on stop). Raises CommandError (one line) when EC2 cannot be asked.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import botocore.exceptions

from rig.aws.errors import translate
from rig.aws.pricing import spot_compute_usd
from rig.aws.scan import INTERRUPTED_CODES, INTERRUPTED_REASON, STOP_NOTICE_CODES, requests_by_id
from rig.aws.session import Aws
from rig.problems import CommandError
from rig.state import VmState

# "User initiated (2026-11-28 12:00:00 GMT)": the stop time EC2 writes into
# StateTransitionReason (EC2 API Reference, Instance.stateTransitionReason).
STOPPED_AT = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")
VALID_UNTIL_WARN = dt.timedelta(days=14)


def _parse(t: str) -> dt.datetime:
    return dt.datetime.fromisoformat(t.replace("Z", "+00:00"))


def _hours(a: dt.datetime, b: dt.datetime) -> float:
    return max((b - a).total_seconds(), 0) / 3600


def root_volume_created(aws: Aws, inst: dict[str, Any]) -> dt.datetime | None:
    """CreateTime of the instance's root EBS volume (DescribeVolumes), or None when EC2 does
    not say (a terminated instance lists no block devices)."""
    root = inst.get("RootDeviceName")
    vol = next(
        (
            b["Ebs"]["VolumeId"]
            for b in inst.get("BlockDeviceMappings", [])
            if b.get("DeviceName") == root and "Ebs" in b
        ),
        None,
    )
    if vol is None:
        return None
    try:
        found = aws.client("ec2").describe_volumes(VolumeIds=[vol])["Volumes"]
    except botocore.exceptions.ClientError as exc:
        if "InvalidVolume" in str(exc):
            return None
        raise
    created = found[0].get("CreateTime") if found else None
    return created if isinstance(created, dt.datetime) else None


def live_row(state: VmState, now: dt.datetime, aws: Aws | None = None) -> dict[str, Any]:
    aws = aws or Aws(state.region)
    try:
        return _row(aws, state, now)
    except CommandError:
        raise
    except Exception as exc:
        raise translate(exc, region=state.region) from None


def _row(aws: Aws, state: VmState, now: dt.datetime) -> dict[str, Any]:
    ec2 = aws.client("ec2")
    iid = state.ids.get("instance", "")
    disk_rate = float(state.extra.get("disk_usd_per_hour", 0.0))
    ip_rate = float(state.extra.get("public_ipv4_usd_per_hour", 0.0))
    deployed = _parse(state.deployed_at)
    try:
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    except botocore.exceptions.ClientError as exc:
        if "InvalidInstanceID" not in str(exc):
            raise
        return {
            "state": "gone",
            "hours_billed": 0.0,
            "usd_compute": 0.0,
            "usd_stopped_extras": 0.0,
            "usd_total": 0.0,
            "usd_per_hour": 0.0,
            "minutes_to_deadline": 0,
            "note": f"{iid} no longer exists in {state.region} — make destroy removes the "
            "stack and this state file",
        }
    name = inst["State"]["Name"]
    launched = inst.get("LaunchTime", deployed)
    request = None
    rid = inst.get("SpotInstanceRequestId") or state.ids.get("spot_request")
    if rid:
        request = next(iter(requests_by_id(aws, [rid])), None)
    req_state = request["State"] if request else ""
    req_code = request.get("Status", {}).get("Code", "") if request else ""
    notes: list[str] = []

    # The current run: from the last start to now, or to the stop EC2 recorded.
    if name in ("running", "pending", "stopping", "shutting-down"):
        run_end = now
    else:
        match = STOPPED_AT.search(inst.get("StateTransitionReason", ""))
        run_end = (
            dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
            if match
            else launched
        )
        if not match and name == "stopped":
            notes.append("stop time not given by EC2: the last run is not counted")
    run_end = max(min(run_end, now), launched)
    hours = _hours(launched, run_end)
    if launched > deployed + dt.timedelta(minutes=10):
        notes.append(
            f"hours count the run since the last start ({launched:%Y-%m-%d %H:%M} UTC); "
            "earlier runs are not included"
        )

    az = inst.get("Placement", {}).get("AvailabilityZone", "")
    if state.spot:
        compute, last_price = spot_compute_usd(aws, state.instance_type, az, launched, run_end)
        if last_price is None:  # no history returned: the recorded price is the best we have
            compute, last_price = hours * state.price.usd_per_hour, state.price.usd_per_hour
    else:
        last_price = state.price.usd_per_hour
        compute = hours * last_price
    # The disk bills from its creation (the first deploy: a redeploy rewrites deployed_at but
    # keeps the volume) until it is deleted with the instance.
    created = root_volume_created(aws, inst) or deployed
    disk_hours = _hours(created, now) if name != "terminated" else _hours(created, run_end)
    usd_disk = disk_hours * disk_rate
    usd_ip = hours * ip_rate

    label = name
    if name == "stopped":
        if (
            req_code in INTERRUPTED_CODES
            or inst.get("StateReason", {}).get("Code") == INTERRUPTED_REASON
        ):
            label = "interrupted"
            notes.append(
                f"AWS stopped it ({req_code or 'Server.SpotInstanceShutdown'}); only EC2 can "
                "restart an interrupted spot instance, when capacity returns — the disk bills "
                "meanwhile; make destroy to stop paying"
            )
        else:
            notes.append("stopped: only the disk bills — make destroy when done")
    if request is not None:
        notes.append(f"spot request {request['SpotInstanceRequestId']} {req_state} ({req_code})")
        if req_state in ("cancelled", "closed") and name in ("running", "pending"):
            notes.append(
                "its spot request is no longer active, so this VM can no longer be stopped "
                "(EC2 User Guide, Stop a Spot Instance): idle stops fail — make destroy"
            )
        ends = request.get("ValidUntil")
        if req_code == "schedule-expired" or (
            req_state == "cancelled" and isinstance(ends, dt.datetime) and ends <= now
        ):
            # An expired request is "cancelled" ("schedule-expired", or the stopped
            # instance's own code): EC2 User Guide, "Spot request status".
            notes.append(
                "the spot request expired (ValidUntil): the VM can no longer be stopped or "
                "started — make destroy, then deploy again"
            )
        if req_code in STOP_NOTICE_CODES and name in ("running", "pending"):
            notes.append(
                f"AWS gave the 2-minute interruption notice ({req_code}): EC2 stops the VM "
                "next and restarts it only when capacity returns"
            )
        if req_state == "open":
            notes.append(
                "the spot request is open: EC2 launches a new VM as soon as capacity allows — "
                "make destroy cancels it"
            )
    until = state.extra.get("spot_valid_until")
    if until and name != "terminated":
        end = _parse(str(until))
        if end - now < VALID_UNTIL_WARN:
            notes.append(
                f"the spot request ends {end:%Y-%m-%d} (ValidUntil): after that the VM cannot "
                "be stopped — make destroy and deploy again before then"
            )
    running = name in ("running", "pending")
    per_hour = (last_price + disk_rate + ip_rate) if running else disk_rate
    if name == "terminated":
        per_hour = 0.0
        notes.append("terminated: make destroy removes the stack and this state file")
    deadline = _parse(state.deadline)
    return {
        "state": label,
        "instance_state": name,
        "spot_request_state": req_state,
        "spot_request_code": req_code,
        "launched": launched.isoformat(timespec="seconds"),
        "hours_billed": round(hours, 2),
        "usd_compute": round(compute, 2),
        "usd_ipv4": round(usd_ip, 2),
        # What bills whether the VM runs or not: the gp3 disk (the public IPv4 is released on
        # stop and counted in usd_ipv4 for the running hours).
        "usd_stopped_extras": round(usd_disk, 2),
        "usd_total": round(compute + usd_ip + usd_disk, 2),
        "usd_per_hour": round(per_hour, 4),
        "minutes_to_deadline": round(max((deadline - now).total_seconds(), 0) / 60)
        if running
        else 0,
        "note": "; ".join(notes),
    }
