"""What a subscription is, whichever door made it: DSUB (ITI-52) or FHIR (DSUBm ITI-110).

A `Subscription` names a topic (new DocumentEntries, new SubmissionSets), a patient or none
(multi-patient), a `Filter` in the model's terms, how much a notification carries, where it
goes, and the subscriber as authenticated when subscribing: every delivery is judged as that
actor's read at delivery time (partage.notify.deliver).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..access.actor import PROFESSIONAL, Actor
from ..metadata.datatypes import CX, XON, DatatypeError
from ..metadata.model import Code, DocumentEntry, SubmissionSet
from ..metadata.query import CodeFilter, DocumentFilter, SubmissionSetFilter

# Doors, topics, payloads, statuses (the registry's `subscriptions` columns).
DSUB, FHIR = "dsub", "fhir"
DOCUMENT, SUBMISSION_SET = "document", "submission_set"
FULL, MINIMAL = "full", "minimal"                       # DSUB: ihe:FullDocumentEntry / ihe:MinimalDocumentEntry
FULL_RESOURCE, ID_ONLY, EMPTY = "full-resource", "id-only", "empty"   # FHIR backport payload content
REQUESTED, ACTIVE, OFF, ERROR = "requested", "active", "off", "error"
APPROVED = "Approved"

_ACTOR_FIELDS = ("id", "name", "kind", "role", "structure", "specialty", "sector", "software", "auth_method")


@dataclass
class Filter:
    """The filters a subscription adds to its topic and patient (all must match).

    `codes`, `author_persons`: as ITI-18 FindDocuments (the query flow runs them);
    `source_ids`, `content_types`: as FindSubmissionSets; `author_institutions`: a document
    with an author of one of these organisations (XON id, else name); `author_names`:
    FHIR author.given / author.family (case-insensitive prefixes; each entry ANDed).
    """

    codes: dict[str, CodeFilter] = field(default_factory=dict)
    author_persons: list[str] = field(default_factory=list)
    author_institutions: list[str] = field(default_factory=list)
    author_names: list[tuple[str, list[str]]] = field(default_factory=list)
    source_ids: list[str] = field(default_factory=list)
    content_types: CodeFilter = field(default_factory=list)

    def document_filter(self, entry_uuids: list[str]) -> DocumentFilter:
        return DocumentFilter(statuses=[APPROVED], codes=self.codes, author_persons=list(self.author_persons),
                              entry_uuids=entry_uuids)

    def submission_set_filter(self) -> SubmissionSetFilter:
        return SubmissionSetFilter(statuses=[APPROVED], source_ids=list(self.source_ids),
                                   author_persons=list(self.author_persons), content_types=self.content_types)

    def keeps(self, obj: DocumentEntry | SubmissionSet) -> bool:
        """The filters the query flow does not run: author institution and author names."""
        return _institutions_match(self.author_institutions, obj) and all(
            _name_matches(part, prefixes, obj) for part, prefixes in self.author_names)

    # --- JSON (the registry's `filter` column) ---------------------------------------------
    def to_json(self) -> str:
        return json.dumps({
            "codes": {a: [[_code_json(c) for c in group] for group in groups] for a, groups in self.codes.items()},
            "author_persons": self.author_persons, "author_institutions": self.author_institutions,
            "author_names": [[part, prefixes] for part, prefixes in self.author_names],
            "source_ids": self.source_ids,
            "content_types": [[_code_json(c) for c in group] for group in self.content_types],
        }, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Filter:
        data: dict[str, Any] = json.loads(text or "{}")
        return cls(
            codes={a: [[_code_of(c) for c in group] for group in groups]
                   for a, groups in (data.get("codes") or {}).items()},
            author_persons=list(data.get("author_persons") or []),
            author_institutions=list(data.get("author_institutions") or []),
            author_names=[(str(part), list(prefixes)) for part, prefixes in data.get("author_names") or []],
            source_ids=list(data.get("source_ids") or []),
            content_types=[[_code_of(c) for c in group] for group in data.get("content_types") or []])


def _code_json(code: Code) -> list[str]:
    return [code.code, code.scheme]


def _code_of(item: list[str]) -> Code:
    return Code(str(item[0]), str(item[1]) if len(item) > 1 else "")


def _institutions_match(wanted: list[str], obj: DocumentEntry | SubmissionSet) -> bool:
    """$XDSDocumentEntryAuthorInstitution: an author's organisation is one of `wanted`,
    compared by organisation identifier (XON.10, with its authority when both name one),
    else by name (case-insensitive)."""
    if not wanted:
        return True
    held = [xon for author in obj.authors for xon in author.institutions]
    for text in wanted:
        try:
            want = XON.parse(text, strict=False)
        except DatatypeError:
            continue
        for xon in held:
            if want.organization_identifier:
                authority, held_authority = (want.assigning_authority.universal_id,
                                             xon.assigning_authority.universal_id)
                if xon.organization_identifier == want.organization_identifier and (
                        not authority or not held_authority or authority == held_authority):
                    return True
            elif want.organization_name and xon.organization_name.casefold() == want.organization_name.casefold():
                return True
    return False


def _name_matches(part: str, prefixes: list[str], obj: DocumentEntry | SubmissionSet) -> bool:
    wanted = [p.casefold() for p in prefixes if p]
    for author in obj.authors:
        xcn = author.person
        if xcn is None:
            continue
        names = [xcn.family_name] if part == "family" else [xcn.given_name, xcn.further_given_names]
        if any(n.casefold().startswith(p) for n in names if n for p in wanted):
            return True
    return False


@dataclass
class Subscription:
    door: str
    topic: str
    payload: str
    endpoint: str
    actor: Actor
    ends_at: float
    patient_id: CX | None = None          # None: every patient (multi-patient)
    filter: Filter = field(default_factory=Filter)
    mime_type: str = ""
    base_url: str = ""
    status: str = REQUESTED
    id: str = ""
    pk: int | None = None
    patient_pk: int | None = None
    events: int = 0
    # the door's own terms as accepted: FHIR, the Subscription resource; DSUB, the reference
    # parameters of the consumer's endpoint reference, in partage.xds.dsub
    resource: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    created_at: str = ""

    def row_values(self) -> dict[str, Any]:
        return {"public_id": self.id, "door": self.door, "topic": self.topic, "payload": self.payload,
                "patient_pk": self.patient_pk, "patient_id": self.patient_id.format() if self.patient_id else "",
                "filter": self.filter.to_json(), "endpoint": self.endpoint, "mime_type": self.mime_type,
                "base_url": self.base_url, "status": self.status, "actor_id": self.actor.id[:128],
                "actor": actor_json(self.actor), "events": self.events,
                "resource": json.dumps(self.resource, ensure_ascii=False), "error": self.error,
                "ends_at": self.ends_at}

    @classmethod
    def from_row(cls, row: Any) -> Subscription:
        return cls(door=row.door, topic=row.topic, payload=row.payload, endpoint=row.endpoint,
                   actor=actor_of(row.actor), ends_at=float(row.ends_at),
                   patient_id=cx_of(row.patient_id), filter=Filter.from_json(row.filter), mime_type=row.mime_type,
                   base_url=row.base_url, status=row.status, id=row.public_id, pk=row.pk,
                   patient_pk=row.patient_pk, events=int(row.events or 0),
                   resource=json.loads(row.resource or "{}"), error=row.error or "", created_at=row.created_at)


def actor_json(actor: Actor) -> str:
    """The subscriber, without its credential: what deliveries are judged as."""
    data: dict[str, Any] = {name: getattr(actor, name) for name in _ACTOR_FIELDS}
    data["patient_id"] = actor.patient_id.format() if actor.patient_id is not None else ""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def actor_of(text: str) -> Actor:
    data = json.loads(text)

    def field_of(name: str, default: str = "") -> str:
        return str(data.get(name) or default)

    return Actor(id=field_of("id"), name=field_of("name"), kind=field_of("kind", PROFESSIONAL),
                 role=field_of("role"), structure=field_of("structure"), specialty=field_of("specialty"),
                 sector=field_of("sector"), software=field_of("software"), auth_method=field_of("auth_method"),
                 patient_id=cx_of(field_of("patient_id")))


def cx_of(text: str) -> CX | None:
    """A CX from its HL7 text (None when empty or unreadable)."""
    if not text:
        return None
    try:
        return CX.parse(text, strict=False)
    except DatatypeError:
        return None
