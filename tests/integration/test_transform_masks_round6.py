"""Transforms and the one visibility decision, round 6 (issues 7, 15), against a real `partage
serve` with authentication on.

A transform (XFRM, IHE ITI TF-3 4.2.2: "a transformation of the original document", e.g. the
PDF rendering of a CDA) is the same content in another format. docs/access.md judged it "on its
own", by its own codes only, so:
- a transform filed without the MASQUE_PS of the document the patient masked showed the masked
  content to every professional (ITI-18, ITI-43, MHD ITI-67 / ITI-68, the page);
- masking a document after its transform was filed left the transform visible;
- likewise a document INVISIBLE_PATIENT / INVISIBLE_REPRESENTANTS_LEGAUX whose transform is not,
  and a document hidden by the role x class table whose transform has another class.
A transform is visible only when the document it transforms (judged with its lineage) is visible
too (docs/access.md, "Visibility: one decision on the whole result"); an addendum (APND), other
content, stays judged on its own. The view learns which documents are transforms from
registry.lineages (no extra statement for a patient without transforms; migration 0019 and fsck
for the transforms filed before).
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete

from partage import fsck
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.metadata.model import Association, AssociationType, Code
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import lineages, schema
from partage.registry import queries as Q
from tests import factories as F
from tests.integration.test_access_attacks import (
    CONF,
    DOCTOR,
    Record,
    _live_server,
    relation,
)
from tests.integration.test_lineages import _down_and_up
from tests.integration.test_query_costs import _current, _ingest, _patient, _Statements

MASQUE = Code("MASQUE_PS", CONF, "masqué")
LP = schema.lineage_patients


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority):
    with _live_server(tmp_path_factory, authority, "", "transforms6") as live:
        yield live


def _mhd(r: Record, actor) -> str:
    """The actor's ITI-67 search of every status, as text (what it names)."""
    found = r.get(actor, "/fhir/DocumentReference", **{"patient.identifier": F.token(r.pid),
                                                        "status": "current,superseded,entered-in-error"})
    assert found.status_code == 200, found.text
    return json.dumps(found.json())


def _shown(r: Record, actor, entry_uuid: str, unique_id: str, title: str) -> dict[str, bool]:
    """Whether each door shows this document to the actor."""
    mhd = _mhd(r, actor)
    page = r.get(actor, f"/dossier/{r.public_id}")
    return {
        "ITI-18 FindDocuments": entry_uuid in r.found(actor),
        "ITI-18 GetDocuments": bool(r.query(actor, "GetDocuments", {
            "$XDSDocumentEntryEntryUUID": [f"('{entry_uuid}')"]}).body.findall(".//{*}ExtrinsicObject")),
        "ITI-43": r.retrieved(actor, unique_id),
        "ITI-67": unique_id in mhd or entry_uuid.removeprefix("urn:uuid:") in mhd,
        "ITI-67 read / ITI-68": r.readable(actor, entry_uuid) != (404, 404),
        "page": page.status_code == 200 and title in page.text,
    }


def _hidden(r: Record, actor, entry_uuid: str, unique_id: str, title: str) -> None:
    shown = _shown(r, actor, entry_uuid, unique_id, title)
    assert not any(shown.values()), f"the transform of a hidden document is shown: {shown}"


def _visible(r: Record, actor, entry_uuid: str, unique_id: str, title: str) -> None:
    shown = _shown(r, actor, entry_uuid, unique_id, title)
    assert all(v for k, v in shown.items() if k != "page"), shown


def _transform(r: Record, actor, entry_id: str, author: str, target: str, **kwargs):
    t = r.document(entry_id, author, **kwargs)
    [t1] = r.filed(actor, [t], [relation(AssociationType.XFRM, entry_id, target)])
    return t, t1


# ============================================================================ 1. filed unmasked
def test_a_transform_of_a_document_the_patient_masked_is_masked_too(server):
    r = Record(server)
    doctor, nurse, gp, patient = r.actor("doctor"), r.actor("nurse"), r.actor("gp"), r.actor("patient")
    [d1] = r.filed(doctor, [r.document("cdamasque", DOCTOR, conf="MASQUE_PS")])
    t, t1 = _transform(r, doctor, "pdfmasque", DOCTOR, d1)
    assert r.found(nurse) == set(), "the PDF rendering of the masked CDA is shown to the nurse"
    _hidden(r, nurse, t1, t.unique_id, "Document pdfmasque")
    # whoever sees the masked document sees its transform
    for who in (doctor, gp, patient):
        _visible(r, who, t1, t.unique_id, "Document pdfmasque")
    # an addendum (APND) is other content: still judged on its own
    a = r.document("apndmasque", DOCTOR)
    [a1] = r.filed(doctor, [a], [relation(AssociationType.APND, "apndmasque", d1)])
    assert r.found(nurse) == {a1}
    _visible(r, nurse, a1, a.unique_id, "Document apndmasque")


# ============================================================================ 2. masked afterwards
def test_masking_a_document_hides_the_transform_filed_before(server):
    r = Record(server)
    doctor, nurse, patient = r.actor("doctor"), r.actor("nurse"), r.actor("patient")
    d = r.document("cdalater", DOCTOR)
    [d1] = r.filed(doctor, [d])
    t, t1 = _transform(r, doctor, "pdflater", DOCTOR, d1)
    assert r.found(nurse) == {d1, t1}
    masked = r.new_version(patient, r.leaf(patient, d1), confidentiality_codes=[*d.confidentiality_codes, MASQUE])
    assert masked.status == "Success", masked.error_codes
    assert r.found(nurse) == set(), "the transform kept showing the document the patient masked"
    _hidden(r, nurse, t1, t.unique_id, "Document pdflater")
    # the patient lifts the mask: the transform is shown again
    current = r.leaf(patient, r.versions(d.unique_id)[-1])
    unmasked = r.new_version(patient, current, confidentiality_codes=[
        c for c in current.confidentiality_codes if c.code != MASQUE.code])
    assert unmasked.status == "Success", unmasked.error_codes
    _visible(r, nurse, t1, t.unique_id, "Document pdflater")


def test_a_transform_of_a_transform_and_a_new_version_of_a_transform_follow_the_original(server):
    """The rule follows the chain (a transform of a transform) and the logical document (an
    ITI-57 new version of the transform, whose XFRM association names its first version)."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    [d1] = r.filed(doctor, [r.document("cdachain", DOCTOR, conf="MASQUE_PS")])
    t, t1 = _transform(r, doctor, "pdfchain", DOCTOR, d1)
    u, u1 = _transform(r, doctor, "txtchain", DOCTOR, t1)
    renamed = r.new_version(doctor, r.leaf(doctor, t1), title="Document pdfchain v2")
    assert renamed.status == "Success", renamed.error_codes
    t2 = r.versions(t.unique_id)[-1]
    assert r.found(nurse) == set(), "a transform of the masked document is shown"
    _hidden(r, nurse, t2, t.unique_id, "Document pdfchain v2")
    _hidden(r, nurse, u1, u.unique_id, "Document txtchain")
    assert r.found(doctor) >= {d1, t2, u1}


# ============================================================================ 3. invisible to the patient
@pytest.mark.parametrize(("code", "reader"), [("INVISIBLE_PATIENT", "patient"),
                                               ("INVISIBLE_REPRESENTANTS_LEGAUX", "guardian")])
def test_a_transform_of_a_document_invisible_to_the_patient_is_invisible_to_them(server, code, reader):
    r = Record(server)
    doctor, who = r.actor("doctor"), r.actor(reader)
    [d1] = r.filed(doctor, [r.document(f"cda{reader}", DOCTOR, conf=code)])
    t, t1 = _transform(r, doctor, f"pdf{reader}", DOCTOR, d1)
    assert t1 not in r.found(who), f"the transform of an {code} document is shown to the {reader}"
    _hidden(r, who, t1, t.unique_id, f"Document pdf{reader}")
    _visible(r, r.actor("nurse"), t1, t.unique_id, f"Document pdf{reader}")


# ============================================================================ 4. role x class
def test_a_transform_of_a_class_the_profession_may_not_read_is_hidden_whatever_its_class(server):
    """Class 31 is not for nurses (docs/access.md, "Roles x document classes"); its rendering
    filed as class 11 is the same content."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    [d1] = r.filed(doctor, [r.document("cda31", DOCTOR, klass="31")])
    t, t1 = _transform(r, doctor, "pdf31", DOCTOR, d1, klass="11")
    assert r.found(nurse) == set(), "the class-11 transform of a class-31 document is shown to the nurse"
    _hidden(r, nurse, t1, t.unique_id, "Document pdf31")
    _visible(r, doctor, t1, t.unique_id, "Document pdf31")


# ============================================================================ 5. what it costs
def _transform_filed(services, pid, target_uuid: str, entry_id: str) -> None:
    xfrm = Association(entry_uuid=f"xfrm-{entry_id}", association_type=AssociationType.XFRM,
                       source_uuid=entry_id, target_uuid=target_uuid)
    _ingest(services, F.submission(pid, [F.document(pid, entry_id)], extra_associations=[xfrm]))


def _find_documents_reads(services, pid) -> list[str]:
    counted = _Statements(services.registry.engine)
    try:
        QueryService(services, INSECURE_DEV_ACTOR).find_documents(pid, DocumentFilter(statuses=["Approved"]))
    finally:
        counted.close()
    return counted.reads()


def test_a_transform_is_judged_with_its_original_at_a_bounded_cost(services):
    """FindDocuments: 3 statements for a patient without transforms (the patient, the documents,
    the record's access state), unchanged; with transforms (their lineages named by
    registry.lineages), 3 more, however many transforms: which lineages are named, their newest
    versions (none here), the documents they transform (in the result: not read again)."""
    pid = _patient(services)
    for n in range(3):
        _ingest(services, F.submission(pid, [F.document(pid, f"alone{n}")]))
    assert len(_find_documents_reads(services, pid)) == 3
    originals = _current(services, pid)
    for n, original in enumerate(originals):
        _transform_filed(services, pid, original, f"pdf{n}")
    reads = _find_documents_reads(services, pid)
    assert len(reads) == 6, reads
    assert sum("AssociationType:XFRM" in r or "transform" in r for r in reads) == 1, reads


# ============================================================================ 6. transforms filed before
def test_transforms_filed_before_are_recorded_by_the_migration_and_fsck(services):
    """A transform's lineage names it to the view (registry.lineages): migration 0019 records
    those of the transforms registered before it, fsck reports and repairs one not recorded."""
    pid = _patient(services)
    _ingest(services, F.submission(pid, [F.document(pid, "original")]))
    [original] = _current(services, pid)
    _transform_filed(services, pid, original, "pdf")
    transform = next(u for u in _current(services, pid) if u != original)
    with services.registry.read() as conn:
        [row] = Q.by_ids(conn, None, entry_uuids=[transform])
        pk = row.patient_pk
        assert lineages.holders(conn, [row.lineage]) == {row.lineage: {pk}}
    with services.registry.write() as conn:
        conn.execute(delete(LP).where(LP.c.lineage == row.lineage))
    report = fsck.check(services, min_age_seconds=0)
    assert report.unrecorded == {row.lineage: {pk}}
    _down_and_up(services, "0018")
    with services.registry.read() as conn:
        assert lineages.holders(conn, [row.lineage]) == {row.lineage: {pk}}
    assert fsck.check(services, min_age_seconds=0).unrecorded == {}
