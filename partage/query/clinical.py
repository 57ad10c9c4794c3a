"""Reading clinical facts and searching document text for one actor, through the one gate.

Every read starts from the patient's documents as the query flow returns them to this
actor (`QueryService.find_documents`: the gate decides there, and audits), keeps the
Approved ones, and only then selects the facts or text of those documents by logical id
(`partage.registry.derived`, `partage.registry.text_search`). So a fact or a text from a
document the actor may not see (masked, invisible to the patient, a class the profession
may not read), or from a document that was deprecated, replaced or removed, is neither
shown nor counted: derived data follows its document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..access.actor import Actor
from ..access.decisions import tells_withheld
from ..clinical.extract import (
    ALLERGY,
    IMMUNIZATION,
    LAB,
    MEDICATION,
    PROBLEM,
    VITAL,
    problem_status,
)
from ..metadata.datatypes import CX, DTM, DatatypeError
from ..metadata.model import DocumentEntry
from ..metadata.query import DocumentFilter
from ..registry import derived
from ..registry.search_index import date_range
from ..registry.text_search import SearchHit, full_text
from ..services import Services
from .service import QueryService

APPROVED = "Approved"
# Types and classes that make a document "a synthesis" (the VSM block, $summary's first section).
SYNTHESIS_TYPES = {"60591-5", "74207-2", "34133-9"}   # patient summary, DLU, summary of episode note
SYNTHESIS_CLASS = "11"
RECENT_RESULTS = 50


@dataclass
class FactRow:
    """A stored fact with its source document (the version the actor may see)."""

    pk: int
    kind: str
    code: str
    code_system: str
    display: str
    value_num: float | None
    value_text: str
    unit: str
    ref_low: str
    ref_high: str
    ref_text: str
    interpretation: str
    status: str
    effective: str
    effective_end: str
    detail: dict[str, Any]
    document: DocumentEntry
    seq: int = 0

    @property
    def value(self) -> str:
        return self.value_text or ("" if self.value_num is None else f"{self.value_num:g} {self.unit}".strip())


@dataclass
class FactQuery:
    kinds: list[str] | None = None   # None: every kind; [] (a search no kind can answer): none
    codes: list[tuple[str, str]] = field(default_factory=list)   # (system or '', code)
    dates: list[tuple[str, str, str]] = field(default_factory=list)   # (FHIR prefix, low, high), ANDed
    newest_first: bool = True


def fact_range(effective: str) -> tuple[str, str] | None:
    """The seconds a fact's time covers, `[low, high)` (a day, a month, a year: its whole range)."""
    try:
        return date_range(DTM(effective))
    except DatatypeError:
        return None


def _date_holds(prefix: str, target: tuple[str, str], low: str, high: str) -> bool:
    """A FHIR date prefix over ranges (search.html#date; docs/conformance.md "Dates"): the fact's
    range `target` against the searched `[low, high)`."""
    tl, th = target
    eq = low <= tl and th <= high
    return {"eq": eq, "ne": not eq, "ge": th > low, "gt": th > high, "le": tl < high, "lt": tl < low,
            "sa": tl >= high, "eb": th <= low}[prefix]


def _in_window(effective: str, q: FactQuery) -> bool:
    """Every `date` criterion holds for the fact's time (a fact without a time matches none)."""
    if not q.dates:
        return True
    target = fact_range(effective) if effective else None
    return target is not None and all(_date_holds(p, target, low, high) for p, low, high in q.dates)


class ClinicalReader:
    def __init__(self, services: Services, actor: Actor) -> None:
        self.services = services
        self.actor = actor
        self.queries = QueryService(services, actor)
        self.incomplete = False   # some document matched that the actor may not see (never says which)

    @property
    def filtered(self) -> bool:
        """Whether a view may say that the gate withheld documents of the record from this actor
        (docs/access.md: never how many or which; never to the patient)."""
        return self.incomplete and tells_withheld(self.actor)

    # --- the documents this actor may see -----------------------------------------------
    def documents(self, patient_id: CX | None, f: DocumentFilter | None = None) -> dict[str, DocumentEntry]:
        """Approved documents of the patient visible to the actor, by logical id, newest first."""
        f = f or DocumentFilter()
        f.statuses = [APPROVED]
        result = self.queries.find_documents(patient_id, f)
        self.incomplete = self.incomplete or result.incomplete
        out: dict[str, DocumentEntry] = {}
        for obj in result.objects:
            if isinstance(obj, DocumentEntry):
                out.setdefault(obj.lid or obj.entry_uuid, obj)
        return out

    # --- facts ---------------------------------------------------------------------------
    def facts(self, patient_id: CX | None, q: FactQuery | None = None,
              documents: dict[str, DocumentEntry] | None = None) -> list[FactRow]:
        q = q or FactQuery()
        if q.kinds is not None and not q.kinds:
            return []
        docs = self.documents(patient_id) if documents is None else documents
        if not docs:
            return []
        with self.services.registry.read() as conn:
            rows = derived.facts(conn, list(docs), q.kinds or (), q.codes)
        out = [self._row(r, docs[r.doc_lid]) for r in rows if _in_window(r.effective, q)]
        out.sort(key=lambda f: (f.effective, f.document.creation_time.lower_bound()
                                if f.document.creation_time else "", -f.seq),
                 reverse=q.newest_first)
        return out

    @staticmethod
    def _row(r: Any, doc: DocumentEntry) -> FactRow:
        return FactRow(pk=r.pk, kind=r.kind, code=r.code, code_system=r.code_system, display=r.display,
                       value_num=r.value_num, value_text=r.value_text, unit=r.unit, ref_low=r.ref_low,
                       ref_high=r.ref_high, ref_text=r.ref_text, interpretation=r.interpretation,
                       status=problem_status(r.status, r.effective_end) if r.kind == PROBLEM else r.status,
                       effective=r.effective, effective_end=r.effective_end,
                       detail=json.loads(r.detail or "{}"), document=doc, seq=r.seq)

    def fact(self, pk: int) -> FactRow | None:
        """One fact by key, if its document is visible to the actor (None otherwise)."""
        with self.services.registry.read() as conn:
            row = derived.fact(conn, pk)
        if row is None:
            return None
        result = self.queries.get_objects("D", logical_ids=[row.doc_lid])
        approved = [d for d in result.objects
                    if isinstance(d, DocumentEntry) and d.availability_status is not None
                    and d.availability_status.short == APPROVED]
        return self._row(row, approved[0]) if approved else None

    def latest(self, patient_id: CX | None, system: str, code: str) -> FactRow | None:
        found = self.facts(patient_id, FactQuery(codes=[(system, code)]))
        return found[0] if found else None

    # --- keyword search -------------------------------------------------------------------
    def search(self, patient_id: CX | None, terms: str, f: DocumentFilter | None = None,
               limit: int = 50, documents: dict[str, DocumentEntry] | None = None,
               excerpts: tuple[int, int] | None = None) -> list[SearchHit]:
        """Ranked, highlighted matches among the documents the actor may see (and the filter keeps;
        `documents`: those already read for this actor)."""
        docs = self.documents(patient_id, f) if documents is None else documents
        if not docs or not terms.strip():
            return []
        with self.services.registry.read() as conn:
            hits = full_text(conn, list(docs), terms, limit, excerpts)
        for hit in hits:
            hit.document = docs[hit.doc_lid]
        return hits


# --- the synthesis both doors show ($summary, the professional's page) -----------------------
def is_current_treatment(fact: FactRow, today: str = "") -> bool:
    """A treatment with no end, or an end not yet reached (digits compared as prefixes)."""
    if fact.kind != MEDICATION:
        return False
    if fact.status in ("aborted", "cancelled", "nullified"):
        return False
    if not fact.effective_end:
        return True
    today = today or datetime.now(UTC).strftime("%Y%m%d")
    return fact.effective_end[:8] >= today[:8]


def current_treatments(medications: list[FactRow]) -> list[FactRow]:
    """The treatments taken now: of each product (its code, else its name), only the mentions of
    the newest document that mentions it count, and those whose end is not reached. A product a
    later document records as stopped is not current, whatever an older document said."""
    def product(f: FactRow) -> tuple[str, str]:
        return (f.code_system, f.code) if f.code else ("", " ".join(f.display.casefold().split()))

    def written(f: FactRow) -> str:
        return f.document.creation_time.lower_bound() if f.document.creation_time else ""
    newest: dict[tuple[str, str], str] = {}
    for f in medications:
        key = product(f)
        newest[key] = max(newest.get(key, ""), written(f))
    return [f for f in medications if written(f) == newest[product(f)] and is_current_treatment(f)]


def is_synthesis(doc: DocumentEntry) -> bool:
    return bool((doc.class_code and doc.class_code.code == SYNTHESIS_CLASS)
                or (doc.type_code and doc.type_code.code in SYNTHESIS_TYPES))


def dedupe(facts: list[FactRow]) -> list[FactRow]:
    """The same fact repeated by several documents: keep its newest mention (facts are newest first)."""
    seen: set[tuple[str, ...]] = set()
    out: list[FactRow] = []
    for f in facts:
        key = (f.kind, f.code_system, f.code, f.display if not f.code else "", f.effective[:8], f.value)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def summary_content(reader: ClinicalReader, patient_id: CX) -> dict[str, Any]:
    """What a synthesis shows, by LOINC section code: one read of the visible documents, one of
    facts. Also "synthesis" (the latest synthesis document), "documents" (newest first),
    "labs" and "vitals" (every value, newest first), "incomplete" (the policy withheld something)."""
    docs = reader.documents(patient_id)
    facts = reader.facts(patient_id, documents=docs)
    by_lid = docs
    by_kind: dict[str, list[FactRow]] = {}
    for f in facts:
        by_kind.setdefault(f.kind, []).append(f)
    problems = dedupe(by_kind.get(PROBLEM, []))
    labs_latest: dict[tuple[str, str], FactRow] = {}
    for f in by_kind.get(LAB, []):
        labs_latest.setdefault((f.code_system, f.code or f.display), f)
    vitals_latest: dict[tuple[str, str], FactRow] = {}
    for f in by_kind.get(VITAL, []):
        vitals_latest.setdefault((f.code_system, f.code or f.display), f)
    ordered = sorted(docs.values(), key=lambda d: d.creation_time.lower_bound() if d.creation_time else "",
                     reverse=True)
    synthesis = next((d for d in ordered if is_synthesis(d)), None)
    return {
        "synthesis": synthesis,
        "documents": ordered,
        "48765-2": [f for f in dedupe(by_kind.get(ALLERGY, [])) if f.status not in ("resolved", "inactive")],
        "11450-4": [f for f in problems if f.status not in ("resolved", "inactive", "remission")],
        "11348-0": [f for f in problems if f.status in ("resolved", "inactive", "remission")],
        "10160-0": current_treatments(dedupe(by_kind.get(MEDICATION, []))),
        "30954-2": list(labs_latest.values())[:RECENT_RESULTS],
        "8716-3": list(vitals_latest.values()),
        "11369-6": dedupe(by_kind.get(IMMUNIZATION, [])),
        "labs": by_kind.get(LAB, []),
        "vitals": by_kind.get(VITAL, []),
        "problems": problems,
        "incomplete": reader.filtered,   # withheld, and this actor may be told so (never the patient)
        "by_lid": by_lid,
    }
