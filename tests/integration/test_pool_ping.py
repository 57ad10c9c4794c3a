"""The pool's ping (registry.store._ping_when_idle): a connection idle longer than the window is
pinged when taken and replaced if it died; one used a moment ago is not pinged (a round trip
saved per request under load), and if it died the request fails and the pool starts anew."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from partage.registry import store
from partage.registry.store import Registry
from tests.conftest import require_postgres
from tests.support import postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def url():
    require_postgres()
    with postgres_database() as url:
        yield url


@pytest.fixture
def pings(monkeypatch):
    """The pings the pool sends, counted."""
    seen = []

    def count(registry: Registry) -> None:
        dialect = registry.engine.dialect
        original = dialect.do_ping

        def do_ping(dbapi_connection):
            seen.append(dbapi_connection)
            return original(dbapi_connection)
        monkeypatch.setattr(dialect, "do_ping", do_ping)
    return seen, count


def _pid(registry: Registry) -> int:
    with registry.read() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(url: str, pid: int) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            for _ in range(100):
                if not conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).first():
                    return
                time.sleep(0.05)
        raise AssertionError(f"backend {pid} still there")
    finally:
        admin.dispose()


def test_a_connection_taken_again_at_once_is_not_pinged_and_an_idle_one_is(url, pings, monkeypatch):
    registry = Registry(url, pool_size=1, max_overflow=0)
    seen, count = pings
    count(registry)
    try:
        first = _pid(registry)
        assert _pid(registry) == first and seen == []     # the same connection, no ping
        monkeypatch.setattr(store, "PING_AFTER_IDLE_S", 0.0)
        assert _pid(registry) == first and len(seen) == 1
    finally:
        registry.dispose()


def test_an_idle_connection_that_died_is_replaced_before_the_request_uses_it(url, monkeypatch):
    registry = Registry(url, pool_size=1, max_overflow=0)
    try:
        first = _pid(registry)
        _terminate(url, first)
        monkeypatch.setattr(store, "PING_AFTER_IDLE_S", 0.0)   # it has been idle long enough
        second = _pid(registry)    # no error: the ping found it dead, the pool connected anew
        assert second != first
    finally:
        registry.dispose()


def test_a_connection_that_died_within_the_window_fails_one_request_then_the_pool_recovers(url, monkeypatch):
    monkeypatch.setattr(store, "PING_AFTER_IDLE_S", 3600.0)
    registry = Registry(url, pool_size=2, max_overflow=0)
    try:
        first = _pid(registry)
        _terminate(url, first)
        with pytest.raises(DBAPIError) as failed:
            _pid(registry)
        assert failed.value.connection_invalidated
        assert _pid(registry) != first
    finally:
        registry.dispose()
