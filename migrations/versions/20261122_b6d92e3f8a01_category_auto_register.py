"""categories.auto_register: a grid worker's report of the category is registered on arrival (自动立案)

Revision ID: b6d92e3f8a01
Revises: a5c81d2e7b90
Create Date: 2026-11-22 09:15:00
"""
import sqlalchemy as sa
from alembic import op

revision = 'b6d92e3f8a01'
down_revision = 'a5c81d2e7b90'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('categories', sa.Column('auto_register', sa.Boolean(), server_default="false", nullable=False))


def downgrade():
    op.drop_column('categories', 'auto_register')
