"""PDF text indexed in the background (partage.clinical.queue), on SQLite and PostgreSQL:
the registration's transaction enqueues a durable job; an indexer claims it, writes the
text into the search index and deletes the job, exactly once, across crashes and processes."""

from __future__ import annotations

import signal
import time

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.clinical import queue
from partage.config import Settings
from partage.ingest import IngestService
from partage.metadata.errors import XdsErrors
from partage.query.clinical import ClinicalReader
from partage.registry import schema, text_jobs
from partage.services import Services
from tests import clinical_support as C
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient

NIR = "279035121518989"
PID = C.patient_cx(NIR)
PDF_WORDS = "Bilan renal: creatinine elevee, avis nephrologique"


def _patient(services) -> None:
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])


def _ingest(services, request):
    # no CDA gate: these documents are PDFs, and the queue is what is tested
    return IngestService(services, INSECURE_DEV_ACTOR, document_checks=[]).provide_and_register(request)


def _jobs(services) -> int:
    with services.registry.read() as conn:
        return conn.execute(select(func.count()).select_from(schema.text_index_jobs)).scalar()


def _texts(services) -> int:
    with services.registry.read() as conn:
        return conn.execute(select(func.count()).select_from(schema.document_text)).scalar()


def _titles(services, words: str) -> list[str]:
    return [h.document.title for h in ClinicalReader(services, INSECURE_DEV_ACTOR).search(PID, words)]


def test_the_migration_creates_the_job_table_as_the_schema_declares(services):
    with services.registry.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
        names = set(services.registry.engine.dialect.get_table_names(conn))
    assert [d for d in diff if "text_index_jobs" in repr(d)] == []
    assert "text_index_jobs" in names


def test_a_pdf_is_searchable_once_its_job_is_done(services):
    _patient(services)
    _ingest(services, C.pdf_submission(PID, C.make_pdf(PDF_WORDS)))
    assert _jobs(services) == 1
    assert _titles(services, "creatinine") == []          # not read in the request
    job = queue.claim(services.registry)
    assert job is not None
    assert queue.claim(services.registry) is None        # leased: nobody else takes it
    assert queue.process(services, job) is True
    assert _titles(services, "creatinine nephro") == ["Compte rendu PDF"]
    assert _jobs(services) == 0 and _texts(services) == 1
    assert queue.drain(services) == {"indexed": 0, "dropped": 0, "errors": 0}
    assert queue.backlog(services.registry) == {"waiting": 0, "failed": 0}


def test_drain_does_every_job_and_keeps_the_cheap_text(services, corpus_dir):
    _patient(services)
    cda = C.for_patient((corpus_dir / "cda" / "valid" / "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), NIR)
    _ingest(services, C.submission(cda, "doc1"))          # a CDA with PDFs in observationMedia
    _ingest(services, C.pdf_submission(PID, C.make_pdf(PDF_WORDS), "doc2"))
    _ingest(services, C.pdf_submission(PID, C.make_pdf("Echographie abdominale sans anomalie"), "doc3"))
    assert _jobs(services) == 3
    assert _titles(services, "Thyréostimuline")           # narrative: written at registration
    assert _titles(services, "DOMINIQUE MARIE-LOUISE") == []   # only in the embedded PDF
    assert queue.drain(services) == {"indexed": 3, "dropped": 0, "errors": 0}
    assert _jobs(services) == 0
    assert len(_titles(services, "Thyréostimuline")) == 1  # replaced, not duplicated
    assert len(_titles(services, "DOMINIQUE MARIE-LOUISE")) == 1
    assert _titles(services, "echographie") == ["Compte rendu PDF"]


def test_concurrent_claims_take_different_jobs(services):
    _patient(services)
    for i in range(3):
        _ingest(services, C.pdf_submission(PID, C.make_pdf(f"{PDF_WORDS} {i}"), f"doc{i}"))
    jobs = [queue.claim(services.registry) for _ in range(4)]
    assert jobs[3] is None
    assert len({j.pk for j in jobs[:3]}) == 3


def test_a_refused_submission_leaves_no_job(services):
    _patient(services)
    first = C.pdf_submission(PID, C.make_pdf(PDF_WORDS))
    _ingest(services, first)
    queue.drain(services)
    again = C.pdf_submission(PID, C.make_pdf("Autre contenu"), unique_id=first.documents[0].unique_id)
    with pytest.raises(XdsErrors, match="XDSNonIdenticalHash"):   # refused inside the registry transaction
        _ingest(services, again)
    assert _jobs(services) == 0


def test_a_rolled_back_registration_leaves_no_job(services, monkeypatch):
    _patient(services)
    enqueue = text_jobs.enqueue

    def enqueue_then_fail(conn, **kw):
        enqueue(conn, **kw)
        raise RuntimeError("the database went away after the job was written")

    monkeypatch.setattr(text_jobs, "enqueue", enqueue_then_fail)
    with pytest.raises(RuntimeError):
        _ingest(services, C.pdf_submission(PID, C.make_pdf(PDF_WORDS)))
    assert _jobs(services) == 0 and _texts(services) == 0


def test_a_job_claimed_by_a_process_that_died_is_done_once_by_the_next(services):
    _patient(services)
    _ingest(services, C.pdf_submission(PID, C.make_pdf(PDF_WORDS)))
    now = time.time()
    dead = queue.claim(services.registry, now=now)        # claimed, then the process died
    assert queue.claim(services.registry, now=now + 1) is None
    later = queue.claim(services.registry, now=now + queue.LEASE_S + 1)   # the lease has expired
    assert later is not None and later.pk == dead.pk and later.token != dead.token
    assert queue.process(services, dead) is False         # a late survivor writes nothing
    assert _texts(services) == 0
    assert queue.process(services, later) is True
    assert queue.process(services, later) is False        # and nothing twice
    assert _texts(services) == 1 and _jobs(services) == 0
    assert len(_titles(services, "creatinine")) == 1


def test_a_job_that_keeps_failing_is_given_up_and_reported(services):
    _patient(services)
    _ingest(services, C.pdf_submission(PID, C.make_pdf(PDF_WORDS)))
    now = time.time()
    for attempt in range(queue.MAX_ATTEMPTS):
        assert queue.claim(services.registry, now=now + attempt * (queue.LEASE_S + 1)) is not None
    assert queue.claim(services.registry, now=now + 10 * (queue.LEASE_S + 1)) is None
    assert queue.backlog(services.registry) == {"waiting": 0, "failed": 1}


# --- a real server: the background thread of each worker ------------------------------
def _settings(data, database_url) -> Settings:
    return Settings(data_dir=data, database_url=database_url)


def _search_total(server, words: str) -> int:
    response = requests.get(f"{server.base_url}/fhir/DocumentReference",
                            params={"patient.identifier": F.token(PID), "_content": words},
                            headers={"Accept": "application/fhir+json"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def _wait_found(server, words: str, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while _search_total(server, words) == 0:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{words!r} not found after {timeout} s\n{server.log()}")
        time.sleep(0.2)
    return time.monotonic() - started


def _submit_pdf(server, text: str, entry: str = "docpdf") -> None:
    pdf = C.make_pdf(text)
    reply = XdsClient(server.base_url).provide_and_register(C.pdf_submission(PID, pdf, entry), {entry: pdf})
    assert reply.status == "Success", (reply.error_codes, server.log())


def test_a_submitted_pdf_is_found_by_keyword_search_once_indexed(tmp_path, database_url):
    data = tmp_path / "data"
    with LiveServer(data, database_url=database_url, mllp=False, workers=2) as server:
        services = Services.open(_settings(data, database_url), migrate=False)
        try:
            _patient(services)
            _submit_pdf(server, PDF_WORDS)
            _wait_found(server, "creatinine nephrologique")
            assert _jobs(services) == 0
            assert _search_total(server, "creatinine") == 1
        finally:
            services.close()


def test_a_job_left_by_a_crashed_server_is_done_by_the_next_one(tmp_path, database_url, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("PARTAGE_TEXT_INDEXER", "0")        # this server never runs its jobs
    first = LiveServer(data, database_url=database_url, mllp=False).start()
    services = Services.open(_settings(data, database_url), migrate=False)
    try:
        _patient(services)
        _submit_pdf(first, PDF_WORDS)
        time.sleep(1.5)                                    # longer than the indexer's poll
        assert _jobs(services) == 1 and _search_total(first, "creatinine") == 0
        first.stop(signal.SIGKILL)
        monkeypatch.delenv("PARTAGE_TEXT_INDEXER")
        with LiveServer(data, database_url=database_url, mllp=False) as second:
            _wait_found(second, "creatinine")
            assert _jobs(services) == 0
    finally:
        first.stop()
        services.close()
