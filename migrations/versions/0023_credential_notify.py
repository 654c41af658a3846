"""NOTIFY am_credentials when a credential changes, so each web process forgets the callers it remembered
(api/credential_cache.py): a token revoked, deleted or its expiry changed; a session ended or its expiry changed; a
user's role, name or active flag changed or the user deleted; any of the three tables truncated. Use stamps
(`last_used_at`, `last_seen_at`), logins and new rows notify nothing.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WATCHED = {
    "api_tokens": "revoked_at, expires_at, user_id, token_hash",
    "user_sessions": "expires_at, user_id, id, csrf_token",
    "users": "role, is_active, username",
}


def upgrade() -> None:
    op.execute(
        "CREATE FUNCTION am_credentials_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM pg_notify('am_credentials', ''); RETURN NULL; END $$"
    )
    for table, columns in WATCHED.items():
        op.execute(
            f"CREATE TRIGGER am_credentials_changed AFTER UPDATE OF {columns} OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION am_credentials_changed()"
        )
        op.execute(
            f"CREATE TRIGGER am_credentials_truncated AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION am_credentials_changed()"
        )


def downgrade() -> None:
    for table in WATCHED:
        op.execute(f"DROP TRIGGER am_credentials_truncated ON {table}")
        op.execute(f"DROP TRIGGER am_credentials_changed ON {table}")
    op.execute("DROP FUNCTION am_credentials_changed()")
