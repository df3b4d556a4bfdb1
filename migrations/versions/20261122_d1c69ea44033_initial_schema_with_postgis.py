"""initial schema with postgis

Revision ID: d1c69ea44033
Revises: 
Create Date: 2026-11-22 02:27:15.906191

"""
import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = 'd1c69ea44033'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    # PostGIS first. Setup creates it as the superuser (our role is not one), so this is usually a
    # no-op; it still makes the revision complete on a database where we may create extensions.
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_geospatial_table('admin_areas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=12), nullable=False),
    sa.Column('code_system', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('level', sa.String(length=10), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('boundary', Geometry(geometry_type='MULTIPOLYGON', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(level = 'county' AND code ~ '^[0-9]{6}$') OR (level = 'township' AND code ~ '^[0-9]{9}$') OR (level = 'village' AND code ~ '^[0-9]{12}$')", name=op.f('ck_admin_areas_code_format')),
    sa.CheckConstraint("level IN ('county', 'township', 'village')", name=op.f('ck_admin_areas_level')),
    sa.ForeignKeyConstraint(['parent_id'], ['admin_areas.id'], name=op.f('fk_admin_areas_parent_id_admin_areas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admin_areas')),
    sa.UniqueConstraint('code', name=op.f('uq_admin_areas_code'))
    )
    op.create_geospatial_index('idx_admin_areas_boundary', 'admin_areas', ['boundary'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index(op.f('ix_admin_areas_parent_id'), 'admin_areas', ['parent_id'], unique=False)
    op.create_table('categories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('standard', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('code', sa.String(length=10), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('major_code', sa.String(length=4), nullable=False),
    sa.Column('major_name', sa.String(length=100), nullable=False),
    sa.Column('is_local_extension', sa.Boolean(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('event', 'component')", name=op.f('ck_categories_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_categories')),
    sa.UniqueConstraint('standard', 'kind', 'code', name='uq_categories_standard_kind_code')
    )
    op.create_table('category_conditions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('register_condition', sa.Text(), nullable=False),
    sa.Column('close_condition', sa.Text(), nullable=False),
    sa.Column('time_limit', sa.Integer(), nullable=False),
    sa.Column('time_unit', sa.String(length=15), nullable=False),
    sa.CheckConstraint("time_unit IN ('urgent_hours', 'work_hours', 'work_days')", name=op.f('ck_category_conditions_time_unit')),
    sa.CheckConstraint('time_limit > 0', name=op.f('ck_category_conditions_time_limit_positive')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_category_conditions_category_id_categories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_category_conditions')),
    sa.UniqueConstraint('category_id', 'seq', name='uq_category_conditions_category_seq')
    )
    op.create_table('enforcement_teams',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['township_id'], ['admin_areas.id'], name=op.f('fk_enforcement_teams_township_id_admin_areas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enforcement_teams')),
    sa.UniqueConstraint('township_id', name=op.f('uq_enforcement_teams_township_id'))
    )
    op.create_table('grid_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('driver', sa.String(length=40), nullable=False),
    sa.Column('source_crs', sa.String(length=255), nullable=False),
    sa.Column('encoding', sa.String(length=40), nullable=True),
    sa.Column('imported_by', sa.String(length=80), nullable=False),
    sa.Column('summary', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('report', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['township_id'], ['admin_areas.id'], name=op.f('fk_grid_imports_township_id_admin_areas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grid_imports'))
    )
    op.create_index(op.f('ix_grid_imports_township_id'), 'grid_imports', ['township_id'], unique=False)
    op.create_geospatial_table('grid_cells',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=15), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('village_id', sa.Integer(), nullable=False),
    sa.Column('township_id', sa.Integer(), nullable=False),
    sa.Column('geom', Geometry(srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('area_m2', sa.Float(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('import_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("GeometryType(geom) IN ('POLYGON', 'MULTIPOLYGON')", name=op.f('ck_grid_cells_geom_polygonal')),
    sa.CheckConstraint("code ~ '^[0-9]{15}$'", name=op.f('ck_grid_cells_code_format')),
    sa.CheckConstraint('valid_to IS NULL OR valid_to > valid_from', name=op.f('ck_grid_cells_validity')),
    sa.ForeignKeyConstraint(['import_id'], ['grid_imports.id'], name=op.f('fk_grid_cells_import_id_grid_imports')),
    sa.ForeignKeyConstraint(['township_id'], ['admin_areas.id'], name=op.f('fk_grid_cells_township_id_admin_areas')),
    sa.ForeignKeyConstraint(['village_id'], ['admin_areas.id'], name=op.f('fk_grid_cells_village_id_admin_areas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grid_cells'))
    )
    op.create_geospatial_index('idx_grid_cells_geom', 'grid_cells', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index('ix_grid_cells_code_prefix', 'grid_cells', ['code'], unique=False, postgresql_ops={'code': 'varchar_pattern_ops'})
    op.create_index(op.f('ix_grid_cells_import_id'), 'grid_cells', ['import_id'], unique=False)
    op.create_index(op.f('ix_grid_cells_township_id'), 'grid_cells', ['township_id'], unique=False)
    op.create_index(op.f('ix_grid_cells_village_id'), 'grid_cells', ['village_id'], unique=False)
    op.create_index('uq_grid_cells_current_code', 'grid_cells', ['code'], unique=True, postgresql_where=sa.text('valid_to IS NULL'))
    op.create_table('squads',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['enforcement_teams.id'], name=op.f('fk_squads_team_id_enforcement_teams'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_squads')),
    sa.UniqueConstraint('team_id', 'code', name='uq_squads_team_code')
    )
    op.create_index(op.f('ix_squads_team_id'), 'squads', ['team_id'], unique=False)
    op.create_table('squad_areas',
    sa.Column('squad_id', sa.Integer(), nullable=False),
    sa.Column('area_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['area_id'], ['admin_areas.id'], name=op.f('fk_squad_areas_area_id_admin_areas'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['squad_id'], ['squads.id'], name=op.f('fk_squad_areas_squad_id_squads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('squad_id', 'area_id', name=op.f('pk_squad_areas'))
    )
    op.create_index(op.f('ix_squad_areas_area_id'), 'squad_areas', ['area_id'], unique=False)
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=80), nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('area_id', sa.Integer(), nullable=False),
    sa.Column('squad_id', sa.Integer(), nullable=True),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("(role IN ('squad_member', 'squad_leader')) = (squad_id IS NOT NULL)", name=op.f('ck_users_squad_for_squad_roles')),
    sa.CheckConstraint("role IN ('grid_worker', 'dispatcher', 'duty_chief', 'squad_member', 'squad_leader', 'supervisor', 'admin')", name=op.f('ck_users_role')),
    sa.ForeignKeyConstraint(['area_id'], ['admin_areas.id'], name=op.f('fk_users_area_id_admin_areas')),
    sa.ForeignKeyConstraint(['squad_id'], ['squads.id'], name=op.f('fk_users_squad_id_squads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_index(op.f('ix_users_area_id'), 'users', ['area_id'], unique=False)
    op.create_index(op.f('ix_users_squad_id'), 'users', ['squad_id'], unique=False)
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_expires_at'), 'api_tokens', ['expires_at'], unique=False)
    op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)
    op.create_table('grid_cell_workers',
    sa.Column('cell_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cell_id'], ['grid_cells.id'], name=op.f('fk_grid_cell_workers_cell_id_grid_cells'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_grid_cell_workers_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('cell_id', 'user_id', name=op.f('pk_grid_cell_workers'))
    )
    op.create_index(op.f('ix_grid_cell_workers_user_id'), 'grid_cell_workers', ['user_id'], unique=False)


def downgrade():
    # The postgis extension stays: other databases objects may use it, and dropping it needs a superuser.
    op.drop_index(op.f('ix_grid_cell_workers_user_id'), table_name='grid_cell_workers')
    op.drop_table('grid_cell_workers')
    op.drop_index(op.f('ix_api_tokens_user_id'), table_name='api_tokens')
    op.drop_index(op.f('ix_api_tokens_expires_at'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_index(op.f('ix_users_squad_id'), table_name='users')
    op.drop_index(op.f('ix_users_area_id'), table_name='users')
    op.drop_table('users')
    op.drop_index(op.f('ix_squad_areas_area_id'), table_name='squad_areas')
    op.drop_table('squad_areas')
    op.drop_index(op.f('ix_squads_team_id'), table_name='squads')
    op.drop_table('squads')
    op.drop_index('uq_grid_cells_current_code', table_name='grid_cells', postgresql_where=sa.text('valid_to IS NULL'))
    op.drop_index(op.f('ix_grid_cells_village_id'), table_name='grid_cells')
    op.drop_index(op.f('ix_grid_cells_township_id'), table_name='grid_cells')
    op.drop_index(op.f('ix_grid_cells_import_id'), table_name='grid_cells')
    op.drop_index('ix_grid_cells_code_prefix', table_name='grid_cells', postgresql_ops={'code': 'varchar_pattern_ops'})
    op.drop_geospatial_index('idx_grid_cells_geom', table_name='grid_cells', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('grid_cells')
    op.drop_index(op.f('ix_grid_imports_township_id'), table_name='grid_imports')
    op.drop_table('grid_imports')
    op.drop_table('enforcement_teams')
    op.drop_table('category_conditions')
    op.drop_table('categories')
    op.drop_index(op.f('ix_admin_areas_parent_id'), table_name='admin_areas')
    op.drop_geospatial_index('idx_admin_areas_boundary', table_name='admin_areas', postgresql_using='gist', column_name='boundary')
    op.drop_geospatial_table('admin_areas')
