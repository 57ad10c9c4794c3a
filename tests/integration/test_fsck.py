"""`partage fsck` finds each kind of inconsistency it claims to find, and repairs leftovers."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import delete, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.fsck import check, remove_leftovers, run_fsck
from partage.ingest import IngestService
from partage.lifecycle import remove_metadata, update_document_set
from partage.metadata.errors import XdsErrors
from partage.metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    SubmissionRequest,
)
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import schema
from partage.registry.register import set_status
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


def test_derived_rows_of_removed_documents_are_reported_and_repaired(services, capsys):
    """Derived data follows its document: ITI-62 removes a document's text and facts in its own
    transaction; rows left by anything else (a crash of an older version, a manual edit) are
    found by fsck and removed by --repair."""
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    request = F.submission(pid, [F.document(pid, mime_type="text/plain")], payload=b"compte rendu: creatinine stable")
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)
    doc = request.documents[0]
    with services.registry.read() as conn:
        refs = [r.entry_uuid for r in conn.execute(OBJ.select().where(OBJ.c.kind == schema.KIND_ASSOCIATION,
                                                                        OBJ.c.target_uuid == doc.entry_uuid))]
        pk = conn.execute(OBJ.select().where(OBJ.c.entry_uuid == doc.entry_uuid)).first().patient_pk
    text = schema.document_text
    with services.registry.read() as conn:
        assert conn.execute(text.select().where(text.c.doc_lid == doc.entry_uuid)).first() is not None
    remove_metadata(services, INSECURE_DEV_ACTOR, [doc.entry_uuid, *refs, request.submission_set.entry_uuid])
    with services.registry.read() as conn:
        assert conn.execute(text.select().where(text.c.doc_lid == doc.entry_uuid)).first() is None
    assert check(services, min_age_seconds=0).derived_orphans == {}

    with services.registry.write() as conn:
        conn.execute(schema.clinical_facts.insert().values(
            patient_pk=pk, doc_lid="urn:uuid:00000000-0000-4000-8000-00000000dead",
            doc_entry_uuid="urn:uuid:00000000-0000-4000-8000-00000000dead", seq=0, kind="lab", code="3016-3"))
    report = check(services, min_age_seconds=0)
    assert report.derived_orphans == {"clinical_facts": ["urn:uuid:00000000-0000-4000-8000-00000000dead"]}
    assert not report.consistent
    assert run_fsck(services.settings, repair=False, min_age_seconds=0) == 1
    assert "DERIVED  clinical_facts rows of urn:uuid:00000000-0000-4000-8000-00000000dead" in capsys.readouterr().out
    assert run_fsck(services.settings, repair=True, min_age_seconds=0) == 0
    assert check(services, min_age_seconds=0).derived_orphans == {}


def test_an_unclaimed_unique_id_is_claimed_by_repair_and_its_objects_kept(services, capsys):
    """What an ITI-57 update of an earlier Partage left: a SubmissionSet registered without its
    uniqueId's claim. fsck names it (not, on a sharded registry, as a lost submission: the global
    index says its transaction committed), --repair claims it and removes nothing, and the
    uniqueId cannot be registered again."""
    request = _submit(services)
    ss = request.submission_set
    with services.registry.write() as conn:
        conn.execute(delete(schema.unique_ids).where(schema.unique_ids.c.unique_id == ss.unique_id))
    report = check(services, min_age_seconds=0)
    assert report.unclaimed_ids == [(ss.entry_uuid, ss.unique_id)] and report.lost == []
    assert not report.consistent
    assert check(services, min_age_seconds=3600).unclaimed_ids == []   # maybe a submission in flight
    assert run_fsck(services.settings, repair=True, min_age_seconds=0) == 0
    out = capsys.readouterr().out
    assert f"NOCLAIM  {ss.entry_uuid}" in out and "claimed the uniqueIds of 1 objects" in out
    assert check(services, min_age_seconds=0).consistent
    with services.registry.read() as conn:
        kept = conn.execute(select(OBJ.c.entry_uuid).where(OBJ.c.entry_uuid.in_(
            [ss.entry_uuid, request.documents[0].entry_uuid]))).scalars().all()
        claim = conn.execute(select(schema.unique_ids).where(schema.unique_ids.c.unique_id == ss.unique_id)).one()
    assert len(kept) == 2 and (claim.kind, claim.lid) == (schema.KIND_SUBMISSION_SET, ss.entry_uuid)
    again = F.submission(request.documents[0].patient_id)
    again.submission_set.unique_id = ss.unique_id
    with pytest.raises(XdsErrors) as exc:
        IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(again)
    assert exc.value.codes == ["XDSDuplicateUniqueIdInRegistry"]


def test_an_older_version_left_approved_is_unsettled_and_repair_deprecates_it(services, capsys):
    """Two current versions of one document: what an update across shards leaves when its
    second step did not run (test_sharding.py makes it for real). fsck names the lineage
    (UNSETTLED), --repair deprecates the older one; updates and status changes that settled
    are not named."""
    request = _submit(services)
    query = QueryService(services, INSECURE_DEV_ACTOR)
    pid = request.documents[0].patient_id
    [v1] = query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects
    update_document_set(services, INSECURE_DEV_ACTOR, F.new_version(v1, title="v2"))
    [v2] = query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=v2.entry_uuid, original_status=str(AvailabilityStatus.APPROVED),
                         new_status=str(AvailabilityStatus.DEPRECATED))
    update_document_set(services, INSECURE_DEV_ACTOR, SubmissionRequest(F.update_set(pid), [], [], [change]))
    assert check(services, min_age_seconds=0).consistent   # v1 and v2 Deprecated: settled
    with services.registry.write() as conn:
        set_status(conn, [v2.entry_uuid], AvailabilityStatus.APPROVED)
        set_status(conn, [v1.entry_uuid], AvailabilityStatus.APPROVED)   # the older one, left current
    report = check(services, min_age_seconds=0)
    assert report.unsettled == [v1.lid] and not report.consistent
    assert check(services, min_age_seconds=3600).unsettled == []   # maybe an update in flight
    assert run_fsck(services.settings, repair=True, min_age_seconds=0) == 0
    out = capsys.readouterr().out
    assert f"UNSETTLED {v1.lid}" in out and "deprecated the older versions of 1 documents" in out
    assert [d.entry_uuid for d in query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects] == [
        v2.entry_uuid]
    assert check(services, min_age_seconds=0).consistent


def test_fsck_shows_its_progress_while_it_reads_the_store():
    """fsck reads every registered blob (CORRUPT): long work on a big store, so it says how far it
    is on stderr, at most once a second and once at the end; a short check says nothing."""
    import io

    from partage.fsck import _progress_on
    err = io.StringIO()
    say = _progress_on(err, every_s=0.0)
    for done in range(1, 4):
        say(done, 3)
    assert err.getvalue().splitlines() == ["[1/3] documents' content read", "[2/3] documents' content read",
                                           "[3/3] documents' content read"]
    quiet = io.StringIO()
    say = _progress_on(quiet, every_s=3600.0)
    for done in range(1, 4):
        say(done, 3)
    assert quiet.getvalue() == ""
