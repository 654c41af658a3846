"""conversation messages (append-only, full-text and vector search) and context snapshots (immutable)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every column but the embedding: an UPDATE may only fill in (or re-compute) the vector.
_FIXED = (
    "id",
    "incident_id",
    "workflow_id",
    "step_id",
    "agent",
    "role",
    "kind",
    "content",
    "metadata",
    "covers",
    "dedupe_key",
    "created_at",
)


def upgrade() -> None:
    op.create_table(
        "conversation_messages",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=True),
        sa.Column("step_id", sa.String(length=100), nullable=True),
        sa.Column("agent", sa.String(length=100), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("covers", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        sa.Column("dedupe_key", sa.String(length=300), nullable=True),
        sa.Column("embedding", Vector(384), nullable=True),
        sa.Column("embedding_model", sa.String(length=100), nullable=True),
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english', content)", persisted=True),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('system', 'user', 'assistant', 'tool')", name="ck_conversation_messages_role"),
        sa.CheckConstraint("kind IN ('message', 'summary')", name="ck_conversation_messages_kind"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key", name="uq_conversation_messages_dedupe_key"),
    )
    op.create_index("ix_conversation_messages_incident_id_id", "conversation_messages", ["incident_id", "id"])
    op.create_index("ix_conversation_messages_workflow_id_id", "conversation_messages", ["workflow_id", "id"])
    op.create_index("ix_conversation_messages_created_at", "conversation_messages", ["created_at"])
    op.create_index("ix_conversation_messages_agent", "conversation_messages", ["agent"])
    # What the embedding indexer picks up next.
    op.create_index(
        "ix_conversation_messages_unembedded",
        "conversation_messages",
        ["id"],
        postgresql_where=sa.text("embedding IS NULL"),
    )
    op.create_index("ix_conversation_messages_search", "conversation_messages", ["search"], postgresql_using="gin")
    op.create_index(
        "ix_conversation_messages_embedding",
        "conversation_messages",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_table(
        "context_snapshots",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("activity_key", sa.String(length=400), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("agent", sa.String(length=100), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("context", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("activity_key", name="uq_context_snapshots_activity_key"),
        sa.UniqueConstraint("workflow_id", "step_id", "version", name="uq_context_snapshots_step_version"),
    )
    op.create_index(op.f("ix_context_snapshots_incident_id"), "context_snapshots", ["incident_id"])

    # Append-only whatever the client: the database refuses what the app never does.
    fixed_new = ", ".join(f"NEW.{c}" for c in _FIXED)
    fixed_old = ", ".join(f"OLD.{c}" for c in _FIXED)
    op.execute(
        f"""
        CREATE FUNCTION conversation_messages_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND ROW({fixed_new}) IS NOT DISTINCT FROM ROW({fixed_old}) THEN
                RETURN NEW;  -- the indexer filling in the embedding
            END IF;
            RAISE EXCEPTION 'conversation_messages is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER conversation_messages_append_only BEFORE UPDATE OR DELETE ON conversation_messages "
        "FOR EACH ROW EXECUTE FUNCTION conversation_messages_append_only()"
    )
    op.execute(
        """
        CREATE FUNCTION context_snapshots_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER context_snapshots_immutable BEFORE UPDATE OR DELETE ON context_snapshots "
        "FOR EACH ROW EXECUTE FUNCTION context_snapshots_immutable()"
    )
    for table in ("conversation_messages", "context_snapshots"):
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION context_snapshots_immutable()"
        )


def downgrade() -> None:
    for table in ("conversation_messages", "context_snapshots"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.execute("DROP TRIGGER IF EXISTS context_snapshots_immutable ON context_snapshots")
    op.execute("DROP TRIGGER IF EXISTS conversation_messages_append_only ON conversation_messages")
    op.execute("DROP FUNCTION IF EXISTS context_snapshots_immutable()")
    op.execute("DROP FUNCTION IF EXISTS conversation_messages_append_only()")
    op.drop_index(op.f("ix_context_snapshots_incident_id"), table_name="context_snapshots")
    op.drop_table("context_snapshots")
    op.drop_table("conversation_messages")
