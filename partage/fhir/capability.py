"""The CapabilityStatement at /fhir/metadata: what this MHD Document Recipient/Responder
(PDSm "gestionnaire de partage de documents") serves. The searchParam lists are written from
the declarations the search parser reads (`searchparams`), so the statement cannot promise a
parameter the server ignores, nor hide one it answers."""

from __future__ import annotations

from typing import Any

from .. import __version__
from . import clinical
from . import searchparams as SP

MHD_CS = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/"


def search_params(resource: SP.ResourceSearch) -> list[dict[str, Any]]:
    """The declared parameters, then the result parameters every search takes."""
    out = []
    for p in resource.params:
        item: dict[str, Any] = {"name": p.name, "type": p.type}
        if p.definition:
            item["definition"] = p.definition
        sortable = " Sortable (_sort)." if p.sort is not None else ""
        modifiers = f" Modifiers: {', '.join(':' + m for m in sorted(p.modifiers))}." if p.modifiers else ""
        item["documentation"] = f"{p.expression}: {p.documentation}.{sortable}{modifiers}"
        out.append(item)
    for name, (kind, documentation) in SP.RESULT_PARAMS.items():
        if name in resource.results:
            out.append({"name": name, "type": kind, "documentation": documentation})
    return out


def _sorts(resource: SP.ResourceSearch) -> str:
    keys = [p.name for p in resource.params if p.sort is not None]
    default = f" (default {', '.join(resource.default_sort)})" if resource.default_sort else ""
    return f"_sort on {', '.join(keys)}{default}" if keys else "no _sort"


def capability_statement(base_url: str, date: str) -> dict[str, Any]:
    read_search = [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}]
    versioned = {"versioning": "versioned", "readHistory": False, "conditionalRead": "full-support"}
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
                 **versioned,
                 "conditionalUpdate": False, "conditionalCreate": False,
                 "searchParam": search_params(SP.DOCUMENT_REFERENCE),
                 "documentation": "ITI-67; create = PDSm simplified publish; patch = PDSm metadata "
                                  "update (status, securityLabel, isArchived), conditional on identifier; "
                                  f"{_sorts(SP.DOCUMENT_REFERENCE)}; only the current version is kept; "
                                  "delete = the author sets the document entered-in-error (a tombstone)"},
                {"type": "List", "interaction": read_search, **versioned,
                 "searchParam": search_params(SP.LIST),
                 "documentation": f"ITI-66 (SubmissionSets and Folders); {_sorts(SP.LIST)}"},
                {"type": "Binary", "interaction": [{"code": "read"}],
                 "documentation": "ITI-68: the document's bytes; the Binary resource with _format or "
                                  "Accept: application/fhir+json|xml"},
                {"type": "Patient", "interaction": [*read_search, {"code": "create"}, {"code": "update"}],
                 **versioned, "updateCreate": True, "searchParam": search_params(SP.PATIENT),
                 "documentation": f"PDQm-like search; {_sorts(SP.PATIENT)}"},
                *clinical.capability_resources(),
                {"type": "AuditEvent", "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "searchParam": [{"name": "patient.identifier", "type": "token"},
                                 {"name": "date", "type": "date",
                                  "documentation": "when the access was recorded (AuditEvent.recorded)"},
                                 {"name": "_count", "type": "number"}],
                 "documentation": "ITI-81 style: who accessed the record (the patient's own; all for administrators)"},
                {"type": "Subscription",
                 "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}, {"code": "update"},
                                 {"code": "delete"}],
                 "searchParam": [{"name": "status", "type": "token",
                                  "documentation": "the subscription's status (comma: any of them)"}],
                 "operation": [{"name": "status", "definition":
                                "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"}],
                 "documentation": "DSUBm (ITI-110 subscribe, update to off or requested, delete; ITI-113 search "
                                  "and read; $status): the caller's own FHIR subscriptions (docs/notifications.md)"},
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
