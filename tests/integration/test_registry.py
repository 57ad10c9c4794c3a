"""The registry store and the ingest/query flows, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.metadata.datatypes import DTM
from partage.metadata.errors import XdsErrors
from partage.metadata.model import Association, AssociationType, AvailabilityStatus, Code
from partage.metadata.query import DocumentFilter, FolderFilter, SubmissionSetFilter, TimeRange
from partage.query import QueryService
from partage.registry import schema
from tests import factories as F


def _known_patient(services, pid=None):
    pid = pid or F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid], {"name": "DOE^JANE"})
    return pid


def _count(services, table) -> int:
    with services.registry.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _ingest(services, request):
    return IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)


def _find(services, pid, **filters):
    f = DocumentFilter(statuses=filters.pop("statuses", ["Approved"]), **filters)
    return QueryService(services, INSECURE_DEV_ACTOR).find_documents(pid, f).objects


def test_submission_is_registered_and_found(services):
    pid = _known_patient(services)
    request = F.submission(pid)
    result = _ingest(services, request)
    assert set(result.assigned_ids) == {"ss", "doc1", "a-doc1"}
    docs = _find(services, pid)
    assert [d.unique_id for d in docs] == [request.documents[0].unique_id]
    doc = docs[0]
    assert doc.entry_uuid.startswith("urn:uuid:")
    assert doc.availability_status == AvailabilityStatus.APPROVED
    assert doc.hash and doc.size == request.contents[doc.entry_uuid].size
    assert doc.repository_unique_id == services.settings.repository_unique_id
    assert doc.class_code == Code("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")


def test_a_read_transaction_sees_one_state_of_the_registry(services):
    """The statements of one read (a FindDocuments' documents then the record's access state,
    a page's dozen reads) are judged together: a registration committed meanwhile is not seen
    by the later ones; the next read sees it. REPEATABLE READ on PostgreSQL."""
    pid = _known_patient(services)
    _ingest(services, F.submission(pid))
    with services.registry.read() as conn:
        before = conn.execute(select(func.count()).select_from(schema.registry_objects)).scalar()
        _ingest(services, F.submission(pid, [F.document(pid, "meanwhile")]))   # its own write
        during = conn.execute(select(func.count()).select_from(schema.registry_objects)).scalar()
    assert during == before
    assert _count(services, schema.registry_objects) > before


@pytest.mark.parametrize("first", ["read", "snapshot"])
def test_writes_stay_read_committed_after_a_read_used_the_connection(services, first):
    """The pool gives a read's connection to the next write: its REPEATABLE READ is not kept
    (a write in it would fail on a concurrent update instead of waiting for it)."""
    if services.registry.is_sqlite:
        pytest.skip("SQLite has one isolation level (serializable writers)")
    pid = _known_patient(services)
    with getattr(services.registry, first)() as conn:
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "repeatable read"
    for _ in range(3):   # whichever pooled connection comes next
        with services.registry.write() as conn:
            assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
    assert _find(services, pid) == []


def test_unknown_patient_is_refused_and_nothing_is_left(services):
    request = F.submission(F.patient_id())
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, request)
    assert exc.value.codes == ["XDSUnknownPatientId"]
    assert _count(services, schema.registry_objects) == 0
    assert _count(services, schema.unique_ids) == 0


def test_code_outside_domain_is_a_metadata_error(services):
    pid = _known_patient(services)
    doc = F.document(pid, class_code=Code("77", "1.2.250.1.213.1.1.4.1"))
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, F.submission(pid, [doc]))
    assert "XDSRepositoryMetadataError" in exc.value.codes
    assert "classCode 77" in exc.value.summary()


def test_duplicate_unique_id_is_refused_atomically(services):
    pid = _known_patient(services)
    first = F.submission(pid)
    _ingest(services, first)
    before = _count(services, schema.registry_objects)
    again = F.document(pid, unique_id=first.documents[0].unique_id)
    second = F.submission(pid, [again, F.document(pid, "doc2")], payload=b"other content")
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, second)
    assert set(exc.value.codes) <= {"XDSDuplicateUniqueIdInRegistry", "XDSNonIdenticalHash"}
    assert _count(services, schema.registry_objects) == before   # doc2 not registered either


def test_resubmitting_the_same_document_is_accepted(services):
    """NIST 12004: same uniqueId and same hash is the same document, registered again."""
    pid = _known_patient(services)
    first = F.submission(pid)
    _ingest(services, first)
    again = F.document(pid, unique_id=first.documents[0].unique_id)
    _ingest(services, F.submission(pid, [again]))
    assert len(_find(services, pid)) == 2
    folder_twice = F.submission(pid, folders=[F.folder(pid)])
    folder_twice.folders[0].unique_id = first.submission_set.unique_id
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, folder_twice)
    assert exc.value.codes == ["XDSDuplicateUniqueIdInRegistry"]


def test_declared_hash_must_match_content(services):
    """ITI TF-2b 3.41.4.1.3 (NIST 11981): a wrong hash is XDSRepositoryMetadataError."""
    pid = _known_patient(services)
    doc = F.document(pid, hash="0" * 40)
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, F.submission(pid, [doc]))
    assert exc.value.codes == ["XDSRepositoryMetadataError"]
    assert "hash" in exc.value.summary()


def test_declared_size_must_match_content(services):
    """NIST 12369: a wrong size is XDSRepositoryMetadataError too."""
    pid = _known_patient(services)
    doc = F.document(pid)
    doc.size = 123456
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, F.submission(pid, [doc]))
    assert exc.value.codes == ["XDSRepositoryMetadataError"]
    assert "size 123456" in exc.value.summary()


def test_replacement_deprecates_original(services):
    pid = _known_patient(services)
    original = F.submission(pid)
    _ingest(services, original)
    original_uuid = _find(services, pid)[0].entry_uuid
    new_doc = F.document(pid, "doc2")
    rplc = Association(entry_uuid="rplc", association_type=AssociationType.RPLC,
                       source_uuid="doc2", target_uuid=original_uuid)
    _ingest(services, F.submission(pid, [new_doc], extra_associations=[rplc]))
    approved = _find(services, pid)
    deprecated = _find(services, pid, statuses=["Deprecated"])
    assert [d.unique_id for d in approved] == [new_doc.unique_id]
    assert [d.entry_uuid for d in deprecated] == [original_uuid]


def test_replacing_a_deprecated_document_is_refused(services):
    pid = _known_patient(services)
    _ingest(services, F.submission(pid))
    original_uuid = _find(services, pid)[0].entry_uuid
    for n in (2, 3):
        rplc = Association(entry_uuid="r", association_type=AssociationType.RPLC,
                           source_uuid=f"doc{n}", target_uuid=original_uuid)
        request = F.submission(pid, [F.document(pid, f"doc{n}")], extra_associations=[rplc])
        if n == 2:
            _ingest(services, request)
        else:
            with pytest.raises(XdsErrors) as exc:
                _ingest(services, request)
            assert "Deprecated" in exc.value.summary()


def test_relationship_to_another_patients_document_is_refused(services):
    pid, other = _known_patient(services), _known_patient(services)
    _ingest(services, F.submission(other))
    target = _find(services, other)[0].entry_uuid
    apnd = Association(entry_uuid="x", association_type=AssociationType.APND,
                       source_uuid="doc1", target_uuid=target)
    with pytest.raises(XdsErrors) as exc:
        _ingest(services, F.submission(pid, extra_associations=[apnd]))
    assert "XDSPatientIdDoesNotMatch" in exc.value.codes


def test_find_documents_filters(services):
    pid = _known_patient(services)
    a = F.document(pid, "a", creation_time=DTM("20200101"), event_codes=[Code("E1", "1.2.3.4")])
    b = F.document(pid, "b", creation_time=DTM("20230601"),
                   type_code=Code("11502-2", "2.16.840.1.113883.6.1"),
                   event_codes=[Code("E2", "1.2.3.4")],
                   confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25"),
                                          Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13")])
    _ingest(services, F.submission(pid, [a, b]))
    uid = lambda docs: sorted(d.unique_id for d in docs)  # noqa: E731
    assert uid(_find(services, pid, creation_time=TimeRange("2021", ""))) == [b.unique_id]
    assert uid(_find(services, pid, creation_time=TimeRange("", "2021"))) == [a.unique_id]
    assert uid(_find(services, pid, codes={"type": [[Code("11502-2", "2.16.840.1.113883.6.1")]]})) == [b.unique_id]
    # eventCodeList: AND of OR-groups
    assert uid(_find(services, pid, codes={"event": [[Code("E1", "1.2.3.4"), Code("E2", "1.2.3.4")]]})) == uid([a, b])
    assert uid(_find(services, pid, codes={"event": [[Code("E1", "1.2.3.4")], [Code("E2", "1.2.3.4")]]})) == []
    assert uid(_find(services, pid, codes={"conf": [[Code("N", "")], [Code("MASQUE_PS", "")]]})) == [b.unique_id]
    assert uid(_find(services, pid, author_persons=["%MARTIN%"])) == uid([a, b])
    assert uid(_find(services, pid, author_persons=["%DUPONT%"])) == []


def test_query_does_not_see_other_patients(services):
    pid, other = _known_patient(services), _known_patient(services)
    _ingest(services, F.submission(other))
    assert _find(services, pid) == []


def test_patient_merge_moves_documents(services):
    kept, merged = _known_patient(services), _known_patient(services)
    _ingest(services, F.submission(merged))
    with services.registry.write() as conn:
        services.registry.merge_patients(conn, kept, merged)
    assert len(_find(services, kept)) == 1
    assert len(_find(services, merged)) == 1    # the old id resolves to the survivor


def test_folder_membership_and_replacement_carry_over(services):
    pid = _known_patient(services)
    fol = F.folder(pid)
    doc = F.document(pid)
    inner = Association(entry_uuid="fa", association_type=AssociationType.HAS_MEMBER,
                        source_uuid="fol1", target_uuid="doc1")
    request = F.submission(pid, [doc], folders=[fol], extra_associations=[inner])
    request.associations.append(Association(entry_uuid="ssfa", association_type=AssociationType.HAS_MEMBER,
                                            source_uuid="ss", target_uuid="fa"))
    _ingest(services, request)
    service = QueryService(services, INSECURE_DEV_ACTOR)
    folder_uuid = [o for o in service.get_objects(schema.KIND_FOLDER, unique_ids=[fol.unique_id]).objects][0]
    contents = service.get_folder_and_contents(DocumentFilter(), entry_uuid=folder_uuid.entry_uuid).objects
    assert sorted(o.kind for o in contents) == ["Association", "DocumentEntry", "Folder"]
    original_uuid = _find(services, pid)[0].entry_uuid
    rplc = Association(entry_uuid="r", association_type=AssociationType.RPLC,
                       source_uuid="doc2", target_uuid=original_uuid)
    _ingest(services, F.submission(pid, [F.document(pid, "doc2")], extra_associations=[rplc]))
    contents = service.get_folder_and_contents(DocumentFilter(statuses=["Approved"]),
                                               entry_uuid=folder_uuid.entry_uuid).objects
    docs = [o for o in contents if o.kind == "DocumentEntry"]
    assert len(docs) == 1 and docs[0].entry_uuid != original_uuid


def _folder_submission(pid):
    """A document in a folder, the folder membership itself a member of the SubmissionSet."""
    inner = Association(entry_uuid="fa", association_type=AssociationType.HAS_MEMBER,
                        source_uuid="fol1", target_uuid="doc1")
    request = F.submission(pid, [F.document(pid)], folders=[F.folder(pid)], extra_associations=[inner])
    request.associations.append(Association(entry_uuid="ssfa", association_type=AssociationType.HAS_MEMBER,
                                            source_uuid="ss", target_uuid="fa"))
    return request


def test_get_all_returns_associations_to_associations(services):
    """NIST 15803: GetAll returns the SubmissionSet's HasMember to the folder membership too."""
    pid = _known_patient(services)
    _ingest(services, _folder_submission(pid))
    everything = QueryService(services, INSECURE_DEV_ACTOR).get_all(
        pid, DocumentFilter(statuses=["Approved"]), SubmissionSetFilter(statuses=["Approved"]),
        FolderFilter(statuses=["Approved"])).objects
    kinds = sorted(o.kind for o in everything)
    assert kinds == ["Association"] * 4 + ["DocumentEntry", "Folder", "SubmissionSet"]
    by_uuid = {o.entry_uuid for o in everything}
    nested = [o for o in everything if o.kind == "Association" and o.target_uuid not in
              {x.entry_uuid for x in everything if x.kind != "Association"}]
    assert len(nested) == 1 and nested[0].target_uuid in by_uuid


def test_object_refs_may_span_patients_leaf_class_may_not(services):
    """ITI-18 XDSResultNotSinglePatient is about full metadata (NIST 12368)."""
    first, second = _known_patient(services), _known_patient(services)
    _ingest(services, F.submission(first))
    _ingest(services, F.submission(second))
    uuids = [_find(services, first)[0].entry_uuid, _find(services, second)[0].entry_uuid]
    refs = QueryService(services, INSECURE_DEV_ACTOR, object_refs=True).get_objects(
        schema.KIND_DOCUMENT, entry_uuids=uuids)
    assert sorted(o.entry_uuid for o in refs.objects) == sorted(uuids)
    with pytest.raises(XdsErrors) as exc:
        QueryService(services, INSECURE_DEV_ACTOR).get_objects(schema.KIND_DOCUMENT, entry_uuids=uuids)
    assert exc.value.codes == ["XDSResultNotSinglePatient"]
