"""rig/azure/schedule.py: the one time the VM's shutdown schedule is set to, and why.

The DevTestLab auto-shutdown schedule recurs daily at one local time; one created shortly before
its time may first fire the next day (REFERENCE.md, Azure, second round). The printed worst case
multiplies CloudStop.hours, so these tests pin exactly what the schedule enforces.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from rig.azure import schedule
from rig.problems import CommandError
from rig.profile import AutostopSection

T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


def stop(now: dt.datetime = T0, **autostop) -> schedule.CloudStop:
    return schedule.cloud_stop(AutostopSection(**autostop), now)


def test_the_max_hours_deadline_sets_the_schedule():
    s = stop()  # defaults: max_hours 4, daily 19:00 UTC
    assert (s.at, s.time, s.time_zone_id, s.hours) == (
        T0 + dt.timedelta(hours=4),
        "1300",
        "UTC",
        4.0,
    )
    assert "max_hours deadline" in s.why


def test_an_earlier_daily_shutdown_wins():
    s = stop(T0.replace(hour=17))
    assert (s.at.hour, s.time, s.hours) == (19, "1900", 2.0)
    assert "daily_shutdown 19:00" in s.why


def test_a_daily_time_too_close_to_trust_is_skipped_not_deferred_a_day():
    # 18:30 deploy: today's 19:00 is within the lead, so the schedule is NOT set to it (it might
    # first fire tomorrow); the deadline 22:30 holds instead.
    s = stop(T0.replace(hour=18, minute=30))
    assert (s.at, s.time, s.hours) == (T0.replace(hour=22, minute=30), "2230", 4.0)


def test_a_max_hours_shorter_than_the_lead_is_moved_to_the_lead_and_said():
    s = stop(max_hours=0.5)
    assert s.at == T0 + schedule.SCHEDULE_LEAD + schedule.ANSWER_WINDOW and s.hours == 1.17
    assert "shorter than the 60 min" in s.why and "10 min to answer" in s.why
    assert "watchdog" in s.why


def test_one_hour_leaves_time_to_answer_the_deploy_question():
    """max_hours = 1 (the smoke run): planned at the start, the stop must still be the lead
    ahead after the question is answered (rig/azure/deploy.py refuses otherwise)."""
    s = stop(T0 + dt.timedelta(seconds=20), max_hours=1)
    answered = T0 + dt.timedelta(seconds=20) + schedule.ANSWER_WINDOW - dt.timedelta(minutes=1)
    assert answered <= s.at - schedule.SCHEDULE_LEAD
    assert s.at == T0 + dt.timedelta(minutes=71) and "10 min to answer" in s.why


def test_more_than_a_day_is_capped_at_23_59():
    s = stop(max_hours=48, allow_long_runs=True, daily_shutdown="off")
    assert s.at == T0 + dt.timedelta(hours=23, minutes=59) and s.time == "0859"
    assert "23 h 59 min" in s.why and s.hours == 23.99


def test_daily_off_runs_the_deadline_in_utc_whatever_the_zone():
    s = stop(daily_shutdown="off", timezone="America/Argentina/Ushuaia")
    assert (s.time_zone_id, s.time) == ("UTC", "1300")


def test_local_time_in_the_profile_zone():
    # 08:50 UTC is 17:50 in Tokyo: the 19:00 JST daily stop is exactly the lead + the answer
    # window away, and wins.
    s = stop(T0 - dt.timedelta(minutes=10), timezone="Asia/Tokyo")
    assert (s.at, s.time, s.time_zone_id) == (
        T0 + dt.timedelta(hours=1),
        "1900",
        "Tokyo Standard Time",
    )
    assert s.local().startswith("2026-11-28 19:00")
    # At 09:00 UTC it is only the lead away: no time to answer, so the max_hours deadline
    # (13:00 UTC, 22:00 JST) holds instead of a stop the deploy would refuse after the answer.
    s = stop(timezone="Asia/Tokyo")
    assert (s.at, s.time) == (T0 + dt.timedelta(hours=4), "2200")


def test_a_dst_change_inside_the_window_keeps_the_instant():
    # Europe/Amsterdam moves to summer time at 02:00 on 2026-03-29: 4 h after 23:00 UTC is
    # 03:00 UTC, which is 05:00 local (CEST), not 04:00.
    now = dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC)
    s = stop(now, timezone="Europe/Amsterdam", daily_shutdown="19:00")
    assert s.at == dt.datetime(2026, 3, 29, 3, 0, tzinfo=dt.UTC)
    assert (s.time, s.time_zone_id) == ("0500", "W. Europe Standard Time")


def test_hours_are_rounded_up_never_down():
    s = stop(T0 + dt.timedelta(seconds=20))  # the deadline is floored to the minute
    assert s.at == T0 + dt.timedelta(hours=4) and s.hours == 4.0
    s = stop(T0 + dt.timedelta(seconds=20), max_hours=0.25)  # lead is ceiled to the minute
    assert s.at == T0 + dt.timedelta(minutes=71) and s.hours == 1.18  # 1.1778 h, up


def test_unknown_time_zone_is_a_one_line_error_with_the_fix():
    with pytest.raises(CommandError) as err:
        stop(timezone="America/Argentina/Ushuaia")
    msg = str(err.value)
    assert "\n" not in msg and "America/Argentina/Ushuaia" in msg
    assert 'daily_shutdown = "off"' in msg and err.value.exit_code == 2


@pytest.mark.parametrize(
    ("iana", "windows"),
    [
        ("UTC", "UTC"),
        ("Asia/Tokyo", "Tokyo Standard Time"),
        ("Europe/Amsterdam", "W. Europe Standard Time"),
        ("Europe/London", "GMT Standard Time"),
        ("America/New_York", "Eastern Standard Time"),
    ],
)
def test_iana_zones_map_to_windows_ids(iana, windows):
    # Unicode CLDR windowsZones.xml, the table Windows follows.
    assert schedule.windows_time_zone(iana) == windows


def test_every_mapped_zone_is_a_real_iana_zone():
    for iana in schedule.WINDOWS_ZONES:
        zoneinfo.ZoneInfo(iana)  # raises for a typo in the table


def test_shutdown_time_is_hhmm():
    assert schedule.shutdown_time("19:00") == "1900"
    assert schedule.shutdown_time("07:05") == "0705"
    assert schedule.shutdown_time("off") is None


# Daylight saving (Europe/Amsterdam: CLDR windowsZones "W. Europe Standard Time"). The schedule
# holds one local time of day (DevTestLab dailyRecurrence.time "HHmm" in timeZoneId), so a
# moment ~a day away whose local HH:MM comes round sooner across a clock change would make it
# fire early. 2027-03-28 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")


def _first_fire(s: schedule.CloudStop, created: dt.datetime) -> dt.datetime:
    """When a schedule with s.time in s.iana, created at `created`, first fires."""
    return schedule._next_daily(f"{s.time[:2]}:{s.time[2:]}", zoneinfo.ZoneInfo(s.iana), created)


def test_spring_forward_the_stop_is_when_the_schedule_really_fires():
    # 08:10 CET on the eve of the change, max_hours 23 (today's 09:00 daily is inside the lead).
    # Naively the stop is now + 23 h = 06:10 UTC = 08:10 CEST, and a "0810" schedule made now
    # first fires at 08:10 CET today — at once. It moves to 08:09 CEST tomorrow instead.
    now = dt.datetime(2027, 3, 27, 8, 10, tzinfo=AMS).astimezone(dt.UTC)
    s = stop(now, max_hours=23, daily_shutdown="09:00", timezone="Europe/Amsterdam")
    assert s.at == dt.datetime(2027, 3, 28, 8, 9, tzinfo=AMS) and s.time == "0809"
    assert _first_fire(s, now) == s.at
    assert _first_fire(s, now + dt.timedelta(minutes=15)) == s.at  # the schedule is made later
    assert s.hours == 22.99 and "clocks change" in s.why


def test_fall_back_the_stop_is_unchanged_and_fires_when_printed():
    now = dt.datetime(2026, 10, 24, 8, 10, tzinfo=AMS).astimezone(dt.UTC)
    s = stop(now, max_hours=23, daily_shutdown="09:00", timezone="Europe/Amsterdam")
    assert _first_fire(s, now) == s.at == now + dt.timedelta(hours=23)
    assert "clocks change" not in s.why


@pytest.mark.parametrize("minute", range(0, 24 * 60, 37))
def test_every_stop_fires_first_when_printed_whatever_the_hour(minute):
    # Any deploy time on the eve of both changes: what is printed is what the schedule does.
    for day in (dt.datetime(2027, 3, 27, tzinfo=AMS), dt.datetime(2026, 10, 24, tzinfo=AMS)):
        now = (day + dt.timedelta(minutes=minute)).astimezone(dt.UTC)
        for hours, daily in [(h, d) for h in (0.5, 4, 23, 23.5, 48) for d in ("19:00", "09:00")]:
            s = stop(
                now,
                max_hours=hours,
                allow_long_runs=True,
                daily_shutdown=daily,
                timezone="Europe/Amsterdam",
            )
            assert _first_fire(s, now) == s.at, (now, hours, s)
            assert s.at >= now + schedule.SCHEDULE_LEAD
            assert s.hours * 3600 + 1e-6 >= (s.at - now).total_seconds()
