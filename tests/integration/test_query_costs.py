"""What a read costs and what it may reuse: the gate's lineage heads are read once per
transaction (a page is judged twice) and never carried into the next one; PostgreSQL plans
each execution for the patient it is about."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, event

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.fhir.search import document_search
from partage.ingest import IngestService
from partage.metadata.errors import XdsErrors
from partage.metadata.model import Association, AssociationType
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.query.search import SearchService
from partage.query.view import Reader
from partage.registry import queries as Q
from partage.registry.register import claim_unique_ids
from partage.registry.store import make_engine
from tests import factories as F
from tests.conftest import require_postgres
from tests.support import postgres_database


def _patient(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid], {"name": "DOE^JANE"})
    return pid


def _ingest(services, request):
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)


def _replace(services, pid, target_uuid: str, entry_id: str) -> None:
    new = F.document(pid, entry_id)
    rplc = Association(entry_uuid=f"rplc-{entry_id}", association_type=AssociationType.RPLC,
                       source_uuid=entry_id, target_uuid=target_uuid)
    _ingest(services, F.submission(pid, [new], extra_associations=[rplc]))


def _current(services, pid) -> list[str]:
    return [o.entry_uuid for o in SearchService(services, INSECURE_DEV_ACTOR).objects(pid, *_search(pid)).objects]


def _search(pid):
    parsed, spec = document_search({"patient.identifier": [F.token(pid)], "status": ["current"]})
    return spec, parsed.page


class _Statements:
    """The SQL statements an engine runs while counting."""

    def __init__(self, engine) -> None:
        self.engine, self.seen = engine, []
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, _conn, _cursor, statement, *_rest) -> None:
        self.seen.append(statement)

    def lineage_queries(self) -> int:
        return sum("GROUP BY registry_objects.lineage" in s for s in self.seen)

    def holder_queries(self) -> int:   # registry.lineages.holders (not the rows' `versioned` probe)
        return sum(s.lstrip().startswith("SELECT lineage_patients.lineage") for s in self.seen)

    def reads(self) -> list[str]:
        return [s for s in self.seen if not s.lstrip().upper().startswith(("BEGIN", "PRAGMA"))]

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


def _searched(services, pid):
    """One search of the patient's current documents, and the statements it sent."""
    statements = _Statements(services.registry.engine)
    try:
        return SearchService(services, INSECURE_DEV_ACTOR).objects(pid, *_search(pid)), statements
    finally:
        statements.close()


def test_a_page_reads_its_lineages_once(services):
    pid = _patient(services)
    _ingest(services, F.submission(pid))
    _replace(services, pid, _current(services, pid)[0], "doc2")
    for n in range(3):
        _ingest(services, F.submission(pid, [F.document(pid, f"more{n}")]))
    page, statements = _searched(services, pid)
    assert len(page.objects) == 4   # the replacement and three others; the original is Deprecated
    assert statements.holder_queries() == 1    # which lineages have several versions (registry.lineages)
    assert statements.lineage_queries() == 1   # their newest: the cut and the audited judgement share it


def test_a_page_of_documents_alone_in_their_lineages_reads_no_newest_versions(services):
    """Nearly every document is its lineage's only version: the coordinator's lineage table
    says so, and the documents' shards are not asked for newest versions."""
    pid = _patient(services)
    for n in range(3):
        _ingest(services, F.submission(pid, [F.document(pid, f"alone{n}")]))
    page, statements = _searched(services, pid)
    assert len(page.objects) == 3
    assert statements.holder_queries() == 0
    assert statements.lineage_queries() == 0
    counted = _Statements(services.registry.engine)
    try:
        found = QueryService(services, INSECURE_DEV_ACTOR).find_documents(pid, DocumentFilter(statuses=["Approved"]))
    finally:
        counted.close()
    assert len(found.objects) == 3
    assert len(counted.reads()) == 3, counted.reads()   # the patient, the documents, the record's access state


def test_a_registration_resolves_its_patient_once_and_claims_new_ids_in_one_statement(services):
    """The registration's transaction: the patient looked up once (register, the outbox and
    the clinical index share it), new uniqueIds claimed by one insert, not read back."""
    pid = _patient(services)
    _ingest(services, F.submission(pid))   # the first: statements prepared, caches filled
    counted = _Statements(services.registry.engine)
    try:
        _ingest(services, F.submission(pid, [F.document(pid, "costed")]))
    finally:
        counted.close()
    patient_lookups = [s for s in counted.seen if "FROM patient_identifiers JOIN patients" in s]
    # One while judging access (its own read transaction), one in the registration's.
    assert len(patient_lookups) == 2, patient_lookups
    claims = [s for s in counted.seen if "FROM unique_ids" in s]
    assert len(claims) == 1, claims   # the check before the insert; the insert returns what it claimed


def test_a_claim_already_held_is_still_compared(services):
    """The insert that claims uniqueIds returns only those it inserted: one already held (a
    race lost, or registered before) is read and compared, and another document's refused."""
    pid = _patient(services)
    first = F.submission(pid)
    _ingest(services, first)
    held = first.documents[0]
    other = F.document(pid, "other-lid")
    other.unique_id = held.unique_id
    with pytest.raises(XdsErrors) as refused, services.registry.write() as conn:
        claim_unique_ids(conn, [other])
    assert "XDSDuplicateUniqueIdInRegistry" in str(refused.value.errors[0].code)
    with services.registry.write() as conn:
        claim_unique_ids(conn, [held])   # the same document's own claim: accepted


def test_heads_are_not_carried_into_the_next_transaction(services):
    """A Reader kept across transactions sees a version registered between them."""
    pid = _patient(services)
    _ingest(services, F.submission(pid))
    _replace(services, pid, _current(services, pid)[0], "doc2")
    [second] = _current(services, pid)
    reader = Reader(services, INSECURE_DEV_ACTOR)
    with services.registry.read() as conn:
        [row] = Q.by_ids(conn, None, entry_uuids=[second])
        heads = reader.lineage_heads(conn, [row.lineage], set())
        assert [h.entry_uuid for h in heads] == [second]
        assert reader.lineage_heads(conn, [row.lineage], set()) == heads   # asked again: the same
    _replace(services, pid, second, "doc3")
    [third] = _current(services, pid)
    with services.registry.read() as conn:
        assert [h.entry_uuid for h in reader.lineage_heads(conn, [row.lineage], set())] == [third]


@pytest.mark.postgres
def test_postgresql_plans_each_execution():
    """The generic plan of a prepared statement suits the average patient, not the heavy one."""
    require_postgres()
    with postgres_database() as url:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
                for _ in range(8):   # psycopg would prepare it after 5 (session state PgBouncer loses)
                    conn.exec_driver_sql("SELECT 1 WHERE 1 = %(x)s", {"x": 1}).all()
                prepared = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
                assert prepared == 0
        finally:
            engine.dispose()


EXPENSIVE_LOOKING = ("EXPLAIN SELECT count(*) FROM generate_series(1, 1000) a, generate_series(1, 1000) b, "
                     "generate_series(1, 1000) c WHERE a.a < 0")


@pytest.mark.postgres
def test_postgresql_never_jit_compiles_the_registrys_statements():
    """A plan whose estimate passes jit_above_cost (a big foreign partition's always does) is
    compiled first by default: 5 ms of a 7 ms FindDocuments at 1 million documents."""
    require_postgres()
    with postgres_database() as url:
        plain = create_engine(url)   # the server's defaults
        engine = make_engine(url)
        try:
            with plain.connect() as conn:
                default_jit = conn.exec_driver_sql("SHOW jit").scalar() == "on"
                if default_jit:   # the control: this plan is compiled where JIT is left on
                    assert "JIT:" in "\n".join(r[0] for r in conn.exec_driver_sql(EXPENSIVE_LOOKING))
            with engine.connect() as conn:
                assert "JIT:" not in "\n".join(r[0] for r in conn.exec_driver_sql(EXPENSIVE_LOOKING))
        finally:
            plain.dispose()
            engine.dispose()
