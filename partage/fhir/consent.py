"""The patient's own say over their record, as a FHIR Consent (R4).

One Consent per patient describes the record's state (docs/access.md):

- `status`: `active` (the record is open: the patient consented), `inactive` (closed),
  `proposed` (no record yet);
- `performer`: the médecin traitant (identifier system urn:oid:1.2.250.1.71.4.2.1);
- `provision.provision`: `deny` for each blocked professional (`actor.reference.identifier`),
  and `deny` for the purpose `bris_de_glace` (urn:oid:1.2.250.1.213.1.1.4.248) when the
  patient opposed emergency access.

`GET /fhir/Consent` answers the caller's own (patient, legal representative) or, for an
administrator, the one of `patient.identifier`. `PUT /fhir/Consent/<id>` sets that state:
the patient opens or closes the record, names the médecin traitant, blocks or unblocks
professionals, opposes bris de glace or lifts it. Each change goes through
`partage.registry.access_state`, so the same rules hold as for `partage access` (the médecin
traitant cannot be blocked...). The Consent's id is the patient's opaque public id.
"""

from __future__ import annotations

from typing import Any

from flask import Response, request

from ..access import audit
from ..access.actor import (
    ADMIN,
    INSECURE_DEV,
    PATIENT,
    REPRESENTATIVE,
    Actor,
)
from ..metadata.datatypes import CX
from ..mhd import formats
from ..mhd.outcome import FhirError
from ..registry import patients
from ..registry.access_state import CLOSED, NONE, OPEN, RecordError, Records
from ..services import Services
from . import door
from .audit import patient_param

bp = door.blueprint("fhir_consent")

PROFESSIONAL_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
PURPOSE_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.248"
Json = dict[str, Any]
STATUS = {OPEN: "active", CLOSED: "inactive", NONE: "proposed", "purged": "inactive"}


def _patient_of(services: Services, actor: Actor, wanted: CX | None) -> CX:
    """The patient whose Consent the actor may read or change."""
    if actor.kind in (ADMIN, INSECURE_DEV):
        if wanted is None:
            raise FhirError.one(400, "patient.identifier is required", "required")
        return wanted
    if actor.kind in (PATIENT, REPRESENTATIVE) and actor.patient_id:
        if wanted:
            with services.registry.read() as conn:
                same = services.registry.patient_pk(conn, wanted) == services.registry.patient_pk(
                    conn, actor.patient_id)
            if not same:
                raise FhirError.one(403, "a patient manages only their own record", "forbidden")
        return actor.patient_id
    raise FhirError.one(403, "only the patient, a legal representative or an administrator manages "
                             "the record's consent", "forbidden")


def resource(services: Services, patient_id: CX) -> Json:
    with services.registry.read() as conn:
        pk = services.registry.patient_pk(conn, patient_id)
        record = patients.record(conn, pk) if pk is not None else None
    if record is None:
        raise FhirError.one(404, f"patient {patient_id.format()} is not known", "not-found")
    state = Records(services.registry).state(patient_id)
    deny = [{"type": "deny", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "PRCP"}]},
        "reference": {"identifier": {"system": PROFESSIONAL_SYSTEM, "value": pro}}}]}
        for pro in sorted(state.blocked)]
    if state.bdg_opposed:
        deny.append({"type": "deny", "purpose": [{"system": PURPOSE_SYSTEM, "code": "bris_de_glace"}]})
    consent = {
        "resourceType": "Consent", "id": record.fhir_id, "status": STATUS.get(state.status, "inactive"),
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"identifier": {"system": f"urn:oid:{patient_id.assigning_authority.universal_id}",
                                   "value": patient_id.id}},
        "policyRule": {"coding": [{"system": "urn:partage:access", "code": "dmp"}]},
        "provision": {"type": "permit", **({"provision": deny} if deny else {})},
    }
    if state.medecin_traitant:
        consent["performer"] = [{"identifier": {"system": PROFESSIONAL_SYSTEM, "value": state.medecin_traitant},
                                 "display": "médecin traitant"}]
    return consent


def _wanted_state(body: Json) -> tuple[str, str, set[str], bool]:
    status = body.get("status")
    if status not in ("active", "inactive", "proposed"):
        raise FhirError.one(400, "Consent.status must be active (open), inactive (closed) or proposed")
    performers = [p.get("identifier", {}) for p in body.get("performer", []) or []]
    mt = next((i.get("value", "") for i in performers if i.get("system") == PROFESSIONAL_SYSTEM), "")
    blocked, opposed = set(), False
    for provision in (body.get("provision") or {}).get("provision", []) or []:
        if provision.get("type") != "deny":
            continue
        for actor in provision.get("actor", []) or []:
            ident = (actor.get("reference") or {}).get("identifier") or {}
            if ident.get("system") == PROFESSIONAL_SYSTEM and ident.get("value"):
                blocked.add(ident["value"])
        for purpose in provision.get("purpose", []) or []:
            if purpose.get("system") == PURPOSE_SYSTEM and purpose.get("code") == "bris_de_glace":
                opposed = True
    return status, mt, blocked, opposed


@bp.get("/Consent")
def search() -> Response:
    services, actor = door.caller()
    patient_id = _patient_of(services, actor, patient_param())
    audit.note_patient(patient_id.format())
    consent = resource(services, patient_id)
    base = request.host_url.rstrip("/") + "/fhir"
    return formats.respond({"resourceType": "Bundle", "type": "searchset", "total": 1,
                            "entry": [{"fullUrl": f"{base}/Consent/{consent['id']}", "resource": consent,
                                       "search": {"mode": "match"}}]}, request)


@bp.put("/Consent/<rid>")
def update(rid: str) -> Response:
    services, actor = door.caller()
    patient_id = _patient_of(services, actor, patient_param())
    audit.note_patient(patient_id.format())
    current = resource(services, patient_id)
    if current["id"] != rid:
        raise FhirError.one(403 if actor.kind in (PATIENT, REPRESENTATIVE) else 404,
                            f"Consent/{rid} is not the record of {patient_id.format()}", "forbidden")
    body = formats.read_body(request, "Consent")
    status, mt, blocked, opposed = _wanted_state(body)
    records = Records(services.registry)
    state = records.state(patient_id)
    if (mt or state.medecin_traitant) in blocked:
        raise FhirError.one(422, "the médecin traitant cannot be blocked", "business-rule")
    if status == "proposed" and (state.status != NONE or blocked or opposed or mt):
        raise FhirError.one(422, "without a record (status proposed) there is nothing to set; a record "
                                 "cannot go back to having no consent (close it: inactive)", "business-rule")
    try:
        if status == "active" and state.status != OPEN:
            records.open(patient_id, medecin_traitant=mt)
        elif status == "inactive" and state.status == OPEN:
            records.close(patient_id)
        if status != "proposed":
            if mt and mt != state.medecin_traitant:
                records.set_medecin_traitant(patient_id, mt)
            state = records.state(patient_id)
            for pro in sorted(blocked - state.blocked):
                records.block(patient_id, pro)
            for pro in sorted(state.blocked - blocked):
                records.unblock(patient_id, pro)
            if opposed != state.bdg_opposed:
                records.oppose_bris_de_glace(patient_id, opposed)
    except RecordError as exc:
        raise FhirError.one(422, str(exc), "business-rule") from exc
    ctx = audit.current()
    if ctx is not None:
        ctx.remarks.append(f"consent {status}; blocked {sorted(blocked)}; "
                           f"bris de glace {'opposed' if opposed else 'allowed'}")
    return door.written(resource(services, patient_id), 200, {}, f"Consent/{rid} updated")
