"""incidents and offline sync

Revision ID: f20324d95ff1
Revises: d1c69ea44033
Create Date: 2026-11-22 02:47:05.900946

"""
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = 'f20324d95ff1'
down_revision = 'd1c69ea44033'
branch_labels = None
depends_on = None


# Tables whose rows phones pull, ordered by sync_seq.
SYNCED_TABLES = ("incidents", "incident_notes", "sync_scope_exits", "categories")

# Commit-ordered sync sequence (docs/sync-protocol.md, "Ordering"). A deferred constraint trigger stamps
# sync_seq at COMMIT from a single-row counter whose row lock is then held until the commit ends: a transaction can
# take number N+1 only after the one holding N has committed and become visible, so number order equals
# visibility order and `sync_seq > cursor` never skips a row. Any other UPDATE clears sync_seq first,
# which makes the row restamp (compaction: a row appears once, at its latest state).
STAMP_FUNCTIONS = """
CREATE FUNCTION next_sync_seq() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE sync_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO n;
  IF n IS NULL THEN  -- without the row every stamp would stay NULL and re-fire forever
    RAISE EXCEPTION 'sync_counter has no row 1';
  END IF;
  RETURN n;
END $$;

CREATE FUNCTION clear_sync_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.sync_seq IS NOT DISTINCT FROM OLD.sync_seq THEN
    NEW.sync_seq := NULL;
  END IF;
  RETURN NEW;
END $$;

CREATE FUNCTION stamp_sync_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('UPDATE %I SET sync_seq = next_sync_seq() WHERE id = $1 AND sync_seq IS NULL', TG_TABLE_NAME)
    USING NEW.id;
  RETURN NULL;
END $$;
"""


def upgrade():
    op.create_table('case_number_counters',
    sa.Column('county_code', sa.String(length=6), nullable=False),
    sa.Column('day', sa.String(length=8), nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('county_code', 'day', name=op.f('pk_case_number_counters'))
    )
    op.create_table('sync_counter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_sync_counter_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_counter'))
    )
    op.create_table('sync_deferrals',
    sa.Column('mutation_id', sa.Uuid(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('mutation_id', name=op.f('pk_sync_deferrals'))
    )
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('object_type', sa.String(length=40), nullable=False),
    sa.Column('object_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_audit_events_actor_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    op.create_index(op.f('ix_audit_events_actor_id'), 'audit_events', ['actor_id'], unique=False)
    op.create_table('devices',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('install_id', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=40), nullable=False),
    sa.Column('app_version', sa.String(length=40), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('state_reason', sa.Text(), nullable=True),
    sa.Column('last_ack_seq', sa.BigInteger(), nullable=False),
    sa.Column('clock_offset_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('active', 'draining', 'revoked')", name=op.f('ck_devices_state')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_devices_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_devices')),
    sa.UniqueConstraint('user_id', 'install_id', name='uq_devices_user_install')
    )
    op.create_index(op.f('ix_devices_user_id'), 'devices', ['user_id'], unique=False)
    op.create_table('worker_scopes',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('cell_codes', postgresql.ARRAY(sa.String(length=15)), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_worker_scopes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'epoch', name=op.f('pk_worker_scopes'))
    )
    op.create_table('device_refresh_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.Uuid(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_refresh_tokens_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_refresh_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_device_refresh_tokens_token_hash'))
    )
    op.create_index(op.f('ix_device_refresh_tokens_device_id'), 'device_refresh_tokens', ['device_id'], unique=False)
    op.create_index(op.f('ix_device_refresh_tokens_family_id'), 'device_refresh_tokens', ['family_id'], unique=False)
    op.create_geospatial_table('incidents',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('case_number', sa.String(length=24), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('sync_seq', sa.BigInteger(), nullable=True),
    sa.Column('category_id', sa.Integer(), nullable=True),
    sa.Column('category_code_raw', sa.String(length=40), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('location', Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('raw_location', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('gps_accuracy_m', sa.Float(), nullable=True),
    sa.Column('cell_id', sa.Integer(), nullable=True),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('is_outside_grid', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('priority', sa.SmallInteger(), nullable=True),
    sa.Column('assigned_squad_id', sa.Integer(), nullable=True),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reporter_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Uuid(), nullable=True),
    sa.Column('created_at_device', sa.DateTime(timezone=True), nullable=True),
    sa.Column('clock_suspect', sa.Boolean(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('reported', 'verifying', 'registered', 'invalid', 'duplicate', 'dispatched', 'handling', 'handled', 'checking', 'closed')", name=op.f('ck_incidents_status')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_incidents_version_positive')),
    sa.ForeignKeyConstraint(['assigned_squad_id'], ['squads.id'], name=op.f('fk_incidents_assigned_squad_id_squads')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_incidents_category_id_categories')),
    sa.ForeignKeyConstraint(['cell_id'], ['grid_cells.id'], name=op.f('fk_incidents_cell_id_grid_cells')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_incidents_device_id_devices')),
    sa.ForeignKeyConstraint(['reporter_id'], ['users.id'], name=op.f('fk_incidents_reporter_id_users')),
    sa.ForeignKeyConstraint(['township_id'], ['admin_areas.id'], name=op.f('fk_incidents_township_id_admin_areas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents')),
    sa.UniqueConstraint('case_number', name=op.f('uq_incidents_case_number')),
    sa.UniqueConstraint('sync_seq', name=op.f('uq_incidents_sync_seq'))
    )
    op.create_geospatial_index('idx_incidents_location', 'incidents', ['location'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_incidents_assigned_squad_id'), 'incidents', ['assigned_squad_id'], unique=False)
    op.create_index(op.f('ix_incidents_category_id'), 'incidents', ['category_id'], unique=False)
    op.create_index('ix_incidents_cell_seq', 'incidents', ['cell_id', 'sync_seq'], unique=False)
    op.create_index(op.f('ix_incidents_device_id'), 'incidents', ['device_id'], unique=False)
    op.create_index('ix_incidents_reporter_seq', 'incidents', ['reporter_id', 'sync_seq'], unique=False)
    op.create_index(op.f('ix_incidents_township_id'), 'incidents', ['township_id'], unique=False)
    op.create_table('sync_quarantine',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mutation_id', sa.Uuid(), nullable=True),
    sa.Column('device_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('payload_sha256', sa.String(length=64), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('resolved_by_id', sa.Integer(), nullable=True),
    sa.Column('resolution_reason', sa.Text(), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('open', 'applied', 'discarded')", name=op.f('ck_sync_quarantine_state')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_sync_quarantine_device_id_devices')),
    sa.ForeignKeyConstraint(['resolved_by_id'], ['users.id'], name=op.f('fk_sync_quarantine_resolved_by_id_users')),
    sa.ForeignKeyConstraint(['township_id'], ['admin_areas.id'], name=op.f('fk_sync_quarantine_township_id_admin_areas')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sync_quarantine_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_quarantine'))
    )
    op.create_index(op.f('ix_sync_quarantine_device_id'), 'sync_quarantine', ['device_id'], unique=False)
    op.create_index(op.f('ix_sync_quarantine_incident_id'), 'sync_quarantine', ['incident_id'], unique=False)
    op.create_index(op.f('ix_sync_quarantine_mutation_id'), 'sync_quarantine', ['mutation_id'], unique=False)
    op.create_index(op.f('ix_sync_quarantine_payload_sha256'), 'sync_quarantine', ['payload_sha256'], unique=False)
    op.create_index(op.f('ix_sync_quarantine_township_id'), 'sync_quarantine', ['township_id'], unique=False)
    op.create_index(op.f('ix_sync_quarantine_user_id'), 'sync_quarantine', ['user_id'], unique=False)
    op.create_table('sync_receipts',
    sa.Column('mutation_id', sa.Uuid(), nullable=False),
    sa.Column('device_id', sa.Uuid(), nullable=False),
    sa.Column('device_seq', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('request_sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_sync_receipts_device_id_devices')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sync_receipts_user_id_users')),
    sa.PrimaryKeyConstraint('mutation_id', name=op.f('pk_sync_receipts')),
    sa.UniqueConstraint('device_id', 'device_seq', name='uq_sync_receipts_device_seq')
    )
    op.create_index(op.f('ix_sync_receipts_device_id'), 'sync_receipts', ['device_id'], unique=False)
    op.create_table('incident_notes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at_device', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sync_seq', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_incident_notes_author_id_users')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_notes_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident_notes')),
    sa.UniqueConstraint('sync_seq', name=op.f('uq_incident_notes_sync_seq'))
    )
    op.create_index(op.f('ix_incident_notes_incident_id'), 'incident_notes', ['incident_id'], unique=False)
    op.create_table('incident_revisions',
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('mutation_id', sa.Uuid(), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('changes', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_incident_revisions_actor_id_users')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_revisions_incident_id_incidents')),
    sa.PrimaryKeyConstraint('incident_id', 'version', name=op.f('pk_incident_revisions'))
    )
    op.create_table('sync_conflicts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('field', sa.String(length=40), nullable=False),
    sa.Column('base_value', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('server_value', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('client_value', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('resolution', sa.String(length=30), nullable=False),
    sa.Column('mutation_id', sa.Uuid(), nullable=False),
    sa.Column('state', sa.String(length=15), nullable=False),
    sa.Column('resolved_by_id', sa.Integer(), nullable=True),
    sa.Column('resolution_reason', sa.Text(), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('needs_review', 'resolved')", name=op.f('ck_sync_conflicts_state')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_sync_conflicts_incident_id_incidents')),
    sa.ForeignKeyConstraint(['resolved_by_id'], ['users.id'], name=op.f('fk_sync_conflicts_resolved_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_conflicts'))
    )
    op.create_index(op.f('ix_sync_conflicts_incident_id'), 'sync_conflicts', ['incident_id'], unique=False)
    op.create_table('sync_scope_exits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('old_cell_code', sa.String(length=15), nullable=True),
    sa.Column('new_cell_code', sa.String(length=15), nullable=True),
    sa.Column('sync_seq', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_sync_scope_exits_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_scope_exits')),
    sa.UniqueConstraint('sync_seq', name=op.f('uq_sync_scope_exits_sync_seq'))
    )
    op.create_index(op.f('ix_sync_scope_exits_incident_id'), 'sync_scope_exits', ['incident_id'], unique=False)
    op.add_column('api_tokens', sa.Column('device_id', sa.Uuid(), nullable=True))
    op.create_index(op.f('ix_api_tokens_device_id'), 'api_tokens', ['device_id'], unique=False)
    op.create_foreign_key(op.f('fk_api_tokens_device_id_devices'), 'api_tokens', 'devices', ['device_id'], ['id'], ondelete='CASCADE')
    op.add_column('categories', sa.Column('sync_seq', sa.BigInteger(), nullable=True))
    op.create_unique_constraint(op.f('uq_categories_sync_seq'), 'categories', ['sync_seq'])
    op.add_column('users', sa.Column('scope_epoch', sa.Integer(), server_default='1', nullable=False))
    op.execute("INSERT INTO sync_counter (id, seq) VALUES (1, 0)")
    op.execute(STAMP_FUNCTIONS)
    for table in SYNCED_TABLES:
        op.execute(f"""
            CREATE TRIGGER {table}_clear_sync_seq BEFORE UPDATE ON {table}
              FOR EACH ROW EXECUTE FUNCTION clear_sync_seq();
            CREATE CONSTRAINT TRIGGER {table}_stamp_sync_seq AFTER INSERT OR UPDATE ON {table}
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.sync_seq IS NULL)
              EXECUTE FUNCTION stamp_sync_seq();
        """)
    # Existing categories enter the stream.
    op.execute("UPDATE categories SET is_active = is_active")


def downgrade():
    for table in SYNCED_TABLES:
        op.execute(f"DROP TRIGGER {table}_stamp_sync_seq ON {table}; DROP TRIGGER {table}_clear_sync_seq ON {table}")
    op.execute("DROP FUNCTION stamp_sync_seq(); DROP FUNCTION clear_sync_seq(); DROP FUNCTION next_sync_seq()")
    op.drop_column('users', 'scope_epoch')
    op.drop_constraint(op.f('uq_categories_sync_seq'), 'categories', type_='unique')
    op.drop_column('categories', 'sync_seq')
    op.drop_constraint(op.f('fk_api_tokens_device_id_devices'), 'api_tokens', type_='foreignkey')
    op.drop_index(op.f('ix_api_tokens_device_id'), table_name='api_tokens')
    op.drop_column('api_tokens', 'device_id')
    op.drop_index(op.f('ix_sync_scope_exits_incident_id'), table_name='sync_scope_exits')
    op.drop_table('sync_scope_exits')
    op.drop_index(op.f('ix_sync_conflicts_incident_id'), table_name='sync_conflicts')
    op.drop_table('sync_conflicts')
    op.drop_table('incident_revisions')
    op.drop_index(op.f('ix_incident_notes_incident_id'), table_name='incident_notes')
    op.drop_table('incident_notes')
    op.drop_index(op.f('ix_sync_receipts_device_id'), table_name='sync_receipts')
    op.drop_table('sync_receipts')
    op.drop_index(op.f('ix_sync_quarantine_user_id'), table_name='sync_quarantine')
    op.drop_index(op.f('ix_sync_quarantine_township_id'), table_name='sync_quarantine')
    op.drop_index(op.f('ix_sync_quarantine_payload_sha256'), table_name='sync_quarantine')
    op.drop_index(op.f('ix_sync_quarantine_mutation_id'), table_name='sync_quarantine')
    op.drop_index(op.f('ix_sync_quarantine_incident_id'), table_name='sync_quarantine')
    op.drop_index(op.f('ix_sync_quarantine_device_id'), table_name='sync_quarantine')
    op.drop_table('sync_quarantine')
    op.drop_index(op.f('ix_incidents_township_id'), table_name='incidents')
    op.drop_index('ix_incidents_reporter_seq', table_name='incidents')
    op.drop_index(op.f('ix_incidents_device_id'), table_name='incidents')
    op.drop_index('ix_incidents_cell_seq', table_name='incidents')
    op.drop_index(op.f('ix_incidents_category_id'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_assigned_squad_id'), table_name='incidents')
    op.drop_geospatial_index('idx_incidents_location', table_name='incidents', postgresql_using='gist', column_name='location')
    op.drop_geospatial_table('incidents')
    op.drop_index(op.f('ix_device_refresh_tokens_family_id'), table_name='device_refresh_tokens')
    op.drop_index(op.f('ix_device_refresh_tokens_device_id'), table_name='device_refresh_tokens')
    op.drop_table('device_refresh_tokens')
    op.drop_table('worker_scopes')
    op.drop_index(op.f('ix_devices_user_id'), table_name='devices')
    op.drop_table('devices')
    op.drop_index(op.f('ix_audit_events_actor_id'), table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_table('sync_deferrals')
    op.drop_table('sync_counter')
    op.drop_table('case_number_counters')
