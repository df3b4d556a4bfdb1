"""dashboard map tiles: a stored Web Mercator copy of incident locations and pre-aggregated bucket counts

Revision ID: 6c2d9e8f1a32
Revises: 4b0a7c1e5f21
Create Date: 2026-11-22 05:30:00

The counts are kept exact by triggers in the transaction that changes an incident, which append signed
deltas to incident_bucket_deltas (insert-only: concurrent writers never wait on a shared counter row);
readers add the deltas to incident_bucket_counts, and a periodic job folds them in. A statement-level
trigger handles INSERT and DELETE (set-based: a bulk load costs one GROUP BY), a row-level trigger
handles UPDATE and fires only when the status, the overdue flag, the township or the location changes.
"""
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = '6c2d9e8f1a32'
down_revision = '4b0a7c1e5f21'
branch_labels = None
depends_on = None

# 2^17 buckets across the Web Mercator world: the tiles of zoom 17, also counted at zooms 15 and 12.
FUNCTIONS = """
CREATE FUNCTION incident_status_class(status text, overdue_at timestamptz) RETURNS text
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
  SELECT CASE WHEN status IN ('reported', 'verifying') THEN 'new'
              WHEN status = 'closed' THEN 'closed'
              WHEN status IN ('invalid', 'duplicate') THEN 'void'
              WHEN overdue_at IS NOT NULL THEN 'overdue'
              ELSE 'open' END
$$;
CREATE FUNCTION incident_bucket_x(g geometry) RETURNS integer IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
  SELECT floor((ST_X(g) + 20037508.342789244) / (40075016.68557849 / 131072))::integer
$$;
CREATE FUNCTION incident_bucket_y(g geometry) RETURNS integer IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
  SELECT floor((20037508.342789244 - ST_Y(g)) / (40075016.68557849 / 131072))::integer
$$;
-- The zoom levels counted (BUCKET_LEVELS in models/maptiles.py): a tile reads at most 64 × 64 buckets.
CREATE FUNCTION incident_bucket_levels() RETURNS SETOF smallint IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
  VALUES (17::smallint), (15::smallint), (12::smallint)
$$;

-- INSERT and DELETE: the transition table `changed` holds every row of the statement.
CREATE FUNCTION incident_bucket_counts_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sign integer := CASE TG_OP WHEN 'DELETE' THEN -1 ELSE 1 END;
BEGIN
  INSERT INTO incident_bucket_deltas (zoom, bx, by, township_id, status_class, n)
  SELECT l.zoom, incident_bucket_x(location_3857) >> (17 - l.zoom), incident_bucket_y(location_3857) >> (17 - l.zoom),
         township_id, incident_status_class(status, overdue_at), sign * count(*)
  FROM changed CROSS JOIN incident_bucket_levels() AS l(zoom)
  GROUP BY 1, 2, 3, 4, 5;
  RETURN NULL;
END $$;

-- UPDATE: move one incident from its old (bucket, class) to its new one.
CREATE FUNCTION incident_bucket_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO incident_bucket_deltas (zoom, bx, by, township_id, status_class, n)
  SELECT l.zoom, v.bx >> (17 - l.zoom), v.by >> (17 - l.zoom), v.township_id, v.status_class, sum(v.n) FROM (VALUES
    (incident_bucket_x(OLD.location_3857), incident_bucket_y(OLD.location_3857), OLD.township_id,
     incident_status_class(OLD.status, OLD.overdue_at), -1),
    (incident_bucket_x(NEW.location_3857), incident_bucket_y(NEW.location_3857), NEW.township_id,
     incident_status_class(NEW.status, NEW.overdue_at), 1)) AS v(bx, by, township_id, status_class, n)
  CROSS JOIN incident_bucket_levels() AS l(zoom)
  GROUP BY 1, 2, 3, 4, 5 HAVING sum(v.n) <> 0;
  RETURN NULL;
END $$;

-- Recompute everything (after a bulk load with the triggers disabled, or to check the counts).
CREATE FUNCTION incident_bucket_counts_rebuild() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  LOCK TABLE incidents IN SHARE MODE;  -- no writer between the delete and the insert
  DELETE FROM incident_bucket_deltas;
  DELETE FROM incident_bucket_counts;
  INSERT INTO incident_bucket_counts (zoom, bx, by, township_id, status_class, n)
  SELECT l.zoom, incident_bucket_x(location_3857) >> (17 - l.zoom), incident_bucket_y(location_3857) >> (17 - l.zoom),
         township_id, incident_status_class(status, overdue_at), count(*)
  FROM incidents CROSS JOIN incident_bucket_levels() AS l(zoom) GROUP BY 1, 2, 3, 4, 5;
  RETURN (SELECT count(*) FROM incident_bucket_counts);
END $$;

-- Move the deltas into the counts (the periodic job; readers see counts + deltas, exact either way).
-- Only this function writes incident_bucket_counts after a rebuild, in key order: folds never deadlock.
CREATE FUNCTION incident_bucket_counts_fold() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  folded bigint;
BEGIN
  WITH moved AS (DELETE FROM incident_bucket_deltas RETURNING zoom, bx, by, township_id, status_class, n)
  INSERT INTO incident_bucket_counts AS c (zoom, bx, by, township_id, status_class, n)
  SELECT zoom, bx, by, township_id, status_class, sum(n) FROM moved
  GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
  ON CONFLICT (zoom, bx, by, township_id, status_class) DO UPDATE SET n = c.n + EXCLUDED.n;
  GET DIAGNOSTICS folded = ROW_COUNT;
  DELETE FROM incident_bucket_counts WHERE n = 0;
  RETURN folded;
END $$;

CREATE TRIGGER incidents_bucket_counts_insert AFTER INSERT ON incidents
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION incident_bucket_counts_stmt();
CREATE TRIGGER incidents_bucket_counts_delete AFTER DELETE ON incidents
  REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION incident_bucket_counts_stmt();
CREATE TRIGGER incidents_bucket_counts_update AFTER UPDATE ON incidents FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.overdue_at IS DISTINCT FROM NEW.overdue_at
        OR OLD.township_id IS DISTINCT FROM NEW.township_id OR NOT ST_Equals(OLD.location, NEW.location))
  EXECUTE FUNCTION incident_bucket_counts_move();
"""


def upgrade():
    op.add_column('incidents', sa.Column(
        'location_3857', Geometry(geometry_type='POINT', srid=3857, dimension=2, spatial_index=False,
                                  from_text='ST_GeomFromEWKT', name='geometry'),
        sa.Computed('ST_Transform(location, 3857)', persisted=True), nullable=True))
    op.create_index('ix_incidents_location_3857', 'incidents', ['location_3857'], unique=False,
                    postgresql_using='gist')
    op.create_table('incident_bucket_counts',
    sa.Column('zoom', sa.SmallInteger(), nullable=False),
    sa.Column('bx', sa.Integer(), nullable=False),
    sa.Column('by', sa.Integer(), nullable=False),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('status_class', sa.String(length=8), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.CheckConstraint("status_class IN ('new', 'open', 'overdue', 'closed', 'void')",
                       name=op.f('ck_incident_bucket_counts_status_class')),
    sa.ForeignKeyConstraint(['township_id'], ['admin_areas.id'],
                            name=op.f('fk_incident_bucket_counts_township_id_admin_areas')),
    sa.PrimaryKeyConstraint('zoom', 'bx', 'by', 'township_id', 'status_class', name=op.f('pk_incident_bucket_counts'))
    )
    op.create_table('incident_bucket_deltas',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('zoom', sa.SmallInteger(), nullable=False),
    sa.Column('bx', sa.Integer(), nullable=False),
    sa.Column('by', sa.Integer(), nullable=False),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('status_class', sa.String(length=8), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident_bucket_deltas'))
    )
    op.create_index('ix_incident_bucket_deltas_place', 'incident_bucket_deltas', ['zoom', 'bx', 'by'], unique=False)
    op.execute(FUNCTIONS)
    op.execute("SELECT incident_bucket_counts_rebuild()")


def downgrade():
    op.execute("""
        DROP TRIGGER incidents_bucket_counts_insert ON incidents;
        DROP TRIGGER incidents_bucket_counts_delete ON incidents;
        DROP TRIGGER incidents_bucket_counts_update ON incidents;
        DROP FUNCTION incident_bucket_counts_rebuild(); DROP FUNCTION incident_bucket_counts_move();
        DROP FUNCTION incident_bucket_counts_fold();
        DROP FUNCTION incident_bucket_counts_stmt(); DROP FUNCTION incident_bucket_x(geometry);
        DROP FUNCTION incident_bucket_y(geometry); DROP FUNCTION incident_bucket_levels(); DROP FUNCTION incident_status_class(text, timestamptz);
    """)
    op.drop_index('ix_incident_bucket_deltas_place', table_name='incident_bucket_deltas')
    op.drop_table('incident_bucket_deltas')
    op.drop_table('incident_bucket_counts')
    op.drop_index('ix_incidents_location_3857', table_name='incidents', postgresql_using='gist')
    op.drop_column('incidents', 'location_3857')
