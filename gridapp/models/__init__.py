"""Every model module, imported so Alembic and the shell see all tables."""
from gridapp.models.area import AREA_LEVELS, AdminArea
from gridapp.models.base import Base, utcnow
from gridapp.models.category import CATEGORY_KINDS, TIME_UNITS, Category, CategoryCondition
from gridapp.models.grid import GridCell, GridImport, grid_cell_workers
from gridapp.models.squad import EnforcementTeam, Squad, squad_areas
from gridapp.models.user import ROLES, SQUAD_ROLES, ApiToken, User

__all__ = [
    "AREA_LEVELS", "AdminArea", "ApiToken", "Base", "CATEGORY_KINDS", "Category", "CategoryCondition",
    "EnforcementTeam", "GridCell", "GridImport", "ROLES", "SQUAD_ROLES", "Squad", "TIME_UNITS", "User",
    "grid_cell_workers", "squad_areas", "utcnow",
]
