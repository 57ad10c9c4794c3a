"""The CapabilityStatement at /fhir/metadata: what this MHD Document Recipient/Responder
(PDSm "gestionnaire de partage de documents") serves, generated from the same tables the
search code reads, so it cannot promise a parameter the server ignores."""

from __future__ import annotations

from typing import Any

from .. import __version__
from . import clinical, search

MHD_CS = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/"
_TYPES = {"date": "date", "creation": "date", "period": "date", "period-start": "date", "period-end": "date",
          "author.given": "string", "author.family": "string", "source.given": "string",
          "source.family": "string", "patient": "reference", "related": "reference"}


def _params(names: set[str]) -> list[dict[str, Any]]:
    return [{"name": n, "type": _TYPES.get(n, "token")} for n in sorted(names) if ":" not in n]


def capability_statement(base_url: str, date: str) -> dict[str, Any]:
    read_search = [{"code": "read"}, {"code": "search-type"}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active", "date": date, "kind": "instance",
        "name": "PartageMHD", "title": "Partage MHD / PDSm document sharing server",
        # MHD's own actors; the PDSm document-sharing manager role is said in the description
        # (no PDSm CapabilityStatement canonical is claimed that this server has not checked).
        "instantiates": [MHD_CS + "IHE.MHD.DocumentRecipient", MHD_CS + "IHE.MHD.DocumentResponder"],
        "description": "MHD 4.2 Document Recipient and Document Responder (ITI-65, ITI-66, ITI-67, ITI-68) "
                       "and the ANS PDSm profile (simplified publish, metadata update by conditional PATCH) "
                       "over the Partage XDS.b registry and repository.",
        "software": {"name": "Partage", "version": __version__},
        "implementation": {"description": "Partage XDS.b registry/repository, MHD facade", "url": base_url},
        "fhirVersion": "4.0.1", "format": ["application/fhir+json", "application/fhir+xml"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "interaction": [{"code": "transaction", "documentation": "ITI-65 Provide Document Bundle"}],
            "resource": [
                {"type": "DocumentReference",
                 "interaction": [*read_search, {"code": "create"}, {"code": "patch"}, {"code": "delete"}],
                 "conditionalUpdate": False, "conditionalCreate": False,
                 "searchParam": _params(search.DOCUMENT_PARAMS),
                 "documentation": "ITI-67; create = PDSm simplified publish; patch = PDSm metadata "
                                  "update (status, securityLabel, isArchived), conditional on identifier; "
                                  "delete = the author sets the document entered-in-error (a tombstone)"},
                {"type": "List", "interaction": read_search, "searchParam": _params(search.LIST_PARAMS),
                 "documentation": "ITI-66 (SubmissionSets and Folders)"},
                {"type": "Binary", "interaction": [{"code": "read"}], "documentation": "ITI-68"},
                {"type": "Patient", "interaction": [*read_search, {"code": "create"}, {"code": "update"}],
                 "searchParam": _params({"identifier", "_id", "family", "given", "birthdate"})},
                *clinical.capability_resources(),
                {"type": "AuditEvent", "interaction": read_search,
                 "searchParam": [{"name": "patient.identifier", "type": "token"}, {"name": "_count", "type": "number"}],
                 "documentation": "ITI-81 style: who accessed the record (the patient's own; all for administrators)"},
                {"type": "Consent", "interaction": [{"code": "search-type"}, {"code": "update"}],
                 "documentation": "the patient's record state: consent, médecin traitant, blocked professionals, "
                                  "opposition to bris de glace (docs/access.md)"},
            ],
            "security": {"cors": False, "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}]}],
                "description": "Bearer JWT (IHE IUA-like claims) signed by a certificate of a trusted CA; "
                               "see docs/access.md"},
        }],
    }
