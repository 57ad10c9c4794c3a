"""ITI-67 / ITI-66 and reads: the query flow's model objects as DocumentReferences and Lists.

Every read goes through `QueryService` (so the access policy decides what is seen) and
every resource through `mapping` (so ITI-67 says what ITI-18 says).
"""

from __future__ import annotations

from typing import Any

from ..access.actor import Actor
from ..metadata.datatypes import CX
from ..metadata.model import (
    AnyObject,
    Association,
    AssociationType,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from ..metadata.query import DocumentFilter
from ..query import QueryService
from ..services import Services
from . import mapping
from .patients import Patients, reference_id
from .search import Search, identifier_matches, page_links, sort_objects

Json = dict[str, Any]
HAS_MEMBER = str(AssociationType.HAS_MEMBER)


class Views:
    """One request's view of the registry as FHIR resources."""

    def __init__(self, services: Services, actor: Actor, base_url: str) -> None:
        self.queries = QueryService(services, actor)
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
    def document_resource(self, doc: DocumentEntry, relations: list[Association]) -> Json:
        return mapping.document_reference(doc, self.links, relations)

    def documents_with_relations(self, docs: list[DocumentEntry]) -> list[Json]:
        if not docs:
            return []
        result = self.queries.get_documents_and_associations(entry_uuids=[d.entry_uuid for d in docs])
        relations = [o for o in result.objects if isinstance(o, Association) and _known_type(o)
                     and AssociationType(o.association_type).is_relationship]
        return [self.document_resource(d, relations) for d in docs]

    def read_document(self, rid: str) -> Json | None:
        uuid = mapping.entry_uuid_of(rid)
        result = self.queries.get_documents_and_associations(entry_uuids=[uuid])
        docs = [o for o in result.objects if isinstance(o, DocumentEntry) and o.entry_uuid == uuid]
        if not docs:
            return None
        relations = [o for o in result.objects if isinstance(o, Association) and _known_type(o)
                     and AssociationType(o.association_type).is_relationship]
        return self.document_resource(docs[0], relations)

    def document_entry(self, rid: str) -> DocumentEntry | None:
        uuid = mapping.entry_uuid_of(rid)
        result = self.queries.get_documents_and_associations(entry_uuids=[uuid])
        return next((o for o in result.objects if isinstance(o, DocumentEntry) and o.entry_uuid == uuid), None)

    def read_list(self, rid: str) -> Json | None:
        uuid = mapping.entry_uuid_of(rid)
        result = self.queries.get_submission_set_and_contents(DocumentFilter(), entry_uuid=uuid)
        sets = [o for o in result.objects if isinstance(o, SubmissionSet)]
        if sets:
            return self._submission_set_resource(sets[0], result.objects)
        result = self.queries.get_folder_and_contents(DocumentFilter(), entry_uuid=uuid)
        folders = [o for o in result.objects if isinstance(o, Folder)]
        if folders:
            return self._folder_resource(folders[0], result.objects)
        return None

    def _submission_set_resource(self, ss: SubmissionSet, objects: list[AnyObject]) -> Json:
        kinds = {o.entry_uuid: o.kind for o in objects}
        members = [(kinds.get(a.target_uuid, "DocumentEntry"), a.target_uuid) for a in objects
                   if isinstance(a, Association) and a.source_uuid == ss.entry_uuid
                   and str(a.association_type) == HAS_MEMBER and kinds.get(a.target_uuid) != "Association"]
        return mapping.submission_set_list(ss, members, self.links)

    def _folder_resource(self, folder: Folder, objects: list[AnyObject]) -> Json:
        members = [a.target_uuid for a in objects if isinstance(a, Association)
                   and a.source_uuid == folder.entry_uuid and str(a.association_type) == HAS_MEMBER]
        return mapping.folder_list(folder, members, self.links)

    # --- searches --------------------------------------------------------------------------------
    def _patient_id(self, search: Search) -> CX | None:
        if search.patient_identifier_given:
            return search.patient_identifier
        rid = reference_id(search.patient_ref) or search.patient_ref
        return self.patients.patient_id_for_search(rid)

    def find_documents(self, search: Search, base: str) -> Json:
        patient_id = self._patient_id(search)
        objects: list[AnyObject] = []
        if patient_id:
            objects = self.queries.find_documents(patient_id, search.document).objects
        objects = [o for o in objects if identifier_matches(o, search.identifiers) and search.keep(o)]
        return self._bundle(sort_objects(objects, search.sort), search, base,
                            lambda page: self.documents_with_relations(page))

    def find_lists(self, search: Search, base: str) -> Json:
        patient_id = self._patient_id(search)
        objects: list[AnyObject] = []
        if patient_id:
            if "submissionset" in search.list_codes:
                objects += self.queries.find_submission_sets(patient_id, search.submission_set).objects
            if "folder" in search.list_codes:
                objects += self.queries.find_folders(patient_id, search.folder).objects
        objects = [o for o in objects if identifier_matches(o, search.identifiers) and search.keep(o)]

        def render(page: list[AnyObject]) -> list[Json]:
            out = []
            for obj in page:
                if isinstance(obj, SubmissionSet):
                    contents = self.queries.get_submission_set_and_contents(DocumentFilter(),
                                                                            entry_uuid=obj.entry_uuid)
                    out.append(self._submission_set_resource(obj, contents.objects))
                else:
                    contents = self.queries.get_folder_and_contents(DocumentFilter(), entry_uuid=obj.entry_uuid)
                    out.append(self._folder_resource(obj, contents.objects))
            return out
        return self._bundle(sort_objects(objects, search.sort), search, base, render)

    def _bundle(self, objects: list[AnyObject], search: Search, base: str, render) -> Json:
        page = objects[search.offset:search.offset + search.count]
        resources = render(page)
        return {"resourceType": "Bundle", "type": "searchset", "total": len(objects),
                "link": page_links(base, search, len(objects)),
                "entry": [{"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                           "search": {"mode": "match"}} for r in resources]}


def _known_type(assoc: Association) -> bool:
    try:
        AssociationType(assoc.association_type)
    except ValueError:
        return False
    return True
