"""Alembic environment: target metadata is SQLModel's; one migrator at a time via an advisory lock."""

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlmodel import SQLModel

import core.alerts  # noqa: F401
import core.approvals  # noqa: F401  (each import registers its tables on SQLModel.metadata)
import core.audit  # noqa: F401
import core.collaboration  # noqa: F401
import core.conversations  # noqa: F401
import core.identity  # noqa: F401
import core.marketplace  # noqa: F401
import core.monitoring  # noqa: F401
import core.services  # noqa: F401
import core.tables  # noqa: F401
import core.webhook_agents  # noqa: F401

# Any 64-bit number unique to us: serialises concurrent `migrate` runs from N processes.
MIGRATION_LOCK_ID = 0x4147454E544D4F4E

config = context.config
target_metadata = SQLModel.metadata
# Objects written by hand in migrations that the models cannot express (expression indexes).
HAND_WRITTEN = {"ix_incidents_text_trgm"}


def _include(_obj: object, name: str | None, _kind: str, _reflected: bool, _compare_to: object) -> bool:
    return name not in HAND_WRITTEN


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL given to the migrations")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()
        try:
            context.configure(
                connection=connection, target_metadata=target_metadata, compare_type=True, include_object=_include
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
