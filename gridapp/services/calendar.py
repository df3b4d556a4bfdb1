"""Local working-day exceptions (a county's own holidays and make-up days) on top of the national calendar."""
from datetime import date

from sqlalchemy import select

from gridapp.errors import ValidationFailed
from gridapp.extensions import db
from gridapp.models import CalendarDay

_TRUE, _FALSE = ("1", "true", "yes", "是", "上班", "工作日"), ("0", "false", "no", "否", "休息", "休息日", "节假日")


def import_days(rows: list[dict[str, str]]) -> dict:
    """Upsert days from a table with columns date (YYYY-MM-DD), is_workday, note; all rows checked first.

    :raises ValidationFailed: details.rows maps line numbers to problems.
    """
    parsed, problems = [], {}
    for line, row in enumerate(rows, start=2):
        try:
            day = date.fromisoformat(row.get("date", "")[:10])
        except ValueError:
            problems[str(line)] = ["date must be YYYY-MM-DD"]
            continue
        flag = row.get("is_workday", "").lower()
        if flag not in _TRUE + _FALSE:
            problems[str(line)] = ["is_workday must be true/false (or 上班/休息)"]
            continue
        parsed.append((day, flag in _TRUE, row.get("note") or None))
    if problems:
        raise ValidationFailed("The calendar has bad rows.", rows=problems)
    existing = {d.day: d for d in db.session.scalars(select(CalendarDay).where(CalendarDay.day.in_([p[0] for p in parsed])))}
    for day, is_workday, note in parsed:
        row = existing.get(day) or CalendarDay(day=day)
        row.is_workday, row.note = is_workday, note
        db.session.add(row)
    db.session.flush()
    return {"days": len(parsed)}
