"""XDS error codes (ITI TF-3 Table 4.2.4.1-2) and the exception that carries them.

A submission is judged whole: rules collect every error they find into one
`XdsErrors`, so a sender fixes all of them in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ErrorCode(StrEnum):
    REGISTRY_ERROR = "XDSRegistryError"
    REGISTRY_METADATA = "XDSRegistryMetadataError"
    REPOSITORY_ERROR = "XDSRepositoryError"
    REPOSITORY_METADATA = "XDSRepositoryMetadataError"
    PATIENT_ID_DOES_NOT_MATCH = "XDSPatientIdDoesNotMatch"
    UNKNOWN_PATIENT_ID = "XDSUnknownPatientId"
    DUPLICATE_UNIQUE_ID = "XDSDuplicateUniqueIdInRegistry"
    MISSING_DOCUMENT = "XDSMissingDocument"
    MISSING_DOCUMENT_METADATA = "XDSMissingDocumentMetadata"
    NON_IDENTICAL_HASH = "XDSNonIdenticalHash"
    NON_IDENTICAL_SIZE = "XDSNonIdenticalSize"
    UNKNOWN_REPOSITORY_ID = "XDSUnknownRepositoryId"
    DOCUMENT_UNIQUE_ID_ERROR = "XDSDocumentUniqueIdError"
    SQ_PARAM_NUMBER = "XDSStoredQueryParamNumber"
    SQ_MISSING_PARAM = "XDSStoredQueryMissingParam"
    UNKNOWN_STORED_QUERY = "XDSUnknownStoredQuery"
    RESULT_NOT_SINGLE_PATIENT = "XDSResultNotSinglePatient"
    TOO_MANY_RESULTS = "XDSTooManyResults"
    METADATA_UPDATE = "XDSMetadataUpdateError"
    METADATA_VERSION = "XDSMetadataVersionError"
    METADATA_IDENTIFIER = "XDSMetadataIdentifierError"
    PATIENT_ID_RECONCILIATION = "XDSPatientIDReconciliationError"
    UNRESOLVED_REFERENCE = "UnresolvedReferenceException"
    REFERENCES_EXIST = "ReferencesExistException"
    UNREFERENCED_OBJECT = "XDSUnreferencedObjectException"
    UNMODIFIABLE_METADATA = "UnmodifiableMetadataError"
    INVALID_REQUEST = "XDSInvalidRequestException"
    UNKNOWN_COMMUNITY = "XDSUnknownCommunity"
    POLICY_VIOLATION = "XDSPolicyViolation"


@dataclass(frozen=True, slots=True)
class XdsError:
    """One RegistryError: code, what went wrong (codeContext) and where (location)."""

    code: ErrorCode | str
    context: str
    location: str = ""
    warning: bool = False


@dataclass
class XdsErrors(Exception):
    """Raised to fail a transaction; holds every error found, never just the first."""

    errors: list[XdsError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.summary())

    @classmethod
    def one(cls, code: ErrorCode | str, context: str, location: str = "") -> XdsErrors:
        return cls([XdsError(code, context, location)])

    def summary(self) -> str:
        return "; ".join(f"{e.code}: {e.context}" for e in self.errors)

    @property
    def codes(self) -> list[str]:
        return [str(e.code) for e in self.errors]


# Codes not in the enum above but named by ITI TF-3 for specific cases.
DUPLICATE_UNIQUE_ID_IN_MESSAGE = "XDSRegistryDuplicateUniqueIdInMessage"
REPOSITORY_DUPLICATE_UNIQUE_ID_IN_MESSAGE = "XDSRepositoryDuplicateUniqueIdInMessage"
