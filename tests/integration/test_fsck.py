"""`partage fsck` finds each kind of inconsistency it claims to find, and repairs leftovers."""

from __future__ import annotations

import io

from sqlalchemy import delete

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.fsck import check, remove_leftovers, run_fsck
from partage.ingest import IngestService
from partage.registry import schema
from tests import factories as F

OBJ = schema.registry_objects


def _submit(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    request = F.submission(pid)
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)
    return request


def test_a_clean_store_is_consistent(services, capsys):
    _submit(services)
    report = check(services, min_age_seconds=0)
    assert report.consistent and report.registered_documents == 1 and report.blobs == 1
    assert run_fsck(services.settings, repair=False, min_age_seconds=0) == 0
    assert capsys.readouterr().out.strip().endswith("consistent")


def test_unreferenced_blob_is_reported_and_repaired(services):
    _submit(services)
    leftover = services.blobs.put(io.BytesIO(b"written, then the transaction never committed"))
    report = check(services, min_age_seconds=0)
    assert report.unreferenced_blobs == [leftover.address] and report.consistent
    assert check(services, min_age_seconds=3600).unreferenced_blobs == []   # maybe still in flight
    remove_leftovers(services, report)
    assert not services.blobs.exists(leftover.address)
    assert check(services, min_age_seconds=0).unreferenced_blobs == []


def test_missing_blob_makes_the_store_inconsistent(services):
    _submit(services)
    [address] = list(services.blobs.addresses())
    services.blobs.delete(address)
    report = check(services, min_age_seconds=0)
    assert not report.consistent and [a for _, a in report.missing_blobs] == [address]
    assert run_fsck(services.settings, repair=True, min_age_seconds=0) == 1


def test_orphan_entry_and_dangling_association_are_reported(services, capsys):
    request = _submit(services)
    document_uuid = request.documents[0].entry_uuid
    with services.registry.write() as conn:
        conn.execute(delete(OBJ).where(OBJ.c.kind == schema.KIND_ASSOCIATION,
                                       OBJ.c.target_uuid == document_uuid))
    report = check(services, min_age_seconds=0)
    assert report.orphans == [document_uuid] and not report.consistent
    second = _submit(services)
    with services.registry.write() as conn:
        conn.execute(delete(OBJ).where(OBJ.c.entry_uuid == second.documents[0].entry_uuid))
    report = check(services, min_age_seconds=0)
    assert len(report.dangling_associations) == 1
    run_fsck(services.settings, repair=False, min_age_seconds=0)
    out = capsys.readouterr().out
    assert "ORPHAN" in out and "DANGLING" in out and out.strip().endswith("INCONSISTENT")
