"""Searches paged by the database, judged by the one gate (FHIR ITI-67, ITI-66, Patient).

The registry filters and orders candidates (`partage.registry.search`); `partage.query.paging`
cuts the page after the gate has judged them: registry objects through `Reader.visible` (the
same decision every stored query takes), patients through `Reader.identity`. The page is then
judged once more with the audit on, so the request's audit record names what was returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..access import audit
from ..access.actor import Actor
from ..access.gate import Graph, Node
from ..metadata.datatypes import CX
from ..metadata.model import RELATIONSHIP_TYPES, AnyObject, Association
from ..registry import patients as registry_patients
from ..registry import queries as Q
from ..registry import search as R
from ..registry.patients import PatientRecord
from ..services import Services
from .paging import Key, PageRequest, cut
from .view import Reader, node_of

RELATIONSHIPS = sorted(str(t) for t in RELATIONSHIP_TYPES)


@dataclass
class ObjectPage:
    objects: list[AnyObject] = field(default_factory=list)
    rows: dict[str, Any] = field(default_factory=dict)   # entryUUID -> its row (revision, updated_at...)
    next: Key | None = None
    total: int | None = None
    relations: list[Association] = field(default_factory=list)   # visible relationships from the page


@dataclass
class PatientPage:
    records: list[tuple[PatientRecord, Any]] = field(default_factory=list)   # record, its row (revision...)
    next: Key | None = None
    total: int | None = None


class SearchService:
    def __init__(self, services: Services, actor: Actor) -> None:
        self.registry = services.registry
        self.reader = Reader(services, actor)

    def objects(self, patient_id: CX | None, search: R.ObjectSearch, request: PageRequest, *,
                relations: bool = False) -> ObjectPage:
        """One page of a patient's registry objects matching `search`, as the actor may see them;
        with `relations`, the document relationships (RPLC, APND, XFRM, signs...) the page's
        documents are the source of, judged with the page."""
        with self.registry.read() as conn:
            pk = self.registry.patient_pk(conn, patient_id) if patient_id is not None else None
            if pk is None:
                return ObjectPage(total=0)
            size = R.key_count(search)
            nodes: dict[int, Node] = {}   # each row read into the model once per request

            def graph(rows: Sequence[Any]) -> Graph:
                out = Graph()
                for row in rows:
                    if row.pk not in nodes:
                        nodes[row.pk] = node_of(row)
                    out.add(nodes[row.pk])
                return out

            def fetch(after: Key | None, limit: int) -> Sequence[Any]:
                return R.objects(conn, search, pk, after, limit)

            def judge(rows: Sequence[Any]) -> Sequence[Any]:
                shown = {o.entry_uuid for o in
                         self.reader.visible(conn, graph(rows), patient_pk=pk, audited=False).objects}
                return [r for r in rows if r.entry_uuid in shown]

            page = cut(fetch, judge, lambda row: R.position(row, size), request)
            answer = graph(page.items)
            if relations and page.items:
                for row in Q.associations(conn, sources=[r.entry_uuid for r in page.items],
                                          types=RELATIONSHIPS, statuses=["Approved"]):
                    answer.add(node_of(row))
            outcome = self.reader.visible(conn, answer, patient_pk=pk)   # the page, audited
            if page.withheld:
                audit.note_filtered(page.withheld)
            return ObjectPage([o for o in outcome.objects if not isinstance(o, Association)],
                              {r.entry_uuid: r for r in page.items}, page.next, page.total,
                              [o for o in outcome.objects if isinstance(o, Association)])

    def patients(self, search: R.PatientSearch, request: PageRequest) -> PatientPage:
        """One page of patients matching `search` whom the actor may know (identity gate)."""
        with self.registry.read() as conn:
            size = R.key_count(search)
            records: dict[int, PatientRecord | None] = {}

            def record(pk: int) -> PatientRecord | None:
                if pk not in records:
                    records[pk] = registry_patients.record(conn, pk)
                return records[pk]

            def fetch(after: Key | None, limit: int) -> Sequence[Any]:
                return R.patients(conn, search, after, limit)

            def judge(rows: Sequence[Any]) -> Sequence[Any]:
                kept = []
                for row in rows:
                    found = record(row.pk)
                    if found is not None and self.reader.identity(conn, row.pk, found.xds_patient_id):
                        kept.append(row)
                return kept

            page = cut(fetch, judge, lambda row: R.position(row, size), request)
            if page.withheld:
                audit.note_filtered(page.withheld)
            shown = [(found, row) for row in page.items if (found := record(row.pk)) is not None]
            return PatientPage(shown, page.next, page.total)
