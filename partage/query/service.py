"""The query flow: one implementation of every XDS query shape, for every door.

ITI-18 stored queries and MHD searches (ITI-66/67) call these methods with model filters;
each resolves the patient and ids, runs the registry's indexed SQL, and builds its answer
as a graph (objects and the associations between them). The graph goes through the one
visibility decision (`partage.query.view.Reader` -> `partage.access.gate`), so nothing
an actor may not see is returned, counted, or named through a relation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sqlalchemy import Connection

from ..access.actor import Actor
from ..metadata import kinds
from ..metadata.datatypes import CX
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import AnyObject, Association, AssociationType, DocumentEntry
from ..metadata.query import DocumentFilter, FolderFilter, SubmissionSetFilter
from ..registry import queries as Q
from ..registry.indexing import object_from_row
from ..services import Services
from .view import Reader, graph_of, node_of

HAS_MEMBER = str(AssociationType.HAS_MEMBER)
# A find query whose rows reach the result limit is read on, for the gate to say whether the
# actor may see more than the limit, up to this many times the limit (then it is too broad
# whoever asks: what one query reads stays bounded).
HIDDEN_ROWS_READ = 10
Row = Q.ObjectRow   # a registry row with queries.COLUMNS


@dataclass
class QueryResult:
    objects: list[AnyObject] = field(default_factory=list)
    warnings: list[XdsError] = field(default_factory=list)
    incomplete: bool = False   # something matched that the actor may not see (never says what)


@dataclass(frozen=True)
class Located:
    """A document the actor may read, and where its bytes are."""

    document: DocumentEntry
    blob_address: str


class QueryService:
    def __init__(self, services: Services, actor: Actor, *, object_refs: bool = False) -> None:
        self.services = services
        self.registry = services.registry
        self.actor = actor
        self.reader = Reader(services, actor)
        self.limit = services.settings.query_result_limit
        # ObjectRef answers disclose no patient data: XDSResultNotSinglePatient applies
        # to full metadata (LeafClass) only (ITI TF-2a 3.18.4.1.3).
        self.object_refs = object_refs
        # Associations a query follows and returns, by availabilityStatus: Approved unless
        # the request says otherwise ($XDSAssociationStatus, ITI-18 with Metadata Update).
        self.association_statuses: list[str] = ["Approved"]
        self.metadata_level = 1   # $MetadataLevel 2: every version of a logical object named by uniqueId

    # --- helpers -----------------------------------------------------------------------
    def _check_limit(self, shown: Sequence[AnyObject]) -> None:
        """XDSTooManyResults, judged on what the actor may see (the gate's outcome)."""
        if self.limit and len(shown) > self.limit:
            self._too_many()

    def _too_many(self) -> NoReturn:
        raise XdsErrors.one(ErrorCode.TOO_MANY_RESULTS, f"the query matches more than {self.limit} objects; narrow it")

    def _answer(self, conn: Connection, rows: Sequence[Row], *, roots: set[str] | None = None,
                context: Sequence[Row] = (), patient_pk: int | None = None,
                single_patient: bool = False) -> QueryResult:
        """The rows, judged as one graph (with `context` rows to judge, never returned).

        `single_patient`: a Get query answering full metadata of more than one patient is
        XDSResultNotSinglePatient (ITI TF-2a 3.18.4.1.3). Asked of what the actor may see,
        so that an id of another patient's hidden document answers as an unknown one; and so is
        the result limit (XDSTooManyResults), so that it counts nothing the actor may not see."""
        graph = graph_of(rows, roots=roots)
        for row in context:
            graph.add(node_of(row, answer=False))
        outcome = self.reader.visible(conn, graph, patient_pk=patient_pk)
        self._check_limit(outcome.objects)
        if single_patient and not self.object_refs:
            shown = {o.entry_uuid for o in outcome.objects}
            if len({r.patient_pk for r in rows if r.entry_uuid in shown and r.patient_pk is not None}) > 1:
                raise XdsErrors.one(ErrorCode.RESULT_NOT_SINGLE_PATIENT,
                                    "the requested objects belong to more than one patient")
        return QueryResult(outcome.objects, incomplete=outcome.withheld > 0)

    def _associations(self, conn: Connection, **match: Any) -> list[Row]:
        """Associations in the statuses this query follows ($XDSAssociationStatus)."""
        return list(Q.associations(conn, statuses=self.association_statuses, **match))

    def _patient(self, conn: Connection, patient_id: CX | None) -> int | None:
        return self.registry.patient_pk(conn, patient_id) if patient_id is not None else None

    # --- find queries ------------------------------------------------------------------
    def _of_patient(self, patient_id: CX | None, find: Callable[[Connection, int, int | None], Sequence[Row]],
                    *, capped: bool = True) -> QueryResult:
        """The answer made of the rows `find` reads of one patient's (by patient pk, at most a
        number of rows, None: all); empty for a patient not known here. Read up to one row more
        than the result limit; when that many match, all of them: whether the actor may see more
        than the limit is the gate's to say (a hidden document counts for nothing), up to
        HIDDEN_ROWS_READ times the limit: beyond, the query is too broad whoever asks (a bound
        on what one query reads). `capped` False: `find` reads everything at once (GetAll)."""
        with self.registry.read() as conn:
            pk = self._patient(conn, patient_id)
            if pk is None:
                return QueryResult()
            cap = self.limit + 1 if self.limit and capped else None
            rows = find(conn, pk, cap)
            if cap is not None and len(rows) >= cap:
                ceiling = HIDDEN_ROWS_READ * self.limit + 1
                rows = find(conn, pk, ceiling)
                if len(rows) >= ceiling:
                    self._too_many()
            return self._answer(conn, rows, patient_pk=pk)

    def find_documents(self, patient_id: CX | None, f: DocumentFilter, limit: int | None = None) -> QueryResult:
        return self._of_patient(patient_id, lambda conn, pk, cap: Q.find_documents(
            conn, pk, f, min(cap, limit) if limit and cap else (cap or limit)))

    def find_submission_sets(self, patient_id: CX | None, f: SubmissionSetFilter) -> QueryResult:
        return self._of_patient(patient_id, lambda conn, pk, cap: Q.find_submission_sets(conn, pk, f, cap))

    def find_folders(self, patient_id: CX | None, f: FolderFilter) -> QueryResult:
        return self._of_patient(patient_id, lambda conn, pk, cap: Q.find_folders(conn, pk, f, cap))

    def get_all(self, patient_id: CX | None, docs: DocumentFilter, sets: SubmissionSetFilter,
                folders: FolderFilter) -> QueryResult:
        def everything(conn: Connection, pk: int, _cap: int | None) -> list[Row]:
            rows = [*Q.find_submission_sets(conn, pk, sets), *Q.find_documents(conn, pk, docs),
                    *Q.find_folders(conn, pk, folders)]
            ids = [r.entry_uuid for r in rows]
            return rows + _between(self._associations(conn, sources=ids), set(ids), nested=True)
        return self._of_patient(patient_id, everything, capped=False)

    # --- get queries -------------------------------------------------------------------
    def get_objects(self, kind: str, *, entry_uuids: Sequence[str] = (), unique_ids: Sequence[str] = (),
                    logical_ids: Sequence[str] = ()) -> QueryResult:
        with self.registry.read() as conn:
            # $XDS...LogicalID: every version of the logical object (ITI-18 with Metadata Update).
            rows = list(Q.by_ids(conn, kind, entry_uuids=entry_uuids, unique_ids=unique_ids,
                                 logical_ids=logical_ids))
            return self._answer(conn, rows, single_patient=True)

    def get_associations(self, uuids: Sequence[str]) -> QueryResult:
        """Associations of the given objects: only those whose two ends the actor may see."""
        with self.registry.read() as conn:
            anchors = Q.by_ids(conn, None, entry_uuids=uuids)
            rows = self._associations(conn, either=[a.entry_uuid for a in anchors])
            return self._answer(conn, rows, roots={a.entry_uuid for a in anchors}, context=anchors,
                                single_patient=True)

    def get_documents_and_associations(self, *, entry_uuids: Sequence[str] = (),
                                       unique_ids: Sequence[str] = ()) -> QueryResult:
        with self.registry.read() as conn:
            docs = Q.by_ids(conn, kinds.KIND_DOCUMENT, entry_uuids=entry_uuids, unique_ids=unique_ids)
            assocs = self._associations(conn, either=[d.entry_uuid for d in docs])
            return self._answer(conn, [*docs, *assocs], roots={d.entry_uuid for d in docs}, single_patient=True)

    def get_submission_sets(self, uuids: Sequence[str]) -> QueryResult:
        """The SubmissionSets holding the given objects, and those HasMember associations."""
        with self.registry.read() as conn:
            members = Q.by_ids(conn, None, entry_uuids=uuids)
            assocs = self._associations(conn, targets=[m.entry_uuid for m in members], types=[HAS_MEMBER])
            sets = Q.by_ids(conn, kinds.KIND_SUBMISSION_SET,
                            entry_uuids=[_association(a).source_uuid for a in assocs])
            set_ids = {s.entry_uuid for s in sets}
            assocs = [a for a in assocs if _association(a).source_uuid in set_ids]
            return self._answer(conn, [*sets, *assocs], roots={m.entry_uuid for m in members},
                                context=members, single_patient=True)

    def get_submission_set_and_contents(self, f: DocumentFilter, *, entry_uuid: str = "",
                                        unique_id: str = "") -> QueryResult:
        with self.registry.read() as conn:
            sets = _named(conn, kinds.KIND_SUBMISSION_SET, entry_uuid, unique_id)
            if not sets:
                return QueryResult()
            ss = sets[0]
            member_assocs = self._associations(conn, sources=[ss.entry_uuid], types=[HAS_MEMBER])
            member_ids = [_association(a).target_uuid for a in member_assocs]
            docs = _filtered_documents(conn, member_ids, f)
            folders = Q.by_ids(conn, kinds.KIND_FOLDER, entry_uuids=member_ids)
            inner = Q.by_ids(conn, kinds.KIND_ASSOCIATION, entry_uuids=member_ids,
                             extra=[Q.OBJ.c.status.in_(self.association_statuses)])
            kept = {r.entry_uuid for r in [*docs, *folders]}
            inner = [a for a in inner if _ends(a) <= kept]
            kept |= {a.entry_uuid for a in inner}
            member_assocs = [a for a in member_assocs if _association(a).target_uuid in kept]
            return self._answer(conn, [ss, *docs, *folders, *member_assocs, *inner], roots={ss.entry_uuid})

    def get_folder_and_contents(self, f: DocumentFilter, *, entry_uuid: str = "",
                                unique_id: str = "") -> QueryResult:
        with self.registry.read() as conn:
            folders = _named(conn, kinds.KIND_FOLDER, entry_uuid, unique_id)
            if not folders:
                return QueryResult()
            # A uniqueId names every version of the folder: $MetadataLevel 2 returns them all,
            # level 1 the current (latest) one.
            if self.metadata_level < 2:
                folders = [max(folders, key=lambda r: int(object_from_row(r.body).version or 1))]
            assocs = self._associations(conn, sources=[f.entry_uuid for f in folders], types=[HAS_MEMBER])
            docs = _filtered_documents(conn, [_association(a).target_uuid for a in assocs], f)
            kept = {d.entry_uuid for d in docs}
            assocs = [a for a in assocs if _association(a).target_uuid in kept]
            return self._answer(conn, [*folders, *docs, *assocs], roots={r.entry_uuid for r in folders})

    def get_folders_for_document(self, *, entry_uuid: str = "", unique_id: str = "") -> QueryResult:
        with self.registry.read() as conn:
            docs = _named(conn, kinds.KIND_DOCUMENT, entry_uuid, unique_id)
            if not docs:
                return QueryResult()
            assocs = self._associations(conn, targets=[d.entry_uuid for d in docs], types=[HAS_MEMBER])
            folders = Q.by_ids(conn, kinds.KIND_FOLDER,
                               entry_uuids=[_association(a).source_uuid for a in assocs])
            folder_ids = {f.entry_uuid for f in folders}
            links = [a for a in assocs if _association(a).source_uuid in folder_ids]
            return self._answer(conn, folders, roots={d.entry_uuid for d in docs}, context=[*docs, *links],
                                single_patient=True)

    def get_related_documents(self, types: Sequence[str], f: DocumentFilter, *, entry_uuid: str = "",
                              unique_id: str = "") -> QueryResult:
        with self.registry.read() as conn:
            docs = _named(conn, kinds.KIND_DOCUMENT, entry_uuid, unique_id)
            if not docs:
                return QueryResult()
            doc = docs[0]
            assocs = self._associations(conn, either=[doc.entry_uuid], types=types)
            if not assocs:
                return QueryResult()
            others = {e for a in assocs for e in _ends(a)} - {doc.entry_uuid}
            related = Q.by_ids(conn, kinds.KIND_DOCUMENT, entry_uuids=sorted(others),
                               extra=Q.document_clauses(f)[1:])
            kept = {r.entry_uuid for r in related} | {doc.entry_uuid}
            assocs = [a for a in assocs if _ends(a) <= kept]
            if not assocs:
                return QueryResult()
            result = self._answer(conn, [doc, *related, *assocs], roots={doc.entry_uuid})
        # The document the query names is returned only with a relation the actor may see.
        if not any(isinstance(o, Association) for o in result.objects):
            return QueryResult()
        return result

    # --- retrieve ------------------------------------------------------------------------
    def locate_document(self, unique_id: str) -> Located | None:
        """The newest version of a document held here that the actor may read, and its blob.

        A document the actor may not see is reported exactly like an unknown one, so
        that a refusal does not reveal that the document exists.
        """
        with self.registry.read() as conn:
            rows = Q.stored_versions(conn, unique_id)
            for row in rows:
                outcome = self.reader.visible(conn, graph_of([row]))
                if outcome.objects:
                    doc = outcome.objects[0]
                    assert isinstance(doc, DocumentEntry)
                    return Located(doc, row.blob_address)
        return None


    def visible_events(self, events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Audit events as the patient (or a representative) may read them: each names only the
        documents the actor may see, and an event that named documents none of which the actor
        may see is left out (its presence alone, a successful ITI-41, would say that something
        hidden was filed or read). docs/access.md, "The audit trail"."""
        shown = self.visible_unique_ids([uid for e in events for uid in e["objects"]])
        return [{**e, "objects": [u for u in e["objects"] if u in shown]} for e in events
                if not e["objects"] or any(u in shown for u in e["objects"])]

    def visible_unique_ids(self, unique_ids: Sequence[str]) -> set[str]:
        """Which of these document uniqueIds name a document the actor may see (the audit
        trail shown to a patient names no other)."""
        wanted = [u for u in dict.fromkeys(unique_ids) if u]
        if not wanted:
            return set()
        with self.registry.read() as conn:
            rows = Q.by_ids(conn, kinds.KIND_DOCUMENT, unique_ids=wanted)
            outcome = self.reader.visible(conn, graph_of(rows), audited=False)
        shown = {o.unique_id for o in outcome.objects if isinstance(o, DocumentEntry)}
        hidden = {_document(r).unique_id for r in rows} - shown
        return shown - hidden   # a uniqueId one of whose versions is hidden stays unnamed


def _document(row: Row) -> DocumentEntry:
    """The DocumentEntry a document row holds (rows of another kind are a caller's bug)."""
    obj = object_from_row(row.body)
    assert isinstance(obj, DocumentEntry)
    return obj


def _association(row: Row) -> Association:
    """The Association an association row holds (rows of another kind are a caller's bug)."""
    obj = object_from_row(row.body)
    assert isinstance(obj, Association)
    return obj


def _ends(row: Row) -> set[str]:
    obj = _association(row)
    return {obj.source_uuid, obj.target_uuid}


def _named(conn: Connection, kind: str, entry_uuid: str, unique_id: str) -> Sequence[Row]:
    """The objects of `kind` a query names by its entryUUID or its uniqueId (either may be "")."""
    return Q.by_ids(conn, kind, entry_uuids=[entry_uuid] if entry_uuid else [],
                    unique_ids=[unique_id] if unique_id else [])


def _filtered_documents(conn: Connection, entry_uuids: Sequence[str], f: DocumentFilter) -> Sequence[Row]:
    """The DocumentEntries among `entry_uuids` that pass the filter `f`."""
    return Q.by_ids(conn, kinds.KIND_DOCUMENT, entry_uuids=entry_uuids, extra=Q.document_clauses(f)[1:])


def _between(assoc_rows: Sequence[Row], ids: set[str], *, nested: bool = False) -> list[Row]:
    """Associations with both ends among `ids`.

    With `nested`, also those whose target is such an association (a SubmissionSet's
    HasMember to a Folder's HasMember, as a folder membership is submitted), found
    until nothing more is added.
    """
    if not nested:
        return [a for a in assoc_rows if _ends(a) <= ids]
    known: set[str] = set(ids)
    kept: list[Row] = []
    pending = list(assoc_rows)
    while True:
        found = [a for a in pending if _ends(a) <= known]
        if not found:
            return kept
        kept += found
        added = {a.entry_uuid for a in found}
        known |= added
        pending = [a for a in pending if a.entry_uuid not in added]
