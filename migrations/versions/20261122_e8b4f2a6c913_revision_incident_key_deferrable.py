"""incident_revisions.incident_id: a DEFERRABLE (INITIALLY IMMEDIATE) foreign key

Revision ID: e8b4f2a6c913
Revises: c3a7e9d1f452
Create Date: 2026-11-22 14:00:00

The set-based push (sync/bulk.py) inserts a run's incidents while it holds the sync counter's row lock,
which serialises every push until COMMIT. Their revisions went in under the same lock only because their
key must find the incident. With the key deferrable, the push defers it (SET CONSTRAINTS) and writes
the revisions before taking the counter: the key is still checked, at COMMIT, and only that check stays
in the window. Everything else keeps checking the key at once (INITIALLY IMMEDIATE).
"""
from alembic import op

revision = 'e8b4f2a6c913'
down_revision = 'c3a7e9d1f452'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE incident_revisions ALTER CONSTRAINT fk_incident_revisions_incident_id_incidents "
               "DEFERRABLE INITIALLY IMMEDIATE")


def downgrade():
    op.execute("ALTER TABLE incident_revisions ALTER CONSTRAINT fk_incident_revisions_incident_id_incidents "
               "NOT DEFERRABLE")
