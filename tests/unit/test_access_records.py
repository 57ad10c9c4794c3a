"""Record state (consent, closing, blocks), its migration, and the `partage access` /
`partage audit` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from partage.access import audit
from partage.access.actor import Actor
from partage.cli import main
from partage.config import Settings
from partage.ingest import IngestService
from partage.metadata.datatypes import CX
from partage.query import QueryService
from partage.registry import schema
from partage.registry.access_state import CLOSED, NONE, OPEN, RecordError, Records, purge_record
from partage.services import Services
from tests import factories as F

ACCESS_TABLES = {"patient_access", "patient_blocks", "audit_events", "access_notifications", "credential_uses"}


@pytest.fixture
def svc(tmp_path, database_url):
    """SQLite, and PostgreSQL when it runs (conftest's database_url)."""
    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url))
    yield services
    services.close()


def _patient(services) -> CX:
    pid = F.cx(F.patient_id())
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    return pid


def test_migration_matches_the_schema(svc):
    with svc.registry.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    ours = [d for d in diff if any(t in repr(d) for t in ACCESS_TABLES)]
    assert ours == []
    with svc.registry.engine.connect() as conn:
        names = set(svc.registry.engine.dialect.get_table_names(conn))
    assert ACCESS_TABLES <= names


def test_record_state_transitions(svc):
    records = Records(svc.registry)
    pid = _patient(svc)
    assert records.state(pid).status == NONE
    for change in (lambda: records.block(pid, "810000000009"),
                   lambda: records.set_medecin_traitant(pid, "810000000001"),
                   lambda: records.oppose_bris_de_glace(pid), lambda: records.close(pid)):
        with pytest.raises(RecordError):
            change()
    records.open(pid, medecin_traitant="810000000001")
    assert records.state(pid).status == OPEN
    records.block(pid, "810000000009")
    with pytest.raises(RecordError, match="médecin traitant"):
        records.block(pid, "810000000001")
    records.set_medecin_traitant(pid, "810000000009")        # naming them lifts the block
    state = records.state(pid)
    assert state.medecin_traitant == "810000000009" and "810000000009" not in state.blocked
    records.close(pid)
    assert records.state(pid).status == CLOSED
    with pytest.raises(RecordError):
        records.close(pid)
    records.open(pid)
    assert records.state(pid).status == OPEN and records.state(pid).medecin_traitant == "810000000009"
    with pytest.raises(RecordError, match="not known"):
        records.open(F.cx(F.patient_id()))


def test_purge_after_ten_years(svc):
    records = Records(svc.registry)
    pid = _patient(svc)
    records.open(pid)
    IngestService(svc, Actor(id="t", kind="system")).provide_and_register(F.submission(pid))
    records.close(pid)
    assert records.purgeable() == []
    later = datetime.now(UTC) + timedelta(days=365 * 10 + 5)
    due = records.purgeable(now=later)
    assert len(due) == 1
    removed, unused = purge_record(svc.registry, due[0])
    assert removed >= 3 and len(unused) == 1
    found = QueryService(svc, Actor(id="t", kind="system")).get_all(pid, *_filters())
    assert found.objects == []
    assert svc.blobs is not None


def _filters():
    from partage.metadata.query import DocumentFilter, FolderFilter, SubmissionSetFilter
    return DocumentFilter(), SubmissionSetFilter(), FolderFilter()


def test_access_and_audit_commands(tmp_path, capsys):
    data = tmp_path / "data"
    services = Services.open(Settings(data_dir=data))
    pid = _patient(services).format()
    services.close()
    assert main(["access", "open", pid, "--medecin-traitant", "810000000001", "--data", str(data)]) == 0
    assert main(["access", "block", pid, "810000000002", "--data", str(data)]) == 0
    assert main(["access", "block", pid, "810000000001", "--data", str(data)]) == 1   # the médecin traitant
    assert main(["access", "oppose-bdg", pid, "--data", str(data)]) == 0
    capsys.readouterr()
    assert main(["access", "show", pid, "--data", str(data)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"patient": pid, "status": "open", "medecin_traitant": "810000000001",
                     "blocked": ["810000000002"], "bris_de_glace_opposed": True, "closed_at": ""}
    assert main(["audit", "--patient", pid, "--json", "--data", str(data)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["action"] for r in rows] == ["access-oppose-bdg", "access-block", "access-open"]
    assert all(r["actor_kind"] == "system" and r["patient_id"] == pid for r in rows)
    assert main(["access", "purge", "--dry-run", "--data", str(data)]) == 0
    assert "no record is due" in capsys.readouterr().out


def test_audit_record_outside_requests(svc):
    pid = _patient(svc)
    pk = audit.record(svc, "ITI-8", Actor(id="feed", kind="system"), patient_id=pid.format(), detail="A01")
    rows = audit.events(svc, patient_id=pid.format())
    assert [(r["pk"], r["action"], r["detail"], r["outcome"]) for r in rows] == [(pk, "ITI-8", "A01", 0)]


def test_audit_trail_is_append_only(svc):
    from sqlalchemy.exc import DBAPIError

    pk = audit.record(svc, "ITI-18", Actor(id="x", kind="system"))
    t = schema.audit_events
    for statement in (t.update().where(t.c.pk == pk).values(actor_id="someone else"), t.delete().where(t.c.pk == pk)):
        with pytest.raises(DBAPIError, match="append-only"):
            with svc.registry.write() as conn:
                conn.execute(statement)
    assert [r["actor_id"] for r in audit.events(svc) if r["pk"] == pk] == ["x"]


def test_purge_of_removed_objects(tmp_path, capsys):
    """ITI-86 leaves a tombstone and the bytes; `partage access purge --removed` (an
    administrator's act) takes both for good, and is audited."""
    from partage import lifecycle

    data = tmp_path / "data"
    services = Services.open(Settings(data_dir=data))
    try:
        pid = _patient(services)
        Records(services.registry).open(pid)
        system = Actor(id="t", kind="system")
        request = F.submission(pid)
        IngestService(services, system).provide_and_register(request)
        uid = request.documents[0].unique_id
        lifecycle.remove_documents(services, system, [(services.settings.repository_unique_id, uid)])
        t = schema.removed_objects
        with services.registry.read() as conn:
            [address] = conn.execute(select(t.c.blob_address).where(t.c.blob_address.is_not(None))).scalars().all()
        assert services.blobs.exists(address)          # removal is a tombstone: the bytes stay
    finally:
        services.close()
    assert main(["access", "purge", "--before", "20200101", "--data", str(data)]) == 1   # needs --removed
    assert main(["access", "purge", "--removed", "--before", "2020", "--data", str(data)]) == 1
    capsys.readouterr()
    assert main(["access", "purge", "--removed", "--dry-run", "--data", str(data)]) == 0
    assert "would purge 1 removed objects" in capsys.readouterr().out
    assert main(["access", "purge", "--removed", "--before", "20000101", "--data", str(data)]) == 0
    assert "purged 0 removed objects" in capsys.readouterr().out
    assert main(["access", "purge", "--removed", "--data", str(data)]) == 0
    assert "purged 1 removed objects and the bytes of 1 documents" in capsys.readouterr().out
    services = Services.open(Settings(data_dir=data))
    try:
        with services.registry.read() as conn:
            assert conn.execute(select(t.c.pk)).first() is None
        assert not services.blobs.exists(address)
        assert [r["action"] for r in audit.events(services, limit=1)] == ["access-purge"]
    finally:
        services.close()


def test_purging_a_record_takes_its_tombstones_and_derived_rows(svc):
    from partage import lifecycle

    records = Records(svc.registry)
    pid = _patient(svc)
    records.open(pid)
    system = Actor(id="t", kind="system")
    first, second = F.submission(pid), F.submission(pid)
    for request in (first, second):
        IngestService(svc, system).provide_and_register(request)
    lifecycle.remove_documents(svc, system, [(svc.settings.repository_unique_id, first.documents[0].unique_id)])
    with svc.registry.write() as conn:
        lid = conn.execute(select(schema.registry_objects.c.lid).where(
            schema.registry_objects.c.unique_id == second.documents[0].unique_id)).scalar()
        conn.execute(schema.clinical_facts.insert().values(
            patient_pk=svc.registry.patient_pk(conn, pid), doc_lid=lid, doc_entry_uuid=lid, seq=0, kind="lab",
            code="X"))
    records.close(pid)
    [due] = records.purgeable(now=datetime.now(UTC) + timedelta(days=365 * 10 + 5))
    removed, unused = purge_record(svc.registry, due)
    assert len(unused) == 2        # the removed document's bytes too
    with svc.registry.read() as conn:
        assert conn.execute(select(schema.removed_objects.c.pk)).first() is None
        assert conn.execute(select(schema.clinical_facts.c.pk)).first() is None


def test_purging_a_record_forgets_its_lineages(svc):
    """A replacement recorded its lineage and patient (registry.lineages): purged with the record."""
    from partage.metadata.model import Association, AssociationType

    records = Records(svc.registry)
    pid = _patient(svc)
    records.open(pid)
    ingest = IngestService(svc, Actor(id="t", kind="system"))
    first = F.submission(pid)
    ingest.provide_and_register(first)
    with svc.registry.read() as conn:
        target = conn.execute(select(schema.registry_objects.c.entry_uuid).where(
            schema.registry_objects.c.unique_id == first.documents[0].unique_id)).scalar_one()
    rplc = Association(entry_uuid="rplc", association_type=AssociationType.RPLC, source_uuid="doc2",
                       target_uuid=target)
    ingest.provide_and_register(F.submission(pid, [F.document(pid, "doc2")], extra_associations=[rplc]))
    lp = schema.lineage_patients
    with svc.registry.read() as conn:
        pk = svc.registry.patient_pk(conn, pid)
        assert conn.execute(select(lp.c.lineage).where(lp.c.patient_pk == pk)).scalars().all() == [target]
    records.close(pid)
    [due] = records.purgeable(now=datetime.now(UTC) + timedelta(days=365 * 10 + 5))
    purge_record(svc.registry, due)
    with svc.registry.read() as conn:
        assert conn.execute(select(lp.c.lineage).where(lp.c.patient_pk == pk)).first() is None
