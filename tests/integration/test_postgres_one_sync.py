"""One WAL flush per request on PostgreSQL (`Registry.one_sync`): the request's writes commit
without waiting for the disk, and the scope ends only once the WAL is flushed past all of them."""

from __future__ import annotations

import pytest

from partage.registry import schema
from partage.registry.store import Registry
from tests.conftest import require_postgres
from tests.support import postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def registry():
    require_postgres()
    with postgres_database() as url:
        registry = Registry(url)
        registry.migrate()
        yield registry
        registry.dispose()


def _use(conn, credential: str) -> str:
    """A write (a credential use), and the synchronous_commit it commits with."""
    conn.execute(schema.credential_uses.insert().values(credential_id=credential, expires_at=2**40))
    return str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())


def _bumps(registry: Registry) -> int:
    with registry.read() as conn:
        return int(conn.exec_driver_sql("SELECT coalesce(sum(bumps), 0) FROM durability_marks").scalar())


def test_a_requests_writes_share_one_flush_at_its_end(registry):
    with registry.write() as conn:   # outside a request: each write waits for its own flush
        assert _use(conn, "alone") == "on"
    assert _bumps(registry) == 0

    with registry.one_sync():
        modes = []
        for n in range(3):
            with registry.write() as conn:
                modes.append(_use(conn, f"request-{n}"))
        with registry.read() as conn:
            written = conn.exec_driver_sql("SELECT pg_current_wal_insert_lsn()").scalar()
            seen = conn.exec_driver_sql("SELECT count(*) FROM credential_uses").scalar()
    assert modes == ["off"] * 3 and seen == 4          # committed, visible at once
    with registry.read() as conn:                       # ... and on disk when the scope ends
        flushed = conn.exec_driver_sql("SELECT pg_current_wal_flush_lsn() >= %(lsn)s::pg_lsn",
                                       {"lsn": written}).scalar()
    assert flushed and _bumps(registry) == 1


def test_a_request_that_wrote_nothing_flushes_nothing_and_an_error_still_flushes(registry):
    with registry.one_sync():
        with registry.read() as conn:
            conn.exec_driver_sql("SELECT 1")
    assert _bumps(registry) == 0
    with pytest.raises(ValueError):
        with registry.one_sync():
            with registry.write() as conn:
                _use(conn, "before-the-error")
            raise ValueError("the request failed after a write")
    assert _bumps(registry) == 1   # what was committed before the error is made durable too


def test_the_closing_write_is_the_requests_flush(registry):
    """The audit record, the request's last write, commits synchronously: it flushes the WAL past
    the request's earlier commits, and the request needs no flush of its own; a write after it
    (none is expected) is flushed at the end as usual."""
    with registry.one_sync():
        with registry.write() as conn:
            early = _use(conn, "early")
        with registry.read() as conn:
            written = conn.exec_driver_sql("SELECT pg_current_wal_insert_lsn()").scalar()
        with registry.write(closing=True) as conn:
            closing = _use(conn, "audit")
        with registry.read() as conn:
            flushed = conn.exec_driver_sql("SELECT pg_current_wal_flush_lsn() >= %(lsn)s::pg_lsn",
                                           {"lsn": written}).scalar()
    assert (early, closing, flushed) == ("off", "on", True) and _bumps(registry) == 0
    with registry.one_sync():
        with registry.write(closing=True) as conn:
            _use(conn, "audit-2")
        with registry.write() as conn:
            _use(conn, "late")
    assert _bumps(registry) == 1
