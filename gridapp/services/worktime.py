"""Deadlines on a work calendar (处置时限): 紧急工作时 run around the clock, 工作时 count working hours,
工作日 count working days. Holidays and make-up working days (调休) come from the chinese-calendar
package, overridden per day by what a county imports. Pure: no database here."""
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Morning and afternoon windows (local time); a county may configure its own.
DEFAULT_WINDOWS = ((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30)))


class WorkCalendar:
    """Which days are working days and which hours of them count."""

    def __init__(self, overrides: dict[date, bool] | None = None, windows=DEFAULT_WINDOWS, tz=SHANGHAI):
        self.overrides = overrides or {}
        self.windows = windows
        self.tz = tz

    def is_workday(self, day: date) -> bool:
        """Tell whether a day is worked: a local override, else the national calendar, else Monday–Friday."""
        if day in self.overrides:
            return self.overrides[day]
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:  # a year the package does not know yet: import it (flask calendar import)
            return day.weekday() < 5

    def _windows_of(self, day: date):
        return [(datetime.combine(day, a, self.tz), datetime.combine(day, b, self.tz)) for a, b in self.windows]

    def add(self, start: datetime, amount: float, unit: str) -> datetime:
        """Return the deadline `amount` units after `start` (aware datetimes; the answer is in UTC).

        :param unit: urgent_hours, work_hours or work_days.
        """
        if unit == "urgent_hours":
            return start + timedelta(hours=amount)
        if unit == "work_hours":
            return self.add_work_seconds(start, amount * 3600)
        if unit == "work_days":
            return self._add_work_days(start, int(amount))
        raise ValueError(f"unknown time unit {unit!r}")

    def add_work_seconds(self, start: datetime, seconds: float) -> datetime:
        """Walk the working windows from `start`, consuming `seconds` of working time."""
        local = start.astimezone(self.tz)
        day = local.date()
        remaining = seconds
        for _ in range(3660):  # ten years of days: a bound, not a limit anyone meets
            if self.is_workday(day):
                for begin, end in self._windows_of(day):
                    begin = max(begin, local)
                    if begin >= end:
                        continue
                    available = (end - begin).total_seconds()
                    if remaining <= available:
                        return (begin + timedelta(seconds=remaining)).astimezone(ZoneInfo("UTC"))
                    remaining -= available
            day += timedelta(days=1)
        raise ValueError("deadline beyond ten years")

    def _add_work_days(self, start: datetime, days: int) -> datetime:
        """The end of the `days`-th working day after the start day (the start day itself does not count)."""
        day = start.astimezone(self.tz).date()
        counted = 0
        while counted < days:
            day += timedelta(days=1)
            if self.is_workday(day):
                counted += 1
        return self._windows_of(day)[-1][1].astimezone(ZoneInfo("UTC"))

    def work_seconds_between(self, start: datetime, end: datetime) -> float:
        """Working seconds from `start` to `end` (what is left of a 工作时 clock when it is paused)."""
        if end <= start:
            return 0.0
        total, day = 0.0, start.astimezone(self.tz).date()
        last = end.astimezone(self.tz).date()
        while day <= last:
            if self.is_workday(day):
                for begin, finish in self._windows_of(day):
                    overlap = (min(finish, end) - max(begin, start)).total_seconds()
                    total += max(overlap, 0.0)
            day += timedelta(days=1)
        return total
