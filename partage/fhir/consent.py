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
from ..registry.access_state import (
    CLOSED,
    NONE,
    OPEN,
    PURGED,
    RecordError,
    Records,
    RecordState,
    WantedState,
    version,
)
from ..services import Services
from . import door
from .audit import patient_param

bp = door.blueprint("fhir_consent")

PROFESSIONAL_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
PURPOSE_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.248"
Json = dict[str, Any]
STATUS = {OPEN: "active", CLOSED: "inactive", NONE: "proposed", PURGED: "inactive"}
WANTED = {"active": OPEN, "inactive": CLOSED, "proposed": NONE}
# What a deny provision may say: whom it blocks (actor) or the access mode it opposes (purpose).
DENY_ELEMENTS = frozenset({"id", "type", "actor", "purpose"})
PROVISION_ELEMENTS = frozenset({"id", "type", "provision"})


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
        "resourceType": "Consent", "id": record.fhir_id, "meta": {"versionId": version(state)},
        "status": STATUS.get(state.status, "inactive"),
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


def _unkept(what: str) -> FhirError:
    """A Consent saying more than the record's state can keep: refused, never half-applied (a
    patient told 200 would believe in a block or an opposition that does not exist)."""
    return FhirError.one(422, f"{what}: Partage keeps only the record's state (docs/access.md: open or "
                              "closed, the médecin traitant, blocked professionals by national id, the "
                              "opposition to bris de glace)", "not-supported")


def _wanted_state(body: Json) -> WantedState:
    status = body.get("status")
    if status not in WANTED:
        raise FhirError.one(400, "Consent.status must be active (open), inactive (closed) or proposed")
    performers = [p.get("identifier", {}) for p in body.get("performer", []) or []]
    mt = next((i.get("value", "") for i in performers if i.get("system") == PROFESSIONAL_SYSTEM), "")
    blocked, opposed = set(), False
    top = body.get("provision") or {}
    if top.get("type", "permit") != "permit" or set(top) - PROVISION_ELEMENTS:
        raise _unkept("Consent.provision must be a permit whose only rules are its deny provisions")
    for provision in top.get("provision", []) or []:
        if provision.get("type") != "deny":
            continue
        actors, purposes = provision.get("actor") or [], provision.get("purpose") or []
        if set(provision) - DENY_ELEMENTS or bool(actors) == bool(purposes):
            raise _unkept("a deny provision names either professionals (actor) or the purpose bris_de_glace, "
                          "and nothing else")
        for actor in actors:
            ident = (actor.get("reference") or {}).get("identifier") or {}
            if ident.get("system") != PROFESSIONAL_SYSTEM or not ident.get("value"):
                raise _unkept(f"a blocked professional is named by identifier {PROFESSIONAL_SYSTEM}")
            blocked.add(ident["value"])
        for purpose in purposes:
            if (purpose.get("system"), purpose.get("code")) != (PURPOSE_SYSTEM, "bris_de_glace"):
                raise _unkept(f"the only access mode a patient opposes is bris_de_glace ({PURPOSE_SYSTEM})")
            opposed = True
    return WantedState(WANTED[status], mt, frozenset(blocked), opposed)


def _check_identity(body: Json, current: Json, rid: str) -> None:
    """An update names the resource of its URL (FHIR R4 http.html#update: an id absent or another
    one is a 400) and the record's own patient."""
    if body.get("id") != rid:
        raise FhirError.one(400, f"the Consent's id must be {rid}, the id of the URL (FHIR update)", "invalid")
    named = body.get("patient") or {}
    identifier, reference = named.get("identifier"), named.get("reference")
    ours = current["patient"]["identifier"]
    if identifier is not None and (identifier.get("system"), identifier.get("value")) != (ours["system"], ours["value"]) \
            or reference is not None and str(reference).split("/")[-2:] != ["Patient", rid]:
        raise FhirError.one(422, f"Consent/{rid} is the consent of another patient than the one its body names",
                            "business-rule")


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
    _check_identity(body, current, rid)
    wanted = _wanted_state(body)

    def if_match(state: RecordState) -> None:   # judged on the state the change is made to
        door.check_if_match(version(state), f"Consent/{rid}")

    try:
        Records(services.registry).set_state(patient_id, wanted, if_match)
    except RecordError as exc:
        raise FhirError.one(422, str(exc), "business-rule") from exc
    ctx = audit.current()
    if ctx is not None:
        ctx.remarks.append(f"consent {body['status']}; blocked {sorted(wanted.blocked)}; "
                           f"bris de glace {'opposed' if wanted.bdg_opposed else 'allowed'}")
    updated = resource(services, patient_id)
    return door.written(updated, 200, {"ETag": f'W/"{updated["meta"]["versionId"]}"'}, f"Consent/{rid} updated")
