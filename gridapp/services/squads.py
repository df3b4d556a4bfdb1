"""Law-enforcement teams (综合行政执法队) and squads (中队) with the areas they cover."""
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gridapp.extensions import db
from gridapp.models import AdminArea, EnforcementTeam, Squad


def teams_in_scope(prefix: str) -> list[EnforcementTeam]:
    """List the teams of the townships inside a scope, with their squads and covered areas."""
    return list(db.session.scalars(
        select(EnforcementTeam)
        .join(EnforcementTeam.township)
        .where(AdminArea.code.startswith(prefix))
        .options(selectinload(EnforcementTeam.squads).selectinload(Squad.areas))
        .order_by(AdminArea.code)
    ))


def ensure_team(township: AdminArea, name: str) -> EnforcementTeam:
    """Create the township's team, or rename it (idempotent)."""
    team = db.session.scalar(select(EnforcementTeam).where(EnforcementTeam.township_id == township.id))
    if team is None:
        team = EnforcementTeam(township=township, name=name)
        db.session.add(team)
    team.name = name
    db.session.flush()
    return team


def ensure_squad(team: EnforcementTeam, code: str, name: str, areas: list[AdminArea]) -> Squad:
    """Create or update a squad of a team and set the areas it covers (idempotent)."""
    squad = db.session.scalar(select(Squad).where(Squad.team_id == team.id, Squad.code == code))
    if squad is None:
        squad = Squad(team=team, code=code, name=name)
        db.session.add(squad)
    squad.name = name
    squad.areas = areas
    db.session.flush()
    return squad
