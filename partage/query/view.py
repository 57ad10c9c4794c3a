"""From registry rows to the gate's verdict: the one path every read takes.

`Reader.visible(conn, graph)` completes the graph (the far end of every association, the
members of every SubmissionSet and Folder, so that the gate can judge what a relation
would name), loads what the decision needs (record states, the newest versions of each
document's lineage, the patient the actor is or names), asks `partage.access.gate`, and
notes the outcome on the request's audit record. Flows build graphs; nothing else decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection

from ..access import audit
from ..access.actor import Actor
from ..access.decisions import TRUSTED_KINDS, Decision
from ..access.gate import (
    CONTENT_TYPES,
    AccessView,
    Graph,
    Node,
    Outcome,
    identity_visible,
    record_visible,
    visible,
)
from ..metadata.datatypes import CX
from ..metadata.model import (
    Association,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from ..registry import access_state
from ..registry import lineages as lineages_held
from ..registry import queries as Q
from ..registry.indexing import object_from_row
from ..services import Services

# What a SubmissionSet or Folder holds or changes (its members, its status updates): loaded for the gate.
CONTENT = sorted(str(t) for t in CONTENT_TYPES)
MAX_CLOSURE_ROUNDS = 4   # far ends of far ends: nested HasMember (folder memberships) are two deep


def node_of(row: Q.ObjectRow, *, answer: bool = True) -> Node:
    """A registry row (queries.COLUMNS) as a gate node; its lineage only if it has other versions
    (`versioned`: the newest ones are read for those lineages only)."""
    lineage = (row.lineage or "") if getattr(row, "versioned", True) else ""
    return Node(object_from_row(row.body), row.patient_pk, lineage, answer)


def graph_of(rows: Iterable[Q.ObjectRow], *, roots: set[str] | None = None) -> Graph:
    graph = Graph(roots=roots)
    for row in rows:
        graph.add(node_of(row))
    return graph


class Reader:
    """The access view of one actor for one request (the actor's own patient looked up once)."""

    def __init__(self, services: Services, actor: Actor) -> None:
        self.services = services
        self.actor = actor
        self.registry = services.registry
        self._own: int | None | bool = False     # False: not looked up yet
        # What the decision reads, loaded once per transaction `_loaded_in` (a page is judged
        # twice: once to cut it, once audited): record states, and lineages' newest versions.
        self._states: dict[int, access_state.RecordState] = {}
        self._heads: dict[str, list[Q.ObjectRow]] = {}   # lineage -> its heads (none: a lone version)
        self._held: set[str] = set()                      # lineages registry.lineages names
        self._targets: dict[str, list[str]] = {}          # lineage -> the documents it transforms
        self._originals: dict[str, Q.ObjectRow] = {}      # those documents' rows
        self._loaded_in: Connection | None = None

    def own_patient_pk(self, conn: Connection) -> int | None:
        if self._own is False:
            cx = self.actor.patient_id
            self._own = self.registry.patient_pk(conn, cx) if cx is not None else None
        return self._own if isinstance(self._own, int) else None

    # --- the graph, complete ------------------------------------------------------------
    def close(self, conn: Connection, graph: Graph) -> None:
        """Add, as context, what the gate needs to judge the answer's relations: the members
        of every SubmissionSet and Folder (and the objects whose status it updated), and the
        far end of every association."""
        done: set[str] = set()
        for _ in range(MAX_CLOSURE_ROUNDS):
            containers = [uid for uid, n in graph.nodes.items()
                          if isinstance(n.obj, SubmissionSet | Folder) and uid not in done]
            done.update(containers)
            if containers:
                for row in Q.associations(conn, sources=containers, types=CONTENT):
                    graph.add(node_of(row, answer=False))
            missing = {end for n in graph.nodes.values() if isinstance(n.obj, Association)
                       for end in (n.obj.source_uuid, n.obj.target_uuid) if end not in graph.nodes}
            if missing:
                for row in Q.by_ids(conn, None, entry_uuids=sorted(missing)):
                    graph.add(node_of(row, answer=False))
            if not containers and not (missing & graph.nodes.keys()):
                return   # closed (what is still missing is not in the registry: those relations stay hidden)

    def view(self, conn: Connection, graph: Graph, patient_pks: Sequence[int] = ()) -> AccessView:
        pks = {n.patient_pk for n in graph.nodes.values() if n.patient_pk is not None} | set(patient_pks)
        own = self.own_patient_pk(conn)
        # Every document needs its lineage's newest versions (registry: only lineages of more
        # than one version): an older one is hidden by them, and a version that is not
        # Deprecated may still have a newer sibling (a replaced document set back to Approved;
        # the last version of a lineage deprecated by status).
        lineages = [n.lineage for n in graph.nodes.values() if isinstance(n.obj, DocumentEntry) and n.lineage]
        heads: dict[str, list[DocumentEntry]] = {}
        # their patients, so that a sharded registry reads their shards only (a lineage stays with
        # its patient unless an update moved it: registry.lineages)
        documents = [n for n in graph.nodes.values() if isinstance(n.obj, DocumentEntry) and n.lineage]
        owners = {n.patient_pk for n in documents if n.patient_pk is not None}
        if len(owners) < len({n.patient_pk for n in documents}):
            owners = set()   # a document of no patient: do not narrow
        # A transform is judged with the document it transforms, and that one with its lineage
        # (and its own original, for a transform of a transform): each lineage asked once.
        keys: list[Q.ObjectRow] = []
        transforms: dict[str, list[Node]] = {}
        originals: dict[str, Node] = {}
        asked: set[str] = set()
        todo = list(dict.fromkeys(lineages))
        while todo:
            asked.update(todo)
            keys += self.lineage_heads(conn, todo, owners)
            targets = self.transformed(conn, todo, owners)
            found = self.originals(conn, graph, sorted({u for uids in targets.values() for u in uids}))
            originals.update(found)
            for lineage, uids in targets.items():
                transforms[lineage] = [found[u] for u in uids if u in found]
            if owners and any(n.patient_pk not in owners for n in found.values()):
                owners = set()   # an original of another patient (not registered so): do not narrow
            todo = list(dict.fromkeys(n.lineage for n in found.values() if n.lineage and n.lineage not in asked))
        pks |= {n.patient_pk for n in originals.values() if n.patient_pk is not None}
        missing = [k.entry_uuid for k in keys if k.entry_uuid not in graph.nodes and k.entry_uuid not in originals]
        loaded = {row.entry_uuid: object_from_row(row.body)
                  for row in (Q.by_ids(conn, None, entry_uuids=missing) if missing else [])}
        for key in keys:
            node = graph.nodes.get(key.entry_uuid) or originals.get(key.entry_uuid)
            head = node.obj if node is not None else loaded.get(key.entry_uuid)
            if isinstance(head, DocumentEntry):
                heads.setdefault(key.lineage, []).append(head)
        return AccessView(actor=self.actor, records=self.record_states(conn, pks),
                          own_patient_pk=own, heads=heads, transforms=transforms,
                          table=self.services.access_table)

    def _transaction(self, conn: Connection) -> None:
        """Forget what was loaded in another transaction (another state of the registry)."""
        if self._loaded_in is not conn:
            self._states, self._heads, self._loaded_in = {}, {}, conn
            self._held, self._targets, self._originals = set(), {}, {}

    def lineage_heads(self, conn: Connection, lineages: Iterable[str], owners: set[int]) -> list[Q.ObjectRow]:
        """`queries.lineage_heads` of the lineages of more than one version (registry.lineages:
        none, for most pages, and then no other read), each lineage asked once per transaction;
        read with the documents' patients (`owners`, none: every patient) and the other patients
        holding versions of these lineages (an ITI-57 update that moved one)."""
        self._transaction(conn)
        wanted = list(dict.fromkeys(lineages))
        missing = [lineage for lineage in wanted if lineage not in self._heads]
        if missing:
            for lineage in missing:
                self._heads[lineage] = []
            several = lineages_held.holders(conn, missing)
            self._held.update(several)
            if several:
                held = set().union(*several.values())
                for key in Q.lineage_heads(conn, list(several), owners | held if owners else owners):
                    self._heads[key.lineage].append(key)
        return [key for lineage in wanted for key in self._heads[lineage]]

    def transformed(self, conn: Connection, lineages: Iterable[str], owners: set[int]) -> dict[str, list[str]]:
        """Lineage -> the documents its versions transform (XFRM), for those of these lineages
        registry.lineages names (a transform's is: none, for most pages, and then no read),
        each asked once per transaction; after `lineage_heads` of the same lineages."""
        self._transaction(conn)
        wanted = [lineage for lineage in dict.fromkeys(lineages) if lineage in self._held]
        missing = [lineage for lineage in wanted if lineage not in self._targets]
        if missing:
            for lineage in missing:
                self._targets[lineage] = []
            for row in Q.transformed(conn, missing, owners):
                self._targets[row.lineage].append(row.target_uuid)
        return {lineage: self._targets[lineage] for lineage in wanted if self._targets[lineage]}

    def originals(self, conn: Connection, graph: Graph, entry_uuids: Sequence[str]) -> dict[str, Node]:
        """The documents transformed, as context nodes (the graph's, or read once per transaction)."""
        self._transaction(conn)
        missing = [u for u in entry_uuids if u not in graph.nodes and u not in self._originals]
        if missing:
            self._originals.update((row.entry_uuid, row) for row in Q.by_ids(conn, None, entry_uuids=missing))
        out: dict[str, Node] = {}
        for uid in entry_uuids:
            node = graph.nodes.get(uid)
            row = self._originals.get(uid)
            if node is None and row is not None:
                node = node_of(row, answer=False)
            if node is not None and isinstance(node.obj, DocumentEntry):
                out[uid] = node
        return out

    def record_states(self, conn: Connection, pks: Iterable[int]) -> dict[int, access_state.RecordState]:
        """The access states of these patients' records, each loaded once per transaction."""
        self._transaction(conn)
        wanted = sorted(set(pks))
        missing = [pk for pk in wanted if pk not in self._states]
        if missing:
            self._states.update(access_state.load_many(conn, missing))
        return {pk: self._states[pk] for pk in wanted}

    # --- the verdict ----------------------------------------------------------------------
    def visible(self, conn: Connection, graph: Graph, *, patient_pk: int | None = None,
                audited: bool = True) -> Outcome:
        """The part of `graph` the actor may see; `patient_pk`: the patient the query named.
        `audited`: the documents are what the request returns (not merely named in an answer)."""
        self.close(conn, graph)
        view = self.view(conn, graph, [patient_pk] if patient_pk is not None else [])
        outcome = visible(view, graph)
        if audited:
            note(view, graph, outcome, patient_pk)
        return outcome

    def hidden(self, conn: Connection, entry_uuids: Iterable[str]) -> set[str]:
        """Which of these registered objects (the ends a submission's associations name) the
        actor may not see: a write answers about them as about unknown ids (docs/access.md,
        "What a refusal looks like"), so that naming a hidden document in a relation, a
        membership, tells nothing of it (its existence, its status). Unknown ids are not in it:
        the registry's rules answer for them."""
        wanted = sorted(set(entry_uuids))
        if not wanted or self.actor.kind in TRUSTED_KINDS:
            return set()
        rows = list(Q.by_ids(conn, None, entry_uuids=wanted))
        shown = {o.entry_uuid for o in self.visible(conn, graph_of(rows), audited=False).objects}
        return {row.entry_uuid for row in rows} - shown

    def record(self, conn: Connection, patient_pk: int | None, patient_id: CX | None = None) -> bool:
        """May the actor open this patient's record at all (noted on the audit record)?"""
        view = self.view(conn, Graph(), [patient_pk] if patient_pk is not None else [])
        return _noted(record_visible(view, patient_pk), patient_pk, patient_id)

    def identity(self, conn: Connection, patient_pk: int | None, patient_id: CX | None = None) -> bool:
        """May the actor see who this patient is (noted on the audit record)?"""
        view = self.view(conn, Graph(), [patient_pk] if patient_pk is not None else [])
        return _noted(identity_visible(view, patient_pk), patient_pk, patient_id)


def _noted(decision: Decision, patient_pk: int | None, patient_id: CX | None) -> bool:
    if patient_pk is not None:
        audit.note_patient(patient_id.format() if patient_id is not None else "", patient_pk)
        if not decision:
            audit.note_denied(decision.reason, patient_pk)
    return bool(decision)


def note(view: AccessView, graph: Graph, outcome: Outcome, patient_pk: int | None) -> None:
    """The audit record of the read: the patients, the documents shown, what was withheld."""
    if audit.current() is None:
        return
    for node in graph.nodes.values():
        cx = getattr(node.obj, "patient_id", None)
        if node.answer and cx is not None:
            audit.note_patient(cx.format(), node.patient_pk)
    if patient_pk is not None:
        audit.note_patient("", patient_pk)
        decision = record_visible(view, patient_pk)
        if not decision:
            audit.note_denied(decision.reason, patient_pk)
    audit.note_objects([o.unique_id for o in outcome.objects if isinstance(o, DocumentEntry)])
    if outcome.withheld:
        audit.note_filtered(outcome.withheld)

