"""The one visibility decision: a query's result graph in, the part this actor may see out.

Every read (the 14 stored queries and their return types, retrieve, MHD search and read,
lists, clinical facts, keyword search, `$summary`, the patient's page, the audit trail
shown to a patient) builds its answer as a `Graph` and passes it through `visible`, the
way HAPI FHIR's consent interceptor sees every resource. Nothing else filters on
visibility. Pure: the flow loads what the decision needs into an `AccessView` (record
states, the newest versions of each document's lineage, the time).

The rules (docs/access.md, "Visibility"):
- a DocumentEntry is visible if `read_decision` allows it, judged by its own codes AND by
  those of the newest versions of its lineage (its ITI-57 versions and RPLC replacements):
  masking the newest version hides every older one;
- a transform (XFRM: the same content in another format) is visible only when the document it
  transforms is visible too, judged the same way (with its lineage, and its own original if
  it is a transform itself); an addendum (APND), other content, is judged on its own;
- a SubmissionSet or Folder is visible if the record is open to the actor and, when it holds
  or changes documents in the graph (members, status updates, the documents an association
  it holds links), at least one of them is visible;
- an Association is visible only if both its ends are in the graph and visible (the flow
  loads the far ends, so a hidden document is never named through a relation);
- when a query starts from given objects (`roots`: GetAssociations, GetRelatedDocuments,
  GetSubmissionSets...), only what is reachable from a visible root through visible
  associations is returned: asking about a hidden document answers as for an unknown one;
- `context` nodes are loaded to judge, never returned;
- derived items (clinical facts, text hits) follow their document: they are read for the
  documents this decision shows only (`partage.query.clinical`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..metadata.model import (
    AnyObject,
    Association,
    AssociationType,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from ..registry.access_state import NO_RECORD, RecordState
from .actor import Actor
from .decisions import (
    DEFAULT_TABLE,
    PERMIT,
    AccessTable,
    Decision,
    deny,
    identity_decision,
    read_decision,
    record_decision,
)


@dataclass(frozen=True)
class Node:
    """One registry object of a result, with what the decision needs beside the model."""

    obj: AnyObject
    patient_pk: int | None
    lineage: str = ""          # documents: the lineage they belong to (registry column)
    answer: bool = True        # False: loaded to judge (a far end, a member), not returned


@dataclass
class Graph:
    """A result as registry objects and the associations between them, in answer order."""

    nodes: dict[str, Node] = field(default_factory=dict)
    roots: set[str] | None = None   # None: every answer node stands on its own

    def add(self, node: Node) -> None:
        known = self.nodes.get(node.obj.entry_uuid)
        if known is None or (node.answer and not known.answer):
            self.nodes[node.obj.entry_uuid] = node


@dataclass(frozen=True)
class AccessView:
    """What the decision needs for one actor and one result."""

    actor: Actor
    records: Mapping[int, RecordState] = field(default_factory=dict)   # by patient pk
    own_patient_pk: int | None = None     # the patient the actor is, acts for, or the credential names
    heads: Mapping[str, Sequence[DocumentEntry]] = field(default_factory=dict)  # lineage -> newest versions
    # lineage -> the documents its versions transform (XFRM targets, with their patient and lineage)
    transforms: Mapping[str, Sequence[Node]] = field(default_factory=dict)
    table: AccessTable = DEFAULT_TABLE
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self, patient_pk: int | None) -> RecordState:
        return self.records.get(patient_pk, NO_RECORD) if patient_pk is not None else NO_RECORD

    def own(self, patient_pk: int | None) -> bool | None:
        if self.actor.patient_id is None:
            return None
        return self.own_patient_pk is not None and self.own_patient_pk == patient_pk


@dataclass
class Outcome:
    """The visible objects, in answer order, and how many answer objects were withheld."""

    objects: list[AnyObject]
    withheld: int = 0
    reasons: list[str] = field(default_factory=list)


def record_visible(view: AccessView, patient_pk: int | None) -> Decision:
    """May the actor open this patient's record (identity, page, SubmissionSets, Folders)?"""
    return record_decision(view.actor, view.record(patient_pk), view.table, own_patient=view.own(patient_pk))


def identity_visible(view: AccessView, patient_pk: int | None) -> Decision:
    """May the actor see who the patient is (identity strip, Patient resource, $summary subject)?"""
    return identity_decision(view.actor, view.record(patient_pk), view.table, own_patient=view.own(patient_pk))


def document_visible(view: AccessView, doc: DocumentEntry, patient_pk: int | None, lineage: str,
                     _judging: frozenset[str] = frozenset()) -> Decision:
    """The document as itself, as the newest versions of its lineage say, and, for a transform,
    as the document it transforms is judged (the same content in another format)."""
    record, own = view.record(patient_pk), view.own(patient_pk)
    decision = read_decision(view.actor, record, doc, view.table, own_patient=own, now=view.now)
    if not decision:
        return decision
    for head in view.heads.get(lineage, ()):
        if head.entry_uuid == doc.entry_uuid:
            continue
        newer = read_decision(view.actor, record, head, view.table, own_patient=own, now=view.now)
        if not newer:
            return deny(f"a newer version of the document is not visible ({newer.reason})")
    judging = _judging | {lineage or doc.entry_uuid}
    for original in view.transforms.get(lineage, ()) if lineage else ():
        if not isinstance(original.obj, DocumentEntry) or (original.lineage or original.obj.entry_uuid) in judging:
            return deny("the document it transforms is not known to the actor")
        of = document_visible(view, original.obj, original.patient_pk, original.lineage, judging)
        if not of:
            return deny(f"the document it transforms is not visible ({of.reason})")
    return PERMIT


# What a SubmissionSet or Folder holds or changes: its members, and (ITI-57) the objects
# whose status it updated.
CONTENT_TYPES = frozenset({AssociationType.HAS_MEMBER, AssociationType.UPDATE_AVAILABILITY_STATUS})


def _members(graph: Graph) -> dict[str, list[str]]:
    """SubmissionSet / Folder id -> the DocumentEntries present in the graph that it holds or
    changes: its members, the documents whose status it updated, and the documents an
    association it holds links (a folder membership, a relation filed by an update). A
    set whose only content is a change of a hidden document is as hidden as the document."""
    out: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        obj = node.obj
        if isinstance(obj, Association) and obj.association_type in CONTENT_TYPES:
            target = graph.nodes.get(obj.target_uuid)
            if target is None:
                continue
            if isinstance(target.obj, DocumentEntry):
                out.setdefault(obj.source_uuid, []).append(obj.target_uuid)
            elif isinstance(target.obj, Association):
                for end in (target.obj.source_uuid, target.obj.target_uuid):
                    linked = graph.nodes.get(end)
                    if linked is not None and isinstance(linked.obj, DocumentEntry):
                        out.setdefault(obj.source_uuid, []).append(end)
    return out


def decide(view: AccessView, graph: Graph) -> dict[str, Decision]:
    """The decision on every node of the graph (associations included)."""
    decisions: dict[str, Decision] = {}
    for uid, node in graph.nodes.items():
        if isinstance(node.obj, DocumentEntry):
            decisions[uid] = document_visible(view, node.obj, node.patient_pk, node.lineage)
    members = _members(graph)
    for uid, node in graph.nodes.items():
        if isinstance(node.obj, SubmissionSet | Folder):
            decision = record_visible(view, node.patient_pk)
            docs = members.get(uid, [])
            if decision and docs and not any(decisions[d] for d in docs):
                decision = deny(f"every document of this {node.obj.kind} is hidden from the actor")
            decisions[uid] = decision
    for uid, node in graph.nodes.items():
        if isinstance(node.obj, Association):
            decisions[uid] = _association(uid, graph, decisions, set())
    return decisions


def _association(uid: str, graph: Graph, decisions: dict[str, Decision], seen: set[str]) -> Decision:
    if uid in decisions:
        return decisions[uid]
    if uid in seen:
        return deny("association cycle")
    seen.add(uid)
    assoc = graph.nodes[uid].obj
    assert isinstance(assoc, Association)
    for end in (assoc.source_uuid, assoc.target_uuid):
        node = graph.nodes.get(end)
        if node is None:
            return deny(f"the association's end {end} is not known to the actor")
        end_decision = decisions.get(end) if not isinstance(node.obj, Association) else \
            _association(end, graph, decisions, seen)
        if end_decision is None or not end_decision:
            return deny("an end of the association is hidden from the actor")
    decisions[uid] = PERMIT
    return PERMIT


def _reachable(graph: Graph, decisions: dict[str, Decision]) -> set[str]:
    assert graph.roots is not None
    reached = {r for r in graph.roots if r in graph.nodes and decisions[r]}
    edges = [n.obj for n in graph.nodes.values() if isinstance(n.obj, Association) and decisions[n.obj.entry_uuid]]
    changed = True
    while changed:
        changed = False
        for assoc in edges:
            assert isinstance(assoc, Association)
            ends = {assoc.source_uuid, assoc.target_uuid}
            if ends & reached and not ends <= reached | {assoc.entry_uuid}:
                reached |= ends
                changed = True
            if ends & reached and assoc.entry_uuid not in reached:
                reached.add(assoc.entry_uuid)
                changed = True
    return reached


def visible(view: AccessView, graph: Graph) -> Outcome:
    """The answer objects the actor may see, in order; associations only with both ends."""
    decisions = decide(view, graph)
    reached = _reachable(graph, decisions) if graph.roots is not None else None
    out = Outcome([])
    for uid, node in graph.nodes.items():
        if not node.answer:
            continue
        decision = decisions[uid]
        if decision and (reached is None or uid in reached):
            out.objects.append(node.obj)
        else:
            out.withheld += 1
            if decision.reason and decision.reason not in out.reasons:
                out.reasons.append(decision.reason)
    return out
