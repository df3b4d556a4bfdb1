"""Routing by the responsibility list (权责清单): which squad gets a case, and why."""
from sqlalchemy import or_, select

from gridapp.extensions import db
from gridapp.models import AdminArea, GridCell, Incident, ResponsibilityRule

# The narrower the place a rule names, the more it wins.
SPECIFICITY = {"cell": 0, "village": 1, "township": 2}


def route(incident: Incident) -> tuple[ResponsibilityRule | None, str]:
    """Pick the rule for a case: the most specific place, then the lowest priority number, then the
    category-specific rule over the any-category one; the township's fallback (属地兜底) last.

    :returns: (rule or None, a sentence saying why, for the case history).
    """
    cell_code = db.session.scalar(select(GridCell.code).where(GridCell.id == incident.cell_id)) if incident.cell_id else None
    village_id = db.session.scalar(select(GridCell.village_id).where(GridCell.id == incident.cell_id)) if incident.cell_id else None
    places = [ResponsibilityRule.area_id == incident.township_id]
    if village_id:
        places.append(ResponsibilityRule.area_id == village_id)
    if cell_code:
        places.append(ResponsibilityRule.cell_code == cell_code)
    candidates = db.session.scalars(select(ResponsibilityRule).where(
        or_(*places),
        or_(ResponsibilityRule.category_id == incident.category_id, ResponsibilityRule.category_id.is_(None)),
    )).all()
    if not candidates:
        return None, "No rule of the responsibility list covers this category here: the case has no owner."

    def place_of(rule):
        if rule.cell_code:
            return "cell"
        return db.session.get(AdminArea, rule.area_id).level

    ranked = sorted(candidates, key=lambda r: (r.is_fallback, SPECIFICITY[place_of(r)], r.priority,
                                               r.category_id is None, r.id))
    rule = ranked[0]
    what = rule.category.name if rule.category else "any category"
    where = f"cell {rule.cell_code}" if rule.cell_code else f"{rule.area.level} {rule.area.name}"
    kind = "fallback rule (属地兜底)" if rule.is_fallback else "rule"
    return rule, f"{kind} #{rule.id}: {what} in {where} → {rule.squad.name} (priority {rule.priority})"
