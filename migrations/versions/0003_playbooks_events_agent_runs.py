"""playbooks, events, agent runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('agent_runs',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('activity_key', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('step_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('agent', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('activity_key', name='uq_agent_runs_activity_key')
    )
    op.create_index(op.f('ix_agent_runs_status'), 'agent_runs', ['status'], unique=False)
    op.create_index('ix_agent_runs_workflow_step', 'agent_runs', ['workflow_id', 'step_id'], unique=False)
    op.create_table('events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('incident_id', sa.BigInteger(), nullable=True),
    sa.Column('workflow_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('step_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_events_incident_id'), 'events', ['incident_id'], unique=False)
    op.create_table('playbooks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('playbook_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('incident_type', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('definition', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('playbook_id', 'version', name='uq_playbooks_id_version')
    )
    op.create_index(op.f('ix_playbooks_incident_type'), 'playbooks', ['incident_type'], unique=False)
    op.create_index(op.f('ix_playbooks_playbook_id'), 'playbooks', ['playbook_id'], unique=False)
    op.add_column('incidents', sa.Column('playbook_version', sa.Integer(), nullable=False, server_default='1'))
    op.add_column('workflow_steps', sa.Column('runs', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('workflow_steps', sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('workflows', sa.Column('playbook_version', sa.Integer(), nullable=False, server_default='1'))
    op.add_column('workflows', sa.Column('changes', postgresql.JSONB(astext_type=sa.Text()), nullable=False, server_default=sa.text("'[]'::jsonb")))


def downgrade() -> None:
    op.drop_column('workflows', 'changes')
    op.drop_column('workflows', 'playbook_version')
    op.drop_column('workflow_steps', 'note')
    op.drop_column('workflow_steps', 'runs')
    op.drop_column('incidents', 'playbook_version')
    op.drop_index(op.f('ix_playbooks_playbook_id'), table_name='playbooks')
    op.drop_index(op.f('ix_playbooks_incident_type'), table_name='playbooks')
    op.drop_table('playbooks')
    op.drop_index(op.f('ix_events_incident_id'), table_name='events')
    op.drop_table('events')
    op.drop_index('ix_agent_runs_workflow_step', table_name='agent_runs')
    op.drop_index(op.f('ix_agent_runs_status'), table_name='agent_runs')
    op.drop_table('agent_runs')
