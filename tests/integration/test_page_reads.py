"""How the page reads the registry: one read transaction for the whole page (`Registry.snapshot`),
and as many statements for a patient of 3 documents as for one of 9 (no round trip per
document), on SQLite and PostgreSQL. Counted, not timed: the time is benchmarks/bench_page.py's."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text

from benchmarks.bench_clinical import feed_patient
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.metadata.datatypes import DTM
from partage.server.app import create_app
from partage.services import Services
from tests import clinical_support as C
from tests.page_support import dev_services


@pytest.fixture
def services(database_url, tmp_path):
    with dev_services(tmp_path / "data", database_url) as opened:
        yield opened


def _add_documents(services: Services, pid, first: int, count: int) -> None:
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    for i in range(first, first + count):
        pdf = C.make_pdf(f"Compte rendu de consultation {i}")
        ingest.provide_and_register(C.pdf_submission(pid.format(), pdf, f"p{i}", title=f"Consultation {i}",
                                                     creation_time=DTM(f"202409{i + 1:02d}100000")))


def _page_reads(services: Services, client, url: str) -> tuple[int, int, bytes]:
    """(statements, connections taken from the pool, body) of one GET of the page."""
    statements, checkouts = [], []
    engine = services.registry.engine

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    def taken(*args) -> None:
        checkouts.append(1)
    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine.pool, "checkout", taken)
    try:
        response = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine.pool, "checkout", taken)
    assert response.status_code == 200, response.data[:300]
    return len([s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "PRAGMA"))]), \
        len(checkouts), response.data


def test_the_page_reads_in_one_transaction_whatever_the_number_of_documents(services):
    pid = feed_patient(services)
    _add_documents(services, pid, 0, 3)
    client = create_app(services=services).test_client()
    url = f"/dossier/{C.public_id(services, pid)}"
    client.get(url)   # first request: caches warm
    small, small_checkouts, body = _page_reads(services, client, url)
    assert body.count(b"Consultation ") >= 3
    _add_documents(services, pid, 3, 6)
    large, large_checkouts, body = _page_reads(services, client, url)
    assert all(f"Consultation {i}".encode() in body for i in range(9))
    assert large == small                  # no statement per document
    assert large_checkouts == small_checkouts == 2   # the page's reads, then its audit record


def test_reads_inside_a_snapshot_share_its_transaction(services):
    registry = services.registry
    with registry.snapshot() as conn:
        with registry.read() as inner, registry.snapshot() as nested:
            assert inner is conn and nested is conn
            inner.execute(text("SELECT 1"))
    with registry.read() as one, registry.read() as other:
        assert one is not other             # outside a snapshot each read has its own
    with pytest.raises(RuntimeError), registry.snapshot():
        raise RuntimeError("a failed page")
    with registry.read() as after:          # the snapshot ended with the failure
        assert after.execute(text("SELECT 1")).scalar() == 1
