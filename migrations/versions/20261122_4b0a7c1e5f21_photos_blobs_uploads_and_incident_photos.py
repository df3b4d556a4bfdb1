"""photos: blobs, uploads and incident photos

Revision ID: 4b0a7c1e5f21
Revises: 9d49fc80cc0d
Create Date: 2026-11-22 05:17:39.969611

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '4b0a7c1e5f21'
down_revision = '9d49fc80cc0d'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('photo_blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mime', sa.String(length=40), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('derived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('display_size', sa.BigInteger(), nullable=True),
    sa.Column('thumbnail_size', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name=op.f('ck_photo_blobs_sha256_hex')),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_photo_blobs'))
    )
    op.create_table('photo_uploads',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('uploader', sa.String(length=60), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('parts', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('"offset" >= 0 AND "offset" <= length', name=op.f('ck_photo_uploads_offset_in_range')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_photo_uploads_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_photo_uploads')),
    sa.UniqueConstraint('uploader', 'sha256', name='uq_photo_uploads_uploader_sha256')
    )
    op.create_index(op.f('ix_photo_uploads_expires_at'), 'photo_uploads', ['expires_at'], unique=False)
    op.create_index(op.f('ix_photo_uploads_user_id'), 'photo_uploads', ['user_id'], unique=False)
    op.create_table('incident_photos',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('photo_type', sa.String(length=20), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('mime', sa.String(length=40), nullable=True),
    sa.Column('blob_sha256', sa.String(length=64), nullable=True),
    sa.Column('problem', sa.String(length=40), nullable=True),
    sa.Column('declared_by_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Uuid(), nullable=True),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('bound_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("photo_type IN ('report', 'before_handling', 'after_handling', 'check')", name=op.f('ck_incident_photos_photo_type')),
    sa.CheckConstraint('blob_sha256 IS NULL OR blob_sha256 = sha256', name=op.f('ck_incident_photos_bound_to_declared')),
    sa.ForeignKeyConstraint(['blob_sha256'], ['photo_blobs.sha256'], name=op.f('fk_incident_photos_blob_sha256_photo_blobs')),
    sa.ForeignKeyConstraint(['declared_by_id'], ['users.id'], name=op.f('fk_incident_photos_declared_by_id_users')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_incident_photos_device_id_devices')),
    sa.ForeignKeyConstraint(['event_id'], ['incident_events.id'], name=op.f('fk_incident_photos_event_id_incident_events')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_photos_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident_photos'))
    )
    op.create_index(op.f('ix_incident_photos_incident_id'), 'incident_photos', ['incident_id'], unique=False)
    op.create_index('ix_incident_photos_missing', 'incident_photos', ['declared_by_id'], unique=False, postgresql_where='blob_sha256 IS NULL')
    op.create_index('ix_incident_photos_sha256', 'incident_photos', ['sha256'], unique=False)


def downgrade():
    op.drop_index('ix_incident_photos_sha256', table_name='incident_photos')
    op.drop_index('ix_incident_photos_missing', table_name='incident_photos', postgresql_where='blob_sha256 IS NULL')
    op.drop_index(op.f('ix_incident_photos_incident_id'), table_name='incident_photos')
    op.drop_table('incident_photos')
    op.drop_index(op.f('ix_photo_uploads_user_id'), table_name='photo_uploads')
    op.drop_index(op.f('ix_photo_uploads_expires_at'), table_name='photo_uploads')
    op.drop_table('photo_uploads')
    op.drop_table('photo_blobs')
