"""Each step's params, as the workflow holds them, in the projection: a finished workflow's state is answered from
Postgres (`GET /api/workflows/{id}`, with each step's approval from its `approvals` row) rather than by a worker
replaying its whole history. A nullable column: adding it rewrites nothing; rows written before read their params
from the agent's input.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflow_steps", sa.Column("params", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("workflow_steps", "params")
