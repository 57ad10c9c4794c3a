"""Metadata rules of ITI TF-3 4.2.3 and the affinity domain, checked on a whole request.

Pure: the request and the domain's code lists in, a list of XdsError out; the registry
checks what needs the database (known patient, references, uniqueness) in its own
transaction. Required attributes follow ITI TF-3 Table 4.3.1-3 (DocumentEntry),
4.3.1-4 (Folder), 4.3.1-5 (SubmissionSet) for comprehensive metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from . import limits
from .datatypes import CX, XCN, XON, XTN, DatatypeError, is_oid, unique_id_parts
from .errors import DUPLICATE_UNIQUE_ID_IN_MESSAGE, ErrorCode, XdsError
from .model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentEntry,
    Folder,
    SubmissionRequest,
    SubmissionSet,
    ValueProblem,
)


class CodeDomain(Protocol):
    def allows(self, attribute: str, code: str, scheme: str) -> bool: ...
    def allows_mime_type(self, mime_type: str) -> bool: ...


@dataclass(frozen=True)
class Transaction:
    """What the request is: which attributes the submitter must supply differs."""

    name: str                       # "ITI-41", "ITI-42", "ITI-65", ...
    hash_and_size_required: bool    # ITI-42: the repository computed them; ITI-41: we do
    repository_required: bool
    metadata_error: str = ErrorCode.REGISTRY_METADATA


ITI_41 = Transaction("ITI-41", False, False, ErrorCode.REPOSITORY_METADATA)
ITI_42 = Transaction("ITI-42", True, True)
ITI_57 = Transaction("ITI-57", True, True)

# ITI TF-3 4.2.3.2.12 languageCode is an RFC 5646 tag: well-formed means subtags of 1 to 8
# letters or digits joined by hyphens, the first all letters (2.1); `fr_FR` or `fr FR` are not.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
# ITI TF-3 4.2.3.2.13 mimeType: type "/" subtype as RFC 6838 4.2 restricts their names,
# parameters allowed (RFC 2045 5.1: token = value).
_MEDIA_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE = re.compile(rf"{_MEDIA_NAME}/{_MEDIA_NAME}"
                        r"(?:\s*;\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+=(?:[A-Za-z0-9!#$%&'*+.^_`|~-]+|\"[^\"\\]*\"))*")

DOC_REQUIRED_CODES = ("class_code", "type_code", "format_code",
                      "healthcare_facility_type_code", "practice_setting_code")
DOC_REQUIRED_VALUES = ("creation_time", "language_code", "mime_type", "patient_id",
                       "source_patient_id", "unique_id")


class _Collector:
    def __init__(self, code: str, problems: list[ValueProblem]) -> None:
        self.errors: list[XdsError] = []
        self.code = code
        self.unread = {(p.where, p.label) for p in problems}

    def add(self, context: str, location: str, code: str | None = None) -> None:
        self.errors.append(XdsError(code or self.code, context, location))

    def missing(self, location: str, label: str) -> None:
        """`label` is absent: an error, unless the door sent a value it could not read."""
        if (location, label) not in self.unread:
            self.add(f"{label} is missing", location)

    def check(self, location: str, label: str, value: CX | XCN | XON | XTN,
              rule: Callable[[], None] | None = None) -> None:
        """The XDS rule of a typed value built by a door (strict reading already applied it
        to values read from text; values built field by field are checked here)."""
        try:
            (rule or value.check_xds)()
        except DatatypeError as exc:
            self.add(f"{label} {value.format()!r} is malformed: {exc}", location)


def validate_submission(request: SubmissionRequest, domain: CodeDomain,
                        transaction: Transaction = ITI_42) -> list[XdsError]:
    """Every metadata error in the request, in document order."""
    out = _Collector(transaction.metadata_error, request.problems)
    for problem in request.problems:
        out.add(f"{problem.label} {problem.text!r} is malformed: {problem.message}", problem.where)
    ss = request.submission_set
    if ss is None:
        out.add("the request has no SubmissionSet (RegistryPackage classified "
                "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd)", "SubmissionSet",
                ErrorCode.REGISTRY_METADATA)
        return out.errors
    _check_submission_set(ss, domain, out)
    for doc in request.documents:
        _check_document(doc, domain, transaction, out)
        _check_same_patient(doc, ss, out)
    for folder in request.folders:
        _check_folder(folder, domain, out)
        _check_same_patient(folder, ss, out)
    for assoc in request.associations:
        _check_association(assoc, domain, out)
    _check_unique_ids(request, out)
    _check_lengths(request, out)
    _check_membership(request, ss, out)
    _check_logical_ids(request, ss, transaction, out)
    return out.errors


def unpaired_contents(request: SubmissionRequest) -> list[XdsError]:
    """ITI-41's pairing of metadata and bytes (ITI TF-2b 3.41.4.1.3): an entry without its
    Document is XDSMissingDocument, a Document no entry describes XDSMissingDocumentMetadata.
    The repository refuses them and `/validate` reports them, from this one statement."""
    errors = [XdsError(ErrorCode.MISSING_DOCUMENT, f"DocumentEntry {doc.entry_uuid} has no Document in the request",
                       doc.entry_uuid) for doc in request.documents if doc.entry_uuid not in request.contents]
    described = {doc.entry_uuid for doc in request.documents}
    errors += [XdsError(ErrorCode.MISSING_DOCUMENT_METADATA, f"Document {document_id} has no DocumentEntry in the "
                        "metadata", document_id) for document_id in request.contents if document_id not in described]
    return errors


def _check_logical_ids(request: SubmissionRequest, ss: SubmissionSet, transaction: Transaction,
                       out: _Collector) -> None:
    """A new object's logical id (lid) is its own id: only an ITI-57 new version, the target
    of the SubmissionSet's HasMember with PreviousVersion, names another's (ITI TF-3 metadata
    versioning: the first version's logicalId is its entryUUID). A lid borrowed by a
    submission would make its object a version of someone else's document: of its lineage,
    its masking, its history."""
    versions = {a.target_uuid for a in request.associations
                if transaction == ITI_57 and a.association_type == AssociationType.HAS_MEMBER
                and a.source_uuid == ss.entry_uuid and a.previous_version}
    for obj in request.objects():
        if obj.lid and obj.lid != obj.entry_uuid and obj.entry_uuid not in versions:
            out.add(f"{type(obj).__name__} {obj.entry_uuid} has lid {obj.lid}: a new object's logical id is "
                    "its own id (a new version of an object is an ITI-57 update naming its PreviousVersion)",
                    obj.entry_uuid, ErrorCode.METADATA_VERSION)



CODED_ATTRIBUTES = ("class_code", "type_code", "format_code", "healthcare_facility_type_code",
                    "practice_setting_code", "confidentiality_codes", "event_codes", "content_type_code", "codes")


def _check_lengths(request: SubmissionRequest, out: _Collector) -> None:
    """A value longer than `limits` says is refused here, naming its attribute: the registry's
    columns are made to those sizes, and PostgreSQL would refuse it as an internal error."""
    for obj in request.objects():
        where = obj.entry_uuid or type(obj).__name__
        values: list[tuple[str, str, int]] = []
        for attr in CODED_ATTRIBUTES:
            value = getattr(obj, attr, None)
            for code in value if isinstance(value, list) else [value] if value is not None else []:
                values += [(f"{_camel(attr)} code", code.code, limits.CODE),
                           (f"{_camel(attr)} codingScheme", code.scheme, limits.CODING_SCHEME)]
        values += [("referenceIdList", ref.format(), limits.CODE) for ref in getattr(obj, "reference_ids", ())]
        values += [("authorPerson", a.person.format(), limits.AUTHOR_PERSON) for a in getattr(obj, "authors", ()) if a.person]
        values += [("mimeType", getattr(obj, "mime_type", "") or "", limits.MIME_TYPE),
                   ("homeCommunityId", getattr(obj, "home_community_id", "") or "", limits.HOME_COMMUNITY_ID)]
        for label, text, limit in values:
            if len(text) > limit:
                out.add(f"{type(obj).__name__}.{label} is longer than {limit} characters", where)


def _check_same_patient(obj: DocumentEntry | Folder, ss: SubmissionSet, out: _Collector) -> None:
    """A DocumentEntry or Folder is of its SubmissionSet's patient."""
    if obj.patient_id and ss.patient_id and obj.patient_id != ss.patient_id:
        out.add(f"{obj.kind} {obj.entry_uuid} patientId {obj.patient_id} differs from the "
                f"SubmissionSet patientId {ss.patient_id}", obj.entry_uuid,
                ErrorCode.PATIENT_ID_DOES_NOT_MATCH)

def _check_submission_set(ss: SubmissionSet, domain: CodeDomain, out: _Collector) -> None:
    where = ss.entry_uuid or "SubmissionSet"
    for attr, label in (("unique_id", "uniqueId"), ("source_id", "sourceId"),
                        ("patient_id", "patientId"), ("submission_time", "submissionTime")):
        if not getattr(ss, attr):
            out.missing(where, f"SubmissionSet.{label}")
    if ss.unique_id and not is_oid(ss.unique_id):
        out.add(f"SubmissionSet.uniqueId {ss.unique_id!r} is not an OID", where)
    if ss.source_id and not is_oid(ss.source_id):
        out.add(f"SubmissionSet.sourceId {ss.source_id!r} is not an OID", where)
    if ss.patient_id:
        out.check(where, "SubmissionSet.patientId", ss.patient_id)
    if ss.content_type_code is None and not ss.limited_metadata:
        out.add("SubmissionSet.contentTypeCode is missing", where)
    elif ss.content_type_code is not None:
        _check_code(ss.content_type_code, "content_type_code", "SubmissionSet.contentTypeCode",
                    domain, where, out)
    _check_authors(ss.authors, where, "SubmissionSet", out)


def _check_document(doc: DocumentEntry, domain: CodeDomain, tx: Transaction,
                    out: _Collector) -> None:
    where = doc.entry_uuid or "DocumentEntry"
    if not doc.entry_uuid:
        out.add("DocumentEntry has no id", where)
    required = DOC_REQUIRED_VALUES if not doc.limited_metadata else ("patient_id", "unique_id", "mime_type")
    for attr in required:
        if not getattr(doc, attr):
            out.missing(where, f"DocumentEntry.{_camel(attr)}")
    if not doc.limited_metadata:
        for attr in DOC_REQUIRED_CODES:
            if getattr(doc, attr) is None:
                out.add(f"DocumentEntry.{_camel(attr)} is missing", where)
        if not doc.confidentiality_codes:
            out.add("DocumentEntry.confidentialityCode is missing", where)
    if tx.hash_and_size_required:
        if not doc.hash:
            out.add("DocumentEntry.hash is missing", where)
        if doc.size is None:
            out.add("DocumentEntry.size is missing", where)
    if tx.repository_required and not doc.repository_unique_id:
        out.add("DocumentEntry.repositoryUniqueId is missing", where)
    if doc.hash and (len(doc.hash) != 40 or any(c not in "0123456789abcdefABCDEF" for c in doc.hash)):
        out.add(f"DocumentEntry.hash {doc.hash!r} is not a SHA-1 in hexadecimal", where)
    if doc.size is not None and doc.size < 0:
        out.add(f"DocumentEntry.size {doc.size} is negative", where)
    if doc.unique_id:
        _check_document_unique_id(doc.unique_id, where, out)
    if doc.repository_unique_id and not is_oid(doc.repository_unique_id):
        out.add(f"DocumentEntry.repositoryUniqueId {doc.repository_unique_id!r} is not an OID", where)
    if doc.patient_id:
        out.check(where, "DocumentEntry.patientId", doc.patient_id)
    if doc.source_patient_id:
        out.check(where, "DocumentEntry.sourcePatientId", doc.source_patient_id)
    if doc.legal_authenticator:
        out.check(where, "DocumentEntry.legalAuthenticator", doc.legal_authenticator)
    for ref in doc.reference_ids:
        out.check(where, "DocumentEntry.referenceIdList", ref, partial(_reference_id_rule, ref))
    if doc.language_code and not LANGUAGE_TAG.fullmatch(doc.language_code):
        out.add(f"DocumentEntry.languageCode {doc.language_code!r} is not a language tag (RFC 5646: "
                "subtags of 1 to 8 letters or digits joined by '-', e.g. fr-FR)", where)
    if doc.mime_type and not MEDIA_TYPE.fullmatch(doc.mime_type):
        out.add(f"DocumentEntry.mimeType {doc.mime_type!r} is not a MIME type type/subtype (RFC 6838 4.2)",
                where)
    elif doc.mime_type and not domain.allows_mime_type(doc.mime_type):
        out.add(f"DocumentEntry.mimeType {doc.mime_type!r} is not in the affinity domain", where)
    for attr in DOC_REQUIRED_CODES:
        code = getattr(doc, attr)
        if code is not None:
            _check_code(code, attr, f"DocumentEntry.{_camel(attr)}", domain, where, out)
    for code in doc.confidentiality_codes:
        _check_code(code, "confidentiality_codes", "DocumentEntry.confidentialityCode", domain, where, out)
    for code in doc.event_codes:
        _check_code(code, "event_codes", "DocumentEntry.eventCodeList", domain, where, out)
    _check_authors(doc.authors, where, "DocumentEntry", out)


def _check_document_unique_id(value: str, where: str, out: _Collector) -> None:
    root, extension = unique_id_parts(value)
    if len(value) > limits.UNIQUE_ID or not is_oid(root) or ("^" in value and not extension):
        out.add(f"DocumentEntry.uniqueId {value!r} is not an OID or OID^extension "
                f"of at most {limits.UNIQUE_ID} characters", where)


def _check_folder(folder: Folder, domain: CodeDomain, out: _Collector) -> None:
    where = folder.entry_uuid or "Folder"
    for attr, label in (("unique_id", "uniqueId"), ("patient_id", "patientId")):
        if not getattr(folder, attr):
            out.missing(where, f"Folder.{label}")
    if folder.unique_id and not is_oid(folder.unique_id):
        out.add(f"Folder.uniqueId {folder.unique_id!r} is not an OID", where)
    if folder.patient_id:
        out.check(where, "Folder.patientId", folder.patient_id)
    if not folder.codes and not folder.limited_metadata:
        out.add("Folder.codeList is missing", where)
    for code in folder.codes:
        _check_code(code, "codes", "Folder.codeList", domain, where, out)


def _check_association(assoc: Association, domain: CodeDomain, out: _Collector) -> None:
    where = assoc.entry_uuid or "Association"
    try:
        kind = AssociationType(assoc.association_type)
    except ValueError:
        out.add(f"unknown associationType {assoc.association_type!r}", where)
        return
    if not assoc.source_uuid or not assoc.target_uuid:
        out.add("Association needs sourceObject and targetObject", where)
    if assoc.source_uuid and assoc.source_uuid == assoc.target_uuid:
        out.add("Association sourceObject and targetObject are the same object", where)
    if kind == AssociationType.HAS_MEMBER and assoc.submission_set_status not in ("", "Original", "Reference"):
        out.add(f"SubmissionSetStatus {assoc.submission_set_status!r} is neither Original nor Reference", where)
    if assoc.documentation is not None:
        _check_code(assoc.documentation, "documentation", "Association documentation", domain, where, out)


def _check_unique_ids(request: SubmissionRequest, out: _Collector) -> None:
    seen: dict[str, str] = {}
    for obj in [request.submission_set, *request.documents, *request.folders]:
        uid = obj.unique_id if obj is not None else ""
        if obj is None or not uid:
            continue
        if uid in seen:
            out.add(f"uniqueId {uid} is used by both {seen[uid]} and {obj.entry_uuid}",
                    obj.entry_uuid, DUPLICATE_UNIQUE_ID_IN_MESSAGE)
        seen[uid] = obj.entry_uuid
    ids: set[str] = set()
    for each in request.objects():
        if each.entry_uuid in ids:
            out.add(f"id {each.entry_uuid} is used by two objects in the request", each.entry_uuid)
        ids.add(each.entry_uuid)


def _check_membership(request: SubmissionRequest, ss: SubmissionSet, out: _Collector) -> None:
    """Each submitted DocumentEntry and Folder must be a member of the SubmissionSet."""
    members = {a.target_uuid for a in request.associations
               if a.association_type == AssociationType.HAS_MEMBER and a.source_uuid == ss.entry_uuid}
    members_to_be: list[DocumentEntry | Folder] = [*request.documents, *request.folders]
    for obj in members_to_be:
        if obj.entry_uuid not in members:
            out.add(f"{obj.kind} {obj.entry_uuid} is not linked to the SubmissionSet by a "
                    "HasMember association", obj.entry_uuid)


def _check_code(code: Code, attribute: str, label: str, domain: CodeDomain, where: str,
                out: _Collector) -> None:
    if not code.code or not code.scheme:
        out.add(f"{label} needs a code and a codingScheme", where)
    elif not domain.allows(attribute, code.code, code.scheme):
        out.add(f"{label} {code.code} ({code.scheme}) is not in the affinity domain's value set",
                where)


def _check_authors(authors: list[Author], where: str, owner: str, out: _Collector) -> None:
    for author in authors:
        if author.is_empty():
            out.add(f"{owner}.author has none of authorPerson, authorInstitution, authorRole, "
                    "authorSpecialty, authorTelecommunication", where)
        if author.person:
            out.check(where, f"{owner}.authorPerson", author.person)
        for institution in author.institutions:
            out.check(where, f"{owner}.authorInstitution", institution)
        for telecom in author.telecoms:
            out.check(where, f"{owner}.authorTelecommunication", telecom)


def _reference_id_rule(ref: CX) -> None:
    CX.parse_reference_id(ref.format())


def _camel(attr: str) -> str:
    head, *rest = attr.split("_")
    return head + "".join(p.capitalize() for p in rest)


