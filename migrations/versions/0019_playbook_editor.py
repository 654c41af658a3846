"""Playbook editor (issue 23): a message and a fork's provenance on every version, who owns and sees a playbook,
and dry runs of playbooks (simulated runs, never incidents).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("playbooks", sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
    op.add_column("playbooks", sa.Column("forked_from_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
    op.add_column("playbooks", sa.Column("forked_from_version", sa.Integer(), nullable=True))
    op.create_table(
        "playbook_sharing",
        sa.Column("playbook_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("owner_team_id", sa.Integer(), nullable=True),
        sa.Column("visibility", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("visibility IN ('team', 'everyone')", name="ck_playbook_sharing_visibility"),
        sa.ForeignKeyConstraint(["owner_team_id"], ["teams.id"]),
        sa.PrimaryKeyConstraint("playbook_id"),
    )
    op.create_table(
        "playbook_dry_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("workflow_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("playbook_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("playbook_version", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("variables", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sample", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", name="uq_playbook_dry_runs_workflow_id"),
    )
    op.create_index("ix_playbook_dry_runs_playbook_id_id", "playbook_dry_runs", ["playbook_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_playbook_dry_runs_playbook_id_id", table_name="playbook_dry_runs")
    op.drop_table("playbook_dry_runs")
    op.drop_table("playbook_sharing")
    op.drop_column("playbooks", "forked_from_version")
    op.drop_column("playbooks", "forked_from_id")
    op.drop_column("playbooks", "message")
