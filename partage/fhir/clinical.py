"""FHIR read views of the clinical facts, the IPS-like $summary, and keyword search.

Routes on the /fhir blueprint (registered by importing this module from routes.py):

- `GET Observation|AllergyIntolerance|Condition|MedicationStatement|Immunization`
  with `patient` (or `patient.identifier`, `subject`), `code`, `date`, `category`
  (Observation), `status` (e.g. MedicationStatement `status=active`: the current
  treatments), `clinical-status` (Condition, AllergyIntolerance), `_sort` (`date` /
  `-date`, the default), `_count`, `_offset`;
  `GET <type>/<id>`;
- `GET Patient/<id>/$summary`: a document Bundle (Composition first) of the latest
  synthesis document, allergies, problems, current treatments, recent results and
  vaccinations;
- keyword search is `GET DocumentReference?patient=...&_content=words` (routes.py hands
  `_content` searches here): DocumentReferences ranked by relevance, each with its
  highlighted excerpt.

Everything is read through `partage.query.clinical.ClinicalReader`, i.e. after the access
policy has chosen the documents this actor may see.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from ..access.actor import Actor
from ..clinical.extract import LAB, VITAL
from ..metadata.datatypes import CX
from ..metadata.query import DocumentFilter
from ..mhd import formats
from ..mhd.codes import scheme_of
from ..mhd.outcome import FhirError
from ..query.clinical import ClinicalReader, FactQuery, FactRow, summary_content
from ..query.paging import PageRequest
from ..query.search import SearchService
from ..query.view import Reader
from ..registry.search import ObjectSearch
from ..services import Services
from .clinical_map import KINDS_OF_RESOURCE, OBS_CATEGORY, FactMapper
from .ids import numeric_id, paging_number
from .patients import Patients
from .search import DEFAULT_COUNT, MAX_COUNT, Parsed, bundle, date_match
from .views import Views

Json = dict[str, Any]
Params = dict[str, list[str]]
EXCERPT_EXTENSION = "urn:partage:fhir:StructureDefinition:search-excerpt"
SECTIONS = [  # (title, LOINC section code, display)
    ("Synthèse", "60591-5", "Patient summary Document"),
    ("Allergies et intolérances", "48765-2", "Allergies and adverse reactions Document"),
    ("Problèmes actifs", "11450-4", "Problem list - Reported"),
    ("Antécédents", "11348-0", "History of Past illness Narrative"),
    ("Traitements en cours", "10160-0", "History of Medication use Narrative"),
    ("Résultats récents", "30954-2", "Relevant diagnostic tests/laboratory data Narrative"),
    ("Signes vitaux", "8716-3", "Vital signs"),
    ("Vaccinations", "11369-6", "History of Immunization Narrative"),
]

EMPTY_SECTION_TEXT = {"status": "generated",
                      "div": '<div xmlns="http://www.w3.org/1999/xhtml">Aucune information disponible.</div>'}


class ClinicalViews:
    """One request's clinical reads as FHIR resources."""

    def __init__(self, services: Services, actor: Actor, base_url: str) -> None:
        self.services = services
        self.actor = actor
        self.base_url = base_url
        self.reader = ClinicalReader(services, actor)
        self.views = Views(services, actor, base_url)
        self.patients = Patients(services)
        self.mapper = FactMapper(base_url, self.views._patient_reference)

    # --- patients -----------------------------------------------------------------------
    def patient_id(self, params: Params, required: bool = True) -> CX | None:
        refs = params.get("patient", []) + params.get("subject", [])
        identifiers = params.get("patient.identifier", []) + params.get("patient:identifier", []) \
            + params.get("subject:identifier", [])
        if refs or identifiers:
            return self.patients.searched(refs, identifiers)
        if required:
            raise FhirError.one(400, "patient (or patient.identifier) is required", "required")
        return None

    # --- searches -----------------------------------------------------------------------
    def search(self, resource_type: str, params: Params, url: str) -> Json:
        kinds = list(KINDS_OF_RESOURCE[resource_type])
        for value in params.get("category", []):   # repeated: ANDed; a category no fact has: none
            wanted = {code for system, sep, code in (c.rpartition("|") for c in value.split(","))
                      if not sep or not system or system == OBS_CATEGORY}
            kinds = [k for k in kinds if (k == LAB and "laboratory" in wanted)
                     or (k == VITAL and "vital-signs" in wanted) or k not in (LAB, VITAL)]
        q = FactQuery(kinds=kinds)
        for value in params.get("code", []):
            for alternative in value.split(","):
                system, sep, code = alternative.partition("|")   # `system|`: any code of the system
                q.codes.append((scheme_of(system), code) if sep else ("", system))
        q.dates = [(m.prefix, m.low, m.high) for m in (date_match(v, "date") for v in params.get("date", []) if v)]
        sort = [k for v in params.get("_sort", []) for k in v.split(",") if k] or ["-date"]
        if sort[0] not in ("date", "-date"):
            raise FhirError.one(400, f"_sort={sort[0]}: only date and -date are supported", "not-supported")
        q.newest_first = sort[0] == "-date"
        try:
            count = paging_number(str(params.get("_count", [DEFAULT_COUNT])[-1]), DEFAULT_COUNT, lowest=-1,
                                  highest=MAX_COUNT)
            offset = paging_number(params.get("_offset", ["0"])[-1], 0, lowest=-1)
        except ValueError as exc:
            raise FhirError.one(400, f"_count/_offset must be integers: {exc}") from exc
        if count < 0 or offset < 0:   # not clamped: a bad value is a 400, as on every other search
            raise FhirError.one(400, "_count and _offset must not be negative")
        patient_id = self.patient_id(params)
        facts = self.reader.facts(patient_id, q) if patient_id else []
        resources = [self.mapper.resource(f) for f in facts]
        statuses = {c.rpartition("|")[2] for v in params.get("status", []) for c in v.split(",")}
        if statuses:
            resources = [r for r in resources if r.get("status") in statuses]
        clinical = {c.rpartition("|")[2] for v in params.get("clinical-status", []) for c in v.split(",")}
        if clinical:
            resources = [r for r in resources
                         if {c.get("code") for c in (r.get("clinicalStatus") or {}).get("coding", [])} & clinical]
        page = resources[offset:offset + count]
        echo = {k: v for k, v in params.items() if k in ("patient", "patient.identifier", "subject", "code", "date",
                                                         "category", "status", "clinical-status", "_sort")}
        return self._searchset(page, len(resources), _offset_links(url, echo, count, offset, len(resources)))

    def read(self, resource_type: str, rid: str) -> Json | None:
        pk = numeric_id(rid)
        if pk is None:
            return None
        fact = self.reader.fact(pk)
        if fact is None or fact.kind not in KINDS_OF_RESOURCE[resource_type]:
            return None
        return self.mapper.resource(fact)

    def _searchset(self, resources: list[Json], total: int, links: list[Json]) -> Json:
        return {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links,
                "entry": [{"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                           "search": {"mode": "match"}} for r in resources]}

    # --- keyword search -----------------------------------------------------------------
    def content_search(self, parsed: Parsed, search: ObjectSearch, url: str) -> Json:
        """MHD Full-Text Search: the documents matching the other parameters (found by the
        database, judged by the gate) ranked by `_content`, a page at a time."""
        terms = " ".join(parsed.content)
        patient_id = self.views.patient_id(parsed)
        # Every document the other parameters keep, not their first page: in a record of more
        # than MAX_COUNT documents the older ones are searched too (the ranking is cut, not them).
        searcher = SearchService(self.services, self.actor)
        uuids: list[str] = []
        after = None
        while True:
            found = searcher.objects(patient_id, search, PageRequest(MAX_COUNT, after=after))
            uuids += [o.entry_uuid for o in found.objects]
            if found.next is None or not found.objects:
                break
            after = found.next
        offset = parsed.after[0] if parsed.after else 0
        if not isinstance(offset, int) or offset < 0:
            raise FhirError.one(400, "_cursor: not a page of this search; start again from the first page")
        hits = self.reader.search(patient_id, terms, DocumentFilter(entry_uuids=uuids), limit=MAX_COUNT,
                                  excerpts=(offset, parsed.count)) if patient_id and uuids else []
        page = hits[offset:offset + parsed.count]
        resources = self.views.documents_with_relations([h.document for h in page])
        top = max((h.rank for h in page), default=0.0) or 1.0
        out = bundle(self.base_url, url, parsed, resources,
                     (offset + parsed.count,) if offset + parsed.count < len(hits) else None,
                     len(hits) if offset == 0 or parsed.page.total else None)
        for entry, hit in zip(out.get("entry", []), page, strict=False):
            entry["search"] = {"mode": "match", "score": round(max(hit.rank, 0.0) / top, 4),
                               "extension": [{"url": EXCERPT_EXTENSION, "valueString": hit.excerpt_html}]}
        return out

    # --- $summary -----------------------------------------------------------------------
    def summary(self, rid: str) -> Json | None:
        """The IPS-like summary; None (404, as for an unknown patient) when the one gate does
        not let the actor see who the patient is."""
        record = self.patients.record(rid)
        patient_id = record.xds_patient_id if record else None
        if record is None or patient_id is None:
            return None
        with self.services.registry.read() as conn:
            if not Reader(self.services, self.actor).record(conn, record.pk):
                return None
        content = summary_content(self.reader, patient_id)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        subject = self.views._patient_reference(patient_id)
        entries: list[Json] = []
        sections = []
        synthesis = content["synthesis"]
        doc_resources = self.views.documents_with_relations([synthesis]) if synthesis else []
        for title, code, display in SECTIONS:
            if title == "Synthèse":
                refs = [f"{self.base_url}/DocumentReference/{r['id']}" for r in doc_resources]
                for r, url in zip(doc_resources, refs, strict=True):
                    entries.append({"fullUrl": url, "resource": r})
                facts: list[FactRow] = []
            else:
                facts = content[code]
                refs = []
                for fact in facts:
                    resource = self.mapper.resource(fact)
                    url = f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
                    refs.append(url)
                    entries.append({"fullUrl": url, "resource": resource})
            section: Json = {"title": title, "code": {"coding": [{"system": "http://loinc.org", "code": code,
                                                                   "display": display}]}}
            if refs:
                section["entry"] = [{"reference": u} for u in refs]
            else:   # cmp-1: a section has text, entries or sections; cmp-2: emptyReason only without entries
                section["text"] = EMPTY_SECTION_TEXT
                section["emptyReason"] = {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "unavailable"}]}
            sections.append(section)
        composition = {
            "resourceType": "Composition", "id": str(uuid.uuid4()), "status": "final",
            "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5",
                                 "display": "Patient summary Document"}]},
            "subject": subject, "date": now, "author": [{"display": "Partage (synthèse calculée)"}],
            "title": "Synthèse du dossier partagé", "section": sections}
        comp_url = f"urn:uuid:{composition['id']}"
        # FHIR R4 composition.html: the resources the Composition references are entries of the
        # document, its subject first (IPS: Bundle.entry:patient 1..1).
        patient = {"fullUrl": subject.get("reference") or f"{self.base_url}/Patient/{record.fhir_id}",
                   "resource": self.patients.resource(record, self.patients.meta(record.pk))}
        return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "document",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
                "timestamp": now, "entry": [{"fullUrl": comp_url, "resource": composition}, patient, *entries]}


def _offset_links(url: str, echo: Params, count: int, offset: int, total: int) -> list[dict[str, str]]:
    def link(at: int) -> str:
        query = [(k, v) for k, vs in echo.items() for v in vs] + [("_count", str(count)), ("_offset", str(at))]
        return f"{url}?{urlencode(query)}"
    out = [{"relation": "self", "url": link(offset)}, {"relation": "first", "url": link(0)}]
    if count and offset + count < total:
        out.append({"relation": "next", "url": link(offset + count)})
    if offset > 0:
        out.append({"relation": "previous", "url": link(max(offset - count, 0))})
    return out


# --- routes -----------------------------------------------------------------------------------
def register(bp: Blueprint, services_of: Callable[[], Services], actor_of: Callable[[Services], Actor],
             base_url_of: Callable[[], str], params_of: Callable[[], Params]) -> None:
    """Add the clinical routes to the /fhir blueprint (helpers are routes.py's own)."""

    def views() -> ClinicalViews:
        services = services_of()
        return ClinicalViews(services, actor_of(services), base_url_of())

    def search_route(resource_type: str) -> Callable[[], Response]:
        def handler() -> Response:
            return formats.respond(views().search(resource_type, params_of(),
                                                  f"{base_url_of()}/{resource_type}"), request)
        handler.__name__ = f"search_{resource_type.lower()}"
        return handler

    def read_route(resource_type: str) -> Callable[[str], Response]:
        def handler(rid: str) -> Response:
            resource = views().read(resource_type, rid)
            if resource is None:
                raise FhirError.one(404, f"{resource_type}/{rid} is not known", "not-found")
            return formats.respond(resource, request)
        handler.__name__ = f"read_{resource_type.lower()}"
        return handler

    for resource_type in KINDS_OF_RESOURCE:
        bp.add_url_rule(f"/{resource_type}", view_func=search_route(resource_type), methods=["GET"])
        bp.add_url_rule(f"/{resource_type}/<rid>", view_func=read_route(resource_type), methods=["GET"])

    def patient_summary(rid: str) -> Response:
        bundle = views().summary(rid)
        if bundle is None:
            raise FhirError.one(404, f"Patient/{rid} is not known", "not-found")
        return formats.respond(bundle, request)

    bp.add_url_rule("/Patient/<rid>/$summary", view_func=patient_summary, methods=["GET"])


def content_search(services: Services, actor: Actor, base_url: str, parsed: Parsed, search: ObjectSearch) -> Json:
    return ClinicalViews(services, actor, base_url).content_search(parsed, search, f"{base_url}/DocumentReference")


def capability_resources() -> list[Json]:
    """The CapabilityStatement entries of the clinical views (what `search` above understands)."""
    common = [{"name": "patient", "type": "reference"}, {"name": "patient.identifier", "type": "token"},
              {"name": "subject", "type": "reference"}, {"name": "code", "type": "token"},
              {"name": "date", "type": "date"}, {"name": "status", "type": "token"}]
    extra = {"Observation": [{"name": "category", "type": "token"}],
             "Condition": [{"name": "clinical-status", "type": "token"}],
             "AllergyIntolerance": [{"name": "clinical-status", "type": "token"}]}
    return [{"type": rtype, "interaction": [{"code": "read"}, {"code": "search-type"}],
             "searchParam": common + extra.get(rtype, []),
             "documentation": "facts extracted from level-3 CDA entries; meta.source names the source "
                              "DocumentReference; Patient/<id>/$summary gives an IPS-like document Bundle; "
                              "DocumentReference?_content= is the keyword search (docs/clinical-reading.md)"}
            for rtype in KINDS_OF_RESOURCE]
