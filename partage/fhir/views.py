"""ITI-67 / ITI-66 and reads: the query flow's model objects as DocumentReferences and Lists.

Every read goes through `QueryService` or `SearchService` (so the one gate decides what is
seen) and every resource through `mapping` (so ITI-67 says what ITI-18 says); FHIR meta
(versionId, lastUpdated) and DocumentReference.date come from the registry rows.
"""

from __future__ import annotations

from typing import Any

from ..access.actor import Actor
from ..metadata.datatypes import CX, DTM
from ..metadata.model import (
    AnyObject,
    Association,
    AssociationType,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from ..metadata.query import DocumentFilter
from ..mhd import datatypes as dt
from ..mhd import mapping
from ..query import QueryService
from ..query.search import SearchService
from ..registry.search import ObjectSearch, object_meta
from ..services import Services
from .patients import Patients
from .search import Parsed, bundle

Json = dict[str, Any]
HAS_MEMBER = str(AssociationType.HAS_MEMBER)


class Views:
    """One request's view of the registry as FHIR resources."""

    def __init__(self, services: Services, actor: Actor, base_url: str) -> None:
        self.queries = QueryService(services, actor)
        self.searches = SearchService(services, actor)
        self.registry = services.registry
        self.patients = Patients(services)
        self.base_url = base_url
        self._patient_refs: dict[CX, Json] = {}
        self.links = mapping.Links(patient=self._patient_reference, content_url=self.content_url)

    def _patient_reference(self, cx: CX) -> Json:
        if cx not in self._patient_refs:
            ref = self.patients.reference_for(cx)
            if "reference" in ref:   # absolute, as a client that sent a fullUrl gets it back
                ref["reference"] = f"{self.base_url}/{ref['reference']}"
            self._patient_refs[cx] = ref
        return self._patient_refs[cx]

    def content_url(self, doc: DocumentEntry) -> str:
        return f"{self.base_url}/Binary/{mapping.resource_id(doc.entry_uuid)}"

    # --- resources ----------------------------------------------------------------------------
    def meta_of(self, entry_uuids: list[str]) -> dict[str, Any]:
        """The registry rows' FHIR meta of objects already judged visible."""
        with self.registry.read() as conn:
            return object_meta(conn, entry_uuids)

    def document_resource(self, doc: DocumentEntry, relations: list[Association], row: Any = None) -> Json:
        return mapping.document_reference(doc, self.links, relations, server_meta(row))

    def documents_with_relations(self, docs: list[DocumentEntry], rows: dict[str, Any] | None = None) -> list[Json]:
        if not docs:
            return []
        rows = rows if rows is not None else self.meta_of([d.entry_uuid for d in docs])
        result = self.queries.get_documents_and_associations(entry_uuids=[d.entry_uuid for d in docs])
        relations = [o for o in result.objects if isinstance(o, Association) and _known_type(o)
                     and AssociationType(o.association_type).is_relationship]
        return [self.document_resource(d, relations, rows.get(d.entry_uuid)) for d in docs]

    def read_document(self, rid: str) -> Json | None:
        uuid = mapping.entry_uuid_of(rid)
        result = self.queries.get_documents_and_associations(entry_uuids=[uuid])
        docs = [o for o in result.objects if isinstance(o, DocumentEntry) and o.entry_uuid == uuid]
        if not docs:
            return None
        relations = [o for o in result.objects if isinstance(o, Association) and _known_type(o)
                     and AssociationType(o.association_type).is_relationship]
        return self.document_resource(docs[0], relations, self.meta_of([uuid]).get(uuid))

    def document_entry(self, rid: str) -> DocumentEntry | None:
        uuid = mapping.entry_uuid_of(rid)
        result = self.queries.get_documents_and_associations(entry_uuids=[uuid])
        return next((o for o in result.objects if isinstance(o, DocumentEntry) and o.entry_uuid == uuid), None)

    def read_list(self, rid: str) -> Json | None:
        uuid = mapping.entry_uuid_of(rid)
        result = self.queries.get_submission_set_and_contents(DocumentFilter(), entry_uuid=uuid)
        sets = [o for o in result.objects if isinstance(o, SubmissionSet)]
        if sets:
            return self._submission_set_resource(sets[0], result.objects, server_meta(self.meta_of([uuid]).get(uuid)))
        result = self.queries.get_folder_and_contents(DocumentFilter(), entry_uuid=uuid)
        folders = [o for o in result.objects if isinstance(o, Folder)]
        if folders:
            return self._folder_resource(folders[0], result.objects, server_meta(self.meta_of([uuid]).get(uuid)))
        return None

    def _submission_set_resource(self, ss: SubmissionSet, objects: list[AnyObject],
                                 meta: mapping.ServerMeta | None = None) -> Json:
        kinds = {o.entry_uuid: o.kind for o in objects}
        members = [(kinds.get(a.target_uuid, "DocumentEntry"), a.target_uuid) for a in objects
                   if isinstance(a, Association) and a.source_uuid == ss.entry_uuid
                   and str(a.association_type) == HAS_MEMBER and kinds.get(a.target_uuid) != "Association"]
        return mapping.submission_set_list(ss, members, self.links, meta)

    def _folder_resource(self, folder: Folder, objects: list[AnyObject],
                         meta: mapping.ServerMeta | None = None) -> Json:
        members = [a.target_uuid for a in objects if isinstance(a, Association)
                   and a.source_uuid == folder.entry_uuid and str(a.association_type) == HAS_MEMBER]
        return mapping.folder_list(folder, members, self.links, meta)

    # --- searches --------------------------------------------------------------------------------
    def patient_id(self, parsed: Parsed) -> CX | None:
        """The patient a search names (`Patients.searched`: its values ANDed)."""
        return self.patients.searched(parsed.patient_refs, parsed.patient_identifiers)

    def find_documents(self, parsed: Parsed, search: ObjectSearch, link_base: str, cursor: str = "") -> Json:
        page = self.searches.objects(self.patient_id(parsed), search, parsed.page, relations=True)
        resources = [self.document_resource(d, page.relations, page.rows.get(d.entry_uuid))
                     for d in page.objects if isinstance(d, DocumentEntry)]
        return bundle(self.base_url, link_base, parsed, resources, page.next, page.total, cursor)

    def find_lists(self, parsed: Parsed, search: ObjectSearch, link_base: str, cursor: str = "") -> Json:
        page = self.searches.objects(self.patient_id(parsed), search, parsed.page)
        resources = []
        for obj in page.objects:
            meta = server_meta(page.rows.get(obj.entry_uuid))
            if isinstance(obj, SubmissionSet):
                contents = self.queries.get_submission_set_and_contents(DocumentFilter(), entry_uuid=obj.entry_uuid)
                resources.append(self._submission_set_resource(obj, contents.objects, meta))
            elif isinstance(obj, Folder):
                contents = self.queries.get_folder_and_contents(DocumentFilter(), entry_uuid=obj.entry_uuid)
                resources.append(self._folder_resource(obj, contents.objects, meta))
        return bundle(self.base_url, link_base, parsed, resources, page.next, page.total, cursor)


def server_meta(row: Any) -> mapping.ServerMeta | None:
    """FHIR meta of a registry row (revision, updated_at, registered_at)."""
    if row is None:
        return None
    return mapping.ServerMeta(str(row.revision or 1), instant(row.updated_at or row.registered_at),
                              instant(row.registered_at))


def instant(digits: str | None) -> str:
    """14 registry digits (UTC) as a FHIR instant."""
    if not digits:
        return ""
    return dt.dtm_to_instant(DTM(digits[:14])) or ""


def _known_type(assoc: Association) -> bool:
    try:
        AssociationType(assoc.association_type)
    except ValueError:
        return False
    return True
