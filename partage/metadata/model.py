"""The one internal model of XDS metadata (ITI TF-3 4.2.3).

Every door (ebRIM over SOAP, FHIR MHD, HL7 v2, CDA headers) translates to and from these
classes, and every service (validation, policy, registry) speaks them, so a rule is
written once. HL7 v2 values (CX, XCN, XON, XTN, DTM) are the typed values of
`partage.metadata.datatypes`, parsed once by the door that reads them and written back by
their own `format()`: nothing else splits or escapes HL7 text. A value a door could not
read is not guessed at: the door leaves the attribute empty and records a `ValueProblem`
on the request, which the metadata rules report with the transaction's error code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO

from .datatypes import CX, DTM, XCN, XON, XTN, Recipient


class AvailabilityStatus(StrEnum):
    """ebRIM status of a registry object; Archived and Deleted are the CI-SIS extensions."""

    APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    SUBMITTED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"
    ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
    DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"

    @property
    def short(self) -> str:
        return self.value.rsplit(":", 1)[1]


class AssociationType(StrEnum):
    HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
    APND = "urn:ihe:iti:2007:AssociationType:APND"
    XFRM = "urn:ihe:iti:2007:AssociationType:XFRM"
    XFRM_RPLC = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
    SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
    IS_SNAPSHOT_OF = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"
    UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    SUBMIT_ASSOCIATION = "urn:ihe:iti:2010:AssociationType:SubmitAssociation"

    @property
    def is_relationship(self) -> bool:
        """Document relationships (ITI TF-3 4.2.2): the ones GetRelatedDocuments follows."""
        return self in RELATIONSHIP_TYPES


RELATIONSHIP_TYPES = frozenset({
    AssociationType.RPLC, AssociationType.APND, AssociationType.XFRM,
    AssociationType.XFRM_RPLC, AssociationType.SIGNS, AssociationType.IS_SNAPSHOT_OF,
})
REPLACING_TYPES = frozenset({AssociationType.RPLC, AssociationType.XFRM_RPLC})


class ObjectType(StrEnum):
    """DocumentEntry.objectType."""

    STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value: ebRIM Classification (nodeRepresentation + codingScheme slot + Name)."""

    code: str
    scheme: str
    display: str = ""

    def matches(self, other: Code) -> bool:
        """Same concept, whatever the display name."""
        return self.code == other.code and self.scheme == other.scheme

    def format(self) -> str:
        """The stored-query parameter form `code^^scheme`."""
        return f"{self.code}^^{self.scheme}"


@dataclass(slots=True)
class Author:
    """One author (person and/or institution), as in the author classification."""

    person: XCN | None = None
    institutions: list[XON] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    telecoms: list[XTN] = field(default_factory=list)
    classification_id: str = ""                        # id of the ebRIM Classification, when known

    def is_empty(self) -> bool:
        return not (self.person or self.institutions or self.roles or self.specialties or self.telecoms)


Slots = dict[str, list[str]]


@dataclass(slots=True)
class RegistryObject:
    """What every XDS object has: identity, status, and slots the model does not name."""

    entry_uuid: str = ""          # ebRIM id: urn:uuid:..., or a symbolic id before assignment
    availability_status: AvailabilityStatus | None = None
    home_community_id: str = ""
    title: str = ""
    comments: str = ""
    extra_slots: Slots = field(default_factory=dict)
    lid: str = ""                 # logicalId (ITI-57): the entryUUID of the first version
    version: str = ""             # VersionInfo/@versionName: "1", "2", ...

    @property
    def logical_id(self) -> str:
        return self.lid or self.entry_uuid


@dataclass(slots=True)
class DocumentEntry(RegistryObject):
    """XDSDocumentEntry: every attribute of ITI TF-3 Table 4.3.1-3."""

    unique_id: str = ""
    patient_id: CX | None = None
    source_patient_id: CX | None = None
    source_patient_info: list[str] = field(default_factory=list)   # PID-n|value
    object_type: ObjectType = ObjectType.STABLE
    mime_type: str = ""
    hash: str = ""                               # SHA-1, lowercase hex
    size: int | None = None
    repository_unique_id: str = ""
    creation_time: DTM | None = None
    service_start_time: DTM | None = None
    service_stop_time: DTM | None = None
    language_code: str = ""
    legal_authenticator: XCN | None = None
    uri: str = ""
    document_availability: str = ""             # on-demand: Online/Offline
    limited_metadata: bool = False
    class_code: Code | None = None
    type_code: Code | None = None
    format_code: Code | None = None
    healthcare_facility_type_code: Code | None = None
    practice_setting_code: Code | None = None
    confidentiality_codes: list[Code] = field(default_factory=list)
    event_codes: list[Code] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    reference_ids: list[CX] = field(default_factory=list)   # CXi

    kind = "DocumentEntry"


@dataclass(slots=True)
class SubmissionSet(RegistryObject):
    unique_id: str = ""
    source_id: str = ""           # OID
    patient_id: CX | None = None
    submission_time: DTM | None = None
    content_type_code: Code | None = None
    intended_recipients: list[Recipient] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    limited_metadata: bool = False

    kind = "SubmissionSet"


@dataclass(slots=True)
class Folder(RegistryObject):
    unique_id: str = ""
    patient_id: CX | None = None
    last_update_time: DTM | None = None   # set by the registry
    codes: list[Code] = field(default_factory=list)
    limited_metadata: bool = False

    kind = "Folder"


@dataclass(slots=True)
class Association(RegistryObject):
    association_type: AssociationType | str = AssociationType.HAS_MEMBER
    source_uuid: str = ""
    target_uuid: str = ""
    submission_set_status: str = ""   # "Original" | "Reference" (HasMember from a submission set)
    previous_version: str = ""        # ITI-57 SubmitAssociation / metadata update
    original_status: str = ""         # ITI-57 UpdateAvailabilityStatus
    new_status: str = ""
    documentation: Code | None = None   # the association documentation classification

    kind = "Association"


@dataclass(slots=True)
class ObjectRef:
    """A reference to a registry object returned without its metadata (ObjectRef return type)."""

    entry_uuid: str
    home_community_id: str = ""

    kind = "ObjectRef"


AnyObject = DocumentEntry | SubmissionSet | Folder | Association


@dataclass(slots=True)
class DocumentContent:
    """The bytes submitted with a DocumentEntry (ITI-41), as a readable file and its digests.

    Held as a file, not bytes, so that a 100 MB document is never copied in memory.
    """

    file: IO[bytes]         # a binary file object positioned anywhere; readers seek(0)
    size: int
    sha1: str               # lowercase hex
    sha256: str = ""
    content_type: str = ""
    cda: object = None      # the parsed ClinicalDocument once the CDA gate has read it (reused, not re-parsed)


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """A value a door could not read as its type: reported by the metadata rules, in place of
    the attribute (which the door leaves empty)."""

    where: str        # the object's id
    label: str        # e.g. "DocumentEntry.patientId"
    text: str         # what was sent
    message: str      # the datatype error, naming the component


@dataclass(slots=True)
class SubmissionRequest:
    """One submission (ITI-41/42/65, HL7 feed): everything registered or nothing."""

    submission_set: SubmissionSet | None = None
    documents: list[DocumentEntry] = field(default_factory=list)
    folders: list[Folder] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)
    contents: dict[str, DocumentContent] = field(default_factory=dict)  # by DocumentEntry id
    problems: list[ValueProblem] = field(default_factory=list)   # values the door could not read
    # The documents' uniqueIds must be new to the registry, even for the same bytes (the HL7
    # document feed: a CDA id names one document, indexed once); XDS otherwise lets a document
    # be registered again with the same hash.
    new_documents: bool = False

    def objects(self) -> list[AnyObject]:
        ss = [self.submission_set] if self.submission_set else []
        return [*ss, *self.documents, *self.folders, *self.associations]

    def by_id(self) -> dict[str, AnyObject]:
        return {obj.entry_uuid: obj for obj in self.objects()}

    def external_references(self) -> list[str]:
        """The ids its associations name that it does not submit (registered objects, or ids
        the registry does not hold), each once, in order."""
        submitted = self.by_id()
        return list(dict.fromkeys(ref for a in self.associations for ref in (a.source_uuid, a.target_uuid)
                                  if ref and ref not in submitted))
