"""IHE DSUBm on /fhir: FHIR R4 Subscription (topic-based, the R4 backport), rest-hook channel.

- ITI-110 Resource Subscription: `POST /fhir/Subscription` creates (status `requested`; a
  handshake is sent, then `active`, or `error` if the endpoint cannot be reached);
  `PUT /fhir/Subscription/<id>` with `status=off` unsubscribes, with `status=requested`
  re-activates one that is off or in error; `DELETE` unsubscribes too.
- ITI-113: `GET /fhir/Subscription` (the caller's own), `GET /fhir/Subscription/<id>`,
  `GET /fhir/Subscription/<id>/$status`.
- ITI-112 Resource Notify: `FhirRenderer` makes the handshake and event-notification
  Bundles (type `history`, first entry the SubscriptionStatus as `Parameters`), sent by the
  outbox sender.

Topics (`Subscription.criteria`, the DSUBm canonical URLs): DocumentReference and
SubmissionSet-List, patient-dependent and multi-patient. Filters
(`_criteria` backport-filter-criteria, `DocumentReference?...` or `List?...`): ITI-67's
`patient`, `patient.identifier`, `category`, `type`, `setting`, `facility`, `event`,
`security-label`, `format`, `author.given`, `author.family`, `status` (current); ITI-66's
`patient`, `patient.identifier`, `code` (submissionset), `sourceId`, `source.given`,
`source.family`. A filter this server cannot apply is refused (400), never ignored.
The same engine as DSUB decides who may subscribe and what is delivered (partage.notify).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from flask import Response, request

from ..access import audit
from ..access.actor import Actor
from ..metadata.datatypes import CX
from ..metadata.model import Association, AssociationType, Code, DocumentEntry, SubmissionSet
from ..metadata.query import CodeFilter
from ..mhd import formats, mapping
from ..mhd.codes import scheme_of
from ..mhd.outcome import FhirError, Issue, operation_outcome
from ..notify.channels import Event, Outgoing
from ..notify.model import (
    DOCUMENT,
    EMPTY,
    FHIR,
    FULL_RESOURCE,
    ID_ONLY,
    OFF,
    REQUESTED,
    SUBMISSION_SET,
    Filter,
    Subscription,
)
from ..notify.subscriptions import SubscriptionError, Subscriptions
from ..services import Services
from . import door
from .patients import Patients, patient_token, reference_id
from .searchparams import DOCUMENT_REFERENCE, coded_attributes

bp = door.blueprint("fhir_subscription")

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
SUBSCRIPTION_PROFILE = BACKPORT + "backport-subscription"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
DSUBM = "https://profiles.ihe.net/ITI/DSUBm/"
# topic name -> (topic, patient-dependent, resource type of the filter)
TOPICS = {
    "DSUBm-SubscriptionTopic-DocumentReference-PatientDependent": (DOCUMENT, True, "DocumentReference"),
    "DSUBm-SubscriptionTopic-DocumentReference-MultiPatient": (DOCUMENT, False, "DocumentReference"),
    "DSUBm-SubscriptionTopic-SubmissionSet-PatientDependent": (SUBMISSION_SET, True, "List"),
    "DSUBm-SubscriptionTopic-SubmissionSet-MultiPatient": (SUBMISSION_SET, False, "List"),
}
PAYLOADS = (EMPTY, ID_ONLY, FULL_RESOURCE)
MIME_TYPES = (formats.JSON_TYPE, formats.XML_TYPE)
DOCUMENT_CODES = coded_attributes(DOCUMENT_REFERENCE)   # category -> class, type -> type, ...
DOCUMENT_FILTERS = {"patient", "patient.identifier", "status", "author.given", "author.family", *DOCUMENT_CODES}
LIST_FILTERS = {"patient", "patient.identifier", "code", "sourceId", "source.given", "source.family"}
# RFC 9110 5.1 / 5.5: a token, then visible US-ASCII, SP and HTAB (no NUL, DEL or other
# control, nothing http.client cannot write in Latin-1)
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*")
RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding"}
HAS_MEMBER = str(AssociationType.HAS_MEMBER)


# --------------------------------------------------------------------------- errors
@bp.errorhandler(SubscriptionError)
def _subscription_error(exc: SubscriptionError) -> Response:
    status, code = {SubscriptionError.FORBIDDEN: (403, "forbidden"), SubscriptionError.NOT_FOUND: (404, "not-found"),
                    SubscriptionError.UNSUPPORTED: (400, "not-supported")}.get(exc.kind, (400, "invalid"))
    if exc.kind == SubscriptionError.FORBIDDEN:
        audit.note_denied(exc.message)
    return formats.respond(operation_outcome([Issue(exc.message, code)], status), request, status)


def _bad(message: str, code: str = "invalid") -> FhirError:
    return FhirError.one(400, message, code)


# --------------------------------------------------------------------------- reading a Subscription
def _topic(criteria: str) -> tuple[str, bool, str, str]:
    """(topic, patient-dependent, filter resource type, canonical) of Subscription.criteria."""
    name = criteria.removeprefix(DSUBM).removeprefix("SubscriptionTopic/") if criteria.startswith(DSUBM) else ""
    if name not in TOPICS:
        raise _bad(f"Subscription.criteria {criteria!r} is not a topic served here; served: "
                   + ", ".join(f"{DSUBM}SubscriptionTopic/{t}" for t in TOPICS), "not-supported")
    topic, dependent, resource_type = TOPICS[name]
    return topic, dependent, resource_type, f"{DSUBM}SubscriptionTopic/{name}"


def _extensions(holder: Any, url: str) -> list[Any]:
    if not isinstance(holder, dict):
        return []
    return [e for e in holder.get("extension", []) if isinstance(e, dict) and e.get("url") == url]


def _tokens(value: str) -> list[tuple[str, str]]:
    out = []
    for alternative in value.split(","):
        system, sep, code = alternative.partition("|")
        out.append((system, code) if sep else ("", system))
    return out


def _code_groups(values: list[str]) -> CodeFilter:
    return [[Code(code, scheme_of(system)) for system, code in _tokens(v)] for v in values]


def _criteria_filter(services: Services, resource_type: str, dependent: bool, texts: list[str]
                     ) -> tuple[CX | None, Filter]:
    """The filter criteria (`DocumentReference?...` / `List?...`) as a patient and a Filter."""
    params: dict[str, list[str]] = {}
    for text in texts:
        kind, sep, query = text.partition("?")
        if kind != resource_type or not sep:
            raise _bad(f"filter criteria {text!r}: expected {resource_type}?parameter=value...")
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name.replace(":identifier", ".identifier"), []).append(value)
    allowed = DOCUMENT_FILTERS if resource_type == "DocumentReference" else LIST_FILTERS
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise _bad(f"filter criteria {', '.join(unknown)}: not a parameter of this topic "
                   f"(allowed: {', '.join(sorted(allowed))})", "not-supported")
    patient = _patient(services, params)
    if dependent and patient is None:
        raise _bad("this topic is patient-dependent: patient or patient.identifier is required", "required")
    if not dependent and ("patient" in params or "patient.identifier" in params):
        raise _bad("this topic is multi-patient: it takes no patient filter")
    chosen = Filter()
    names = []
    if resource_type == "DocumentReference":
        for status in params.get("status", []):
            if status != "current":
                raise _bad(f"status={status}: notifications are about current documents (status=current)",
                           "not-supported")
        for name, attribute in DOCUMENT_CODES.items():
            if name in params:
                chosen.codes[attribute] = _code_groups(params[name])
        names = [("given", "author.given"), ("family", "author.family")]
    else:
        codes = [c for v in params.get("code", []) for _, c in _tokens(v)]
        if any(c != "submissionset" for c in codes):
            raise _bad("code: the SubmissionSet topic takes code=submissionset only")
        chosen.source_ids = [v.removeprefix("urn:oid:") for value in params.get("sourceId", [])
                             for _, v in _tokens(value)]
        names = [("given", "source.given"), ("family", "source.family")]
    for part, name in names:
        for value in params.get(name, []):
            chosen.author_names.append((part, [v for v in value.split(",") if v]))
    return patient, chosen


def _patient(services: Services, params: dict[str, list[str]]) -> CX | None:
    if len(params.get("patient", [])) + len(params.get("patient.identifier", [])) > 1:
        raise _bad("one patient per subscription (patient or patient.identifier, once)")
    for value in params.get("patient.identifier", []):
        cx = patient_token(value)
        if cx is None:
            raise _bad(f"patient.identifier {value!r}: the system must be an OID (urn:oid:...)")
        return cx
    for value in params.get("patient", []):
        rid = reference_id(value) or value
        cx = Patients(services).patient_id_for_search(rid)
        if cx is None:   # answered as a record the actor may not open (partage.notify.subscriptions)
            raise SubscriptionError(SubscriptionError.FORBIDDEN, f"no record of patient {value} is open to you")
        return cx
    return None


def _end(resource: dict[str, Any]) -> float | None:
    text = resource.get("end")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(f"Subscription.end {text!r} is not an instant") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _headers(channel: dict[str, Any]) -> list[str]:
    headers = [str(h) for h in channel.get("header", []) or []]
    for header in headers:
        if not _HEADER.fullmatch(header) or header.split(":", 1)[0].strip().lower() in RESERVED_HEADERS:
            raise _bad(f"Subscription.channel.header {header!r} is not a usable HTTP header 'Name: value'")
    return headers


def read_subscription(services: Services, resource: dict[str, Any]) -> tuple[Subscription, float | None]:
    """An ITI-110 Subscription as one to create, and the end asked for."""
    if resource.get("status") not in ("requested", "active"):
        raise _bad("Subscription.status must be requested for a new subscription")
    topic, dependent, resource_type, canonical = _topic(str(resource.get("criteria") or ""))
    texts = [str(e.get("valueString") or "") for e in _extensions(resource.get("_criteria"), FILTER_CRITERIA)]
    patient, chosen = _criteria_filter(services, resource_type, dependent, texts)
    channel = resource.get("channel") or {}
    if channel.get("type") != "rest-hook":
        raise _bad(f"Subscription.channel.type {channel.get('type')!r}: only rest-hook is served", "not-supported")
    mime = str(channel.get("payload") or formats.JSON_TYPE).split(";")[0].strip()
    if mime not in MIME_TYPES:
        raise _bad(f"Subscription.channel.payload {mime!r}: {' or '.join(MIME_TYPES)}", "not-supported")
    contents = [str(e.get("valueCode") or "") for e in _extensions(channel.get("_payload"), PAYLOAD_CONTENT)]
    payload = contents[-1] if contents else ID_ONLY
    if payload not in PAYLOADS:
        raise _bad(f"payload content {payload!r}: one of {', '.join(PAYLOADS)}", "not-supported")
    _headers(channel)
    kept = {k: v for k, v in resource.items() if k not in ("id", "meta", "text", "status", "end", "error")}
    kept["criteria"] = canonical
    sub = Subscription(door=FHIR, topic=topic, payload=payload, endpoint=str(channel.get("endpoint") or ""),
                       actor=Actor(id="", kind="unknown"), ends_at=0.0, patient_id=patient, filter=chosen,
                       mime_type=mime, resource=kept)
    return sub, _end(resource)


# --------------------------------------------------------------------------- writing a Subscription
def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(sub: Subscription) -> str:
    return OFF if sub.ends_at <= time.time() else sub.status


def subscription_resource(sub: Subscription) -> dict[str, Any]:
    resource = {"resourceType": "Subscription", "id": sub.id, "meta": {"profile": [SUBSCRIPTION_PROFILE]},
                **sub.resource, "status": _status(sub), "end": _instant(sub.ends_at)}
    if sub.error:
        resource["error"] = sub.error
    return resource


def _status_parameters(sub: Subscription, kind: str, events: int, focus: list[str] | None = None,
                       number: int = 0) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{sub.base_url}/Subscription/{sub.id}"}},
        {"name": "topic", "valueCanonical": sub.resource.get("criteria", "")},
        {"name": "status", "valueCode": _status(sub) if kind != "handshake" else REQUESTED},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events)},
    ]
    if kind == "event-notification":
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(number)},
                                       {"name": "timestamp", "valueInstant": _instant(time.time())}]
        if focus:
            parts.append({"name": "focus", "valueReference": {"reference": focus[0]}})
            parts += [{"name": "additional-context", "valueReference": {"reference": ref}} for ref in focus[1:]]
        parameters.append({"name": "notification-event", "part": parts})
    return {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}


def _status_entry(sub: Subscription, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": parameters,
            "request": {"method": "GET", "url": f"{sub.base_url}/Subscription/{sub.id}/$status"},
            "response": {"status": "200"}}


class FhirRenderer:
    """The sender's FHIR channel (partage.notify.channels.Renderer): ITI-112 Bundles."""

    action = "ITI-112"

    def _outgoing(self, sub: Subscription, bundle: dict[str, Any]) -> Outgoing:
        body, content_type = formats.serialise(bundle, sub.mime_type == formats.XML_TYPE)
        headers = dict(h.split(":", 1) for h in sub.resource.get("channel", {}).get("header", []) or [])
        return Outgoing(body, content_type, {k.strip(): v.strip() for k, v in headers.items()})

    def handshake(self, services: Services, subscription: Subscription, delivery_id: str) -> Outgoing:  # noqa: ARG002 — the Renderer protocol's signature
        bundle = {"resourceType": "Bundle", "id": delivery_id, "type": "history", "timestamp": _instant(time.time()),
                  "entry": [_status_entry(subscription, _status_parameters(subscription, "handshake", 0))]}
        return self._outgoing(subscription, bundle)

    def event(self, services: Services, event: Event) -> Outgoing:
        sub = event.subscription
        resources = self._resources(services, event)
        urls = [f"{sub.base_url}/{r['resourceType']}/{r['id']}" for r in resources]
        parameters = _status_parameters(sub, "event-notification", event.event_number,
                                        urls if sub.payload != EMPTY else None, event.event_number)
        entries = [_status_entry(sub, parameters)]
        if sub.payload != EMPTY:
            for url, resource in zip(urls, resources, strict=True):
                entry: dict[str, Any] = {"fullUrl": url,
                                         "request": {"method": "POST", "url": resource["resourceType"]},
                                         "response": {"status": "201"}}
                if sub.payload == FULL_RESOURCE:
                    entry["resource"] = resource
                entries.append(entry)
        bundle = {"resourceType": "Bundle", "id": event.delivery_id, "type": "history",
                  "timestamp": _instant(event.timestamp.timestamp()), "entry": entries}
        return self._outgoing(sub, bundle)

    def _resources(self, services: Services, event: Event) -> list[dict[str, Any]]:
        sub = event.subscription
        people = Patients(services)
        refs: dict[CX, dict[str, Any]] = {}

        def patient(cx: CX) -> dict[str, Any]:
            if cx not in refs:
                ref = people.reference_for(cx)
                if "reference" in ref:
                    ref["reference"] = f"{sub.base_url}/{ref['reference']}"
                refs[cx] = ref
            return refs[cx]

        links = mapping.Links(patient=patient,
                              content_url=lambda d: f"{sub.base_url}/Binary/{mapping.resource_id(d.entry_uuid)}")
        if sub.topic == DOCUMENT:
            return [mapping.document_reference(d, links) for d in event.objects if isinstance(d, DocumentEntry)]
        kinds = {o.entry_uuid: o.kind for o in event.objects}
        out = []
        for ss in (o for o in event.objects if isinstance(o, SubmissionSet)):
            members = [(kinds.get(a.target_uuid, "DocumentEntry"), a.target_uuid) for a in event.objects
                       if isinstance(a, Association) and a.source_uuid == ss.entry_uuid
                       and str(a.association_type) == HAS_MEMBER and kinds.get(a.target_uuid) != "Association"]
            out.append(mapping.submission_set_list(ss, members, links))
        return out


# --------------------------------------------------------------------------- routes
def _subscriptions(action: str) -> Subscriptions:
    services = door.services()
    audit.set_action(action)
    return Subscriptions(services, door.actor(services))


def _base_url() -> str:
    return request.host_url.rstrip("/") + (bp.url_prefix or "/fhir")


@bp.post("/Subscription")
def create_subscription() -> Response:
    subscriptions = _subscriptions("ITI-110")
    wanted, end = read_subscription(subscriptions.services, formats.read_body(request, "Subscription"))
    wanted.base_url = _base_url()
    wanted.ends_at = subscriptions.end_time(end)
    created = subscriptions.create(wanted, handshake=True)
    resource = subscription_resource(created)
    return door.written(resource, 201, {"Location": f"{_base_url()}/Subscription/{created.id}"},
                        f"Subscription/{created.id} created")


@bp.get("/Subscription")
def search_subscriptions() -> Response:
    subscriptions = _subscriptions("ITI-113")
    wanted = request.args.get("status")
    pairs = [(s, subscription_resource(s)) for s in subscriptions.mine(FHIR)]
    if wanted:
        pairs = [(s, r) for s, r in pairs if r["status"] in wanted.split(",")]
    for sub, _ in pairs:
        _note_patient(sub)
    found = [r for _, r in pairs]
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
              "entry": [{"fullUrl": f"{_base_url()}/Subscription/{r['id']}", "resource": r,
                         "search": {"mode": "match"}} for r in found]}
    return formats.respond(bundle, request)


def _fhir_subscription(subscriptions: Subscriptions, rid: str) -> Subscription:
    sub = subscriptions.get(rid)
    if sub.door != FHIR:
        raise SubscriptionError(SubscriptionError.NOT_FOUND, f"no subscription {rid} is yours")
    _note_patient(sub)
    return sub


def _note_patient(sub: Subscription) -> None:
    """A subscription's criteria name its patient: the read is on that patient's trail."""
    if sub.patient_id is not None or sub.patient_pk is not None:
        audit.note_patient(sub.patient_id.format() if sub.patient_id is not None else "", sub.patient_pk)


@bp.get("/Subscription/<rid>")
def read_subscription_route(rid: str) -> Response:
    sub = _fhir_subscription(_subscriptions("ITI-113"), rid)
    return formats.respond(subscription_resource(sub), request)


@bp.get("/Subscription/<rid>/$status")
def subscription_status(rid: str) -> Response:
    sub = _fhir_subscription(_subscriptions("ITI-113"), rid)
    return formats.respond(_status_parameters(sub, "query-status", sub.events), request)


@bp.put("/Subscription/<rid>")
def update_subscription(rid: str) -> Response:
    """ITI-110 update: status off (unsubscribe) or requested (re-activate); nothing else changes."""
    subscriptions = _subscriptions("ITI-110")
    resource = formats.read_body(request, "Subscription")
    if resource.get("id") != rid:   # FHIR R4 http.html#update: missing or different, 400
        raise _bad(f"the resource's id {resource.get('id')!r} is not {rid!r}")
    current = _fhir_subscription(subscriptions, rid)
    status = resource.get("status")
    if status == OFF:
        changed = subscriptions.cancel(current.id)
    elif status == REQUESTED:
        changed = subscriptions.reactivate(current.id)
    else:
        raise _bad("an update sets status to off (unsubscribe) or requested (re-activate)")
    return door.written(subscription_resource(changed), 200, {}, f"Subscription/{rid} updated")


@bp.delete("/Subscription/<rid>")
def delete_subscription(rid: str) -> Response:
    subscriptions = _subscriptions("ITI-110")
    subscriptions.cancel(_fhir_subscription(subscriptions, rid).id)
    return door.no_content()
