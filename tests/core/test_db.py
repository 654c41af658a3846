"""core.db's autocommit paths on the real Postgres: what they return, and that the pooled connection they
borrow goes back as it came (a later transaction on it still rolls back), also after an error and after
the database dropped the connection."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from core.db import autocommit_rows, autocommit_session, libpq_url, make_engine

INSERT = text("INSERT INTO service_groups_probe (name) VALUES (:name) RETURNING id, name")
SELECT = text("SELECT name FROM service_groups_probe WHERE name LIKE :prefix || '%' ORDER BY id")


@pytest.fixture
def one_connection(database_url):
    """An engine whose pool holds a single connection, so every call below borrows the same one."""
    engine = make_engine(database_url, pool_size=1, pre_ping=False)
    engine.pool._max_overflow = 0  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE service_groups_probe (id serial PRIMARY KEY, name text UNIQUE NOT NULL)"))
    yield engine
    engine.dispose()


def libpq(engine) -> str:
    return engine.url.render_as_string(hide_password=False).replace("postgresql+psycopg://", "postgresql://")


def names(engine, prefix: str = "") -> list[str]:
    return [row.name for row in autocommit_rows(engine, SELECT, {"prefix": prefix})]


def test_rows_come_back_named_and_each_statement_commits_on_its_own(one_connection):
    [row] = autocommit_rows(one_connection, INSERT, {"name": "a%b"})
    assert (row.name, row[1]) == ("a%b", "a%b")  # a % in a value is not a placeholder
    assert autocommit_rows(one_connection, text("SELECT 1 WHERE false"), {}) == []
    assert autocommit_rows(one_connection, text("NOTIFY probe"), {}) == []  # no rows at all
    with psycopg.connect(libpq(one_connection)) as other:
        assert other.execute("SELECT name FROM service_groups_probe").fetchall() == [("a%b",)]  # committed


def insert_then_roll_back(engine) -> None:
    """A transaction on the pool's one connection: what it inserts must not stay."""
    with Session(engine) as session:
        session.execute(text("INSERT INTO service_groups_probe (name) VALUES ('undone')"))
        session.rollback()


def test_the_borrowed_connection_goes_back_transactional(one_connection):
    autocommit_rows(one_connection, INSERT, {"name": "kept"})
    insert_then_roll_back(one_connection)
    assert names(one_connection) == ["kept"]


def test_after_an_error_the_connection_is_still_good_and_transactional(one_connection):
    autocommit_rows(one_connection, INSERT, {"name": "twice"})
    with pytest.raises(psycopg.errors.UniqueViolation):
        autocommit_rows(one_connection, INSERT, {"name": "twice"})
    insert_then_roll_back(one_connection)
    assert names(one_connection) == ["twice"]


def test_a_connection_the_database_dropped_fails_one_call_and_the_next_gets_a_new_one(one_connection):
    [(pid,)] = autocommit_rows(one_connection, text("SELECT pg_backend_pid()"), {})
    with psycopg.connect(libpq(one_connection), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(psycopg.OperationalError):
        autocommit_rows(one_connection, SELECT, {"prefix": ""})
    [(new_pid,)] = autocommit_rows(one_connection, text("SELECT pg_backend_pid()"), {})
    assert new_pid != pid


def test_an_autocommit_session_writes_at_once_and_leaves_the_callers_transaction_alone(one_connection):
    engine = make_engine(libpq(one_connection), pool_size=2, pre_ping=False)
    try:
        with Session(engine) as caller:
            caller.execute(text("INSERT INTO service_groups_probe (name) VALUES ('caller')"))
            with autocommit_session(caller) as alone:
                alone.execute(text("INSERT INTO service_groups_probe (name) VALUES ('alone')"))
            caller.rollback()
        assert names(engine) == ["alone"]
    finally:
        engine.dispose()


def test_the_webs_connections_plan_every_statement_for_its_values(database_url):
    """Generic plans are blind to how selective a filter is (a million incidents' list pages took 10x longer): the
    web's engine asks for custom plans on each connection, kept after a transaction rolls back and across checkouts."""
    engine = make_engine(database_url, pool_size=2, custom_plans=True)
    try:
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one() == "force_custom_plan"
                assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
                conn.rollback()
    finally:
        engine.dispose()
    plain = make_engine(database_url, pool_size=1)
    try:
        with plain.connect() as conn:
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one() == "auto"
            assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
    finally:
        plain.dispose()


def _ended_in_the_pool(engine, database_url) -> int:
    """Check a connection out and back in, then have Postgres end it (as a restart or an idle timeout would);
    returns its backend pid once the server has closed it."""
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "the backend did not end"
            time.sleep(0.02)
    return pid


def test_a_connection_ended_while_in_the_pool_is_replaced_at_checkout(database_url):
    """The web's engine tells an ended connection by its socket and checks out a new one: the request that takes
    it sees no error. Without the check (the worker's engine) that request fails, and Temporal retries it."""
    web = make_engine(database_url, pool_size=1)
    try:
        ended = _ended_in_the_pool(web, database_url)
        with web.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != ended
    finally:
        web.dispose()
    unchecked = make_engine(database_url, pool_size=1, pre_ping=False)
    try:
        _ended_in_the_pool(unchecked, database_url)
        with pytest.raises(OperationalError), unchecked.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    finally:
        unchecked.dispose()


def _last_statement(database_url: str, pid: int) -> str:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None
    return row[0]


def test_a_connection_long_idle_in_the_pool_is_asked_a_query_at_checkout(database_url):
    """Silence on a socket proves little about a connection nobody used for a while (a NAT may have dropped it):
    past idle_ping_seconds (30 s) it is asked a `SELECT 1`; a recently used one is checked by its socket alone."""
    for idle_ping_seconds, pinged in ((30.0, False), (0.0, True)):
        engine = make_engine(database_url, pool_size=1, idle_ping_seconds=idle_ping_seconds)
        try:
            with engine.connect() as conn:
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with engine.connect() as conn:
                assert (_last_statement(database_url, pid) == "SELECT 1") is pinged
                assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == pid  # the same one, kept
        finally:
            engine.dispose()


def test_every_engine_reads_timestamps_in_utc_whatever_the_servers_zone(database_url):
    """A server in another zone answers timestamps in its offset; the app writes UTC. Read back, a value it just
    wrote must look the same (an API answer built from what was written equals the GET after it)."""
    conninfo = libpq_url(database_url)
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Kolkata'")
    with psycopg.connect(conninfo) as fresh:
        assert fresh.execute("SELECT now()").fetchone()[0].utcoffset().total_seconds() == 5.5 * 3600
    for engine in (make_engine(database_url, pre_ping=False), make_engine(database_url, custom_plans=True)):
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT now()").scalar_one().utcoffset().total_seconds() == 0
        finally:
            engine.dispose()
