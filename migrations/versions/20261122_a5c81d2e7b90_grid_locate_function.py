"""grid_locate(): the cell containing a point, planned once per connection

Revision ID: a5c81d2e7b90
Revises: 7e3f0a9b2c43
Create Date: 2026-11-22 08:10:00

The locate query as a plain statement is planned on every call: PostgreSQL never switches it to a
generic plan (the generic estimate for an unknown point is far above the custom one), and planning
the statement with its joins to admin_areas cost more than running it (bench/RESULTS.md, "Grid
queries"). In PL/pgSQL the query's plan is cached per connection, and `plan_cache_mode =
force_generic_plan` (set for this function only) makes that one plan serve every call. The generic plan
is always the GiST index scan on the point, which is the right plan for any point and any prefix.
Areas are read by primary key in scalar subqueries, which plan trivially and run once for the one row.
"""
from alembic import op

revision = 'a5c81d2e7b90'
down_revision = '7e3f0a9b2c43'
branch_labels = None
depends_on = None

# A point on an edge or vertex shared by several cells belongs to the one with the lowest code.
GRID_LOCATE = """
CREATE FUNCTION grid_locate(area_prefix text, lon double precision, lat double precision)
RETURNS TABLE (id integer, code varchar, name varchar, village_code varchar, village_name varchar,
               township_id integer, township_code varchar, township_name varchar)
STABLE LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  SELECT c.id, c.code, c.name,
         (SELECT v.code FROM admin_areas v WHERE v.id = c.village_id),
         (SELECT v.name FROM admin_areas v WHERE v.id = c.village_id),
         c.township_id,
         (SELECT t.code FROM admin_areas t WHERE t.id = c.township_id),
         (SELECT t.name FROM admin_areas t WHERE t.id = c.township_id)
  FROM grid_cells c
  WHERE c.valid_to IS NULL AND c.code LIKE area_prefix || '%'
    AND ST_Intersects(c.geom, ST_SetSRID(ST_MakePoint(lon, lat), 4326))
  ORDER BY c.code
  LIMIT 1;
END $$;
"""


def upgrade():
    op.execute(GRID_LOCATE)


def downgrade():
    op.execute("DROP FUNCTION grid_locate(text, double precision, double precision)")
