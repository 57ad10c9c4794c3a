"""The CapabilityStatement at /fhir/metadata: what this MHD Document Recipient/Responder
(PDSm "gestionnaire de partage de documents") serves, generated from the same tables the
search code reads, so it cannot promise a parameter the server ignores."""

from __future__ import annotations

from typing import Any

from .. import __version__
from . import search

MHD_CS = "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/"
PDSM_CS = "https://interop.esante.gouv.fr/ig/fhir/pdsm/CapabilityStatement/"
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
        "instantiates": [MHD_CS + "IHE.MHD.DocumentRecipient", MHD_CS + "IHE.MHD.DocumentResponder",
                         PDSM_CS + "PDSm-GestionnaireDePartageDeDocuments"],
        "software": {"name": "Partage", "version": __version__},
        "implementation": {"description": "Partage XDS.b registry/repository, MHD facade", "url": base_url},
        "fhirVersion": "4.0.1", "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "interaction": [{"code": "transaction", "documentation": "ITI-65 Provide Document Bundle"}],
            "resource": [
                {"type": "DocumentReference",
                 "interaction": [*read_search, {"code": "create"}, {"code": "patch"}],
                 "conditionalUpdate": False, "conditionalCreate": False,
                 "searchParam": _params(search.DOCUMENT_PARAMS),
                 "documentation": "ITI-67; create = PDSm simplified publish; patch = PDSm metadata "
                                  "update (status, securityLabel, isArchived), conditional on identifier"},
                {"type": "List", "interaction": read_search, "searchParam": _params(search.LIST_PARAMS),
                 "documentation": "ITI-66 (SubmissionSets and Folders)"},
                {"type": "Binary", "interaction": [{"code": "read"}], "documentation": "ITI-68"},
                {"type": "Patient", "interaction": [*read_search, {"code": "create"}, {"code": "update"}],
                 "searchParam": _params({"identifier", "_id", "family", "given", "birthdate"})},
            ],
        }],
    }
