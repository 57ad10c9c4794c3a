"""Document lifecycle under the access rules, round 4 (issues 3, 7, 15): what the earlier rounds
(test_lifecycle*.py, test_access*.py, test_record_states_round2.py) did not try, against a real
`partage serve` with authentication on.

- ITI-57 SubmitAssociation of a document relationship between registered documents: only
  RPLC, XFRM_RPLC and XFRM were judged (docs/access.md, "Changing documents"). An APND or a
  signs association declares its *source* an addendum or a signature of the target, and a
  replacement deprecates the target's addenda with it (ITI TF-3 4.2.2.2: "the replaced
  document and its addenda and transforms are deprecated"): a nurse linking the doctor's
  document as an addendum of her own, then replacing her own, deprecated the doctor's
  document. Authors alone change documents: the source's author is asked.
- A patient or legal representative "manages masking and nothing else" (docs/access.md,
  "Submitting and updating"): an ITI-57 carrying a folder membership or a relation between
  registered documents was accepted from them.
- The audit record of an ITI-57 names the documents it is about (docs/access.md, "What a refusal
  looks like", "The audit trail"): one that only linked registered documents (SubmitAssociation)
  named none, so the administrator's trail did not say which documents were related, and the
  patient's trail showed a change of documents hidden from them.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from partage.metadata.model import Association, AssociationType, SubmissionRequest
from partage.registry import schema
from tests import factories as F
from tests.integration.test_access_attacks import DOCTOR, NURSE, Record, _live_server, relation
from tests.integration.test_lifecycle_query_adversarial import _folder_filed


@pytest.fixture(scope="module")
def server(tmp_path_factory, authority):
    with _live_server(tmp_path_factory, authority, "", "lifecycle4") as live:
        yield live


def _link(r: Record, actor, kind: AssociationType, source: str, target: str):
    """An ITI-57 that submits one association between registered objects (SubmitAssociation)."""
    return r.update(actor, SubmissionRequest(r.update_set(), [], [], [Association(
        entry_uuid="link", association_type=kind, source_uuid=source, target_uuid=target)]))


def _linked(r: Record, source: str, target: str) -> bool:
    o = schema.registry_objects
    with r.server.services.registry.read() as conn:
        return conn.execute(select(o.c.pk).where(o.c.kind == "A", o.c.source_uuid == source,
                                                 o.c.target_uuid == target)).first() is not None


def _last_iti57_objects(r: Record, actor) -> list[str]:
    t = schema.audit_events
    with r.server.services.registry.read() as conn:
        row = conn.execute(select(t.c.objects).where(t.c.actor_id == actor.id, t.c.action == "ITI-57")
                           .order_by(t.c.pk.desc()).limit(1)).first()
    return json.loads(row.objects) if row else []


# ============================================================================ relations by update
def test_a_relation_an_update_submits_needs_the_author_of_its_source(server):
    """The nurse, author of n1 only, links the doctor's d1 as an addendum of n1 (ITI-57
    SubmitAssociation APND d1 -> n1) and then replaces n1 (her own document: allowed). The
    replacement deprecates n1's addenda, so d1 was deprecated by someone who is not its author.
    The APND (and a signs naming d1 as the signature) must be refused with XDSPolicyViolation,
    nothing linked, and d1 stays Approved."""
    r = Record(server)
    doctor, nurse = r.actor("doctor"), r.actor("nurse")
    [d1] = r.filed(doctor, [r.document("d", DOCTOR)])
    [n1] = r.filed(nurse, [r.document("n", NURSE)])
    for kind in (AssociationType.APND, AssociationType.SIGNS):
        reply = _link(r, nurse, kind, d1, n1)
        assert reply.error_codes == ["XDSPolicyViolation"], (kind.name, reply.status, reply.error_codes)
        assert not _linked(r, d1, n1), kind.name
        assert r.last_event(nurse, "ITI-57") == ("deny", "4")
    [_] = r.filed(nurse, [r.document("n2", NURSE)], [relation(AssociationType.RPLC, "n2", n1)])
    assert r.status_of(n1) == "Deprecated"
    assert r.status_of(d1) == "Approved", "the nurse's replacement deprecated the doctor's document"
    # The source's author may still relate their own document to another's (an addendum is
    # open to whoever may submit: the target is not changed).
    assert _link(r, doctor, AssociationType.APND, d1, r.filed(nurse, [r.document("n3", NURSE)])[0]).status \
        == "Success"


# ============================================================================ the patient masks, nothing else
def test_a_patient_may_not_link_documents_or_fill_folders_by_an_update(server):
    """A patient's ITI-57 may only carry new versions that add or remove MASQUE_PS: a folder
    membership of a registered document, or a relation between two registered documents (the
    doctor's), is not masking and is refused (XDSPolicyViolation), nothing linked."""
    r = Record(server)
    doctor, patient = r.actor("doctor"), r.actor("patient")
    d1, e1 = r.filed(doctor, [r.document("d", DOCTOR), r.document("e", DOCTOR)])
    folder, _ = _folder_filed(r, doctor)
    for kind, source, target in ((AssociationType.HAS_MEMBER, folder, d1), (AssociationType.APND, e1, d1),
                                 (AssociationType.SIGNS, e1, d1)):
        reply = _link(r, patient, kind, source, target)
        assert reply.error_codes == ["XDSPolicyViolation"], (kind.name, reply.status, reply.error_codes)
        assert not _linked(r, source, target), kind.name
    assert _link(r, doctor, AssociationType.HAS_MEMBER, folder, d1).status == "Success"   # the author may


# ============================================================================ the audit names what was linked
def test_an_update_that_links_documents_names_them_on_its_audit_record(server):
    """The doctor relates two of his documents invisible to the patient (ITI-57 SubmitAssociation
    XFRM) and files one in a folder: each ITI-57 audit record names the documents it linked, so
    the administrator's trail says which, and the patient's trail does not show a change of
    documents hidden from them (an event naming no document is shown to the patient)."""
    r = Record(server)
    doctor, patient = r.actor("doctor"), r.actor("patient")
    a, b = r.document("a", DOCTOR, conf="INVISIBLE_PATIENT"), r.document("b", DOCTOR, conf="INVISIBLE_PATIENT")
    a1, b1 = r.filed(doctor, [a, b])
    assert _link(r, doctor, AssociationType.XFRM, a1, b1).status == "Success"
    assert sorted(_last_iti57_objects(r, doctor)) == sorted([a.unique_id, b.unique_id])
    folder, _ = _folder_filed(r, doctor)
    assert _link(r, doctor, AssociationType.HAS_MEMBER, folder, a1).status == "Success"
    assert _last_iti57_objects(r, doctor) == [a.unique_id]
    trail = r.get(patient, "/fhir/AuditEvent").json()
    codes = [e["resource"]["subtype"][0]["code"] for e in trail.get("entry", [])]
    assert "ITI-57" not in codes, codes
    admin = str(r.get(r.actor("auditor"), "/fhir/AuditEvent", **{"patient.identifier": F.token(r.pid)}).json())
    assert admin.count(b.unique_id) >= 2   # filed, related
