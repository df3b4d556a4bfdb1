"""grid_locate_many(): the cells of many points in one call (the push's batches)

Revision ID: c3a7e9d1f452
Revises: b6d92e3f8a01
Create Date: 2026-11-22 11:30:00

The push's set-based path placed a batch's points with `CROSS JOIN LATERAL grid_locate(...)`: one
PL/pgSQL call per point, ~0.17 ms of backend CPU each on the benchmark's county, of which the call itself
(and the four area lookups, three unused there) was more than half. grid_locate_many runs the same locate
query for a whole array of points in one call (~0.08-0.11 ms per point), without the area lookups.
grid_locate stays as it is for single points: calling grid_locate_many from it cost a one-point lookup
~0.06 ms more per round trip (0.41 -> 0.48 ms). So the rule (current cells, code prefix, lowest code on
shared edges) is written twice, here and in a5c81d2e7b90; tests/sync/test_bulk_push.py
(test_batch_cell_lookup_agrees_with_cell_at_on_shared_edges) checks that both answer the same on edges
and vertices.
"""
from alembic import op

revision = 'c3a7e9d1f452'
down_revision = 'b6d92e3f8a01'
branch_labels = None
depends_on = None

# A point on an edge or vertex shared by several cells belongs to the one with the lowest code.
GRID_LOCATE_MANY = """
CREATE FUNCTION grid_locate_many(area_prefix text, lons double precision[], lats double precision[])
RETURNS TABLE (ord bigint, id integer, code varchar, name varchar, village_id integer, township_id integer)
STABLE LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY
  SELECT p.ord, c.id, c.code, c.name, c.village_id, c.township_id
  FROM unnest(lons, lats) WITH ORDINALITY AS p(lon, lat, ord)
  CROSS JOIN LATERAL (
    SELECT c.id, c.code, c.name, c.village_id, c.township_id
    FROM grid_cells c
    WHERE c.valid_to IS NULL AND c.code LIKE area_prefix || '%'
      AND ST_Intersects(c.geom, ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326))
    ORDER BY c.code
    LIMIT 1) c;
END $$;
"""


def upgrade():
    op.execute(GRID_LOCATE_MANY)


def downgrade():
    op.execute("DROP FUNCTION grid_locate_many(text, double precision[], double precision[])")
