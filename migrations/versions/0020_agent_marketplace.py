"""Agent marketplace (issue 24): installed agents at their pinned versions, the wheels every worker installs,
install/update/remove events (the install counts) and reviews.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "installed_agents",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("index_name", sa.String(length=100), nullable=False),
        sa.Column("package_name", sa.String(length=100), nullable=False),
        sa.Column("wheels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("changelog", sa.Text(), nullable=False),
        sa.Column("previous_version", sa.String(length=50), nullable=True),
        sa.Column("installed_by", sa.String(length=200), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('python', 'webhook')", name="ck_installed_agents_kind"),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "agent_packages",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "agent_install_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("agent", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("action IN ('install', 'update', 'remove')", name="ck_agent_install_events_action"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_agent_install_events_agent_version", "agent_install_events", ["agent", "version"], unique=False)
    op.create_table(
        "agent_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("hidden_by", sa.String(length=200), nullable=False),
        sa.Column("hidden_reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name="ck_agent_reviews_rating"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent", "user_id", name="uq_agent_reviews_agent_user"),
    )
    op.create_index("ix_agent_reviews_agent", "agent_reviews", ["agent"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_agent_reviews_agent", table_name="agent_reviews")
    op.drop_table("agent_reviews")
    op.drop_index("ix_agent_install_events_agent_version", table_name="agent_install_events")
    op.drop_table("agent_install_events")
    op.drop_table("agent_packages")
    op.drop_table("installed_agents")
