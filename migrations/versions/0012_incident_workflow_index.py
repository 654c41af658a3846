"""incidents by workflow id: the API knows a just-started workflow by its incident before its first row

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_incidents_workflow_id", "incidents", ["workflow_id"])


def downgrade() -> None:
    op.drop_index("ix_incidents_workflow_id", table_name="incidents")
