"""Deadline arithmetic across nights, weekends, a holiday and a make-up working day (pure)."""
from datetime import date, datetime

import pytest

from gridapp.services.worktime import SHANGHAI, WorkCalendar

CAL = WorkCalendar()


def local(*args):
    return datetime(*args, tzinfo=SHANGHAI)


def as_local(value):
    return value.astimezone(SHANGHAI).replace(tzinfo=None)


def test_urgent_hours_run_through_the_night():
    assert as_local(CAL.add(local(2026, 11, 20, 22, 0), 2, "urgent_hours")) == datetime(2026, 11, 21, 0, 0)


@pytest.mark.parametrize("start,hours,expected", [
    ((2026, 11, 19, 9, 0), 2, (2026, 11, 19, 11, 0)),       # inside the morning window
    ((2026, 11, 19, 11, 0), 2, (2026, 11, 19, 14, 30)),     # across the lunch break
    ((2026, 11, 19, 16, 30), 4, (2026, 11, 20, 11, 30)),    # across the night (Thu → Fri)
    ((2026, 11, 20, 16, 30), 4, (2026, 11, 23, 11, 30)),    # across the weekend (Fri → Mon)
    ((2026, 11, 21, 10, 0), 1, (2026, 11, 23, 9, 30)),      # reported on a Saturday
    ((2026, 11, 19, 20, 0), 1, (2026, 11, 20, 9, 30)),      # reported at night
    ((2026, 9, 30, 16, 0), 4, (2026, 10, 8, 11, 0)),        # National Day holiday 10-01..10-07
    ((2026, 10, 9, 16, 30), 2, (2026, 10, 10, 9, 30)),      # 10-10 is a Saturday worked in lieu (调休)
])
def test_work_hours(start, hours, expected):
    assert as_local(CAL.add(local(*start), hours, "work_hours")) == datetime(*expected)


def test_work_days_skip_weekends_holidays_and_count_makeup_days():
    assert as_local(CAL.add(local(2026, 11, 19, 10, 0), 2, "work_days")) == datetime(2026, 11, 23, 17, 30)
    assert as_local(CAL.add(local(2026, 9, 30, 10, 0), 1, "work_days")) == datetime(2026, 10, 8, 17, 30)
    assert as_local(CAL.add(local(2026, 10, 9, 10, 0), 1, "work_days")) == datetime(2026, 10, 10, 17, 30)


def test_local_overrides_and_unknown_years():
    county = WorkCalendar(overrides={date(2026, 11, 23): False})  # a local day off
    assert as_local(county.add(local(2026, 11, 20, 16, 30), 4, "work_hours")) == datetime(2026, 11, 24, 11, 30)
    # 2027 is not in the package yet: Monday–Friday until the county imports the year.
    assert CAL.is_workday(date(2027, 3, 1)) and not CAL.is_workday(date(2027, 3, 6))


def test_paused_clock_keeps_the_remaining_work_time():
    start, pause = local(2026, 11, 19, 9, 0), local(2026, 11, 19, 10, 0)
    due = CAL.add(start, 4, "work_hours")
    remaining = CAL.work_seconds_between(pause, due)
    assert remaining == 3 * 3600
    resumed = CAL.add_work_seconds(local(2026, 11, 23, 8, 30), remaining)  # parked over the weekend
    assert as_local(resumed) == datetime(2026, 11, 23, 11, 30)
