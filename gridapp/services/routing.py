"""Routing by the responsibility list (权责清单): which squad gets a case, and why."""
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload, load_only
from sqlalchemy.orm.attributes import set_committed_value

from gridapp.extensions import db
from gridapp.models import AdminArea, EnforcementTeam, GridCell, Incident, ResponsibilityRule, Squad

# The narrower the place a rule names, the more it wins.
SPECIFICITY = {"cell": 0, "village": 1, "township": 2}


def route(incident: Incident) -> tuple[ResponsibilityRule | None, str]:
    """Pick the rule for a case: the most specific place, then the lowest priority number, then the
    category-specific rule over the any-category one; the township's fallback (属地兜底) last.

    Two statements: the case's cell (code and village; it stays in the session for the squad's
    notification) and the candidate rules with what the explanation names (and their squads' townships,
    so dispatching to the rule's squad needs no lookup).

    :returns: (rule or None, a sentence saying why, for the case history).
    """
    cell = db.session.get(GridCell, incident.cell_id, options=[load_only(GridCell.code, GridCell.village_id)]) \
        if incident.cell_id else None
    set_committed_value(incident, "cell", cell)  # the case keeps it (without its geometry) for the notification
    places = [ResponsibilityRule.area_id == incident.township_id]
    if cell and cell.village_id:
        places.append(ResponsibilityRule.area_id == cell.village_id)
    if cell:
        places.append(ResponsibilityRule.cell_code == cell.code)
    candidates = db.session.scalars(select(ResponsibilityRule).where(
        or_(*places),
        or_(ResponsibilityRule.category_id == incident.category_id, ResponsibilityRule.category_id.is_(None)),
    ).options(joinedload(ResponsibilityRule.area).load_only(AdminArea.level, AdminArea.name),
              joinedload(ResponsibilityRule.squad).joinedload(Squad.team).load_only(EnforcementTeam.township_id),
              joinedload(ResponsibilityRule.category))).unique().all()
    if not candidates:
        return None, "No rule of the responsibility list covers this category here: the case has no owner."

    def place_of(rule):
        return "cell" if rule.cell_code else rule.area.level

    ranked = sorted(candidates, key=lambda r: (r.is_fallback, SPECIFICITY[place_of(r)], r.priority,
                                               r.category_id is None, r.id))
    rule = ranked[0]
    what = rule.category.name if rule.category else "any category"
    where = f"cell {rule.cell_code}" if rule.cell_code else f"{rule.area.level} {rule.area.name}"
    kind = "fallback rule (属地兜底)" if rule.is_fallback else "rule"
    return rule, f"{kind} #{rule.id}: {what} in {where} → {rule.squad.name} (priority {rule.priority})"
