"""ITI-57 metadata update, ITI-62 metadata removal, ITI-86 document removal (flows)."""

from __future__ import annotations

import copy
import threading

import pytest
from sqlalchemy import select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.fsck import check
from partage.ingest import IngestService
from partage.lifecycle import remove_metadata, update_document_set
from partage.metadata.datatypes import DTM
from partage.metadata.errors import XdsErrors
from partage.metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    Code,
    SubmissionRequest,
    SubmissionSet,
)
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import register as register_module
from partage.registry import schema, updates
from tests import factories as F

ALL = ["Approved", "Deprecated", "Archived", "Deleted"]


def _setup(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    request = F.submission(pid)
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)
    doc = _docs(services, pid, ["Approved"])[0]
    return pid, doc


def _docs(services, pid, statuses=ALL):
    return QueryService(services, INSECURE_DEV_ACTOR).find_documents(
        pid, DocumentFilter(statuses=statuses)).objects


def _update_set(pid, *objects, previous: str = "1") -> SubmissionRequest:
    ss = SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=pid,
                       submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))
    assocs = []
    for obj in objects:
        if isinstance(obj, Association):
            assocs.append(obj)
            continue
        assocs.append(Association(entry_uuid=f"hm-{obj.entry_uuid}", association_type=AssociationType.HAS_MEMBER,
                                  source_uuid="ss", target_uuid=obj.entry_uuid,
                                  submission_set_status="Original", previous_version=previous))
    docs = [o for o in objects if o.kind == "DocumentEntry"]
    return SubmissionRequest(ss, docs, [], assocs)


def _new_version(doc, **changes):
    new = copy.deepcopy(doc)
    new.lid, new.entry_uuid, new.version = doc.entry_uuid, "newversion", ""
    for key, value in changes.items():
        setattr(new, key, value)
    return new


def test_update_creates_version_2_and_deprecates_version_1(services):
    pid, doc = _setup(services)
    masked = [Code("N", "2.16.840.1.113883.5.25"), Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13")]
    update_document_set(services, INSECURE_DEV_ACTOR,
                        _update_set(pid, _new_version(doc, confidentiality_codes=masked)))
    approved = _docs(services, pid, ["Approved"])
    assert len(approved) == 1
    assert approved[0].version == "2" and approved[0].logical_id == doc.entry_uuid
    assert [c.code for c in approved[0].confidentiality_codes] == ["N", "MASQUE_PS"]
    deprecated = _docs(services, pid, ["Deprecated"])
    assert [d.entry_uuid for d in deprecated] == [doc.entry_uuid]


def test_update_with_a_stale_previous_version_is_refused(services):
    pid, doc = _setup(services)
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _new_version(doc, title="v2")))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR,
                            _update_set(pid, _new_version(doc, title="v3"), previous="1"))
    assert exc.value.codes == ["XDSMetadataVersionError"]


def test_update_must_keep_unique_id(services):
    pid, doc = _setup(services)
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR,
                            _update_set(pid, _new_version(doc, unique_id=F.oid())))
    assert exc.value.codes == ["XDSMetadataUpdateError"]


@pytest.mark.parametrize("new_status", ["Archived", "Deprecated", "Deleted"])
def test_availability_status_change(services, new_status):
    pid, doc = _setup(services)
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=doc.entry_uuid,
                         original_status=str(AvailabilityStatus.APPROVED),
                         new_status=str(AvailabilityStatus[new_status.upper()]))
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, change))
    assert [d.availability_status.short for d in _docs(services, pid)] == [new_status]


def test_status_change_checks_the_original_status(services):
    pid, doc = _setup(services)
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=doc.entry_uuid,
                         original_status=str(AvailabilityStatus.DEPRECATED),
                         new_status=str(AvailabilityStatus.APPROVED))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, change))
    assert exc.value.codes == ["XDSMetadataUpdateError"]


def _remove_request(*uuids):
    """The ObjectRef ids of an ITI-62 RemoveObjectsRequest (the door reads them from the XML)."""
    return list(uuids)


def test_remove_metadata_needs_associations_removed_too(services):
    pid, doc = _setup(services)
    with pytest.raises(XdsErrors) as exc:
        remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request(doc.entry_uuid))
    assert set(exc.value.codes) == {"ReferencesExistException"}
    service = QueryService(services, INSECURE_DEV_ACTOR)
    assocs = service.get_associations([doc.entry_uuid]).objects
    # the SubmissionSet goes too: it would be left without members (XDSUnreferencedObjectException)
    sets = {a.source_uuid for a in assocs} - {doc.entry_uuid}
    remove_metadata(services, INSECURE_DEV_ACTOR,
                    _remove_request(doc.entry_uuid, *[a.entry_uuid for a in assocs], *sets))
    assert _docs(services, pid) == []
    assert service.get_objects(schema.KIND_DOCUMENT, entry_uuids=[doc.entry_uuid]).objects == []


def test_remove_unknown_object(services):
    with pytest.raises(XdsErrors) as exc:
        remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request("urn:uuid:00000000-0000-4000-8000-000000000000"))
    assert exc.value.codes == ["UnresolvedReferenceException"]


def test_update_cannot_submit_a_first_version(services):
    """ITI TF-2b 3.57.4.1.3.1 (NIST 15800c): a new DocumentEntry comes by ITI-41/42, not by an update."""
    pid, _ = _setup(services)
    request = _update_set(pid)
    request.documents.append(F.document(pid, "brandnew", hash="a" * 40, size=10, repository_unique_id="1.2.3"))
    request.associations.append(Association(entry_uuid="hm", association_type=AssociationType.HAS_MEMBER,
                                            source_uuid="ss", target_uuid="brandnew",
                                            submission_set_status="Original"))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, request)
    assert exc.value.codes == ["XDSMetadataUpdateError"], exc.value.summary()
    assert len(_docs(services, pid)) == 1


def test_update_of_an_unknown_logical_id_is_a_version_error(services):
    """NIST 15800b: the PreviousVersion named does not exist."""
    pid, doc = _setup(services)
    new = _new_version(doc)
    new.lid = "urn:uuid:00000000-0000-4000-8000-000000000000"
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, new))
    assert exc.value.codes == ["XDSMetadataVersionError"]


def test_size_and_hash_are_updatable_only_for_documents_held_elsewhere(services):
    """NIST 15801 updates size/hash/repositoryUniqueId of an ITI-42 entry; bytes held here keep theirs."""
    pid, held_here = _setup(services)
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _new_version(held_here, size=999)))
    assert exc.value.codes == ["XDSMetadataUpdateError"] and "size" in exc.value.summary()

    elsewhere = F.document(pid, "remote", hash="a" * 40, size=10, repository_unique_id="1.2.3.4.5.6")
    IngestService(services, INSECURE_DEV_ACTOR).register(F.submission(pid, [elsewhere], contents=False))
    remote = [d for d in _docs(services, pid, ["Approved"]) if d.unique_id == elsewhere.unique_id][0]
    corrected = _new_version(remote, hash="b" * 40, size=44, repository_unique_id="1.2.3.4.5.7")
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, corrected))
    latest = [d for d in _docs(services, pid, ["Approved"]) if d.unique_id == elsewhere.unique_id][0]
    assert (latest.version, latest.size, latest.hash) == ("2", 44, "b" * 40)


def _registered(services, pid, request):
    """Register `request` (ITI-41); its symbolic ids -> the urn:uuids assigned."""
    return IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request).assigned_ids


def _status_change(target, original="Approved", new="Deprecated", entry="chg"):
    return Association(entry_uuid=entry, association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                       source_uuid="ss", target_uuid=target,
                       original_status=str(AvailabilityStatus[original.upper()]),
                       new_status=str(AvailabilityStatus[new.upper()]))


def test_submission_set_status_cannot_be_updated(services):
    """NIST 21001."""
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    ids = _registered(services, pid, F.submission(pid))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _status_change(ids["ss"])))
    assert exc.value.codes == ["XDSMetadataUpdateError"] and "SubmissionSet" in exc.value.summary()


def test_status_change_only_on_the_latest_version(services):
    """NIST 15802b: the Deprecated version 1 cannot be approved again once version 2 exists."""
    pid, doc = _setup(services)
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _new_version(doc, title="v2")))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR,
                            _update_set(pid, _status_change(doc.entry_uuid, "Deprecated", "Approved")))
    assert exc.value.codes == ["XDSMetadataVersionError"]


def test_new_version_needs_original_submission_set_status(services):
    """NIST 20002b missing_slot_submissionsetstatus."""
    pid, doc = _setup(services)
    request = _update_set(pid, _new_version(doc, title="v2"))
    request.associations[0].submission_set_status = ""
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, request)
    assert exc.value.codes == ["XDSMetadataUpdateError"] and "SubmissionSetStatus" in exc.value.summary()


def test_association_propagation_is_yes_or_no(services):
    """NIST 20002b slot_associationpropagation_invalid_value."""
    pid, doc = _setup(services)
    request = _update_set(pid, _new_version(doc, title="v2"))
    request.associations[0].extra_slots["AssociationPropagation"] = ["maybe"]
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, request)
    assert exc.value.codes == ["XDSMetadataUpdateError"] and "AssociationPropagation" in exc.value.summary()


def _submit_association(source, target, kind=AssociationType.APND):
    return Association(entry_uuid="new-assoc", association_type=kind, source_uuid=source, target_uuid=target)


def test_submitted_association_rules(services):
    """NIST 20100a/b (other patient), 21004 (Deprecated end), 20008 (already there)."""
    pid, first = _setup(services)
    ids = _registered(services, pid, F.submission(pid, [F.document(pid, "doc2")]))
    second = ids["doc2"]
    other = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [other])
    foreign = _registered(services, other, F.submission(other, [F.document(other, "doc3")]))["doc3"]

    def attempt(assoc):
        with pytest.raises(XdsErrors) as exc:
            update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, assoc))
        return exc.value

    assert attempt(_submit_association(first.entry_uuid, foreign)).codes == ["XDSPatientIDReconciliationError"]
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _status_change(second, entry="c1")))
    refused = attempt(_submit_association(first.entry_uuid, second))
    assert refused.codes == ["XDSMetadataUpdateError"] and "Deprecated" in refused.summary()
    update_document_set(services, INSECURE_DEV_ACTOR,
                        _update_set(pid, _status_change(second, "Deprecated", "Approved", entry="c2")))
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _submit_association(first.entry_uuid, second)))
    again = attempt(_submit_association(first.entry_uuid, second))
    assert again.codes == ["XDSMetadataUpdateError"] and "already links" in again.summary()


def test_patient_change_of_an_unlinked_entry(services):
    """NIST 21002: a new version may name another patient; all versions then span two patients."""
    pid, doc = _setup(services)
    other = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [other])
    moved = _new_version(doc, patient_id=other, source_patient_id=other)
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(other, moved))
    assert [d.version for d in _docs(services, other, ["Approved"])] == ["2"]
    refs = QueryService(services, INSECURE_DEV_ACTOR, object_refs=True).get_objects(
        schema.KIND_DOCUMENT, logical_ids=[doc.entry_uuid])
    assert len(refs.objects) == 2     # $XDSDocumentEntryLogicalID: every version
    with pytest.raises(XdsErrors) as exc:
        QueryService(services, INSECURE_DEV_ACTOR).get_objects(schema.KIND_DOCUMENT, logical_ids=[doc.entry_uuid])
    assert exc.value.codes == ["XDSResultNotSinglePatient"]


def test_patient_change_of_a_folder_member_is_refused(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    inner = Association(entry_uuid="fa", association_type=AssociationType.HAS_MEMBER,
                        source_uuid="fol1", target_uuid="doc1")
    _registered(services, pid, F.submission(pid, folders=[F.folder(pid)], extra_associations=[inner]))
    doc = _docs(services, pid, ["Approved"])[0]
    other = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [other])
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR,
                            _update_set(other, _new_version(doc, patient_id=other, source_patient_id=other)))
    assert exc.value.codes == ["XDSPatientIDReconciliationError"]


def test_removal_must_not_leave_an_empty_submission_set(services):
    """NIST 30001: removing the only member and its HasMember, not the SubmissionSet."""
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    ids = _registered(services, pid, F.submission(pid))
    with pytest.raises(XdsErrors) as exc:
        remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request(ids["doc1"], ids["a-doc1"]))
    assert exc.value.codes == ["XDSUnreferencedObjectException"]
    remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request(ids["doc1"], ids["a-doc1"], ids["ss"]))
    assert _docs(services, pid) == []


def _folder_update(pid, folder_uuid, unique_id, *, propagate: str | None):
    new = F.folder(pid, "newfolder")
    new.lid, new.unique_id = folder_uuid, unique_id
    request = _update_set(pid)
    request.folders.append(new)
    hm = Association(entry_uuid="hm-fol", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
                     target_uuid="newfolder", previous_version="1")
    if propagate is not None:
        hm.extra_slots["AssociationPropagation"] = [propagate]
    request.associations.append(hm)
    return request


@pytest.mark.parametrize("propagate, members_of_new", [(None, 1), ("no", 0)])
def test_folder_update_propagates_members_unless_told_not_to(services, propagate, members_of_new):
    """NIST 20000d/20000e: GetFolderAndContents level 1 shows the new version, level 2 every version."""
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    fol = F.folder(pid)
    inner = Association(entry_uuid="fa", association_type=AssociationType.HAS_MEMBER,
                        source_uuid="fol1", target_uuid="doc1")
    ids = _registered(services, pid, F.submission(pid, folders=[fol], extra_associations=[inner]))
    update_document_set(services, INSECURE_DEV_ACTOR, _folder_update(pid, ids["fol1"], fol.unique_id,
                                                                     propagate=propagate))
    service = QueryService(services, INSECURE_DEV_ACTOR)
    current = service.get_folder_and_contents(DocumentFilter(), unique_id=fol.unique_id).objects
    folders = [o for o in current if o.kind == "Folder"]
    assert [f.version for f in folders] == ["2"]
    assert sum(o.kind == "Association" for o in current) == members_of_new
    service.metadata_level = 2
    every = service.get_folder_and_contents(DocumentFilter(), unique_id=fol.unique_id).objects
    assert sorted(o.version for o in every if o.kind == "Folder") == ["1", "2"]
    assert sum(o.kind == "Association" for o in every) == 1 + members_of_new


def test_deprecated_associations_are_followed_only_when_asked(services):
    """NIST 20001: $XDSAssociationStatus defaults to Approved."""
    pid, first = _setup(services)
    apnd = Association(entry_uuid="apnd", association_type=AssociationType.APND,
                       source_uuid="doc2", target_uuid=first.entry_uuid)
    ids = _registered(services, pid, F.submission(pid, [F.document(pid, "doc2")], extra_associations=[apnd]))
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(pid, _status_change(ids["apnd"])))
    service = QueryService(services, INSECURE_DEV_ACTOR)
    related = service.get_related_documents([str(AssociationType.APND)], DocumentFilter(),
                                            entry_uuid=first.entry_uuid)
    assert related.objects == []
    service.association_statuses = ["Approved", "Deprecated"]
    related = service.get_related_documents([str(AssociationType.APND)], DocumentFilter(),
                                            entry_uuid=first.entry_uuid)
    assert sorted(o.kind for o in related.objects) == ["Association", "DocumentEntry", "DocumentEntry"]


def test_an_update_claims_its_submission_sets_unique_id(services):
    """Like a submission's: a later update (or submission) cannot reuse it, and fsck takes the
    update for neither a lost submission (sharded) nor an object without its claim."""
    pid, doc = _setup(services)
    request = _update_set(pid, _new_version(doc, title="v2"))
    reused = request.submission_set.unique_id
    update_document_set(services, INSECURE_DEV_ACTOR, request)
    with services.registry.read() as conn:
        claims = conn.execute(select(schema.unique_ids.c.kind).where(schema.unique_ids.c.unique_id == reused)).all()
    assert [c.kind for c in claims] == [schema.KIND_SUBMISSION_SET]
    report = check(services, min_age_seconds=0)
    assert report.lost == [] and report.unclaimed_ids == [] and report.consistent
    [current] = _docs(services, pid, ["Approved"])
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=current.entry_uuid,
                         original_status=str(AvailabilityStatus.APPROVED),
                         new_status=str(AvailabilityStatus.DEPRECATED))
    again = _update_set(pid, change)
    again.submission_set.unique_id = reused
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, again)
    assert exc.value.codes == ["XDSDuplicateUniqueIdInRegistry"]
    assert [d.title for d in _docs(services, pid, ["Approved"])] == ["v2"]   # nothing of it written


def test_an_update_links_objects_of_its_own_patient_only(services):
    """ITI-57 for patient B may not reach patient A's objects: neither a HasMember from its
    SubmissionSet (SubmissionSetStatus Reference) nor a status change whose source is A's, as
    for a submission (XDSPatientIDReconciliationError). Accepted, the association was kept with
    B's rows, out of sight of A's (another shard on a sharded registry): ITI-62 then removed A's
    document and left it dangling."""
    a, doc = _setup(services)
    b, _ = _setup(services)
    reference = Association(entry_uuid="ref", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
                            target_uuid=doc.entry_uuid, submission_set_status="Reference")
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, _update_set(b, reference))
    assert exc.value.codes == ["XDSPatientIDReconciliationError"]
    [b_doc] = _docs(services, b, ["Approved"])
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid=doc.entry_uuid, target_uuid=b_doc.entry_uuid,
                         original_status=str(AvailabilityStatus.APPROVED),
                         new_status=str(AvailabilityStatus.DEPRECATED))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, _update_set(b, change))
    assert "XDSPatientIDReconciliationError" in exc.value.codes
    with services.registry.read() as conn:
        links = conn.execute(select(schema.registry_objects.c.entry_uuid).where(
            schema.registry_objects.c.kind == schema.KIND_ASSOCIATION,
            schema.registry_objects.c.target_uuid == doc.entry_uuid)).scalars().all()
    assert len(links) == 1   # A's own HasMember, nothing of B's updates
    own = Association(entry_uuid="own", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
                      target_uuid=b_doc.entry_uuid, submission_set_status="Reference")
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(b, own))   # B's own document: accepted


def test_a_submission_cannot_borrow_another_documents_logical_id(services):
    """A first version's lid is its own id: a submission naming another document's (here
    another patient's) would join its lineage (its versions, its masking; fsck would then take
    the victim for the older version). XDSMetadataVersionError; a submitted VersionInfo is not
    a version either: the registry numbers versions."""
    victim, doc = _setup(services)
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    borrowing = F.document(pid, "d1")
    borrowing.lid, borrowing.version = doc.entry_uuid, "2"
    with pytest.raises(XdsErrors) as exc:
        IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid, [borrowing]))
    assert exc.value.codes == ["XDSMetadataVersionError"] and doc.entry_uuid in str(exc.value)
    assert _docs(services, pid) == [] and [d.entry_uuid for d in _docs(services, victim)] == [doc.entry_uuid]
    numbered = F.document(pid, "d2")
    numbered.version = "7"
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid, [numbered]))
    [mine] = _docs(services, pid)
    assert (mine.version, mine.logical_id) == ("1", mine.entry_uuid)
    # an update's new Folder (no PreviousVersion) cannot borrow a lid either
    folder = F.folder(pid, "f")
    folder.lid = doc.entry_uuid
    request = _update_set(pid)
    request.folders.append(folder)
    request.associations.append(Association(entry_uuid="hm-f", association_type=AssociationType.HAS_MEMBER,
                                            source_uuid="ss", target_uuid="f"))
    with pytest.raises(XdsErrors) as exc:
        update_document_set(services, INSECURE_DEV_ACTOR, request)
    assert exc.value.codes == ["XDSMetadataVersionError"]
    assert check(services, min_age_seconds=0).consistent


def _race(monkeypatch, module, check: str, write) -> dict[str, object]:
    """Run `write("first")` and `write("second")` so that the first holds its transaction open
    right after `module.check` (its checks, its locks taken) while the second starts; the second
    must wait for it. Returns each one's outcome: "ok" or its XDS error codes."""
    inside, go = threading.Event(), threading.Event()
    checked = getattr(module, check)

    def held_first(*args, **kwargs):
        errors = checked(*args, **kwargs)
        if not inside.is_set():
            inside.set()
            go.wait(30)
        return errors

    monkeypatch.setattr(module, check, held_first)
    outcomes: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            write(name)
            outcomes[name] = "ok"
        except XdsErrors as exc:
            outcomes[name] = exc.codes

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(1.0)
    waited = second.is_alive()
    go.set()
    first.join(30)
    second.join(30)
    assert waited, "the second did not wait for the first"
    return outcomes


@pytest.mark.postgres
def test_two_updates_of_one_version_at_once_make_one_version_2(services, monkeypatch):
    """The second waits for the first (the versions are locked while checked) and is then
    refused, instead of registering a second Approved version 2."""
    if services.registry.is_sqlite:
        pytest.skip("SQLite has one writer at a time")
    pid, doc = _setup(services)
    outcomes = _race(monkeypatch, updates, "_check_new_version", lambda name: update_document_set(
        services, INSECURE_DEV_ACTOR, _update_set(pid, _new_version(doc, title=name))))
    # refused: version 1 found Deprecated once the lock is granted (one database), or version 2
    # found the latest when the transaction is run again after a shard's serialization conflict
    assert outcomes["first"] == "ok" and outcomes["second"] in (
        ["XDSMetadataUpdateError"], ["XDSMetadataVersionError"]), outcomes
    assert [(d.version, d.title) for d in _docs(services, pid, ["Approved"])] == [("2", "first")]
    assert check(services, min_age_seconds=0).consistent


@pytest.mark.postgres
def test_two_replacements_of_one_document_at_once_make_one(services, monkeypatch):
    """A replaced document must be Approved: two RPLC of it at once, the second waits for the
    first (the target is locked while checked) and is refused, instead of two replacements."""
    if services.registry.is_sqlite:
        pytest.skip("SQLite has one writer at a time")
    pid, doc = _setup(services)

    def replace(name: str) -> None:
        rplc = Association(entry_uuid=f"r-{name}", association_type=AssociationType.RPLC, source_uuid=name,
                           target_uuid=doc.entry_uuid)
        IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(
            F.submission(pid, [F.document(pid, name)], extra_associations=[rplc]))

    outcomes = _race(monkeypatch, register_module, "_check_associations", replace)
    # refused, by the locked row re-read (one database) or the transaction run again after
    # a shard's serialization conflict (Registry.writing)
    assert outcomes == {"first": "ok", "second": ["XDSRegistryMetadataError"]}, outcomes
    [current] = _docs(services, pid, ["Approved"])   # one replacement, the first's
    assert current.entry_uuid != doc.entry_uuid and _docs(services, pid, ["Deprecated"])[0].entry_uuid == doc.entry_uuid
