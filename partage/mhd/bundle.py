"""ITI-65 Provide Document Bundle -> one SubmissionRequest for the ingest pipeline.

Reads the transaction Bundle (SubmissionSet List, DocumentReferences, Binaries or inline
attachment data, Folder Lists), resolves its internal references (fullUrl, `Type/id`,
`#contained`) and references to objects already on this server (relatesTo targets,
existing Folders' members), and collects every problem before refusing, like an ITI-41
submission. Ids are symbolic here; the ingest pipeline assigns the entryUUIDs, which
`transaction_response` then reports as locations.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.resource import Resource

from ..metadata.datatypes import CX
from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..metadata.model import (
    Association,
    AssociationType,
    DocumentContent,
    SubmissionRequest,
)
from . import mapping
from .mapping import MHD_SD, PDSM_SD
from .structure import model_of

Json = dict[str, Any]
SPOOL = 1 << 20
COMPREHENSIVE = MHD_SD + "IHE.MHD.Comprehensive.ProvideBundle"
MINIMAL = MHD_SD + "IHE.MHD.Minimal.ProvideBundle"
PROVIDE_PROFILES = {
    COMPREHENSIVE: False, MINIMAL: True,
    MHD_SD + "IHE.MHD.UnContained.Comprehensive.ProvideBundle": False,
    PDSM_SD + "pdsm-comprehensive-provide-document-bundle": False,
}
ERROR = ErrorCode.REPOSITORY_METADATA


@dataclass
class Entry:
    full_url: str
    resource_type: str
    symbolic: str = ""       # the SubmissionRequest id of what this entry became
    kind: str = ""           # DocumentEntry | SubmissionSet | Folder | Binary


@dataclass
class ProvideBundle:
    request: SubmissionRequest
    entries: list[Entry] = field(default_factory=list)
    binary_owner: dict[str, str] = field(default_factory=dict)   # Binary fullUrl -> document symbolic id


def spool_content(data: bytes, content_type: str) -> DocumentContent:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)
    spool.write(data)
    spool.seek(0)
    return DocumentContent(file=spool, size=len(data), sha1=hashlib.sha1(data).hexdigest(),
                           sha256=hashlib.sha256(data).hexdigest(), content_type=content_type)


def decode_base64(data: str, where: str, errors: list[XdsError]) -> bytes | None:
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        errors.append(XdsError(ERROR, f"{where} data is not valid base64: {exc}", where))
        return None


def read_provide_bundle(bundle: Json, patient: Callable[[Json], CX | None],
                        existing_document: Callable[[str], str | None]) -> ProvideBundle:
    """Bundle -> ProvideBundle; raises XdsErrors with every problem found.

    `patient`: subject Reference -> XDS patient id of a known patient, or None.
    `existing_document`: a reference to a DocumentReference on this server -> its entryUUID.
    """
    errors: list[XdsError] = []
    if bundle.get("type") != "transaction":
        errors.append(XdsError(ERROR, f"Bundle.type is {bundle.get('type')!r}; ITI-65 needs a transaction",
                               "Bundle"))
    profiles = [p for p in (bundle.get("meta") or {}).get("profile") or [] if p in PROVIDE_PROFILES]
    if not profiles:
        errors.append(XdsError(ERROR, "Bundle.meta.profile names no MHD Provide Document Bundle profile "
                               f"(expected {COMPREHENSIVE} or {MINIMAL})", "Bundle"))
    minimal = bool(profiles) and all(PROVIDE_PROFILES[p] for p in profiles)
    entries = bundle.get("entry") or []
    by_url: dict[str, Json] = {}
    for n, entry in enumerate(entries):
        res = entry.get("resource") or {}
        if entry.get("fullUrl"):
            if entry["fullUrl"] in by_url:   # FHIR R4 Bundle invariant bdl-7: fullUrl unique in a Bundle
                errors.append(XdsError(ERROR, f"Bundle.entry[{n}].fullUrl {entry['fullUrl']} is the fullUrl of "
                                       "an earlier entry; a fullUrl names one entry (bdl-7)", f"Bundle.entry[{n}]"))
            by_url[entry["fullUrl"]] = res
        if res.get("id") and res.get("resourceType"):
            by_url.setdefault(f"{res['resourceType']}/{res['id']}", res)

    def in_bundle(ref: Json | None) -> Json | None:
        target = (ref or {}).get("reference") or ""
        if target in by_url:
            return by_url[target]
        for url, res in by_url.items():   # absolute fullUrl referenced relatively, or the reverse
            if target and (url.endswith("/" + target) or target.endswith("/" + url)):
                return res
        return None

    request = SubmissionRequest()
    out = ProvideBundle(request)
    symbolic_of_url: dict[str, str] = {}
    binaries: dict[str, Json] = {}
    lists: list[tuple[Entry, Json]] = []
    documents: list[tuple[Entry, mapping.ParsedDocument]] = []
    for n, entry in enumerate(entries):
        res = entry.get("resource") or {}
        rtype = res.get("resourceType", "")
        full_url = entry.get("fullUrl") or f"{rtype}/{res.get('id', n)}"
        item = Entry(full_url, rtype)
        out.entries.append(item)
        method = (entry.get("request") or {}).get("method", "")
        where = f"Bundle.entry[{n}]"
        if method != "POST":
            errors.append(XdsError(ERROR, f"{where} ({rtype}) request.method is {method or 'missing'}; "
                                   "ITI-65 creates resources with POST", where))
        url = (entry.get("request") or {}).get("url", "")
        named = _url_type(url)
        if rtype and named is not None and named != rtype:
            errors.append(XdsError(ERROR, f"{where} ({full_url}) is a {rtype} but its request.url {url!r} "
                                   f"names {named or 'no resource type'}: an entry is processed as its "
                                   "interaction on request.url (FHIR R4 http.html#transaction)", where))
        if rtype == "DocumentReference":
            parsed = mapping.document_entry(res, mapping.contained_resolver(res, in_bundle), patient, ERROR)
            item.kind, item.symbolic = "DocumentEntry", f"Document{n}"
            parsed.entry.entry_uuid = item.symbolic
            parsed.entry.limited_metadata = parsed.entry.limited_metadata or minimal
            symbolic_of_url[full_url] = item.symbolic
            documents.append((item, parsed))
            errors += _located(parsed.errors, full_url)
        elif rtype == "List":
            lists.append((item, res))
            symbolic_of_url[full_url] = item.symbolic = f"List{n}"
        elif rtype == "Binary":
            item.kind = "Binary"
            binaries[full_url] = res
        elif rtype != "Patient":
            errors.append(XdsError(ERROR, f"{where} is a {rtype}; a Provide Document Bundle holds "
                                   "List, DocumentReference, Binary (and Patient) resources", where))

    def symbolic(ref: Json) -> str | None:
        target = ref.get("reference") or ""
        if target in symbolic_of_url:
            return symbolic_of_url[target]
        res = in_bundle(ref)
        for url, sym in symbolic_of_url.items():
            if res is not None and by_url.get(url) is res:
                return sym
        return None

    # --- documents and their bytes --------------------------------------------------------
    used_binaries: set[str] = set()
    for _item, parsed in documents:
        doc = parsed.entry
        request.documents.append(doc)
        where = doc.entry_uuid
        if parsed.url:
            binary_url = _binary_url(parsed.url, binaries)
            if binary_url is None:
                errors.append(XdsError(ErrorCode.MISSING_DOCUMENT,
                                       f"attachment.url {parsed.url!r} names no Binary in the Bundle", where))
                continue
            binary = binaries[binary_url]
            used_binaries.add(binary_url)
            out.binary_owner[binary_url] = doc.entry_uuid
            data = decode_base64(binary.get("data", "") or "", binary_url, errors)
            if data is not None:
                request.contents[doc.entry_uuid] = spool_content(data, binary.get("contentType", ""))
                if binary.get("contentType") and doc.mime_type and binary["contentType"] != doc.mime_type:
                    errors.append(XdsError(ERROR, f"Binary contentType {binary['contentType']!r} differs from "
                                           f"attachment.contentType {doc.mime_type!r}", where))
        elif parsed.data:
            data = decode_base64(parsed.data, "attachment", errors)
            if data is not None:
                request.contents[doc.entry_uuid] = spool_content(data, doc.mime_type)
        else:
            errors.append(XdsError(ErrorCode.MISSING_DOCUMENT, "DocumentReference.content.attachment has "
                                   "neither url (to a Binary in the Bundle) nor data", where))
        for kind, target_ref in parsed.relations:
            target_uuid = symbolic(target_ref) or existing_document(target_ref.get("reference") or "")
            if target_uuid is None:
                errors.append(XdsError(ErrorCode.UNRESOLVED_REFERENCE,
                                       f"relatesTo target {target_ref.get('reference')!r} is neither in the Bundle "
                                       "nor a DocumentReference on this server", where))
                continue
            request.associations.append(Association(
                entry_uuid=f"{where}-{len(request.associations)}", association_type=kind,
                source_uuid=doc.entry_uuid, target_uuid=target_uuid))
    for url in binaries:
        if url not in used_binaries:
            errors.append(XdsError(ErrorCode.MISSING_DOCUMENT_METADATA,
                                   f"Binary {url} is not the attachment of any DocumentReference", url))

    # --- submission set and folders --------------------------------------------------------
    submission_sets = [(i, r) for i, r in lists if mapping.list_kind(r) == "submissionset"]
    folders = [(i, r) for i, r in lists if mapping.list_kind(r) == "folder"]
    for item, res in lists:
        if mapping.list_kind(res) == "":
            errors.append(XdsError(ERROR, f"List {item.full_url} is neither a SubmissionSet nor a Folder "
                                   f"(code {mapping.LIST_TYPES}#submissionset|folder)", item.full_url))
    if len(submission_sets) != 1:
        errors.append(XdsError(ERROR, f"the Bundle has {len(submission_sets)} SubmissionSet Lists; "
                               "ITI-65 needs exactly one", "Bundle"))
    if not documents and not folders:
        errors.append(XdsError(ERROR, "the Bundle has no DocumentReference", "Bundle"))
    for item, res in folders:
        parsed_folder = mapping.folder(res, patient, ERROR)
        errors += _located(parsed_folder.errors, item.full_url)
        f = parsed_folder.obj
        f.entry_uuid, item.kind = item.symbolic, "Folder"
        f.limited_metadata = f.limited_metadata or minimal
        f.availability_status = None
        request.folders.append(f)
        for member in parsed_folder.members:
            target = symbolic(member) or existing_document(member.get("reference") or "")
            if target is None:
                errors.append(XdsError(ErrorCode.UNRESOLVED_REFERENCE,
                                       f"Folder member {member.get('reference')!r} does not resolve", item.full_url))
                continue
            request.associations.append(Association(
                entry_uuid=f"{item.symbolic}-member-{len(request.associations)}",
                association_type=AssociationType.HAS_MEMBER, source_uuid=f.entry_uuid, target_uuid=target))
    if submission_sets:
        item, res = submission_sets[0]
        parsed_ss = mapping.submission_set(res, mapping.contained_resolver(res, in_bundle), patient, ERROR)
        errors += _located(parsed_ss.errors, item.full_url)
        ss = parsed_ss.obj
        ss.entry_uuid, item.kind = item.symbolic, "SubmissionSet"
        ss.limited_metadata = ss.limited_metadata or minimal
        ss.availability_status = None
        request.submission_set = ss
        members: list[str] = []
        for member in parsed_ss.members:
            target = symbolic(member)
            if target is None:
                errors.append(XdsError(ERROR, f"SubmissionSet entry {member.get('reference')!r} is not a "
                                       "DocumentReference or Folder of this Bundle", item.full_url))
            elif target not in members:
                members.append(target)
        for obj in [*request.documents, *request.folders]:   # every new object is a member
            if obj.entry_uuid not in members:
                members.append(obj.entry_uuid)
        for target in members:
            request.associations.append(Association(
                entry_uuid=f"{ss.entry_uuid}-member-{target}", association_type=AssociationType.HAS_MEMBER,
                source_uuid=ss.entry_uuid, target_uuid=target, submission_set_status="Original"))
    if errors:
        raise XdsErrors(errors)
    return out


def _url_type(url: str) -> str | None:
    """The resource type a transaction entry's request.url names (`[type]`, `[type]/[id]`, either
    after a base, a query aside: FHIR R4 bundle.html, request.url relative to the root), "" when it
    names none; None for a `urn:` (the entry's own fullUrl, as the NIST MHD kit's fixtures send it:
    it names the entry, not another type)."""
    if url.lower().startswith("urn:"):
        return None
    segments = [s for s in url.split("?", 1)[0].split("#", 1)[0].split("/") if s]
    for segment in reversed(segments[-2:]):   # [type] or [type]/[id]
        if _is_resource_type(segment):
            return segment
    return ""


def _is_resource_type(name: str) -> bool:
    """A concrete FHIR resource type (Patient, Binary...), not a datatype (Coding) nor a base type."""
    if not name.isalpha() or name in ("Resource", "DomainResource"):
        return False
    model = model_of(name)
    return model is not None and issubclass(model, Resource)


def _located(errors: list[XdsError], full_url: str) -> list[XdsError]:
    """A resource's errors located by its entry's fullUrl (the mapping knows only the resource,
    and names it by its id or its type, which do not tell entries apart)."""
    return [dataclasses.replace(e, location=full_url) for e in errors]


def _binary_url(url: str, binaries: dict[str, Json]) -> str | None:
    if url in binaries:
        return url
    for full_url, res in binaries.items():
        if res.get("id") and (url == f"Binary/{res['id']}" or url.endswith(f"/Binary/{res['id']}")):
            return full_url
        if full_url.endswith("/" + url) or url.endswith("/" + full_url):
            return full_url
    return None


def transaction_response(provided: ProvideBundle, assigned: dict[str, str], base_url: str,
                         last_modified: str, patient_location: Callable[[], str] = lambda: "") -> Json:
    """The ITI-65 response: one entry per request entry, in order, with where it now lives
    (`entry.response.location` 1.. in IHE.MHD.ProvideDocumentBundleResponse): a Patient entry
    is not created, it names the server's Patient the submission is for (`patient_location`,
    asked only when the Bundle has such an entry: a look-up)."""
    out = []
    for item in provided.entries:
        uuid = assigned.get(item.symbolic, item.symbolic)
        response: Json = {"status": "201 Created", "lastModified": last_modified}
        if item.kind == "DocumentEntry":
            response["location"] = f"{base_url}/DocumentReference/{mapping.resource_id(uuid)}"
            response["etag"] = 'W/"1"'
        elif item.kind in ("SubmissionSet", "Folder"):
            response["location"] = f"{base_url}/List/{mapping.resource_id(uuid)}"
            response["etag"] = 'W/"1"'
        elif item.kind == "Binary":
            owner = provided.binary_owner.get(item.full_url, "")
            # No etag: a Binary's is the hash of its bytes, per representation (what a read answers).
            response["location"] = f"{base_url}/Binary/{mapping.resource_id(assigned.get(owner, owner))}"
        else:
            response["status"] = "200 OK"
            response.pop("lastModified")
            location = patient_location()
            if location:
                response["location"] = f"{base_url}/{location}"
        out.append({"response": response})
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}

