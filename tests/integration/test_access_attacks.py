"""The five classes of attack of issue 15, each tried against a real `partage serve` with
authentication on (SOAP with SAML assertions, FHIR and the page with JWTs), on SQLite and
PostgreSQL; and derived data following its document. The property test
(test_access_property.py) explores the same rules at random; these are the named cases,
including the ones it found.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re

import pytest
import requests
from lxml import etree
from sqlalchemy import select

from partage.access import saml
from partage.access.actor import Actor
from partage.access.credentials import sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.metadata.datatypes import DTM, XCN, XON
from partage.metadata.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    SubmissionRequest,
    SubmissionSet,
)
from partage.query.service import HIDDEN_ROWS_READ
from partage.registry import patients, schema
from partage.registry.access_state import Records
from partage.services import Services
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

CONF = "1.2.250.1.213.1.1.4.13"
ACTORS = sample_actors()
GP, DOCTOR, NURSE = ACTORS["gp"].id, ACTORS["doctor"].id, ACTORS["nurse"].id
HOSPITAL = ACTORS["connector"].structure
STATUS = {s.short: str(s) for s in AvailabilityStatus}
EVERY_STATUS = [f"('{STATUS[s]}')" for s in ("Approved", "Deprecated", "Deleted")]


@contextlib.contextmanager
def _live_server(tmp_path_factory, authority, url, name, env=None):
    """A real `partage serve` with authentication on (the development CA trusted), its services beside it."""
    data = tmp_path_factory.mktemp(name) / "data"
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(LiveServer(data, insecure_dev=False, mllp=False, database_url=url,
                                              extra_args=["--trust", authority.ca_file], env=env))
        live.services = Services.open(Settings(data_dir=data, database_url=url), migrate=False)
        stack.callback(live.services.close)
        live.authority = authority
        yield live


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority, module_database_url):
    with _live_server(tmp_path_factory, authority, module_database_url, "attacks") as live:
        yield live


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory, authority, module_database_url):
    """A second server on the same database, whose stored queries answer at most 3 objects."""
    with _live_server(tmp_path_factory, authority, module_database_url, "attacks-limit",
                      {"PARTAGE_QUERY_RESULT_LIMIT": "3"}) as live:
        yield live


# ============================================================================ helpers
class Record:
    """One patient's record on the live server, and the ways to act on it as any actor."""

    def __init__(self, server, *, consent: bool = True, medecin_traitant: str = GP, pid=None) -> None:
        self.server, self.authority = server, server.authority
        self.pid = pid or F.patient_id()
        with server.services.registry.write() as conn:
            server.services.registry.upsert_patient(conn, [self.pid], {"name": f"NOM{self.pid.id}^Jean",
                                                                       "birth_date": "19790315"})
            self.public_id = patients.record(conn, server.services.registry.patient_pk(conn, self.pid)).fhir_id
        self.records = Records(server.services.registry)
        if consent:
            self.records.open(self.pid, medecin_traitant=medecin_traitant)

    # --- actors ---------------------------------------------------------------------------------
    def actor(self, name: str, **changes) -> Actor:
        actor = sample_actors(self.pid)[name]
        return dataclasses.replace(actor, **changes) if changes else actor

    def soap(self, actor: Actor) -> XdsClient:
        return XdsClient(self.server.base_url,
                         security=lambda: saml.security_header(self.authority.saml_assertion(actor)))

    def get(self, actor: Actor, path: str, **params) -> requests.Response:
        return requests.get(f"{self.server.base_url}{path}", params=params, timeout=30, headers={
            "Authorization": f"Bearer {self.authority.jwt(actor)}", "Accept": "application/fhir+json"})

    def patch(self, actor: Actor, rid: str, operations: list) -> requests.Response:
        return requests.patch(f"{self.server.base_url}/fhir/DocumentReference/{rid}", data=json.dumps(operations),
                              timeout=30, headers={"Authorization": f"Bearer {self.authority.jwt(actor)}",
                                                   "Content-Type": "application/json-patch+json"})

    def delete(self, actor: Actor, rid: str) -> requests.Response:
        return requests.delete(f"{self.server.base_url}/fhir/DocumentReference/{rid}", timeout=30,
                               headers={"Authorization": f"Bearer {self.authority.jwt(actor)}",
                                        "Accept": "application/fhir+json"})

    def last_event(self, actor: Actor, action: str) -> tuple[str, str]:
        """(decision, outcome) of the actor's latest audited request of this action."""
        t = schema.audit_events
        with self.server.services.registry.read() as conn:
            row = conn.execute(select(t.c.decision, t.c.outcome).where(t.c.actor_id == actor.id, t.c.action == action)
                               .order_by(t.c.pk.desc()).limit(1)).first()
        return (row.decision, str(row.outcome)) if row else ("", "")

    # --- documents ------------------------------------------------------------------------------
    def document(self, entry_id: str, author: str, *, conf: str | None = None, klass: str = "10",
                 institution: str = HOSPITAL) -> DocumentEntry:
        doc = F.document(self.pid, entry_id, mime_type="text/plain", title=f"Document {entry_id}",
                         class_code=Code(klass, "1.2.250.1.213.1.1.4.1", "classe"))
        doc.authors[0].person = XCN.parse(f"{author}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
        doc.authors[0].institutions = [XON.parse(f"S^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{institution}")]
        if conf:
            doc.confidentiality_codes = [Code("N", "2.16.840.1.113883.5.25", "Normal"), Code(conf, CONF, conf)]
        return doc

    def file(self, actor: Actor, docs: list[DocumentEntry], relations: list[Association] = ()):
        reply = self.soap(actor).provide_and_register(
            F.submission(self.pid, docs, contents=False, extra_associations=list(relations)),
            {d.entry_uuid: f"contenu de {d.title}".encode() for d in docs})
        return reply

    def filed(self, actor: Actor, docs: list[DocumentEntry], relations: list[Association] = ()) -> list[str]:
        """File and return the entryUUIDs the registry gave (in the order of `docs`)."""
        reply = self.file(actor, docs, relations)
        assert reply.status == "Success", reply.error_codes
        return [self.versions(d.unique_id)[-1] for d in docs]

    def versions(self, uid: str) -> list[str]:
        """Every version's entryUUID of a uniqueId, oldest first (test setup reads the registry)."""
        o = schema.registry_objects
        with self.server.services.registry.read() as conn:
            return list(conn.execute(select(o.c.entry_uuid).where(o.c.unique_id == uid)
                                     .order_by(o.c.version, o.c.pk)).scalars())

    def status_of(self, entry_uuid: str) -> str:
        o = schema.registry_objects
        with self.server.services.registry.read() as conn:
            return conn.execute(select(o.c.status).where(o.c.entry_uuid == entry_uuid)).scalar()

    def update(self, actor: Actor, request: SubmissionRequest):
        client = self.soap(actor)
        submit = etree.Element(f"{{{C.LCM}}}SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
        ebrim.write_object_list(request.objects(), submit)
        return client.call(client.registry, C.ACTION_UPDATE, submit)

    def update_set(self) -> SubmissionSet:
        return SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=self.pid,
                             submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))

    def new_version(self, actor: Actor, current: DocumentEntry, **changes):
        new = copy.deepcopy(current)
        new.lid, new.entry_uuid, new.version = current.lid or current.entry_uuid, "newversion", ""
        for author in new.authors:     # a client's own ebRIM ids, not the ones it read
            author.classification_id = ""
        for key, value in changes.items():
            setattr(new, key, value)
        return self.update(actor, SubmissionRequest(self.update_set(), [new], [], [Association(
            entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
            target_uuid="newversion", submission_set_status="Original", previous_version=current.version or "1")]))

    def set_status(self, actor: Actor, entry_uuid: str, old: str, new: str):
        return self.update(actor, SubmissionRequest(self.update_set(), [], [], [Association(
            entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS, source_uuid="ss",
            target_uuid=entry_uuid, original_status=STATUS[old], new_status=STATUS[new])]))

    def remove(self, actor: Actor, refs: list[str]):
        client = self.soap(actor)
        body = etree.Element(f"{{{C.LCM}}}RemoveObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
        refs_list = etree.SubElement(body, f"{{{C.RIM}}}ObjectRefList")
        for ref in refs:
            etree.SubElement(refs_list, f"{{{C.RIM}}}ObjectRef", id=ref)
        return client.call(client.registry, C.ACTION_REMOVE_METADATA, body)

    def remove_bytes(self, actor: Actor, uid: str):
        client = self.soap(actor)
        body = etree.Element(f"{{{C.RMD}}}RemoveDocumentsRequest", nsmap={"rmd": C.RMD, "xdsb": C.XDSB})
        item = etree.SubElement(body, f"{{{C.XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{C.XDSB}}}RepositoryUniqueId").text = DEFAULT_REPOSITORY_UNIQUE_ID
        etree.SubElement(item, f"{{{C.XDSB}}}DocumentUniqueId").text = uid
        return client.call(client.repository, C.ACTION_REMOVE_DOCUMENTS, body)

    # --- reads ----------------------------------------------------------------------------------
    def query(self, actor: Actor, name: str, params: dict, return_type: str = "LeafClass"):
        reply = self.soap(actor).stored_query(name, params, return_type)
        assert reply.status == "Success", (name, reply.error_codes)
        return reply

    def found(self, actor: Actor, statuses: list[str] = EVERY_STATUS) -> set[str]:
        """The entryUUIDs FindDocuments gives this actor."""
        reply = self.query(actor, "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{self.pid}'"],
                                                    "$XDSDocumentEntryStatus": statuses})
        return {o.entry_uuid for o in objects_of(reply)}

    def leaf(self, actor: Actor, entry_uuid: str) -> DocumentEntry:
        [doc] = objects_of(self.query(actor, "GetDocuments", {"$XDSDocumentEntryEntryUUID": [f"('{entry_uuid}')"]}))
        return doc

    def retrieved(self, actor: Actor, uid: str) -> bool:
        reply, documents = self.soap(actor).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [uid])
        return bool(documents.get(uid))

    def readable(self, actor: Actor, entry_uuid: str) -> tuple[int, int]:
        """(DocumentReference read, Binary) status codes for this version."""
        rid = entry_uuid.removeprefix("urn:uuid:")
        return (self.get(actor, f"/fhir/DocumentReference/{rid}").status_code,
                self.get(actor, f"/fhir/Binary/{rid}").status_code)


def bare(entry_uuid: str) -> str:
    return entry_uuid.removeprefix("urn:uuid:")


def names(reply, *secrets: str) -> list[str]:
    """Which of these ids or uniqueIds the answer contains."""
    text = etree.tostring(reply.body).decode()
    return [s for s in secrets if bare(s) in text]


def ids_of(reply) -> list[str]:
    """The ids of an AdhocQueryResponse's objects (any return type, any number of SubmissionSets)."""
    found = reply.body.find(f"{{{C.RIM}}}RegistryObjectList")
    return [child.get("id") for child in found] if found is not None else []


def relation(kind: AssociationType, source: str, target: str) -> Association:
    return Association(entry_uuid=f"rel-{source}", association_type=kind, source_uuid=source, target_uuid=target)


# ============================================================================ 1. masked after filing
def test_masking_after_filing_hides_every_previous_version(server):
    r = Record(server)
    doctor, nurse, gp, patient = r.actor("doctor"), r.actor("nurse"), r.actor("gp"), r.actor("patient")
    d = r.document("d", DOCTOR)
    [d1] = r.filed(doctor, [d])
    assert r.found(nurse) == {d1} and r.retrieved(nurse, d.unique_id) and r.readable(nurse, d1) == (200, 200)

    # the patient masks it by a new version (ITI-57), sent with the client's own ebRIM ids
    masked = r.new_version(patient, r.leaf(patient, d1),
                           confidentiality_codes=[*d.confidentiality_codes, Code("MASQUE_PS", CONF, "masqué")])
    assert masked.status == "Success", masked.error_codes
    d1_, d2 = r.versions(d.unique_id)
    assert d1_ == d1 and r.status_of(d1) == "Deprecated"
    # the old version is hidden too: by its uniqueId, its id, a query for Deprecated entries
    assert r.found(nurse) == set()
    assert not r.retrieved(nurse, d.unique_id)
    assert r.readable(nurse, d1) == (404, 404)
    assert objects_of(r.query(nurse, "GetDocuments", {"$XDSDocumentEntryEntryUUID": [f"('{d1}')"]})) == []
    mhd = r.get(nurse, "/fhir/DocumentReference", **{"patient.identifier": F.token(r.pid),
                                                      "status": "current,superseded"}).json()
    assert mhd["total"] == 0 and d.unique_id not in json.dumps(mhd)
    assert r.found(gp) == {d1, d2}     # the médecin traitant sees masked documents

    # masking by a FHIR PATCH of the author (INVISIBLE_PATIENT): the patient loses the old version
    e = r.document("e", DOCTOR)
    [e1] = r.filed(doctor, [e])
    assert r.readable(patient, e1) == (200, 200)
    labels = r.get(doctor, f"/fhir/DocumentReference/{bare(e1)}").json().get("securityLabel", [])
    patched = r.patch(doctor, bare(e1), [{"op": "replace", "path": "/securityLabel", "value": [
        *labels, {"coding": [{"system": f"urn:oid:{CONF}", "code": "INVISIBLE_PATIENT"}]}]}])
    assert patched.status_code == 200, patched.text
    assert r.readable(patient, e1) == (404, 404) and not r.retrieved(patient, e.unique_id)
    assert e1 not in r.found(patient)

    # masking by replacement: the replaced version is hidden with its masked replacement
    f, f2 = r.document("f", DOCTOR), r.document("f2", DOCTOR, conf="MASQUE_PS")
    [f1] = r.filed(doctor, [f])
    r.filed(doctor, [f2], [relation(AssociationType.RPLC, "f2", f1)])
    assert r.readable(nurse, f1) == (404, 404) and not r.retrieved(nurse, f.unique_id)
    assert f1 not in r.found(nurse)


def test_the_newest_version_decides_even_when_deprecated_or_not_alone(server):
    """Found by the property test: a lineage whose newest version was deprecated by a status
    update, and a replaced version set back to Approved beside its masked replacement."""
    r = Record(server)
    doctor, nurse, guardian = r.actor("doctor"), r.actor("nurse"), r.actor("guardian")
    g = r.document("g", DOCTOR)
    [g1] = r.filed(doctor, [g])
    hidden = r.new_version(doctor, r.leaf(doctor, g1), confidentiality_codes=[
        *g.confidentiality_codes, Code("INVISIBLE_REPRESENTANTS_LEGAUX", CONF, "invisible")])
    assert hidden.status == "Success", hidden.error_codes
    g2 = r.versions(g.unique_id)[-1]
    assert r.set_status(doctor, g2, "Approved", "Deprecated").status == "Success"
    assert r.readable(guardian, g1) == (404, 404) and not r.retrieved(guardian, g.unique_id)
    assert r.found(guardian) == set()

    h, h2 = r.document("h", DOCTOR), r.document("h2", DOCTOR, conf="MASQUE_PS")
    [h1] = r.filed(doctor, [h])
    r.filed(doctor, [h2], [relation(AssociationType.RPLC, "h2", h1)])
    back = r.set_status(doctor, h1, "Deprecated", "Approved")
    assert back.status == "Success", back.error_codes
    assert r.status_of(h1) == "Approved"
    assert h1 not in r.found(nurse) and not r.retrieved(nurse, h.unique_id)
    assert r.readable(nurse, h1) == (404, 404)


def test_a_document_moved_to_another_patient_and_masked_there_hides_the_versions_left_behind(server):
    """ITI-57 may move a document to another patient (a filing error corrected: the new
    version names the right patient, the old one stays, Deprecated, in the first record). A
    masking of the moved document must hide the versions left behind too: a lineage's newest
    versions are looked for with every patient that holds one, not only the queried one's."""
    a, b = Record(server), Record(server)
    d = a.document("d", DOCTOR)
    [d1] = a.filed(a.actor("doctor"), [d])
    moved = copy.deepcopy(a.leaf(a.actor("doctor"), d1))
    moved.lid, moved.entry_uuid, moved.version, moved.patient_id = d1, "newversion", "", b.pid
    for author in moved.authors:
        author.classification_id = ""
    reply = b.update(b.actor("doctor"), SubmissionRequest(b.update_set(), [moved], [], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss", target_uuid="newversion",
        submission_set_status="Original", previous_version="1")]))
    assert reply.status == "Success", reply.error_codes
    d1_, d2 = a.versions(d.unique_id)
    assert d1_ == d1 and a.status_of(d1) == "Deprecated"
    assert a.found(a.actor("nurse")) == {d1} and b.found(b.actor("nurse")) == {d2}   # nothing masked yet
    masked = b.new_version(b.actor("patient"), b.leaf(b.actor("patient"), d2),
                           confidentiality_codes=[*d.confidentiality_codes, Code("MASQUE_PS", CONF, "masqué")])
    assert masked.status == "Success", masked.error_codes
    nurse = a.actor("nurse")
    assert a.found(nurse) == set() and b.found(b.actor("nurse")) == set()
    assert a.readable(nurse, d1) == (404, 404) and not a.retrieved(nurse, d.unique_id)
    assert objects_of(a.query(nurse, "GetDocuments", {"$XDSDocumentEntryEntryUUID": [f"('{d1}')"]})) == []
    assert a.found(a.actor("gp")) == {d1}   # the médecin traitant of both records sees them
    assert len(b.found(b.actor("gp"))) == 2


# ============================================================================ 2. destructive actions
def test_only_authors_change_documents(server):
    r = Record(server)
    doctor, nurse, gp, patient = r.actor("doctor"), r.actor("nurse"), r.actor("gp"), r.actor("patient")
    pharmacist = r.actor("pharmacist")
    elsewhere = dataclasses.replace(r.actor("connector"), id="10Z0000009", structure="10Z0000009")
    d, m = r.document("d", DOCTOR), r.document("m", DOCTOR, conf="MASQUE_PS")
    d1, m1 = r.filed(doctor, [d, m])
    before = {d1: "Approved", m1: "Approved"}

    def refused(reply, *hidden_uids):
        assert reply.status == "Failure" and reply.error_codes == ["XDSPolicyViolation"], reply.error_codes
        assert not names(reply, *hidden_uids), "a refusal names the document"
        assert {u: r.status_of(u) for u in before} == before

    # replacing another's document, masked ones included (the target's author is asked)
    refused(r.file(nurse, [r.document("n1", NURSE)], [relation(AssociationType.RPLC, "n1", d1)]))
    refused(r.file(r.actor("emergency", purpose="normal", reason=""), [r.document("x1", ACTORS["emergency"].id)],
                   [relation(AssociationType.RPLC, "x1", m1)]), m.unique_id)
    refused(r.file(patient, [r.document("p1", r.pid.id, klass="90")], [relation(AssociationType.RPLC, "p1", d1)]))
    refused(r.file(gp, [r.document("g1", GP)], [relation(AssociationType.XFRM, "g1", d1)]))
    # status changes, new versions, removals by anyone but the author
    for who in (gp, pharmacist, elsewhere):
        refused(r.set_status(who, d1, "Approved", "Deprecated"))
    refused(r.set_status(gp, m1, "Approved", "Deleted"), m.unique_id)
    refused(r.new_version(gp, r.leaf(gp, d1), title="changé par un autre"))
    refused(r.remove(gp, [d1]))
    refused(r.remove_bytes(gp, d.unique_id))
    # relating another's document by an update (ITI-57 SubmitAssociation)
    [n1] = r.filed(nurse, [r.document("n2", NURSE)])
    link = Association(entry_uuid="link", association_type=AssociationType.RPLC, source_uuid=n1, target_uuid=d1)
    refused(r.update(nurse, SubmissionRequest(r.update_set(), [], [], [link])))
    # PDSm PATCH by another doctor who sees the document: 403, nothing changed
    for operations in ([{"op": "replace", "path": "/status", "value": "entered-in-error"}],
                       [{"op": "add", "path": "/securityLabel/-",
                         "value": {"coding": [{"system": f"urn:oid:{CONF}", "code": "MASQUE_PS"}]}}]):
        answer = r.patch(gp, bare(d1), operations)
        assert answer.status_code == 403 and answer.json()["resourceType"] == "OperationOutcome", answer.text
    assert {u: r.status_of(u) for u in before} == before and len(r.versions(d.unique_id)) == 1
    # FHIR DELETE by anyone but the author: 403 OperationOutcome, audited, nothing changed; a
    # document the actor may not see answers as an unknown one
    for who, rid, code in ((gp, d1, 403), (nurse, d1, 403), (patient, d1, 403), (nurse, m1, 404),
                           (pharmacist, d1, 404), (elsewhere, d1, 404)):   # class 10, another structure
        deleted = r.delete(who, bare(rid))
        assert deleted.status_code == code and deleted.json()["resourceType"] == "OperationOutcome", deleted.text
        assert m.unique_id not in deleted.text and d.unique_id not in deleted.text
        decision, outcome = r.last_event(who, "PDSm-delete")
        assert outcome == "4" and (decision == "deny") == (code == 403), (who.name, decision, outcome)
    assert {u: r.status_of(u) for u in before} == before

    # the author replaces, deletes, still reads, and removes their own
    d2 = r.document("d2", DOCTOR)
    [d2_] = r.filed(doctor, [d2], [relation(AssociationType.RPLC, "d2", d1)])
    assert r.status_of(d1) == "Deprecated"
    assert r.set_status(doctor, d2_, "Approved", "Deleted").status == "Success"
    assert d2_ in r.found(doctor) and d2_ not in r.found(nurse) and d2_ not in r.found(gp)
    assert r.readable(doctor, d2_) == (200, 200) and r.readable(gp, d2_) == (404, 404)
    assert r.remove_bytes(doctor, d2.unique_id).status == "Success"
    assert r.patch(doctor, bare(m1), [{"op": "replace", "path": "/status", "value": "entered-in-error"}]) \
        .status_code == 200
    assert r.status_of(m1) == "Deleted"
    # and deletes with FHIR DELETE: a tombstone (status Deleted), still the author's to read
    [e1] = r.filed(doctor, [r.document("e", DOCTOR)])
    assert r.delete(doctor, bare(e1)).status_code == 204 and r.status_of(e1) == "Deleted"
    assert r.last_event(doctor, "PDSm-delete") == ("permit", "0")
    assert r.get(doctor, f"/fhir/DocumentReference/{bare(e1)}").json()["status"] == "entered-in-error"
    assert r.get(gp, f"/fhir/DocumentReference/{bare(e1)}").status_code == 404
    assert r.delete(doctor, bare(e1)).status_code == 204 and r.status_of(e1) == "Deleted"


def test_removing_a_relation_needs_the_authors_of_both_documents(server):
    """ITI-62 of an association changes the documents it links: the author of one of them
    may not remove another's replacement of it."""
    r = Record(server)
    doctor, connector = r.actor("doctor"), r.actor("connector")
    [a1] = r.filed(doctor, [r.document("a", DOCTOR)])
    replacement = r.document("a2", "810000000099")       # written at the hospital by someone else
    r.filed(connector, [replacement], [relation(AssociationType.RPLC, "a2", a1)])
    reply = r.query(doctor, "GetAssociations", {"$uuid": [f"('{a1}')"]})
    [rplc] = [o.entry_uuid for o in objects_of(reply)
              if getattr(o, "association_type", "") == AssociationType.RPLC]
    refused = r.remove(doctor, [rplc])
    assert refused.error_codes == ["XDSPolicyViolation"]
    assert r.remove(connector, [rplc]).status == "Success"    # the hospital authored both


# ============================================================================ 3. relations
def test_hidden_documents_are_not_named_through_relations(server):
    r = Record(server)
    doctor, nurse, gp = r.actor("doctor"), r.actor("nurse"), r.actor("gp")
    [a1] = r.filed(doctor, [r.document("a", DOCTOR)])
    b = r.document("b", DOCTOR, conf="MASQUE_PS")           # a masked addendum of a visible document
    [b1] = r.filed(doctor, [b], [relation(AssociationType.APND, "b", a1)])
    # a hidden document replaced by a visible one (of a class the nurse reads: a replacement of
    # a MASQUE_PS document keeps the mask, test_lifecycle_masks_round5.py)
    x = r.document("x", DOCTOR, klass="31")
    [x1] = r.filed(doctor, [x])
    [x2] = r.filed(doctor, [r.document("x2", DOCTOR)], [relation(AssociationType.RPLC, "x2", x1)])
    k = r.document("k", DOCTOR, conf="MASQUE_PS")           # a masked document beside a visible one
    [_, k1] = r.filed(doctor, [r.document("j", DOCTOR), k])
    hidden = [b1, b.unique_id, x1, x.unique_id, k1, k.unique_id]
    every_relation = [f"('{t}')" for t in AssociationType if t.is_relationship]

    for return_type in ("LeafClass", "ObjectRef"):
        for name, params in [
            ("GetAssociations", {"$uuid": [f"('{a1}')"]}),          # only the visible end's id
            ("GetAssociations", {"$uuid": [f"('{x2}')"]}),
            ("GetDocumentsAndAssociations", {"$XDSDocumentEntryEntryUUID": [f"('{a1}')"]}),
            ("GetDocumentsAndAssociations", {"$XDSDocumentEntryEntryUUID": [f"('{x2}')"]}),
            ("GetRelatedDocuments", {"$XDSDocumentEntryEntryUUID": [f"'{a1}'"], "$AssociationTypes": every_relation}),
            ("GetRelatedDocuments", {"$XDSDocumentEntryEntryUUID": [f"'{x2}'"], "$AssociationTypes": every_relation}),
            ("GetSubmissionSets", {"$uuid": [f"('{a1}')"]}),
            ("GetAll", {"$patientId": [f"'{r.pid}'"], "$XDSDocumentEntryStatus": EVERY_STATUS,
                        "$XDSSubmissionSetStatus": EVERY_STATUS[:1], "$XDSFolderStatus": EVERY_STATUS[:1]}),
        ]:
            reply = r.query(nurse, name, params, return_type)
            assert not names(reply, *hidden), (name, return_type, names(reply, *hidden))
        # asking about the hidden document answers as about an unknown one
        for name, params in [("GetSubmissionSets", {"$uuid": [f"('{b1}')"]}),
                             ("GetSubmissionSets", {"$uuid": [f"('{k1}')"]}),    # its set is visible, not it
                             ("GetAssociations", {"$uuid": [f"('{k1}')"]}),
                             ("GetAssociations", {"$uuid": [f"('{b1}')"]}),
                             ("GetRelatedDocuments", {"$XDSDocumentEntryEntryUUID": [f"'{b1}'"],
                                                      "$AssociationTypes": every_relation}),
                             ("GetFoldersForDocument", {"$XDSDocumentEntryEntryUUID": [f"'{b1}'"]})]:
            assert ids_of(r.query(nurse, name, params, return_type)) == [], name
    related = r.query(nurse, "GetRelatedDocuments", {"$XDSDocumentEntryEntryUUID": [f"'{a1}'"],
                                                     "$AssociationTypes": every_relation})
    assert objects_of(related) == []          # its only relation leads to a hidden document
    for rid in (a1, x2):
        resource = r.get(nurse, f"/fhir/DocumentReference/{bare(rid)}").json()
        assert not resource.get("relatesTo") and b.unique_id not in json.dumps(resource)
    sets = r.query(nurse, "FindSubmissionSets", {"$XDSSubmissionSetPatientId": [f"'{r.pid}'"],
                                                "$XDSSubmissionSetStatus": EVERY_STATUS[:1]})
    lists = r.get(nurse, "/fhir/List", **{"patient.identifier": F.token(r.pid), "status": "current"}).json()
    assert len(ids_of(sets)) == lists["total"] == 3     # a's, x2's, j's; not b's nor x's
    # the médecin traitant sees the relations
    assert b1 in {o.entry_uuid for o in objects_of(r.query(gp, "GetRelatedDocuments", {
        "$XDSDocumentEntryEntryUUID": [f"'{a1}'"], "$AssociationTypes": every_relation}))}


# ============================================================================ 4. identity
def test_refused_actors_learn_nothing_of_the_patient(server):
    r = Record(server)
    r.records.block(r.pid, NURSE)
    [_] = r.filed(r.actor("doctor"), [r.document("a", DOCTOR)])
    unknown = "0" * 32
    secrets = (f"NOM{r.pid.id}", r.pid.id, "1979")
    for who in (r.actor("occupational"), r.actor("nurse"), dataclasses.replace(r.actor("gp"), patient_id=F.patient_id())):
        page = r.get(who, f"/dossier/{r.public_id}")
        assert page.status_code == 403 and not any(s in page.text for s in secrets), who.name
        summary = r.get(who, f"/fhir/Patient/{r.public_id}/$summary")
        assert summary.status_code == 404 and not any(s in summary.text for s in secrets)
        same = r.get(who, f"/fhir/Patient/{unknown}/$summary")
        assert summary.json()["issue"][0]["code"] == same.json()["issue"][0]["code"]
        assert r.get(who, f"/fhir/Patient/{r.public_id}").status_code == 404
    no_consent = Record(server, consent=False)
    page = no_consent.get(no_consent.actor("gp"), f"/dossier/{no_consent.public_id}")
    assert page.status_code == 403 and f"NOM{no_consent.pid.id}" not in page.text
    # ids are opaque: random, never the database's sequence
    assert re.fullmatch(r"[0-9a-f]{32}", r.public_id) and r.public_id != no_consent.public_id
    gp = r.actor("gp")
    for guess in ("1", "2", "pk-1", "pk-2", r.pid.id):
        assert r.get(gp, f"/dossier/{guess}").status_code == 404
        assert r.get(gp, f"/fhir/Patient/{guess}").status_code == 404
        assert r.get(gp, f"/fhir/Patient/{guess}/$summary").status_code == 404
    assert r.get(gp, f"/dossier/{r.public_id}").status_code == 200


def test_a_filtered_page_says_so_without_saying_what(server):
    r = Record(server)
    doctor = r.actor("doctor")
    r.filed(doctor, [r.document("open", DOCTOR), r.document("masked", DOCTOR, conf="MASQUE_PS"),
                     r.document("later", DOCTOR, conf="INVISIBLE_PATIENT")])
    notice = "Certains documents de ce dossier ne vous sont pas accessibles."
    nurse_page = r.get(r.actor("nurse"), f"/dossier/{r.public_id}").text
    assert notice in nurse_page and "Document masked" not in nurse_page and "Document open" in nurse_page
    assert notice not in r.get(r.actor("gp"), f"/dossier/{r.public_id}").text     # sees everything
    patient_page = r.get(r.actor("patient"), f"/dossier/{r.public_id}").text
    assert notice not in patient_page and "Document later" not in patient_page     # not told of it


# ============================================================================ 5. the patient's trail
def test_the_patients_trail_names_no_hidden_document(server):
    r = Record(server)
    doctor, gp, patient = r.actor("doctor"), r.actor("gp"), r.actor("patient")
    n, h = r.document("n", DOCTOR), r.document("h", DOCTOR, conf="INVISIBLE_PATIENT")
    r.filed(doctor, [n, h])
    alone = r.document("alone", DOCTOR, conf="INVISIBLE_PATIENT")    # filed on its own: its event says only that
    r.filed(doctor, [alone])
    assert r.retrieved(gp, n.unique_id) and r.retrieved(gp, h.unique_id) and r.retrieved(gp, alone.unique_id)
    trail = r.get(patient, "/fhir/AuditEvent")
    assert trail.status_code == 200
    bundle = trail.json()
    text = json.dumps(bundle)
    assert n.unique_id in text
    assert h.unique_id not in text and alone.unique_id not in text
    assert "withheld" not in text and "outcomeDesc" not in text
    assert bundle["total"] == len(bundle.get("entry", []))
    imports = [e for e in bundle.get("entry", []) if e["resource"]["subtype"][0]["code"] == "ITI-41"]
    assert len(imports) == 1, "the filing of a document the patient may not see is not shown"
    reads = [e["resource"] for e in bundle.get("entry", []) if e["resource"]["subtype"][0]["code"] == "ITI-43"]
    assert [[x["what"]["identifier"]["value"] for x in e["entity"] if x["type"]["code"] == "2"]
            for e in reads] == [[f"urn:oid:{n.unique_id}"]], "the reads of hidden documents are not shown"
    assert n.unique_id in r.get(patient, f"/fhir/AuditEvent/{reads[0]['id']}").text
    admin = json.dumps(r.get(r.actor("auditor"), "/fhir/AuditEvent",
                             **{"patient.identifier": F.token(r.pid)}).json())
    assert h.unique_id in admin and alone.unique_id in admin      # the administrator's trail is whole
    assert r.get(r.actor("doctor"), "/fhir/AuditEvent").status_code == 403


# ============================================================================ derived data
@pytest.mark.corpus
def test_a_deleted_documents_facts_vanish(server):
    from tests import clinical_support as CS
    from tests.conftest import corpus_path

    nir = str(279035121600000 + int(F.oid().rsplit(".", 1)[-1]) % 99999)
    r = Record(server, pid=CS.patient_cx(nir))
    doctor, gp = r.actor("doctor"), r.actor("gp")
    author = [Author(person=XCN.parse(f"{DOCTOR}^CARDIOLOGUE^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"))]
    cda = CS.for_patient(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), nir, author=DOCTOR)
    request = CS.submission(cda, "tsh", authors=author)
    reply = r.soap(doctor).provide_and_register(request, {"tsh": cda})
    assert reply.status == "Success", reply.error_codes
    [tsh] = r.versions(request.documents[0].unique_id)

    def seen(who) -> tuple[int, bool, int]:
        observations = r.get(who, "/fhir/Observation", patient=f"Patient/{r.public_id}",
                             code="http://loinc.org|3016-3")
        summary = r.get(who, f"/fhir/Patient/{r.public_id}/$summary")
        search = r.get(who, "/fhir/DocumentReference", patient=f"Patient/{r.public_id}", _content="thyréostimuline")
        return observations.json()["total"], "3016-3" in summary.text, search.json()["total"]

    assert seen(gp) == seen(doctor) == (1, True, 1)
    assert r.set_status(doctor, tsh, "Approved", "Deleted").status == "Success"
    assert tsh in r.found(doctor)                     # the author still sees the deleted document...
    assert seen(gp) == seen(doctor) == (0, False, 0)  # ...but its facts are gone from every view
    # ITI-62 by the author: its derived rows go in the same transaction
    reply = r.query(doctor, "GetAssociations", {"$uuid": [f"('{tsh}')"]})
    links = [o.entry_uuid for o in objects_of(reply)]
    sets = [o.source_uuid for o in objects_of(reply) if getattr(o, "source_uuid", "") != tsh]
    assert r.remove(doctor, [tsh, *links, *sets]).status == "Success"
    with server.services.registry.read() as conn:
        for table in (schema.clinical_facts, schema.document_text):
            assert conn.execute(select(table.c.pk).where(table.c.doc_lid == tsh)).first() is None, table.name


def test_another_patients_hidden_document_answers_as_unknown(server):
    """A Get query naming a document of another patient that the actor may not see answers as
    if the id were unknown: no XDSResultNotSinglePatient saying that it exists elsewhere."""
    mine, theirs = Record(server), Record(server)
    theirs.records.block(theirs.pid, NURSE)
    nurse = mine.actor("nurse")
    [a1] = mine.filed(mine.actor("doctor"), [mine.document("a", DOCTOR)])
    [b1] = theirs.filed(theirs.actor("doctor"), [theirs.document("b", DOCTOR)])
    unknown = "urn:uuid:00000000-0000-4000-8000-000000000000"
    for other in (b1, unknown):
        for name, slot in (("GetDocuments", "$XDSDocumentEntryEntryUUID"), ("GetAssociations", "$uuid"),
                           ("GetDocumentsAndAssociations", "$XDSDocumentEntryEntryUUID"),
                           ("GetSubmissionSets", "$uuid")):
            reply = mine.soap(nurse).stored_query(name, {slot: [f"('{a1}')", f"('{other}')"]})
            assert reply.status == "Success" and ids_of(reply), (name, reply.error_codes)
            assert not names(reply, b1), name
    both = mine.soap(mine.actor("gp")).stored_query("GetDocuments", {
        "$XDSDocumentEntryEntryUUID": [f"('{a1}')", f"('{b1}')"]})
    assert both.error_codes == ["XDSResultNotSinglePatient"]     # who sees both is told


def test_a_blocked_author_may_not_move_a_document_to_another_record(server):
    """A new version naming another patient moves the document (ITI-57): the record it leaves
    must be open to the author too."""
    a, b = Record(server), Record(server)
    doctor = a.actor("doctor")
    d = a.document("d", DOCTOR)
    [d1] = a.filed(doctor, [d])
    a.records.block(a.pid, DOCTOR)
    current = a.leaf(a.actor("gp"), d1)
    moved = copy.deepcopy(current)
    moved.patient_id = moved.source_patient_id = b.pid
    moved.lid, moved.entry_uuid, moved.version = current.lid or current.entry_uuid, "newversion", ""
    reply = b.update(b.actor("doctor"), SubmissionRequest(b.update_set(), [moved], [], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss", target_uuid="newversion",
        submission_set_status="Original", previous_version=current.version or "1")]))
    assert reply.error_codes == ["XDSPolicyViolation"]
    assert a.versions(d.unique_id) == [d1] and a.status_of(d1) == "Approved"


def test_the_result_limit_counts_only_what_the_actor_may_see(small_limit_server):
    """XDSTooManyResults is judged on what the actor may see: counted before the gate, it
    would tell a nurse that masked documents exist (and, narrowing the filters, how many)."""
    server = small_limit_server
    approved = {"$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]}
    plain, masked = Record(server), Record(server)
    plain.filed(plain.actor("doctor"), [plain.document("a", DOCTOR), plain.document("b", DOCTOR)])
    masked.filed(masked.actor("doctor"), [masked.document("a", DOCTOR), masked.document("b", DOCTOR),
                                          masked.document("x", DOCTOR, conf="MASQUE_PS"),
                                          masked.document("y", DOCTOR, conf="MASQUE_PS")])
    for r in (plain, masked):
        reply = r.soap(r.actor("nurse")).stored_query("FindDocuments", {
            "$XDSDocumentEntryPatientId": [f"'{r.pid}'"], **approved})
        assert reply.status == "Success", (r is masked, reply.error_codes)
        assert len(objects_of(reply)) == 2
    reply = masked.soap(masked.actor("doctor")).stored_query("FindDocuments", {   # the author sees all 4
        "$XDSDocumentEntryPatientId": [f"'{masked.pid}'"], **approved})
    assert reply.error_codes == ["XDSTooManyResults"]
    many = Record(server)
    many.filed(many.actor("doctor"), [many.document(n, DOCTOR) for n in "abcd"])
    reply = many.soap(many.actor("nurse")).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{many.pid}'"], **approved})
    assert reply.error_codes == ["XDSTooManyResults"]
    # What one query reads stays bounded: past HIDDEN_ROWS_READ x the limit of matching rows
    # (here 31), the query is too broad whoever asks, the nurse who sees 1 of them included.
    assert HIDDEN_ROWS_READ * 3 + 1 == 31
    huge = Record(server)
    huge.filed(huge.actor("doctor"), [huge.document("seen", DOCTOR)]
               + [huge.document(f"h{n}", DOCTOR, conf="MASQUE_PS") for n in range(30)])
    reply = huge.soap(huge.actor("nurse")).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{huge.pid}'"], **approved})
    assert reply.error_codes == ["XDSTooManyResults"]
