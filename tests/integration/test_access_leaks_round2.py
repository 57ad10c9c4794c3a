"""Access leaks, round 2: what the attack tests (test_access_attacks.py) do not try.

- A change (ITI-86, ITI-62, ITI-57) of a document hidden from its author's patient is named on
  the audit record, so that the patient's trail does not show changes of documents they may not
  see (a change naming one is refused with XDSPolicyViolation, as issue 15 and
  test_lifecycle_query_adversarial.py say: not answered as for an unknown document).
- A SubmissionSet whose only content is a change of a hidden document (an ITI-57 status
  update) must not be shown: it says that something hidden was changed, as the ITI-41 event
  of a hidden document would in the patient's trail.
"""

from __future__ import annotations

import re

import pytest

from partage.ebxml import constants as C
from tests import factories as F
from tests.integration.test_access_attacks import (
    DOCTOR,
    EVERY_STATUS,
    Record,
    _live_server,
    ids_of,
)
from tests.xdsclient import objects_of

UNKNOWN_UUID = "urn:uuid:00000000-0000-4000-8000-00000000abcd"


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority):
    with _live_server(tmp_path_factory, authority, "", "leaks2") as live:
        yield live


def errors(reply, *ids: str) -> list[tuple[str, str, str]]:
    """(errorCode, codeContext, location) of each RegistryError, the given ids written X."""
    def blind(text: str) -> str:
        for value in filter(None, ids):
            text = text.replace(value, "X")
        return re.sub(r"urn:uuid:[0-9a-f-]{36}", "UUID", text)
    return [(e.get("errorCode"), blind(e.get("codeContext") or ""), blind(e.get("location") or ""))
            for e in reply.body.iter(f"{{{C.RS}}}RegistryError")]


def same_answer(hidden, unknown, hidden_id: str, unknown_id: str) -> None:
    assert hidden.status == unknown.status, (hidden.status, unknown.status)
    assert errors(hidden, hidden_id) == errors(unknown, unknown_id), (errors(hidden), errors(unknown))


# ============================================================================ submission sets
def test_a_submission_set_that_only_changed_a_hidden_document_is_hidden(server):
    """The SubmissionSet of an ITI-57 status change holds no DocumentEntry: it was shown to
    everyone who may open the record, saying that a hidden document was just deprecated or
    deleted (FindSubmissionSets, GetAll, GetSubmissionSetAndContents, List)."""
    r = Record(server)
    doctor, nurse, patient = r.actor("doctor"), r.actor("nurse"), r.actor("patient")
    m1, i1, s1 = r.filed(doctor, [r.document("m", DOCTOR, conf="MASQUE_PS"),
                                  r.document("i", DOCTOR, conf="INVISIBLE_PATIENT"), r.document("s", DOCTOR)])
    find = {"$XDSSubmissionSetPatientId": [f"'{r.pid}'"], "$XDSSubmissionSetStatus": EVERY_STATUS[:1]}

    def sets(who) -> set[str]:
        return set(ids_of(r.query(who, "FindSubmissionSets", find, "ObjectRef")))

    def lists(who) -> int:
        return r.get(who, "/fhir/List", **{"patient.identifier": F.token(r.pid), "status": "current",
                                           "code": "submissionset"}).json()["total"]

    before = {who.name: (sets(who), lists(who)) for who in (nurse, patient, doctor)}
    assert len(before[nurse.name][0]) == len(before[patient.name][0]) == 1   # the filing (s is seen by both)
    for uid in (m1, i1):
        assert r.set_status(doctor, uid, "Approved", "Deprecated").status == "Success"
    assert r.set_status(doctor, s1, "Approved", "Deprecated").status == "Success"
    changes = sets(doctor) - before[doctor.name][0]
    assert len(changes) == 3 and lists(doctor) == before[doctor.name][1] + 3   # the author sees all three
    for who in (nurse, patient):
        shown = sets(who) - before[who.name][0]
        assert len(shown) == 2, (who.name, shown)   # not the change of m (nurse), of i (patient)
        assert lists(who) == before[who.name][1] + 2, who.name
        every = r.query(who, "GetAll", {"$patientId": [f"'{r.pid}'"], "$XDSDocumentEntryStatus": EVERY_STATUS,
                                        "$XDSSubmissionSetStatus": EVERY_STATUS[:1],
                                        "$XDSFolderStatus": EVERY_STATUS[:1]}, "ObjectRef")
        assert not (changes - shown) & set(ids_of(every)), who.name
        for hidden_set in changes - shown:
            contents = r.query(who, "GetSubmissionSetAndContents", {"$XDSSubmissionSetEntryUUID": [f"'{hidden_set}'"]})
            assert objects_of(contents) == [], who.name
            assert r.get(who, f"/fhir/List/{hidden_set.removeprefix('urn:uuid:')}").status_code == 404


# ============================================================================ the patient's trail
def test_the_patients_trail_does_not_show_changes_of_documents_hidden_from_them(server):
    """ITI-57, ITI-62 and ITI-86 events named no document: the patient's "who looked at my
    record" showed every change of a document invisible to them (its filing is not shown:
    docs/access.md, "The audit trail"), and the administrator's trail did not say which
    document was changed or removed."""
    r = Record(server)
    doctor, patient = r.actor("doctor"), r.actor("patient")
    hidden, seen = r.document("i", DOCTOR, conf="INVISIBLE_PATIENT"), r.document("s", DOCTOR)
    i1, s1 = r.filed(doctor, [hidden, seen])
    assert r.set_status(doctor, i1, "Approved", "Deprecated").status == "Success"
    assert r.remove_bytes(doctor, hidden.unique_id).status == "Success"
    assert r.set_status(doctor, s1, "Approved", "Deprecated").status == "Success"
    trail = r.get(patient, "/fhir/AuditEvent").json()
    codes = [e["resource"]["subtype"][0]["code"] for e in trail.get("entry", [])]
    assert codes.count("ITI-57") == 1 and "ITI-86" not in codes, codes   # the change of s only
    assert hidden.unique_id not in str(trail)
    admin = str(r.get(r.actor("auditor"), "/fhir/AuditEvent", **{"patient.identifier": F.token(r.pid)}).json())
    assert admin.count(hidden.unique_id) >= 3 and admin.count(seen.unique_id) >= 2   # filed, changed, removed
