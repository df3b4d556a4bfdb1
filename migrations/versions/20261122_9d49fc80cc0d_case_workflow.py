"""case workflow

Revision ID: 9d49fc80cc0d
Revises: f20324d95ff1
Create Date: 2026-11-22 03:08:48.794619

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '9d49fc80cc0d'
down_revision = 'f20324d95ff1'
branch_labels = None
depends_on = None


STATUSES_BEFORE = ("reported", "verifying", "registered", "invalid", "duplicate", "dispatched", "handling",
                   "handled", "checking", "closed")
STATUSES_AFTER = STATUSES_BEFORE + ("returned", "parked")


def _status_check(statuses):
    # Check constraints are not compared by autogenerate: the status list is kept in step by hand.
    op.drop_constraint(op.f("ck_incidents_status"), "incidents", type_="check")
    op.create_check_constraint("status", "incidents", "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")")


def upgrade():
    _status_check(STATUSES_AFTER)
    op.create_table('calendar_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('is_workday', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_calendar_days'))
    )
    op.create_table('responsibility_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('category_id', sa.Integer(), nullable=True),
    sa.Column('area_id', sa.Integer(), nullable=True),
    sa.Column('cell_code', sa.String(length=15), nullable=True),
    sa.Column('squad_id', sa.Integer(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('is_fallback', sa.Boolean(), nullable=False),
    sa.Column('auto_dispatch', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.CheckConstraint('(area_id IS NULL) <> (cell_code IS NULL)', name=op.f('ck_responsibility_rules_one_place')),
    sa.ForeignKeyConstraint(['area_id'], ['admin_areas.id'], name=op.f('fk_responsibility_rules_area_id_admin_areas')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_responsibility_rules_category_id_categories')),
    sa.ForeignKeyConstraint(['squad_id'], ['squads.id'], name=op.f('fk_responsibility_rules_squad_id_squads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_responsibility_rules'))
    )
    op.create_index(op.f('ix_responsibility_rules_area_id'), 'responsibility_rules', ['area_id'], unique=False)
    op.create_index(op.f('ix_responsibility_rules_category_id'), 'responsibility_rules', ['category_id'], unique=False)
    op.create_index(op.f('ix_responsibility_rules_cell_code'), 'responsibility_rules', ['cell_code'], unique=False)
    op.create_table('case_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('amount', sa.Float(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decision_reason', sa.Text(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('extension', 'park')", name=op.f('ck_case_requests_kind')),
    sa.CheckConstraint("state IN ('pending', 'approved', 'rejected')", name=op.f('ck_case_requests_state')),
    sa.ForeignKeyConstraint(['decided_by_id'], ['users.id'], name=op.f('fk_case_requests_decided_by_id_users')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_case_requests_incident_id_incidents')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'], name=op.f('fk_case_requests_requested_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_requests'))
    )
    op.create_index(op.f('ix_case_requests_incident_id'), 'case_requests', ['incident_id'], unique=False)
    op.create_table('incident_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_role', sa.String(length=20), nullable=False),
    sa.Column('from_status', sa.String(length=20), nullable=False),
    sa.Column('to_status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_incident_events_actor_id_users')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_events_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incident_events'))
    )
    op.create_index(op.f('ix_incident_events_incident_id'), 'incident_events', ['incident_id'], unique=False)
    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=80), nullable=False),
    sa.Column('squad_id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('body', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("state IN ('pending', 'sent', 'dead')", name=op.f('ck_notifications_state')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_notifications_incident_id_incidents')),
    sa.ForeignKeyConstraint(['squad_id'], ['squads.id'], name=op.f('fk_notifications_squad_id_squads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_notifications_idempotency_key'))
    )
    op.create_index(op.f('ix_notifications_incident_id'), 'notifications', ['incident_id'], unique=False)
    op.create_index(op.f('ix_notifications_squad_id'), 'notifications', ['squad_id'], unique=False)
    op.create_table('outbox_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('incident_id', sa.Uuid(), nullable=True),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['incident_events.id'], name=op.f('fk_outbox_messages_event_id_incident_events')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_outbox_messages_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages'))
    )
    op.create_index(op.f('ix_outbox_messages_incident_id'), 'outbox_messages', ['incident_id'], unique=False)
    op.create_index(op.f('ix_outbox_messages_processed_at'), 'outbox_messages', ['processed_at'], unique=False)
    op.add_column('incidents', sa.Column('condition_id', sa.Integer(), nullable=True))
    op.add_column('incidents', sa.Column('is_ownerless', sa.Boolean(), server_default='false', nullable=False))
    op.add_column('incidents', sa.Column('likely_duplicate_of', sa.Uuid(), nullable=True))
    op.create_foreign_key(op.f('fk_incidents_likely_duplicate_of_incidents'), 'incidents', 'incidents', ['likely_duplicate_of'], ['id'])
    op.add_column('incidents', sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('incidents', sa.Column('paused_work_seconds', sa.Float(), nullable=True))
    op.add_column('incidents', sa.Column('rework_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('incidents', sa.Column('is_self_handled', sa.Boolean(), server_default='false', nullable=False))
    op.add_column('incidents', sa.Column('supervision_level', sa.SmallInteger(), nullable=True))
    op.add_column('incidents', sa.Column('master_id', sa.Uuid(), nullable=True))
    op.add_column('incidents', sa.Column('task_user_id', sa.Integer(), nullable=True))
    op.add_column('incidents', sa.Column('routed_rule_id', sa.Integer(), nullable=True))
    op.add_column('incidents', sa.Column('warned_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('incidents', sa.Column('overdue_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_incidents_due_at'), 'incidents', ['due_at'], unique=False)
    op.create_foreign_key(op.f('fk_incidents_routed_rule_id_responsibility_rules'), 'incidents', 'responsibility_rules', ['routed_rule_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key(op.f('fk_incidents_master_id_incidents'), 'incidents', 'incidents', ['master_id'], ['id'])
    op.create_foreign_key(op.f('fk_incidents_condition_id_category_conditions'), 'incidents', 'category_conditions', ['condition_id'], ['id'])
    op.create_foreign_key(op.f('fk_incidents_task_user_id_users'), 'incidents', 'users', ['task_user_id'], ['id'])
    op.add_column('squads', sa.Column('webhook_url', sa.String(length=500), nullable=True))
    op.add_column('squads', sa.Column('webhook_secret', sa.String(length=100), nullable=True))


def downgrade():
    _status_check(STATUSES_BEFORE)
    op.drop_column('incidents', 'is_ownerless')
    op.drop_constraint(op.f('fk_incidents_likely_duplicate_of_incidents'), 'incidents', type_='foreignkey')
    op.drop_column('incidents', 'likely_duplicate_of')
    op.drop_column('squads', 'webhook_secret')
    op.drop_column('squads', 'webhook_url')
    op.drop_constraint(op.f('fk_incidents_task_user_id_users'), 'incidents', type_='foreignkey')
    op.drop_constraint(op.f('fk_incidents_condition_id_category_conditions'), 'incidents', type_='foreignkey')
    op.drop_constraint(op.f('fk_incidents_master_id_incidents'), 'incidents', type_='foreignkey')
    op.drop_constraint(op.f('fk_incidents_routed_rule_id_responsibility_rules'), 'incidents', type_='foreignkey')
    op.drop_index(op.f('ix_incidents_due_at'), table_name='incidents')
    op.drop_column('incidents', 'overdue_at')
    op.drop_column('incidents', 'warned_at')
    op.drop_column('incidents', 'routed_rule_id')
    op.drop_column('incidents', 'task_user_id')
    op.drop_column('incidents', 'master_id')
    op.drop_column('incidents', 'supervision_level')
    op.drop_column('incidents', 'is_self_handled')
    op.drop_column('incidents', 'rework_count')
    op.drop_column('incidents', 'paused_work_seconds')
    op.drop_column('incidents', 'due_at')
    op.drop_column('incidents', 'condition_id')
    op.drop_index(op.f('ix_outbox_messages_processed_at'), table_name='outbox_messages')
    op.drop_index(op.f('ix_outbox_messages_incident_id'), table_name='outbox_messages')
    op.drop_table('outbox_messages')
    op.drop_index(op.f('ix_notifications_squad_id'), table_name='notifications')
    op.drop_index(op.f('ix_notifications_incident_id'), table_name='notifications')
    op.drop_table('notifications')
    op.drop_index(op.f('ix_incident_events_incident_id'), table_name='incident_events')
    op.drop_table('incident_events')
    op.drop_index(op.f('ix_case_requests_incident_id'), table_name='case_requests')
    op.drop_table('case_requests')
    op.drop_index(op.f('ix_responsibility_rules_cell_code'), table_name='responsibility_rules')
    op.drop_index(op.f('ix_responsibility_rules_category_id'), table_name='responsibility_rules')
    op.drop_index(op.f('ix_responsibility_rules_area_id'), table_name='responsibility_rules')
    op.drop_table('responsibility_rules')
    op.drop_table('calendar_days')
