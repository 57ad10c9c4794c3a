"""ITI-57 metadata update, ITI-62 metadata removal, ITI-86 document removal (flows)."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.lifecycle import remove_metadata, update_document_set
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
from partage.registry import schema
from partage.xds import constants as C
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
                       submission_time="20240401", content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))
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
    root = etree.Element(f"{{{C.LCM}}}RemoveObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    refs = etree.SubElement(root, f"{{{C.RIM}}}ObjectRefList")
    for u in uuids:
        etree.SubElement(refs, f"{{{C.RIM}}}ObjectRef", id=u)
    return root


def test_remove_metadata_needs_associations_removed_too(services):
    pid, doc = _setup(services)
    with pytest.raises(XdsErrors) as exc:
        remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request(doc.entry_uuid))
    assert set(exc.value.codes) == {"ReferencesExistException"}
    service = QueryService(services, INSECURE_DEV_ACTOR)
    assocs = [o.entry_uuid for o in service.get_associations([doc.entry_uuid]).objects]
    remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request(doc.entry_uuid, *assocs))
    assert _docs(services, pid) == []
    assert service.get_objects(schema.KIND_DOCUMENT, entry_uuids=[doc.entry_uuid]).objects == []


def test_remove_unknown_object(services):
    with pytest.raises(XdsErrors) as exc:
        remove_metadata(services, INSECURE_DEV_ACTOR, _remove_request("urn:uuid:00000000-0000-4000-8000-000000000000"))
    assert exc.value.codes == ["UnresolvedReferenceException"]
