"""Masking and hidden documents across the document lifecycle, round 5 (issues 7, 15): what the
earlier rounds (test_access_attacks.py, test_access_leaks_round2.py, test_lifecycle_access_round4.py,
test_record_states_round2.py) did not try, against a real `partage serve` with authentication on.

- The patient masks a document (ITI-57 new version with MASQUE_PS); its author then replaces it
  (RPLC, XFRM_RPLC) by a document that does not say MASQUE_PS: the replacement, the newest
  version of the lineage, was shown to every professional at once, the patient's choice dropped
  by a side effect. The replacement keeps the mask of the document it replaces (docs/access.md,
  "Document visibility"); the patient alone lifts it (or the author, by an explicit new version).
- A submission's relation to a registered document (ITI-41 APND, signs; ITI-57 SubmitAssociation,
  a folder membership) hidden from the submitter was accepted, or refused with its status ("is
  Deprecated, not Approved"), while one to an unknown id was refused as unresolved: the answer
  told the submitter that a masked document exists, and its status. docs/access.md: asking about a
  hidden document answers exactly as asking about an unknown one.
"""

from __future__ import annotations

import json

import pytest

from partage.metadata.model import Association, AssociationType, Code, SubmissionRequest
from tests import factories as F
from tests.integration.test_access_attacks import (
    CONF,
    DOCTOR,
    NURSE,
    Record,
    _live_server,
    relation,
)
from tests.integration.test_access_leaks_round2 import UNKNOWN_UUID, errors
from tests.integration.test_lifecycle_access_round4 import _linked
from tests.integration.test_lifecycle_query_adversarial import _folder_filed

MASQUE = Code("MASQUE_PS", CONF, "masqué")


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority):
    with _live_server(tmp_path_factory, authority, "", "masks5") as live:
        yield live


def _mhd_unique_ids(r: Record, actor) -> str:
    """The nurse's ITI-67 search of every status, as text (what it names)."""
    found = r.get(actor, "/fhir/DocumentReference", **{"patient.identifier": F.token(r.pid),
                                                        "status": "current,superseded,entered-in-error"})
    assert found.status_code == 200, found.text
    return json.dumps(found.json())


def _same_as_unknown(hidden, unknown, hidden_id: str) -> None:
    """The answer about a hidden target is the answer about an unknown one (ids blinded)."""
    assert hidden.status == unknown.status, (hidden.status, hidden.error_codes, unknown.error_codes)
    assert errors(hidden, hidden_id) == errors(unknown, UNKNOWN_UUID), (errors(hidden), errors(unknown))


# ============================================================================ 1. a replacement keeps the mask
@pytest.mark.parametrize("kind", [AssociationType.RPLC, AssociationType.XFRM_RPLC])
def test_a_replacement_of_a_document_the_patient_masked_stays_masked(server, kind):
    r = Record(server)
    doctor, nurse, patient, gp = r.actor("doctor"), r.actor("nurse"), r.actor("patient"), r.actor("gp")
    d = r.document("d", DOCTOR)
    [d1] = r.filed(doctor, [d])
    masked = r.new_version(patient, r.leaf(patient, d1), confidentiality_codes=[*d.confidentiality_codes, MASQUE])
    assert masked.status == "Success", masked.error_codes
    d2 = r.versions(d.unique_id)[-1]
    assert r.found(nurse) == set()

    # the author replaces the masked version with a document that does not say MASQUE_PS
    x = r.document("x", DOCTOR)
    [x1] = r.filed(doctor, [x], [relation(kind, "x", d2)])
    assert r.status_of(d2) == "Deprecated"
    # ITI-18 and MHD ITI-67, ITI-68 for the nurse: nothing of the lineage
    assert r.found(nurse) == set(), "the replacement dropped the patient's mask"
    assert not r.retrieved(nurse, x.unique_id) and r.readable(nurse, x1) == (404, 404)
    mhd = _mhd_unique_ids(r, nurse)
    assert x.unique_id not in mhd and d.unique_id not in mhd
    # the author, the médecin traitant and the patient still see it
    assert x1 in r.found(doctor) and x1 in r.found(gp) and x1 in r.found(patient)
    assert r.readable(doctor, x1) == (200, 200) and r.readable(patient, x1) == (200, 200)

    # the patient lifts the mask (their choice): the nurse sees the replacement's new version
    current = r.leaf(patient, x1)
    assert MASQUE.code in {c.code for c in current.confidentiality_codes}
    unmasked = r.new_version(patient, current, confidentiality_codes=[
        c for c in current.confidentiality_codes if c.code != MASQUE.code])
    assert unmasked.status == "Success", unmasked.error_codes
    x2 = r.versions(x.unique_id)[-1]
    # the lineage is unmasked: its versions that never said MASQUE_PS are shown again
    assert r.found(nurse) == {d1, x2} and r.readable(nurse, x2) == (200, 200)
    assert x.unique_id in _mhd_unique_ids(r, nurse)


# ============================================================================ 2. relations to hidden targets
def test_an_iti41_relation_to_a_hidden_document_answers_as_to_an_unknown_one(server):
    r = Record(server)
    doctor, nurse, patient = r.actor("doctor"), r.actor("nurse"), r.actor("patient")
    [m1] = r.filed(doctor, [r.document("m", DOCTOR, conf="MASQUE_PS")])                # hidden, Approved
    [o1] = r.filed(doctor, [r.document("o", DOCTOR, conf="MASQUE_PS")])
    r.filed(doctor, [r.document("o2", DOCTOR, conf="MASQUE_PS")], [relation(AssociationType.RPLC, "o2", o1)])
    assert r.status_of(o1) == "Deprecated"                                                # hidden, Deprecated
    [i1] = r.filed(doctor, [r.document("i", DOCTOR, conf="INVISIBLE_PATIENT")])          # hidden from the patient
    n = 0
    for actor, author, klass, target in ((nurse, NURSE, "10", m1), (nurse, NURSE, "10", o1),
                                         (patient, r.pid.id, "90", i1)):
        for kind in (AssociationType.APND, AssociationType.SIGNS):
            answers = []
            for aimed in (target, UNKNOWN_UUID):
                n += 1
                doc = r.document(f"a{n}", author, klass=klass)
                answers.append(r.file(actor, [doc], [relation(kind, f"a{n}", aimed)]))
                assert r.versions(doc.unique_id) == [], (kind.name, "a relation to a hidden document was filed")
            _same_as_unknown(*answers, target)
    # the doctor, who sees them, may still append to his own documents
    assert r.file(doctor, [r.document("ok", DOCTOR)], [relation(AssociationType.APND, "ok", m1)]).status == "Success"


def test_an_update_relating_a_hidden_document_answers_as_about_an_unknown_one(server):
    """ITI-57 SubmitAssociation (an APND whose source is the nurse's own document, a folder
    membership in the nurse's folder) to a document hidden from her: accepted, or refused as
    Deprecated, while an unknown id is an unresolved reference."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    [m1] = r.filed(doctor, [r.document("m", DOCTOR, conf="MASQUE_PS")])
    [o1] = r.filed(doctor, [r.document("o", DOCTOR, conf="MASQUE_PS")])
    r.filed(doctor, [r.document("o2", DOCTOR, conf="MASQUE_PS")], [relation(AssociationType.RPLC, "o2", o1)])
    [n1] = r.filed(nurse, [r.document("n", NURSE)])
    folder, _ = _folder_filed(r, nurse)

    def link(kind, source, target):
        return r.update(nurse, SubmissionRequest(r.update_set(), [], [], [Association(
            entry_uuid="link", association_type=kind, source_uuid=source, target_uuid=target)]))

    for target in (m1, o1):
        for kind, source in ((AssociationType.APND, n1), (AssociationType.HAS_MEMBER, folder)):
            hidden, unknown = link(kind, source, target), link(kind, source, UNKNOWN_UUID)
            _same_as_unknown(hidden, unknown, target)
            assert not _linked(r, source, target), (kind.name, "a relation to a hidden document was linked")
