"""The cloud-side stop: the DevTestLab auto-shutdown schedule, set to the max_hours deadline.

Azure has no "stop this VM at time T" resource that works without something running on the VM;
the closest is the auto-shutdown schedule (Microsoft.DevTestLab/schedules, named
shutdown-computevm-<vm>), which deallocates the VM every day at one local time. So every deploy
sets that time to the moment the VM must stop: the max_hours deadline, or the daily_shutdown if
that comes first. Three limits of a daily schedule are handled here, and `CloudStop.why` says
which one applied, so the printed worst case is exactly what the schedule enforces:

- a schedule created shortly before its time may first fire the next day (REFERENCE, Azure;
  Microsoft documents no cut-off): a stop is never set less than SCHEDULE_LEAD ahead (planned
  with ANSWER_WINDOW more, for the deploy's question); a shorter max_hours is held by the
  watchdog on the VM, the cloud-side stop comes at that earliest time;
- it recurs daily, so it cannot hold a deadline more than a day away: max_hours > 24 is capped
  at 24 h minus a minute (the time of day just passed, whose next run is a day later);
- it holds one time of day: the daily_shutdown is kept only when it comes before the deadline.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass

from rig.problems import CommandError
from rig.profile import AutostopSection

# Our margin, not a documented figure: the deploy creates the schedule a few minutes after it
# starts (`pulumi up`), and the schedule must then still be well ahead of its time.
SCHEDULE_LEAD = dt.timedelta(minutes=60)
# How long the deploy's question may wait for its answer: a stop is planned at least
# SCHEDULE_LEAD + ANSWER_WINDOW after the deploy starts, so that once answered it is still
# SCHEDULE_LEAD ahead. Without it a max_hours of 1 h (the smoke run's) could never deploy: the
# stop printed at the start was already too close by the time anyone answered.
ANSWER_WINDOW = dt.timedelta(minutes=10)
EARLIEST = SCHEDULE_LEAD + ANSWER_WINDOW
# If `pulumi up` ran so long that the schedule was created less than this before its time, the
# deploy says that its first run may be skipped (and what the worst case then is).
SCHEDULE_MARGIN = dt.timedelta(minutes=30)
DAY = dt.timedelta(hours=24)
MINUTE = dt.timedelta(minutes=1)

# IANA -> Windows time-zone ids (DevTestLab schedules take only Windows ids). From Unicode CLDR's
# windowsZones.xml (common/supplemental), the table Windows itself follows.
WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Etc/UTC": "UTC",
    "Etc/GMT": "UTC",
    "Europe/London": "GMT Standard Time",
    "Europe/Dublin": "GMT Standard Time",
    "Europe/Lisbon": "GMT Standard Time",
    "Europe/Amsterdam": "W. Europe Standard Time",
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/Rome": "W. Europe Standard Time",
    "Europe/Stockholm": "W. Europe Standard Time",
    "Europe/Vienna": "W. Europe Standard Time",
    "Europe/Zurich": "W. Europe Standard Time",
    "Europe/Oslo": "W. Europe Standard Time",
    "Europe/Luxembourg": "W. Europe Standard Time",
    "Europe/Paris": "Romance Standard Time",
    "Europe/Brussels": "Romance Standard Time",
    "Europe/Madrid": "Romance Standard Time",
    "Europe/Copenhagen": "Romance Standard Time",
    "Europe/Warsaw": "Central European Standard Time",
    "Europe/Zagreb": "Central European Standard Time",
    "Europe/Prague": "Central Europe Standard Time",
    "Europe/Budapest": "Central Europe Standard Time",
    "Europe/Belgrade": "Central Europe Standard Time",
    "Europe/Athens": "GTB Standard Time",
    "Europe/Bucharest": "GTB Standard Time",
    "Europe/Helsinki": "FLE Standard Time",
    "Europe/Kyiv": "FLE Standard Time",
    "Europe/Kiev": "FLE Standard Time",
    "Europe/Riga": "FLE Standard Time",
    "Europe/Sofia": "FLE Standard Time",
    "Europe/Tallinn": "FLE Standard Time",
    "Europe/Vilnius": "FLE Standard Time",
    "Europe/Istanbul": "Turkey Standard Time",
    "Europe/Moscow": "Russian Standard Time",
    "Asia/Tokyo": "Tokyo Standard Time",
    "Asia/Seoul": "Korea Standard Time",
    "Asia/Shanghai": "China Standard Time",
    "Asia/Hong_Kong": "China Standard Time",
    "Asia/Taipei": "Taipei Standard Time",
    "Asia/Singapore": "Singapore Standard Time",
    "Asia/Kuala_Lumpur": "Singapore Standard Time",
    "Asia/Manila": "Singapore Standard Time",
    "Asia/Bangkok": "SE Asia Standard Time",
    "Asia/Jakarta": "SE Asia Standard Time",
    "Asia/Ho_Chi_Minh": "SE Asia Standard Time",
    "Asia/Kolkata": "India Standard Time",
    "Asia/Calcutta": "India Standard Time",
    "Asia/Dubai": "Arabian Standard Time",
    "Asia/Jerusalem": "Israel Standard Time",
    "Asia/Karachi": "Pakistan Standard Time",
    "Asia/Dhaka": "Bangladesh Standard Time",
    "Australia/Sydney": "AUS Eastern Standard Time",
    "Australia/Melbourne": "AUS Eastern Standard Time",
    "Australia/Brisbane": "E. Australia Standard Time",
    "Australia/Adelaide": "Cen. Australia Standard Time",
    "Australia/Perth": "W. Australia Standard Time",
    "Pacific/Auckland": "New Zealand Standard Time",
    "Pacific/Honolulu": "Hawaiian Standard Time",
    "America/New_York": "Eastern Standard Time",
    "America/Toronto": "Eastern Standard Time",
    "America/Detroit": "Eastern Standard Time",
    "America/Chicago": "Central Standard Time",
    "America/Winnipeg": "Central Standard Time",
    "America/Denver": "Mountain Standard Time",
    "America/Edmonton": "Mountain Standard Time",
    "America/Phoenix": "US Mountain Standard Time",
    "America/Los_Angeles": "Pacific Standard Time",
    "America/Vancouver": "Pacific Standard Time",
    "America/Anchorage": "Alaskan Standard Time",
    "America/Halifax": "Atlantic Standard Time",
    "America/Mexico_City": "Central Standard Time (Mexico)",
    "America/Sao_Paulo": "E. South America Standard Time",
    "Africa/Johannesburg": "South Africa Standard Time",
    "Africa/Cairo": "Egypt Standard Time",
    "Africa/Lagos": "W. Central Africa Standard Time",
    "Africa/Nairobi": "E. Africa Standard Time",
}


def windows_time_zone(iana: str) -> str:
    """The Windows id Azure's auto-shutdown schedule needs; a one-line fix when unknown."""
    zone = WINDOWS_ZONES.get(iana)
    if zone is None:
        raise CommandError(
            f"rig.toml: autostop.timezone: {iana!r} has no known Windows time-zone id for "
            "Azure's shutdown schedule — use a zone of the same offset that is known (e.g. "
            '"UTC", "Europe/Amsterdam", "Asia/Tokyo"; list: rig/azure/schedule.py '
            'WINDOWS_ZONES), or set autostop.daily_shutdown = "off" (the max_hours stop then '
            "runs in UTC)",
            exit_code=2,
        )
    return zone


def shutdown_time(daily: str) -> str | None:
    """ "19:00" -> "1900" (DevTestLab's HHmm); None when the schedule is off."""
    return None if daily == "off" else daily.replace(":", "")


@dataclass(frozen=True)
class CloudStop:
    """When the shutdown schedule first deallocates the VM, and how it is written for Azure."""

    at: dt.datetime  # UTC, whole minutes
    time: str  # "HHmm" in time_zone_id: the schedule's dailyRecurrence.time
    time_zone_id: str  # Windows time-zone id (the schedule's timeZoneId)
    iana: str  # the same zone as an IANA name, for printing local times
    hours: float  # from the start of the deploy to `at`: what the worst case multiplies
    why: str  # which rule set the time, in words

    def local(self) -> str:
        return self.at.astimezone(zoneinfo.ZoneInfo(self.iana)).strftime("%Y-%m-%d %H:%M %Z")


def _floor_minute(t: dt.datetime) -> dt.datetime:
    return t.replace(second=0, microsecond=0)


def _ceil_minute(t: dt.datetime) -> dt.datetime:
    floor = _floor_minute(t)
    return floor if floor == t else floor + MINUTE


def _next_daily(daily: str, zone: zoneinfo.ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first local `daily` HH:MM at or after `after` (UTC result)."""
    hour, minute = (int(p) for p in daily.split(":"))
    local = after.astimezone(zone)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate < local:
        day = (local + DAY).date()
        candidate = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    return candidate.astimezone(dt.UTC)


def _fires_first_at(at: dt.datetime, zone: zoneinfo.ZoneInfo, now: dt.datetime) -> bool:
    """Whether a schedule set now to `at`'s local HH:MM first fires at `at` (not earlier)."""
    return _next_daily(at.astimezone(zone).strftime("%H:%M"), zone, now) == at


def _first_run(
    at: dt.datetime, zone: zoneinfo.ZoneInfo, now: dt.datetime, earliest: dt.datetime
) -> dt.datetime:
    """The latest time at or before `at` that a daily local-time schedule set now first fires
    at. Across a daylight-saving change the local HH:MM of a moment ~a day away can come round
    sooner (spring forward: the day has 23 h), so the schedule would stop the VM an hour after
    the deploy instead of at the printed time; stepping back a minute at a time finds the time
    it really first fires at (at most 60 steps for a one-hour change)."""
    t = at
    while not _fires_first_at(t, zone, now):
        t -= MINUTE
        if t < earliest:  # no such time in the window: cannot happen for real zones
            raise CommandError(
                f"cannot set Azure's daily shutdown schedule in {zone.key} for "
                f"{at:%Y-%m-%d %H:%M} UTC — set autostop.timezone to UTC",
                exit_code=2,
            )
    return t


def cloud_stop(autostop: AutostopSection, now: dt.datetime) -> CloudStop:
    """The one time the schedule is set to for a deploy starting at `now`."""
    iana = autostop.timezone if autostop.daily_shutdown != "off" else "UTC"
    windows = windows_time_zone(iana)
    zone = zoneinfo.ZoneInfo(iana)
    now = now.astimezone(dt.UTC)
    earliest = now + EARLIEST
    wanted = now + dt.timedelta(hours=autostop.max_hours)
    if wanted < earliest:
        at = _ceil_minute(earliest)
        why = (
            f"max_hours = {autostop.max_hours:g} h is shorter than the "
            f"{SCHEDULE_LEAD.seconds // 60} min Azure's schedule must be set ahead (plus "
            f"{ANSWER_WINDOW.seconds // 60} min to answer): the cloud-side stop comes then "
            "(the watchdog on the VM still stops it at max_hours)"
        )
    elif wanted >= now + DAY - MINUTE:
        at = _floor_minute(now) + DAY - MINUTE
        why = (
            f"max_hours = {autostop.max_hours:g} h is more than Azure's daily schedule can "
            "hold: it deallocates the VM after 23 h 59 min (run make deploy-azure again to "
            "continue)"
        )
    else:
        at = _floor_minute(wanted)
        why = f"the max_hours deadline ({autostop.max_hours:g} h)"
    if autostop.daily_shutdown != "off":
        daily = _next_daily(autostop.daily_shutdown, zone, earliest)
        if daily < at:
            at = daily
            why = f"daily_shutdown {autostop.daily_shutdown} {iana}, before the max_hours deadline"
    settled = _first_run(at, zone, now, earliest)
    if settled != at:
        why += (
            f"; moved {int((at - settled).total_seconds() // 60)} min earlier because the "
            f"clocks change in {iana} before it (the schedule holds a local time of day)"
        )
        at = settled
    return CloudStop(
        at=at,
        time=at.astimezone(zone).strftime("%H%M"),
        time_zone_id=windows,
        iana=iana,
        # Rounded up: the worst case may overstate by a cent, never understate.
        hours=math.ceil((at - now).total_seconds() / 36) / 100,
        why=why,
    )
