"""Errors as FHIR OperationOutcome, with the XDS error code in each issue's details.

The FHIR door raises `FhirError` for HTTP-level problems (bad request, not found) and
lets `XdsErrors` from the flows through; both become one OperationOutcome whose issues
carry the XDS code (details.coding and details.text), the explanation (diagnostics) and,
where known, the offending object (expression).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..metadata.errors import ErrorCode, XdsError, XdsErrors
from ..xmlsafe import xml_text

XDS_ERROR_SYSTEM = "urn:partage:fhir:xds-error-code"

# XDS error code -> (HTTP status, OperationOutcome.issue.code)
_STATUS: dict[str, tuple[int, str]] = {   # keyed by text: a code may come as a plain str
    ErrorCode.UNKNOWN_PATIENT_ID: (400, "not-found"),
    ErrorCode.POLICY_VIOLATION: (403, "forbidden"),
    ErrorCode.DOCUMENT_UNIQUE_ID_ERROR: (404, "not-found"),
    ErrorCode.TOO_MANY_RESULTS: (400, "too-costly"),
    ErrorCode.DUPLICATE_UNIQUE_ID: (409, "duplicate"),
    ErrorCode.REGISTRY_ERROR: (500, "exception"),
    ErrorCode.REPOSITORY_ERROR: (500, "exception"),
}


@dataclass
class Issue:
    diagnostics: str
    code: str = "invalid"             # OperationOutcome.issue.code
    severity: str = "error"
    xds_code: str = ""
    expression: str = ""


@dataclass
class FhirError(Exception):
    """An HTTP answer with an OperationOutcome body."""

    status: int
    issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__("; ".join(i.diagnostics for i in self.issues))

    @classmethod
    def one(cls, status: int, diagnostics: str, code: str = "invalid", xds_code: str = "") -> FhirError:
        return cls(status, [Issue(diagnostics, code, xds_code=xds_code)])


def default_xds_code(status: int) -> str:
    """The XDS code an error raised by the FHIR door itself carries when it names none:
    a request the server cannot act on, or a failure of the server."""
    return str(ErrorCode.REGISTRY_ERROR if status >= 500 else ErrorCode.INVALID_REQUEST)


def from_xds(exc: XdsErrors) -> FhirError:
    """XdsErrors -> FhirError: 4xx unless every error is a server-side failure."""
    issues = [_issue(e) for e in exc.errors]
    statuses = [_STATUS.get(e.code, (400, "invalid"))[0] for e in exc.errors if not e.warning]
    status = 400
    if statuses and all(s == statuses[0] for s in statuses):
        status = statuses[0]
    elif any(s == 403 for s in statuses):
        status = 403
    return FhirError(status, issues)


def _issue(error: XdsError) -> Issue:
    return Issue(error.context, _STATUS.get(error.code, (400, "invalid"))[1],
                 "warning" if error.warning else "error", str(error.code), error.location)


def operation_outcome(issues: list[Issue], status: int = 400) -> dict[str, Any]:
    """Every error issue names an XDS error code (details); warnings may not."""
    out = []
    for issue in issues:
        if not issue.xds_code and issue.severity in ("error", "fatal"):
            issue = Issue(issue.diagnostics, issue.code, issue.severity, default_xds_code(status), issue.expression)
        # Diagnostics quote what the client sent: characters XML cannot carry are replaced, so
        # that the outcome can be written in either format.
        item: dict[str, Any] = {"severity": issue.severity, "code": issue.code,
                                "diagnostics": xml_text(issue.diagnostics)}
        if issue.xds_code:
            item["details"] = {"coding": [{"system": XDS_ERROR_SYSTEM, "code": issue.xds_code}],
                               "text": issue.xds_code}
        if issue.expression:
            item["expression"] = [xml_text(issue.expression)]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out or [
        {"severity": "information", "code": "informational", "diagnostics": "ok"}]}
