"""FHIR AuditEvent reads (ITI-81 style): "who looked at my record".

`GET /fhir/AuditEvent` answers a searchset Bundle of the audit trail, newest first:
a patient (or legal representative) reads the accesses to their own record (no
parameter needed); an administrator reads any patient's (`patient.identifier=
urn:oid:<authority>|<id>`) or everything. Professionals are refused (403).
`GET /fhir/AuditEvent/<id>` reads one record under the same rule.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

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
from ..metadata.er7 import read_header
from ..mhd import formats
from ..mhd.outcome import FhirError, Issue, operation_outcome
from ..query import QueryService
from ..registry import audit_log
from ..registry.search_index import DateMatch
from ..services import Services
from . import door
from .ids import numeric_id, paging_number
from .patients import patient_token
from .search import date_match, decode_cursor, encode_cursor
from .searchparams import PAGE_PARAM

bp = door.blueprint("fhir_audit")

Json = dict[str, Any]   # a FHIR resource, or an audit row as the registry gives it
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PATIENT_RECORD = "110110"
PURPOSE_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.248"   # VIHF access modes (purposeOfUse)
# action -> (DICOM event id, display, FHIR action code), as the transaction's audit message says
# (ITI TF-2 3.x.5; R4 audit-event-action: C create, R read/view/print, U update, D delete, E execute).
EVENT_TYPES = {
    "ITI-18": ("110112", "Query", "E"), "ITI-67": ("110112", "Query", "E"),
    "ITI-66": ("110112", "Query", "E"), "ITI-78": ("110112", "Query", "E"),
    "ITI-81": ("110112", "Query", "E"),
    "ITI-43": ("110106", "Export", "R"), "ITI-68": ("110106", "Export", "R"),
    "ITI-53": ("110106", "Export", "R"),   # ITI TF-2 3.53.5.1.2: the broker exports the notified metadata
    "ITI-41": ("110107", "Import", "C"), "ITI-42": ("110107", "Import", "C"),
    "ITI-65": ("110107", "Import", "C"),
    "ITI-8": (PATIENT_RECORD, "Patient Record", "C"),   # ITI TF-2 3.8.5.1: U for A08 and A40 (_feed_action)
    "ITI-57": (PATIENT_RECORD, "Patient Record", "U"), "ITI-92": (PATIENT_RECORD, "Patient Record", "U"),
    "PDSm-update": (PATIENT_RECORD, "Patient Record", "U"),
    "ITI-62": (PATIENT_RECORD, "Patient Record", "D"), "ITI-86": (PATIENT_RECORD, "Patient Record", "D"),
    "PDSm-delete": (PATIENT_RECORD, "Patient Record", "D"),   # a DocumentReference DELETE (status Deleted)
    # The record's pages and the patient's consent: a patient record read or updated (DICOM 110110).
    "page-record": (PATIENT_RECORD, "Patient Record", "R"), "page-results": (PATIENT_RECORD, "Patient Record", "R"),
    "page-document": ("110106", "Export", "R"), "page-document-content": ("110106", "Export", "R"),
    "consent-read": (PATIENT_RECORD, "Patient Record", "R"), "consent-update": (PATIENT_RECORD, "Patient Record", "U"),
}
_WHITESPACE = re.compile(r"\s")   # FHIR R4 uri: no whitespace (http://hl7.org/fhir/R4/datatypes.html#uri)
FEED_UPDATES = frozenset({"A08", "A40"})   # ITI-8 triggers that change a known patient (the others create)


def _feed_action(request_line: str) -> str:
    """C or U of an ITI-8 message, from its MSH-9 trigger event (the audit row keeps the MSH
    segment; read by the one ER7 reader)."""
    header = read_header(request_line)
    return "U" if header is not None and header.message_type.trigger_event in FEED_UPDATES else "C"


def _outcome(status: int, message: str, code: str) -> Response:
    return formats.respond(operation_outcome([Issue(message, code)]), request, status)


def _actor_identifier(row: Json) -> Json:
    """The requestor's id, in the namespace of who vouched for it (BALP SAMLaccessTokenUse:
    Subject.NameID -> who.identifier.value, Issuer -> who.identifier.system). An issuer that is
    not a FHIR uri (an X.509 subject name has spaces) names the identifier's assigner instead."""
    identifier: Json = {"value": row["actor_id"]}
    issuer = row.get("issuer") or ""
    if issuer and not _WHITESPACE.search(issuer):
        identifier["system"] = issuer
    elif issuer:
        identifier["assigner"] = {"display": issuer}
    return identifier


def resource(row: Json, *, for_patient: bool = False) -> Json:
    """The AuditEvent of one audit row. `for_patient`: the patient's own view, which says
    nothing of what the policy withheld from whom (no outcome text)."""
    event_id, display, action = EVENT_TYPES.get(row["action"], ("110100", "Application Activity", "E"))
    if row["action"] == "ITI-8":
        action = _feed_action(row["request"] or "")
    agent: Json = {"who": {"identifier": _actor_identifier(row), "display": row["actor_name"] or row["actor_id"]},
             "type": {"coding": [{"system": "urn:partage:actor-kind", "code": row["actor_kind"]}]},
             "requestor": True}
    if row["credential_id"] and not for_patient and not _WHITESPACE.search(row["credential_id"]):
        agent["policy"] = [row["credential_id"]]   # BALP: the assertion's ID / the token's jti
    if row["actor_role"]:
        profession, _, specialty = row["actor_role"].partition("/")
        agent["role"] = [{"coding": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": profession}]}]
        if specialty:
            agent["role"].append({"coding": [{"system": "urn:oid:1.2.250.1.71.4.2.5", "code": specialty}]})
    if row["address"]:
        agent["network"] = {"address": row["address"], "type": "2"}
    event: Json = {"resourceType": "AuditEvent", "id": str(row["pk"]),
             "type": {"system": DCM, "code": event_id, "display": display},
             "subtype": [{"system": "urn:ihe:event-type-code", "code": row["action"]}],
             "action": action, "recorded": row["recorded_at"][:19] + "Z",
             "outcome": str(row["outcome"]), "agent": [agent],
             "source": {"observer": {"display": "partage"},
                        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                  "code": "4"}]}}
    if row["detail"] and not for_patient:
        event["outcomeDesc"] = row["detail"]
    if row["purpose"]:
        purpose: Json = {"coding": [{"system": PURPOSE_SYSTEM, "code": row["purpose"]}]}
        if row["reason"]:
            purpose["text"] = row["reason"]
        # The requestor's purpose of use (its credential's, BALP SAMLaccessTokenUse: agent[user].purposeOfUse),
        # which is also the event's.
        agent["purposeOfUse"] = [purpose]
        event["purposeOfEvent"] = [purpose]
    entities: list[Json] = []
    if row["patient_id"]:
        entities.append({"what": {"identifier": {"value": row["patient_id"]}},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}})
    for uid in row["objects"]:
        entities.append({"what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{uid}"}},
                         "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                         "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3"}})
    if entities:
        event["entity"] = entities
    return event


def _scope(actor: Actor) -> tuple[bool, CX | None]:
    """(may read everything, the patient the actor is limited to)."""
    if actor.kind in (ADMIN, INSECURE_DEV):
        return True, None
    if actor.kind in (PATIENT, REPRESENTATIVE) and actor.patient_id:
        return False, actor.patient_id
    raise FhirError.one(403, "only the patient, a legal representative or an administrator reads the audit trail",
                        "forbidden")


def patient_param() -> CX | None:
    """`patient.identifier=urn:oid:<authority>|<id>` as a CX (None when absent)."""
    value = request.args.get("patient.identifier") or request.args.get("patient:identifier") or ""
    if not value:
        return None
    cx = patient_token(value)
    if cx is None:
        raise FhirError.one(400, f"patient.identifier {value!r} is not urn:oid:<authority OID>|<id>")
    return cx


# The search parameters AuditEvent answers (the rest are refused under `Prefer: handling=strict`,
# ignored otherwise, and left out of the self link, which names what was applied).
AUDIT_PARAMS = ("patient.identifier", "patient:identifier", "date", "_count", "_format", PAGE_PARAM)
CURSOR_SIGNATURE = "AuditEvent"
MAX_BATCHES = 10   # batches of _count rows read for one page of what a patient may see; then a next link


def _applied_params() -> list[tuple[str, str]]:
    unknown = sorted({name for name in request.args if name not in AUDIT_PARAMS})
    if unknown and door.strict_handling():
        raise FhirError.one(400, f"AuditEvent: unknown search parameter(s) {', '.join(unknown)} "
                                 f"(supported: {', '.join(AUDIT_PARAMS)})", "not-supported")
    return [(name, value) for name, value in request.args.items(multi=True)
            if name in AUDIT_PARAMS and name != PAGE_PARAM]


def _same_patient(services: Services, a: CX | None, b: CX | None) -> bool:
    with services.registry.read() as conn:
        pa, pb = services.registry.patient_pk(conn, a), services.registry.patient_pk(conn, b)
    return pa is not None and pa == pb


@bp.get("/AuditEvent")
def search() -> Response:
    services, actor = door.caller()
    everything, own = _scope(actor)
    wanted = patient_param()
    if not everything:
        if wanted and not _same_patient(services, wanted, own):
            raise FhirError.one(403, "a patient reads only the audit trail of their own record", "forbidden")
        wanted = own
    applied = _applied_params()
    try:
        count = paging_number(request.args.get("_count", ""), 100, lowest=1, highest=1000)
    except ValueError as exc:
        raise FhirError.one(400, "_count must be a number") from exc
    dates = [date_match(value, "date") for value in request.args.getlist("date") if value]
    cursor = request.args.get(PAGE_PARAM, "")
    before = int(decode_cursor(cursor, CURSOR_SIGNATURE, 1)[0]) if cursor else 0
    rows: list[Json] = []
    following: int | None = None
    if wanted or everything:
        rows, following = _page(services, actor, everything, wanted.format() if wanted else "", count, before,
                                dates)
    if wanted:
        audit.note_patient(wanted.format())
    base = request.host_url.rstrip("/") + "/fhir"

    def url(page: str) -> str:
        params = [*applied, *([(PAGE_PARAM, page)] if page else [])]
        return f"{base}/AuditEvent" + (f"?{urlencode(params)}" if params else "")

    links = [{"relation": "self", "url": url(cursor)}]
    if following is not None:
        links.append({"relation": "next", "url": url(encode_cursor(CURSOR_SIGNATURE, (following,)))})
    bundle: Json = {"resourceType": "Bundle", "type": "searchset"}
    if not cursor and following is None:   # R4 Bundle.total counts all pages: given when this is all of it
        bundle["total"] = len(rows)
    bundle["link"] = links
    bundle["entry"] = [{"fullUrl": f"{base}/AuditEvent/{r['pk']}", "resource": resource(r, for_patient=not everything),
                        "search": {"mode": "match"}} for r in rows]
    return formats.respond(bundle, request)


def _page(services: Services, actor: Actor, everything: bool, patient: str, count: int, before: int,
          dates: list[DateMatch]) -> tuple[list[Json], int | None]:
    """At most `count` events older than `before` (0: from the newest), as the actor may see them, and
    the key the next page starts below (None: none follows). Rows are read `count` + 1 at a time and
    judged by the gate, up to MAX_BATCHES reads (then the page is shorter and a next link goes on)."""
    page: list[Json] = []
    position = before
    for _ in range(MAX_BATCHES):
        rows = audit.events(services, patient_id=patient, limit=count + 1, before_pk=position, dates=dates)
        seen = {row["pk"]: row for row in _as_seen_by(services, actor, rows, everything)}
        for row in rows:
            if len(page) == count:
                return page, position
            position = row["pk"]
            if row["pk"] in seen:
                page.append(seen[row["pk"]])
        if len(rows) <= count:
            return page, None
    return page, position


def _as_seen_by(services: Services, actor: Actor, rows: list[Json], everything: bool) -> list[Json]:
    """A patient's view of the trail passes through the one gate (QueryService.visible_events)."""
    return rows if everything else QueryService(services, actor).visible_events(rows)


@bp.get("/AuditEvent/<rid>")
def read(rid: str) -> Response:
    services, actor = door.caller()
    everything, own = _scope(actor)
    row = None
    pk = numeric_id(rid)
    if pk is not None:
        with services.registry.read() as conn:
            found = audit_log.event(conn, pk)
            if found is not None:
                own_pk = services.registry.patient_pk(conn, own) if own else None
                if everything or (own_pk is not None and found["patient_pk"] == own_pk):
                    row = found
    if row is None:
        raise FhirError.one(404, f"AuditEvent/{rid} is not known", "not-found")
    row["objects"] = json.loads(row["objects"] or "[]")
    seen = _as_seen_by(services, actor, [row], everything)
    if not seen:
        raise FhirError.one(404, f"AuditEvent/{rid} is not known", "not-found")
    row = seen[0]
    if row["patient_pk"] is not None:   # whose trail was read: that patient's record
        audit.note_patient(row["patient_id"], row["patient_pk"])
    return formats.respond(resource(row, for_patient=not everything),
                           request)
