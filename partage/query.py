"""The query flow: one implementation of every XDS query shape, for every door.

ITI-18 stored queries and MHD searches (ITI-66/67) call these functions with model
filters; each resolves patients and ids, runs the registry's indexed SQL, turns rows
into model objects, and applies the access policy last, so that nothing an actor may
not see is returned or counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from .access import policy
from .access.actor import Actor
from .metadata.errors import ErrorCode, XdsError, XdsErrors
from .metadata.model import AnyObject, AssociationType
from .metadata.query import DocumentFilter, FolderFilter, SubmissionSetFilter
from .registry import queries as Q
from .registry import schema
from .registry.indexing import object_from_row
from .services import Services

HAS_MEMBER = str(AssociationType.HAS_MEMBER)


@dataclass
class QueryResult:
    objects: list[AnyObject] = field(default_factory=list)
    warnings: list[XdsError] = field(default_factory=list)


class QueryService:
    def __init__(self, services: Services, actor: Actor, *, object_refs: bool = False) -> None:
        self.services = services
        self.registry = services.registry
        self.actor = actor
        self.limit = services.settings.query_result_limit
        # ObjectRef answers disclose no patient data: XDSResultNotSinglePatient applies
        # to full metadata (LeafClass) only (ITI TF-2a 3.18.4.1.3).
        self.object_refs = object_refs
        # Associations a query follows and returns, by availabilityStatus: Approved unless
        # the request says otherwise ($XDSAssociationStatus, ITI-18 with Metadata Update).
        self.association_statuses: list[str] = ["Approved"]
        self.metadata_level = 1   # $MetadataLevel 2: every version of a logical object named by uniqueId

    # --- helpers -----------------------------------------------------------------------
    def _objects(self, rows) -> list[AnyObject]:
        seen, out = set(), []
        for row in rows:
            if row.entry_uuid not in seen:
                seen.add(row.entry_uuid)
                out.append(object_from_row(row.body))
        return out

    def _check_limit(self, rows) -> None:
        if self.limit and len(rows) > self.limit:
            raise XdsErrors.one(ErrorCode.TOO_MANY_RESULTS,
                                f"the query matches more than {self.limit} objects; narrow it")

    def _finish(self, rows, *, single_patient: bool = True) -> QueryResult:
        self._check_limit(rows)
        if single_patient and not self.object_refs:
            patients = {r.patient_pk for r in rows if r.patient_pk is not None}
            if len(patients) > 1:
                raise XdsErrors.one(ErrorCode.RESULT_NOT_SINGLE_PATIENT,
                                    "the requested objects belong to more than one patient")
        return QueryResult(policy.visible(self.actor, self._objects(rows), services=self.services))

    def _associations(self, conn: Connection, **match):
        """Associations in the statuses this query follows ($XDSAssociationStatus)."""
        return Q.associations(conn, statuses=self.association_statuses, **match)

    def _patient(self, conn: Connection, patient_id: str) -> int | None:
        pk = self.registry.patient_pk(conn, patient_id)
        policy.note_record_access(self.actor, patient_id, pk, services=self.services)
        return pk

    # --- find queries ------------------------------------------------------------------
    def find_documents(self, patient_id: str, f: DocumentFilter, limit: int | None = None) -> QueryResult:
        with self.registry.read() as conn:
            pk = self._patient(conn, patient_id)
            if pk is None:
                return QueryResult()
            cap = (self.limit + 1) if self.limit else None
            rows = Q.find_documents(conn, pk, f, min(cap, limit) if limit and cap else (cap or limit))
        return self._finish(rows)

    def find_submission_sets(self, patient_id: str, f: SubmissionSetFilter) -> QueryResult:
        with self.registry.read() as conn:
            pk = self._patient(conn, patient_id)
            rows = [] if pk is None else Q.find_submission_sets(conn, pk, f, (self.limit or 0) + 1)
        return self._finish(rows)

    def find_folders(self, patient_id: str, f: FolderFilter) -> QueryResult:
        with self.registry.read() as conn:
            pk = self._patient(conn, patient_id)
            rows = [] if pk is None else Q.find_folders(conn, pk, f, (self.limit or 0) + 1)
        return self._finish(rows)

    def get_all(self, patient_id: str, docs: DocumentFilter, sets: SubmissionSetFilter,
                folders: FolderFilter) -> QueryResult:
        with self.registry.read() as conn:
            pk = self._patient(conn, patient_id)
            if pk is None:
                return QueryResult()
            rows = [*Q.find_submission_sets(conn, pk, sets), *Q.find_documents(conn, pk, docs),
                    *Q.find_folders(conn, pk, folders)]
            ids = [r.entry_uuid for r in rows]
            rows += _between(self._associations(conn, sources=ids), set(ids), nested=True)
        return self._finish(rows)

    # --- get queries -------------------------------------------------------------------
    def get_objects(self, kind: str, *, entry_uuids=(), unique_ids=(), logical_ids=()) -> QueryResult:
        with self.registry.read() as conn:
            # $XDS...LogicalID: every version of the logical object (ITI-18 with Metadata Update).
            rows = list(Q.by_ids(conn, kind, entry_uuids=entry_uuids, unique_ids=unique_ids,
                                 logical_ids=logical_ids))
        return self._finish(rows)

    def get_associations(self, uuids: list[str]) -> QueryResult:
        with self.registry.read() as conn:
            rows = self._associations(conn, either=uuids)
            objects = Q.by_ids(conn, None, entry_uuids=uuids)
        self._single_patient(objects)
        return self._with_hidden_ends(rows, objects)

    def get_documents_and_associations(self, *, entry_uuids=(), unique_ids=()) -> QueryResult:
        with self.registry.read() as conn:
            docs = Q.by_ids(conn, schema.KIND_DOCUMENT, entry_uuids=entry_uuids, unique_ids=unique_ids)
            assocs = self._associations(conn, either=[d.entry_uuid for d in docs])
        self._single_patient(docs)
        return self._with_hidden_ends([*docs, *assocs], docs)

    def get_submission_sets(self, uuids: list[str]) -> QueryResult:
        with self.registry.read() as conn:
            assocs = [a for a in self._associations(conn, targets=uuids, types=[HAS_MEMBER])]
            sets = Q.by_ids(conn, schema.KIND_SUBMISSION_SET,
                            entry_uuids=[object_from_row(a.body).source_uuid for a in assocs])
            members = Q.by_ids(conn, None, entry_uuids=uuids)
        set_ids = {s.entry_uuid for s in sets}
        assocs = [a for a in assocs if object_from_row(a.body).source_uuid in set_ids]
        self._single_patient([*sets, *members])
        return self._with_hidden_ends([*sets, *assocs], members)

    def get_submission_set_and_contents(self, f: DocumentFilter, *, entry_uuid="", unique_id="") -> QueryResult:
        with self.registry.read() as conn:
            sets = Q.by_ids(conn, schema.KIND_SUBMISSION_SET, entry_uuids=[entry_uuid] if entry_uuid else [],
                            unique_ids=[unique_id] if unique_id else [])
            if not sets:
                return QueryResult()
            ss = sets[0]
            member_assocs = self._associations(conn, sources=[ss.entry_uuid], types=[HAS_MEMBER])
            member_ids = [object_from_row(a.body).target_uuid for a in member_assocs]
            docs = Q.by_ids(conn, schema.KIND_DOCUMENT, entry_uuids=member_ids,
                            extra=Q.document_clauses(f)[1:])
            folders = Q.by_ids(conn, schema.KIND_FOLDER, entry_uuids=member_ids)
            inner = Q.by_ids(conn, schema.KIND_ASSOCIATION, entry_uuids=member_ids,
                             extra=[Q.OBJ.c.status.in_(self.association_statuses)])
            kept = {r.entry_uuid for r in [*docs, *folders]}
            inner = [a for a in inner if _ends(a) <= kept]
            kept |= {a.entry_uuid for a in inner}
            member_assocs = [a for a in member_assocs if object_from_row(a.body).target_uuid in kept]
        return self._finish([ss, *docs, *folders, *member_assocs, *inner])

    def get_folder_and_contents(self, f: DocumentFilter, *, entry_uuid="", unique_id="") -> QueryResult:
        with self.registry.read() as conn:
            folders = Q.by_ids(conn, schema.KIND_FOLDER, entry_uuids=[entry_uuid] if entry_uuid else [],
                               unique_ids=[unique_id] if unique_id else [])
            if not folders:
                return QueryResult()
            # A uniqueId names every version of the folder: $MetadataLevel 2 returns them all,
            # level 1 the current (latest) one.
            if self.metadata_level < 2:
                folders = [max(folders, key=lambda r: int(object_from_row(r.body).version or 1))]
            assocs = self._associations(conn,
                                        sources=[f.entry_uuid for f in folders], types=[HAS_MEMBER])
            docs = Q.by_ids(conn, schema.KIND_DOCUMENT,
                            entry_uuids=[object_from_row(a.body).target_uuid for a in assocs],
                            extra=Q.document_clauses(f)[1:])
            kept = {d.entry_uuid for d in docs}
            assocs = [a for a in assocs if object_from_row(a.body).target_uuid in kept]
        return self._finish([*folders, *docs, *assocs])

    def get_folders_for_document(self, *, entry_uuid="", unique_id="") -> QueryResult:
        with self.registry.read() as conn:
            docs = Q.by_ids(conn, schema.KIND_DOCUMENT, entry_uuids=[entry_uuid] if entry_uuid else [],
                            unique_ids=[unique_id] if unique_id else [])
            if not docs:
                return QueryResult()
            assocs = self._associations(conn, targets=[d.entry_uuid for d in docs], types=[HAS_MEMBER])
            folders = Q.by_ids(conn, schema.KIND_FOLDER,
                               entry_uuids=[object_from_row(a.body).source_uuid for a in assocs])
        self._single_patient(docs)
        return self._with_hidden_ends(folders, docs)

    def get_related_documents(self, types: list[str], f: DocumentFilter, *, entry_uuid="",
                              unique_id="") -> QueryResult:
        with self.registry.read() as conn:
            docs = Q.by_ids(conn, schema.KIND_DOCUMENT, entry_uuids=[entry_uuid] if entry_uuid else [],
                            unique_ids=[unique_id] if unique_id else [])
            if not docs:
                return QueryResult()
            doc = docs[0]
            assocs = self._associations(conn, either=[doc.entry_uuid], types=types)
            if not assocs:
                return QueryResult()
            others = {e for a in assocs for e in _ends(a)} - {doc.entry_uuid}
            related = Q.by_ids(conn, schema.KIND_DOCUMENT, entry_uuids=list(others),
                               extra=Q.document_clauses(f)[1:])
            kept = {r.entry_uuid for r in related} | {doc.entry_uuid}
            assocs = [a for a in assocs if _ends(a) <= kept]
            if not assocs:
                return QueryResult()
        return self._finish([doc, *related, *assocs])

    # --- retrieve ------------------------------------------------------------------------
    def locate_document(self, unique_id: str) -> tuple[AnyObject, str] | None:
        """The entry and blob address of a document held here, if the actor may see it.

        A document the actor may not see is reported exactly like an unknown one, so
        that a refusal does not reveal that the document exists.
        """
        with self.registry.read() as conn:
            rows = conn.execute(
                select(Q.OBJ.c.body, Q.OBJ.c.blob_address, Q.OBJ.c.status)
                .where(Q.OBJ.c.unique_id == unique_id, Q.OBJ.c.kind == schema.KIND_DOCUMENT,
                       Q.OBJ.c.blob_address.is_not(None))
                .order_by(Q.OBJ.c.version.desc())).all()
        for row in rows:
            doc = object_from_row(row.body)
            if policy.may_read(self.actor, doc, services=self.services):
                return doc, row.blob_address
        return None

    # --- policy-aware composition -------------------------------------------------------
    def _single_patient(self, rows) -> None:
        if not self.object_refs and len({r.patient_pk for r in rows if r.patient_pk is not None}) > 1:
            raise XdsErrors.one(ErrorCode.RESULT_NOT_SINGLE_PATIENT,
                                "the requested objects belong to more than one patient")

    def _with_hidden_ends(self, rows, context_rows) -> QueryResult:
        """Return `rows`, but drop associations whose other end the actor may not see."""
        self._check_limit(rows)
        objects = self._objects(rows)
        context = self._objects(context_rows)
        shown = {o.entry_uuid for o in policy.visible(self.actor, [*objects, *context], services=self.services)}
        hidden = {o.entry_uuid for o in [*objects, *context]} - shown
        out = []
        for obj in objects:
            if obj.entry_uuid in hidden:
                continue
            if obj.kind == "Association" and (obj.source_uuid in hidden or obj.target_uuid in hidden):
                continue
            out.append(obj)
        return QueryResult(out)


def _ends(row) -> set[str]:
    obj = object_from_row(row.body)
    return {obj.source_uuid, obj.target_uuid}


def _between(assoc_rows, ids: set[str], *, nested: bool = False):
    """Associations with both ends among `ids`.

    With `nested`, also those whose target is such an association (a SubmissionSet's
    HasMember to a Folder's HasMember, as a folder membership is submitted), found
    until nothing more is added.
    """
    if not nested:
        return [a for a in assoc_rows if _ends(a) <= ids]
    known, kept, pending = set(ids), [], list(assoc_rows)
    while True:
        found = [a for a in pending if _ends(a) <= known]
        if not found:
            return kept
        kept += found
        added = {a.entry_uuid for a in found}
        known |= added
        pending = [a for a in pending if a.entry_uuid not in added]
