"""Record states and emergency accesses, round 2 (docs/access.md "The record's state",
"Record access"; docs/notifications.md "The patients' e-mails"): the FHIR Consent's update
semantics, the state's transitions and who may make them, every path judged again after a change.

The app runs in process (Flask test client, the same routes and flows as the server) with
authentication on and real bearer JWTs, on SQLite."""

from __future__ import annotations

import dataclasses

import pytest

from partage.access import audit, decisions
from partage.access.credentials import sample_actors
from partage.cli.main import main as cli_main
from partage.config import Settings
from partage.registry import patients
from partage.registry.access_state import Records
from partage.server.app import create_app
from partage.services import Services
from tests import factories as F

PRO = "urn:oid:1.2.250.1.71.4.2.1"
PURPOSE = "urn:oid:1.2.250.1.213.1.1.4.248"
GP_ID = sample_actors()["gp"].id


@dataclasses.dataclass
class App:
    services: Services
    client: object
    authority: object
    data: object


@pytest.fixture(scope="module")
def app(tmp_path_factory, authority):
    directory = tmp_path_factory.mktemp("record-states")
    services = Services.open(Settings(data_dir=directory / "data", trust=authority.ca_file, mllp_port=0,
                                      text_indexer=False))
    yield App(services, create_app(services=services).test_client(), authority, directory / "data")
    services.close()


def _patient(app, *, consent=True, medecin_traitant=GP_ID):
    pid = F.patient_id()
    with app.services.registry.write() as conn:
        app.services.registry.upsert_patient(conn, [pid])
    if consent:
        Records(app.services.registry).open(pid, medecin_traitant=medecin_traitant)
    return pid


def _actor(name, pid, **changes):
    actor = sample_actors(pid)[name]
    return dataclasses.replace(actor, **changes) if changes else actor


def _headers(app, actor, **extra):
    return {"Authorization": f"Bearer {app.authority.jwt(actor)}", **extra}


def _consent(app, pid, who="patient"):
    response = app.client.get("/fhir/Consent", headers=_headers(app, _actor(who, pid)))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response, response.get_json()["entry"][0]["resource"]


def _block(value):
    return {"type": "deny", "actor": [{"role": {"coding": [{"code": "PRCP"}]},
                                       "reference": {"identifier": {"system": PRO, "value": value}}}]}


def _put(app, pid, body, who="patient", rid=None, **headers):
    return app.client.put(f"/fhir/Consent/{rid or body['id']}", json=body,
                          headers=_headers(app, _actor(who, pid), **headers))


def _state(app, pid):
    s = Records(app.services.registry).state(pid)
    return s.status, s.medecin_traitant, s.blocked, s.bdg_opposed


# ------------------------------------------------------------------ Consent: an update names its resource
def test_a_consent_update_whose_body_has_no_id_or_another_is_refused_and_changes_nothing(app):
    """FHIR R4 http.html#update: "If no id element is provided, or the id disagrees with the id
    in the URL, the server SHALL respond with an HTTP 400 error code" (docs/conformance.md says it
    of PUT Patient and PUT Subscription)."""
    pid = _patient(app)
    _, current = _consent(app, pid)
    wanted = {**current, "provision": {"type": "permit", "provision": [_block("810000000003")]}}
    for body in ({k: v for k, v in wanted.items() if k != "id"}, {**wanted, "id": "another"}):
        response = _put(app, pid, body, rid=current["id"])
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.get_json()["resourceType"] == "OperationOutcome"
    assert _state(app, pid) == ("open", GP_ID, frozenset(), False)


def test_a_consent_body_about_another_patient_is_refused(app):
    """The Consent at that id is this record's: a body naming another patient would have the
    patient believe they changed that patient's consent (docs/access.md: one Consent per patient)."""
    pid, other = _patient(app), _patient(app)
    _, current = _consent(app, pid)
    _, theirs = _consent(app, other)
    body = {**current, "patient": theirs["patient"],
            "provision": {"type": "permit", "provision": [_block("810000000003")]}}
    response = _put(app, pid, body)
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    assert _state(app, pid)[2] == frozenset() and _state(app, other)[2] == frozenset()
    ok = _put(app, pid, {**current, "patient": {"reference": f"Patient/{current['id']}"}})
    assert ok.status_code == 200, ok.get_data(as_text=True)


# ------------------------------------------------------------------ Consent: If-Match, stale updates
def test_a_consent_update_honours_if_match_and_a_stale_one_is_refused(app):
    """RFC 9110 13.1.1: a server receiving If-Match MUST evaluate it before performing the method
    (412 when it does not hold); FHIR R4 http.html#concurrency. Without it, the representative's
    update made from an older read silently undoes the patient's block."""
    pid = _patient(app)
    _, seen_by_guardian = _consent(app, pid, "guardian")
    response, seen_by_patient = _consent(app, pid)
    version = seen_by_patient.get("meta", {}).get("versionId")
    assert version, "the Consent carries no version a client could send back in If-Match"
    blocking = {**seen_by_patient, "provision": {"type": "permit", "provision": [_block("810000000003")]}}
    first = _put(app, pid, blocking, **{"If-Match": f'W/"{version}"'})
    assert first.status_code == 200, first.get_data(as_text=True)
    assert first.headers.get("ETag") and first.headers["ETag"] != f'W/"{version}"'
    assert first.get_json()["meta"]["versionId"] == first.headers["ETag"][3:-1]
    # the guardian's change, made from the Consent read before the block: refused, nothing lost
    stale = {**seen_by_guardian, "provision": {"type": "permit", "provision": [
        {"type": "deny", "purpose": [{"system": PURPOSE, "code": "bris_de_glace"}]}]}}
    refused = _put(app, pid, stale, who="guardian", **{"If-Match": f'W/"{version}"'})
    assert refused.status_code == 412, refused.get_data(as_text=True)
    assert _state(app, pid) == ("open", GP_ID, frozenset({"810000000003"}), False)
    # an If-Match naming no version the resource ever had is refused too; `*` holds
    assert _put(app, pid, blocking, **{"If-Match": 'W/"999"'}).status_code == 412
    assert _put(app, pid, blocking, **{"If-Match": "*"}).status_code == 200


# ------------------------------------------------------------------ Consent: nothing silently dropped
UNKEPT = {
    "opposing centre 15": {"type": "deny", "purpose": [{"system": PURPOSE, "code": "centre_15"}]},
    "a professional by Practitioner reference": {"type": "deny", "actor": [{
        "role": {"coding": [{"code": "PRCP"}]}, "reference": {"reference": "Practitioner/810000000003"}}]},
    "a block for a period only": {**_block("810000000003"), "period": {"end": "2027-01-01"}},
    "a block of one class of documents": {**_block("810000000003"), "class": [
        {"system": "urn:oid:1.2.250.1.213.1.1.4.1", "code": "10"}]},
    "bris de glace opposed for one professional": {**_block("810000000003"), "purpose": [
        {"system": PURPOSE, "code": "bris_de_glace"}]},
}


@pytest.mark.parametrize("case", sorted(UNKEPT))
def test_a_deny_the_record_cannot_keep_is_refused_not_dropped(app, case):
    """docs/access.md: "A change the rules refuse ... answers 422 and changes nothing". A deny
    provision Partage cannot keep (the record's state has no such rule) was answered 200 and
    dropped: the patient was told their consent was saved, with an opposition or a block that
    does not exist (or one wider than asked)."""
    pid = _patient(app)
    _, current = _consent(app, pid)
    body = {**current, "status": "inactive", "provision": {"type": "permit", "provision": [UNKEPT[case]]}}
    response = _put(app, pid, body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert _state(app, pid) == ("open", GP_ID, frozenset(), False)      # nothing changed, not even the status


def test_a_top_level_deny_is_refused_not_dropped(app):
    pid = _patient(app)
    _, current = _consent(app, pid)
    body = {**current, "provision": _block("810000000003")}
    response = _put(app, pid, body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert _state(app, pid) == ("open", GP_ID, frozenset(), False)


def test_closing_a_record_that_does_not_exist_is_refused(app):
    """`partage access close` of a record without consent is refused ("is not open"); the same
    change through Consent was answered 200 while nothing was done (status still proposed)."""
    pid = _patient(app, consent=False)
    _, current = _consent(app, pid)
    response = _put(app, pid, {**current, "status": "inactive"})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert _state(app, pid) == ("none", "", frozenset(), False)


# ------------------------------------------------------------------ the médecin traitant is never blocked
def test_naming_a_blocked_professional_medecin_traitant_on_reopening_lifts_the_block(app):
    """docs/access.md: "the médecin traitant cannot be blocked"; `medecin-traitant` names one
    "lifting any block on them". `partage access open CX --medecin-traitant ID` on a closed record
    named a blocked professional without lifting the block: the state then held a blocked médecin
    traitant, and the patient could not even save back the Consent the server gave them (422)."""
    pid = _patient(app)
    records = Records(app.services.registry)
    nurse = "810000000003"
    records.block(pid, nurse)
    records.close(pid)
    records.open(pid, medecin_traitant=nurse)
    assert _state(app, pid) == ("open", nurse, frozenset(), False)
    _, current = _consent(app, pid)
    assert "provision" not in current["provision"]
    assert _put(app, pid, current).status_code == 200


def test_the_cli_open_with_medecin_traitant_lifts_a_block(app, tmp_path):
    pid = _patient(app)
    nurse = "810000000003"
    Records(app.services.registry).block(pid, nurse)
    Records(app.services.registry).close(pid)
    assert cli_main(["access", "open", pid.format(), "--data", str(app.data), "--medecin-traitant", nurse]) == 0
    assert _state(app, pid) == ("open", nurse, frozenset(), False)


# ------------------------------------------------------------------ every door judged again after a change
def _pk(app, pid):
    with app.services.registry.read() as conn:
        return app.services.registry.patient_pk(conn, pid)


def _doors(app, pid, actor):
    """The record page's status for the actor, and whether the Patient search finds the patient."""
    with app.services.registry.read() as conn:
        rid = patients.record(conn, _pk(app, pid)).fhir_id
    token = f"urn:oid:{pid.assigning_authority.universal_id}|{pid.id}"
    page = app.client.get(f"/dossier/{rid}", headers=_headers(app, actor)).status_code
    found = app.client.get("/fhir/Patient", query_string={"identifier": token}, headers=_headers(app, actor))
    assert found.status_code == 200, found.get_data(as_text=True)
    return page, len(found.get_json().get("entry", []))


def test_a_block_a_closing_and_an_opposition_are_judged_at_every_door_and_lifted_alike(app):
    pid = _patient(app)
    records = Records(app.services.registry)
    doctor, emergency = _actor("doctor", pid), _actor("emergency", pid)
    assert _doors(app, pid, doctor) == (200, 1)
    records.block(pid, doctor.id)
    assert _doors(app, pid, doctor) == (403, 0)
    records.unblock(pid, doctor.id)
    assert _doors(app, pid, doctor) == (200, 1)
    records.close(pid)
    assert _doors(app, pid, doctor) == (403, 0)
    records.open(pid)
    assert _doors(app, pid, doctor) == (200, 1)
    # bris de glace: refused while the patient opposes it, and no notice owed then
    told = len(audit.notifications(app.services, _pk(app, pid)))
    records.oppose_bris_de_glace(pid)
    assert _doors(app, pid, emergency) == (403, 0)
    assert len(audit.notifications(app.services, _pk(app, pid))) == told
    records.oppose_bris_de_glace(pid, False)
    assert _doors(app, pid, emergency) == (200, 1)
    notices = audit.notifications(app.services, _pk(app, pid))[told:]
    assert notices and {n["kind"] for n in notices} == {"bris_de_glace"}
    assert all(emergency.reason in n["message"] for n in notices)


def test_the_medecin_traitant_changed_loses_the_masked_documents_view_at_once(app):
    """MASQUE_PS is visible to the author and the médecin traitant only (docs/access.md)."""
    gp = _actor("gp", pid := _patient(app))
    doc = F.document(pid, "m")
    doc.confidentiality_codes = [decisions.masque_ps()]
    records = Records(app.services.registry)
    state = records.state(pid)
    assert decisions.read_decision(gp, state, doc, decisions.DEFAULT_TABLE)
    records.set_medecin_traitant(pid, "810000000002")
    moved = records.state(pid)
    assert not decisions.read_decision(gp, moved, doc, decisions.DEFAULT_TABLE)


def test_only_the_patient_their_representative_or_an_administrator_change_the_consent(app):
    pid, other = _patient(app), _patient(app)
    _, current = _consent(app, pid)
    lifted = {**current, "provision": {"type": "permit"}}
    Records(app.services.registry).block(pid, "810000000003")
    for who in ("doctor", "nurse", "gp", "emergency", "connector"):
        assert _put(app, pid, lifted, who=who).status_code == 403, who
    # another patient's representative, by the URL or by naming this patient
    stranger = _actor("guardian", other)
    response = app.client.put(f"/fhir/Consent/{current['id']}", json=lifted, headers=_headers(app, stranger))
    assert response.status_code == 403
    response = app.client.put(f"/fhir/Consent/{current['id']}", json=lifted, headers=_headers(app, stranger),
                              query_string={"patient.identifier":
                                            f"urn:oid:{pid.assigning_authority.universal_id}|{pid.id}"})
    assert response.status_code == 403
    assert _state(app, pid)[2] == frozenset({"810000000003"})
