"""Adversarial cases of ITI-57 / ITI-62 / ITI-86 and ITI-18 against a real `partage serve`
with authentication on (issues 3, 7, 15): hostile update shapes, existence oracles of the
lifecycle transactions, unbounded ObjectRef lists, stored-query parameter edge cases."""

from __future__ import annotations

import copy

import pytest
from lxml import etree
from sqlalchemy import select

from partage.metadata.model import Association, AssociationType, Code, Folder, SubmissionRequest
from partage.registry import schema
from tests import factories as F
from tests.integration.test_access_attacks import (
    CONF,
    DOCTOR,
    EVERY_STATUS,
    NURSE,
    Record,
    _live_server,
    bare,
    relation,
)
from tests.xdsclient import objects_of

UNKNOWN_UUID = "urn:uuid:00000000-0000-4000-8000-00000000abcd"


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority, module_database_url):
    with _live_server(tmp_path_factory, authority, module_database_url, "lifecycle-adv") as live:
        yield live


def _shape(reply) -> tuple[str, list[str]]:
    """What an answer tells: its status and its error codes (not the ids it echoes)."""
    return reply.status, reply.error_codes


def _internal(reply) -> bool:
    return "internal error" in etree.tostring(reply.body).decode()


# ============================================================================ hidden documents
# Issue 15: every change by anyone but the author is refused with XDSPolicyViolation, audited,
# the document unchanged, whether the actor may see it or not (the text; a FHIR read
# or DELETE of a resource one may not see answers 404, as a read).
def test_iti86_of_a_hidden_document_is_refused_and_changes_nothing(server):
    r = Record(server)
    nurse, doctor = r.actor("nurse"), r.actor("doctor")
    m = r.document("m", DOCTOR, conf="MASQUE_PS")
    r.filed(doctor, [m])
    assert not r.retrieved(nurse, m.unique_id)
    assert r.remove_bytes(nurse, m.unique_id).error_codes == ["XDSPolicyViolation"]
    assert r.retrieved(doctor, m.unique_id)

    blocked = Record(server)
    [_] = blocked.filed(blocked.actor("doctor"), [d := blocked.document("d", DOCTOR)])
    blocked.records.block(blocked.pid, r.actor("nurse").id)
    assert blocked.remove_bytes(blocked.actor("nurse"), d.unique_id).error_codes == ["XDSPolicyViolation"]
    assert blocked.retrieved(blocked.actor("doctor"), d.unique_id)


def test_iti62_and_status_change_of_a_document_masked_since_are_refused(server):
    """An entryUUID the nurse saw before the patient masked the document: ITI-62 and an
    ITI-57 status change naming it are refused, the document unchanged."""
    r = Record(server)
    nurse, doctor = r.actor("nurse"), r.actor("doctor")
    d = r.document("d", DOCTOR)
    [d1] = r.filed(doctor, [d])
    assert d1 in r.found(nurse)
    masked = r.new_version(r.actor("patient"), r.leaf(r.actor("patient"), d1),
                           confidentiality_codes=[*d.confidentiality_codes, Code("MASQUE_PS", CONF, "m")])
    assert masked.status == "Success", masked.error_codes
    d2 = r.versions(d.unique_id)[-1]
    assert d2 not in r.found(nurse)
    assert r.remove(nurse, [d2]).error_codes == ["XDSPolicyViolation"]
    assert r.set_status(nurse, d2, "Approved", "Deprecated").error_codes == ["XDSPolicyViolation"]
    assert r.status_of(d2) == "Approved"


def test_a_hidden_relation_blocking_a_removal_is_said_to_exist_not_named(server):
    """ITI-62 of a document an addendum still references answers XDSReferencesExist (ITI TF-2b
    3.62.4.1.3); when the addendum is masked from the remover (another author's MASQUE_PS), the
    answer says that a reference exists, not the entryUUID of the association to the hidden
    document (the relations class of issue 15)."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    [a1] = r.filed(doctor, [r.document("a", DOCTOR)])
    b = r.document("b", NURSE, conf="MASQUE_PS")
    [b1] = r.filed(nurse, [b], [relation(AssociationType.APND, "b", a1)])
    o = schema.registry_objects
    with server.services.registry.read() as conn:
        [hidden] = conn.execute(select(o.c.entry_uuid).where(o.c.kind == "A", o.c.source_uuid == b1,
                                                             o.c.target_uuid == a1)).scalars().all()
    answer = r.remove(doctor, [a1])
    assert set(answer.error_codes) == {"ReferencesExistException"}, answer.error_codes
    said = " ".join(f"{e.get('codeContext')} {e.get('location')}" for e in answer.body.iter(
        "{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryError"))
    assert hidden not in said and b1 not in said, said
    assert r.status_of(a1) == "Approved"


# ============================================================================ hostile updates
def _folder_filed(r: Record, actor) -> str:
    folder = F.folder(r.pid, "fol")
    request = F.submission(r.pid, [], contents=False, folders=[folder])
    reply = r.soap(actor).register(request)
    assert reply.status == "Success", reply.error_codes
    return r.versions(folder.unique_id)[-1], folder.unique_id


def test_a_document_version_on_another_kinds_lineage_is_refused_not_a_crash(server):
    """An ITI-57 DocumentEntry whose lid names a Folder (or a SubmissionSet): a metadata
    error (XDSMetadataUpdateError / XDSMetadataVersionError), never an internal error."""
    r = Record(server)
    doctor = r.actor("doctor")
    [d1] = r.filed(doctor, [r.document("d", DOCTOR)])
    fol, fol_uid = _folder_filed(r, doctor)
    current = r.leaf(doctor, d1)
    new = copy.deepcopy(current)
    new.lid, new.entry_uuid, new.version, new.unique_id = fol, "newversion", "", fol_uid
    for author in new.authors:
        author.classification_id = ""
    reply = r.update(doctor, SubmissionRequest(r.update_set(), [new], [], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
        target_uuid="newversion", submission_set_status="Original", previous_version="1")]))
    assert reply.status == "Failure"
    assert not _internal(reply), reply.error_codes
    assert reply.error_codes and "XDSRegistryError" not in reply.error_codes, reply.error_codes
    assert r.status_of(fol) == "Approved"


def test_a_folder_version_cannot_deprecate_anothers_document(server):
    """A Folder sent as the new version of a DocumentEntry's lineage (its lid and uniqueId):
    the registry must refuse a version of another kind, and in any case only the document's
    author may supersede it. Here a nurse, no author, would deprecate the doctor's document."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    d = r.document("d", DOCTOR)
    [d1] = r.filed(doctor, [d])
    assert d1 in r.found(nurse)
    impostor = Folder(entry_uuid="newversion", unique_id=d.unique_id, patient_id=r.pid, title="pris",
                      codes=[Code("F1", "1.2.3.4.5", "Folder code")], lid=d1)
    reply = r.update(nurse, SubmissionRequest(r.update_set(), [], [impostor], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
        target_uuid="newversion", submission_set_status="Original", previous_version="1")]))
    assert reply.status == "Failure", "a nurse superseded the doctor's document with a Folder"
    assert r.status_of(d1) == "Approved" and r.versions(d.unique_id) == [d1]
    assert r.retrieved(nurse, d.unique_id)


# ============================================================================ unbounded input
def test_a_very_long_objectref_list_is_answered_not_crashed(server):
    """ITI-62 with tens of thousands of ObjectRefs: each unknown one an
    XDSUnresolvedReferenceException (or a bounded refusal), never an internal error from the
    database's bind-parameter limit."""
    r = Record(server)
    refs = [f"urn:uuid:00000000-0000-4000-8000-{n:012d}" for n in range(40000)]
    reply = r.remove(r.actor("doctor"), refs)
    assert reply.status == "Failure"
    assert not _internal(reply), reply.error_codes[:3]


# ============================================================================ ITI-18 parameters
def _find(r: Record, actor, **extra):
    return r.soap(actor).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{r.pid}'"], "$XDSDocumentEntryStatus": EVERY_STATUS[:1], **extra})


def test_a_malformed_time_parameter_is_an_error_not_a_silent_filter(server):
    """ITI-18 time parameters are DTM (digits, UTC, 4 to 14 digits). A value that is not one
    ('2024-01-01', a time zone) must be refused (XDSRegistryError), not compared as text and
    silently answer a wrong (here: empty) result."""
    r = Record(server)
    doctor = r.actor("doctor")
    r.filed(doctor, [r.document("d", DOCTOR)])           # creationTime 20240315093000
    assert len(objects_of(_find(r, doctor, **{"$XDSDocumentEntryCreationTimeFrom": ["2024"]}))) == 1
    for bad in ("2024-01-01", "20240101+0100", "abc"):
        reply = _find(r, doctor, **{"$XDSDocumentEntryCreationTimeFrom": [bad]})
        assert reply.status == "Failure", (bad, len(objects_of(reply)))


def test_author_person_wildcards_and_escapes(server):
    """Held: % and _ are wildcards, a backslash and a doubled quote are literal."""
    r = Record(server)
    doctor = r.actor("doctor")
    r.filed(doctor, [r.document("d", DOCTOR)])
    for pattern, hits in (("'%AUTEUR%'", 1), ("'%AUT_UR%'", 1), ("'%AUT\\_UR%'", 0), ("'%O''B%'", 0),
                          ("'\\%'", 0), ("'%'", 1)):
        reply = _find(r, doctor, **{"$XDSDocumentEntryAuthorPerson": [pattern]})
        assert reply.status == "Success", (pattern, reply.error_codes)
        assert len(objects_of(reply)) == hits, pattern


def test_hidden_documents_stay_hidden_through_get_queries_by_unique_id(server):
    """Held: GetDocuments / GetRelatedDocuments / GetFolderAndContents /
    GetSubmissionSetAndContents naming a masked document (or a set / folder holding only it)."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    m = r.document("m", DOCTOR, conf="MASQUE_PS")
    folder = F.folder(r.pid, "fol")
    request = F.submission(r.pid, [m], contents=False, folders=[folder], extra_associations=[Association(
        entry_uuid="fm", association_type=AssociationType.HAS_MEMBER, source_uuid="fol", target_uuid="m")])
    reply = r.soap(doctor).provide_and_register(request, {"m": b"secret"})
    assert reply.status == "Success", reply.error_codes
    [m1] = r.versions(m.unique_id)
    ss_uid = request.submission_set.unique_id
    for rt in ("LeafClass", "ObjectRef"):
        for name, params in (
            ("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{m.unique_id}')"]}),
            ("GetDocuments", {"$XDSDocumentEntryLogicalID": [f"('{m1}')"]}),
            ("GetDocumentsAndAssociations", {"$XDSDocumentEntryUniqueId": [f"('{m.unique_id}')"]}),
            ("GetFolderAndContents", {"$XDSFolderUniqueId": [f"'{folder.unique_id}'"]}),
            ("GetSubmissionSetAndContents", {"$XDSSubmissionSetUniqueId": [f"'{ss_uid}'"]}),
            ("GetFoldersForDocument", {"$XDSDocumentEntryUniqueId": [f"'{m.unique_id}'"]}),
        ):
            answer = r.soap(nurse).stored_query(name, params, rt)
            assert answer.status == "Success", (name, answer.error_codes)
            text = etree.tostring(answer.body).decode()
            assert bare(m1) not in text and m.unique_id not in text, (name, rt)
