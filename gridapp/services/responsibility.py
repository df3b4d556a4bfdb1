"""The responsibility list (权责清单): import a township's rules from a table, list them."""
from sqlalchemy import delete, select

from gridapp.errors import ValidationFailed
from gridapp.extensions import db
from gridapp.models import AdminArea, Category, EnforcementTeam, ResponsibilityRule, Squad
from gridapp.services.incidents import DEFAULT_STANDARD

COLUMNS = ("category_code", "place_code", "squad_code", "priority", "fallback", "auto_dispatch", "note")
_TRUE = ("1", "true", "yes", "是", "y")


def import_rules(township: AdminArea, rows: list[dict[str, str]]) -> dict:
    """Replace a township's rules with the table's; every bad row is reported and nothing is written.

    Row: category_code (5 digits, empty = any category), place_code (the township's 9 digits, a village's
    12 or a cell's 15), squad_code (a squad of the township's team), priority (lower wins; default 100),
    fallback (属地兜底: only when nothing else matches), auto_dispatch, note.

    :raises ValidationFailed: details.rows maps line numbers to problems.
    """
    if rows and (missing := [c for c in ("place_code", "squad_code") if c not in rows[0]]):
        raise ValidationFailed("The table lacks columns.", missing_columns=missing)
    squads = {s.code: s for s in db.session.scalars(select(Squad).join(Squad.team)
                                                   .where(EnforcementTeam.township_id == township.id))}
    categories = {c.code: c for c in db.session.scalars(select(Category).where(
        Category.standard == DEFAULT_STANDARD, Category.kind == "event"))}
    areas = {a.code: a for a in db.session.scalars(select(AdminArea).where(AdminArea.code.startswith(township.code)))}
    rules, problems = [], {}
    for line, row in enumerate(rows, start=2):
        errors = []
        category = None
        if row.get("category_code"):
            category = categories.get(row["category_code"])
            if category is None:
                errors.append(f"unknown category {row['category_code']}")
        place = row.get("place_code", "")
        area = areas.get(place) if len(place) in (9, 12) else None
        cell_code = place if len(place) == 15 and place.startswith(township.code) else None
        if area is None and cell_code is None:
            errors.append(f"place {place!r} is not this township, one of its villages or one of its cells")
        squad = squads.get(row.get("squad_code", ""))
        if squad is None:
            errors.append(f"no squad {row.get('squad_code')!r} in the township's team")
        priority = row.get("priority") or "100"
        if not priority.isdigit():
            errors.append("priority must be a whole number")
        fallback = row.get("fallback", "").lower() in _TRUE
        if fallback and (category is not None or area is None or area.level != "township"):
            errors.append("a fallback rule covers any category of the whole township")
        if errors:
            problems[str(line)] = errors
            continue
        rules.append(ResponsibilityRule(
            category_id=category.id if category else None, area_id=area.id if area else None, cell_code=cell_code,
            squad_id=squad.id, priority=int(priority), is_fallback=fallback,
            auto_dispatch=row.get("auto_dispatch", "").lower() in _TRUE, note=row.get("note") or None))
    if problems:
        raise ValidationFailed("The responsibility list has bad rows.", rows=problems)
    removed = db.session.execute(delete(ResponsibilityRule).where(
        ResponsibilityRule.squad_id.in_([s.id for s in squads.values()]))).rowcount
    db.session.add_all(rules)
    db.session.flush()
    return {"rules": len(rules), "replaced": removed}


def rules_in_scope(prefix: str) -> list[ResponsibilityRule]:
    """List the rules of the townships inside a scope."""
    return list(db.session.scalars(
        select(ResponsibilityRule).join(ResponsibilityRule.squad).join(Squad.team)
        .join(AdminArea, AdminArea.id == EnforcementTeam.township_id)
        .where(AdminArea.code.startswith(prefix)).order_by(ResponsibilityRule.priority, ResponsibilityRule.id)))
