"""The validation service for conformance testers: POST /validate, and a web form at GET /validate.

What can be posted (raw body, or one or more files of a multipart/form-data upload):
  - a CDA document (root hl7:ClinicalDocument, or an auto-présentable xsl:stylesheet);
  - an ITI-41 request (SOAP 1.2 envelope, inline base64 or MTOM/XOP): every document of it
    that is a CDA is validated with its DocumentEntry metadata (layer 5, the cross-check),
    and the XDS metadata rules' errors come back as a report of their own;
  - an MHD ITI-65 Provide Document Bundle (FHIR JSON or XML): likewise, per Binary.
Parameters (query string or form fields): `profile` (cisis, ans, structure; default the
server's), `format` (json, svrl, html; default json, or what Accept asks for).

A report is not patient data: no authentication is asked. Uploads are bounded
(settings.validate_max_bytes) and every parser is the hardened one (no DTD, no entity,
no network, bounded depth).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from ..cda.findings import (
    ERROR,
    FAILED,
    INFO,
    METADATA,
    PARSE,
    PASSED,
    Finding,
    LayerResult,
    Report,
    to_json,
    to_svrl,
    to_svrl_many,
)
from ..cda.gate import entry_metadata, is_cda, report_profile, report_profile_name, root_tag
from ..cda.profile import PROFILES, Validator, get_validator, profile_gaps
from ..cda.report_html import to_html
from ..ebxml import ebrim
from ..ebxml.mtom import MtomError, read_soap_request, xop_includes
from ..ebxml.soap import SoapError, parse_envelope
from ..metadata.errors import XdsError, XdsErrors
from ..metadata.model import DocumentContent, SubmissionRequest
from ..metadata.validate import ITI_41, unpaired_contents, validate_submission
from ..mhd import bundle as iti65
from ..mhd.datatypes import identifier_cx
from ..mhd.formats import parse_resource
from ..mhd.outcome import FhirError
from ..services import Services
from ..xmlsafe import XmlInputError

log = logging.getLogger("partage.validate")
bp = Blueprint("validate", __name__)

SOAP12_ENVELOPE = "{http://www.w3.org/2003/05/soap-envelope}Envelope"
FHIR_NS = "{http://hl7.org/fhir}"
SVRL_TYPE = "application/svrl+xml"
FORMATS = ("json", "svrl", "html")
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff",
                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                "form-action 'self'"}


@dataclass
class Upload:
    name: str
    data: bytes
    content_type: str = ""


def _services() -> Services:
    services: Services = current_app.extensions["partage"]
    return services


def _profile_name(services: Services, name: str | None) -> str:
    return report_profile_name(services.settings, name)


@bp.record_once
def _load_at_start(state: BlueprintSetupState) -> None:
    """Load the server's profile when the app is built: what it lacks is logged at start-up."""
    services = state.app.extensions.get("partage")
    if isinstance(services, Services):
        get_validator(report_profile(services.settings))


# --- what was posted -> reports ------------------------------------------------------------

def validate_upload(services: Services, upload: Upload, profile_name: str | None) -> list[Report]:
    # The profile as it defines "valid": the server's --validation-blocking is an ingest policy.
    validator = get_validator(report_profile(services.settings, profile_name))
    data = upload.data
    head = data[:64 * 1024]
    if upload.content_type.lower().startswith("multipart/related"):
        return _validate_iti41(services, validator, upload)
    if is_cda(data):
        return [validator.validate(data, filename=upload.name)]
    tag = root_tag(head)
    if tag == SOAP12_ENVELOPE:
        return _validate_iti41(services, validator, upload)
    if (tag or "").startswith(FHIR_NS) or data.lstrip()[:1] == b"{":
        return _validate_bundle(services, validator, upload, xml=tag is not None)
    if tag is not None or head.lstrip()[:1] == b"<":
        # XML, but neither CDA nor SOAP nor FHIR: the CDA validator says what it is (or why
        # it is not readable) in its own words.
        return [validator.validate(data, filename=upload.name)]
    return [_refused(upload.name, "not-supported", "le fichier n'est ni un document CDA (XML), ni une requête "
                     "ITI-41 (SOAP 1.2), ni un Bundle MHD Provide Document (FHIR JSON ou XML)")]


def _refused(name: str, rule: str, message: str, layer: str = PARSE) -> Report:
    return Report(file=name, valid=False, findings=[Finding(rule, ERROR, layer, message, "/")])


def _metadata_report(name: str, errors: Iterable[XdsError], *, always: bool = False) -> Report | None:
    """The report of the XDS metadata rules: when they found something, or `always` (the
    submission holds nothing else to report on: its metadata are what was validated)."""
    findings = [Finding(str(e.code), INFO if e.warning else ERROR, METADATA, e.context, e.location)
                for e in errors]
    if not findings and not always:
        return None
    valid = not any(f.severity == ERROR for f in findings)
    # The XDS metadata rules ran in full (a layer of its own: the verdict says what ran).
    return Report(file=f"{name}#metadata", valid=valid, profile="xds-metadata", findings=findings,
                  layers={METADATA: LayerResult(PASSED if valid else FAILED, blocking=True)})


def _documents(validator: Validator, name: str, request_model: SubmissionRequest) -> list[Report]:
    # What the repository refuses (an entry without its bytes, bytes without their entry) is
    # said, not dropped; the bytes of an undescribed Document are not validated.
    reports = [_refused(f"{name}#{e.location}", str(e.code), e.context, METADATA)
               for e in unpaired_contents(request_model)]
    for entry in request_model.documents:
        content = request_model.contents.get(entry.entry_uuid)
        label = f"{name}#{entry.entry_uuid}"
        if content is None:
            continue
        content.file.seek(0)
        data = content.file.read()
        if not is_cda(data):
            # No layer of the CDA profile ran: the verdict is "incomplet", saying why.
            reports.append(Report(file=label, valid=True, missing=[
                "pas un document CDA : aucune couche du profil CDA n'a été exécutée"], findings=[Finding(
                    "not-cda", INFO, PARSE, f"mimeType {entry.mime_type or '?'} : pas un document CDA, non "
                                            "vérifié par le profil CDA", "/")]))
            continue
        reports.append(validator.validate(data, filename=label, xds_metadata=entry_metadata(entry)))
    return reports


def _validate_iti41(services: Services, validator: Validator, upload: Upload) -> list[Report]:
    limit = services.settings.validate_max_bytes
    try:
        mtom = upload.content_type.lower().startswith("multipart/related")
        message = read_soap_request(upload.content_type if mtom else "application/soap+xml",
                                    io.BytesIO(upload.data), max_total=limit)
        envelope = parse_envelope(message.root, require_action=False)
    except (MtomError, XmlInputError, SoapError) as exc:
        return [_refused(upload.name, "soap-unreadable", f"requête SOAP illisible : {exc}")]
    body = envelope.body
    if body.tag != "{urn:ihe:iti:xds-b:2007}ProvideAndRegisterDocumentSetRequest":
        return [_refused(upload.name, "not-iti41", f"le corps SOAP est {body.tag}, pas une requête "
                         "ITI-41 ProvideAndRegisterDocumentSetRequest")]
    submit = body.find("{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest")
    try:
        if submit is None:
            raise XdsErrors.one("XDSRepositoryMetadataError", "no lcm:SubmitObjectsRequest")
        model = ebrim.read_submission(submit)
        for document in body.findall("{urn:ihe:iti:xds-b:2007}Document"):
            includes = xop_includes(document)
            if includes:
                data = message.part(includes[0][1]).read()
            else:
                data = base64.b64decode("".join((document.text or "").split()), validate=True)
            model.contents[document.get("id", "")] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                                                     sha1="")
    except XdsErrors as exc:
        return [_metadata_report(upload.name, exc.errors) or _refused(upload.name, "iti41-unreadable",
                                                                        "requête ITI-41 illisible")]
    except (MtomError, ValueError) as exc:
        return [_refused(upload.name, "iti41-unreadable", f"requête ITI-41 illisible : {exc}")]
    return _submission(services, validator, upload.name, model)


def _submission(services: Services, validator: Validator, name: str, model: SubmissionRequest,
                where: dict[str, str] | None = None) -> list[Report]:
    """A submission read from an ITI-41 request or an ITI-65 Bundle: the XDS metadata rules the
    repository applies to both (ingest's `validate_submission`, ITI-41), then each document.
    `where`: symbolic id -> what the submitter calls it (a Bundle entry's fullUrl)."""
    errors = [dataclasses.replace(e, location=(where or {}).get(e.location, e.location))
              for e in validate_submission(model, services.domain, ITI_41)]
    documents = _documents(validator, name, model)
    meta = _metadata_report(name, errors, always=not documents)
    return ([meta] if meta else []) + documents


def _validate_bundle(services: Services, validator: Validator, upload: Upload, *, xml: bool) -> list[Report]:
    try:
        resource = parse_resource(upload.data, xml, "Bundle")
    except FhirError as exc:
        return [_refused(upload.name, "fhir-unreadable", f"pas un Bundle MHD Provide Document : {exc}")]
    except RecursionError:
        return [_refused(upload.name, "fhir-unreadable", "le JSON est imbriqué trop profondément")]
    try:
        # The subject's identifier is the patient id the cross-check compares; a subject given
        # only by reference is not looked up (validation reads no patient data).
        provided = iti65.read_provide_bundle(resource, lambda ref: identifier_cx(ref.get("identifier") or {}),
                                             lambda _ref: None)
    except XdsErrors as exc:
        # The metadata do not make a submission; the documents are still worth a report.
        meta = _metadata_report(upload.name, exc.errors)
        return ([meta] if meta else []) + _bundle_attachments(validator, upload.name, resource)
    urls = {e.symbolic: e.full_url for e in provided.entries if e.symbolic}
    return _submission(services, validator, upload.name, provided.request, urls)


def _bundle_attachments(validator: Validator, name: str, bundle: dict[str, Any]) -> list[Report]:
    """Every CDA inline in a Bundle (Binary.data, DocumentReference attachment.data), without metadata."""
    reports = []
    for n, entry in enumerate(bundle.get("entry") or []):
        res = (entry or {}).get("resource") or {}
        where = entry.get("fullUrl") or f"entry[{n}]"
        payloads = [res.get("data")] if res.get("resourceType") == "Binary" else \
            [(c.get("attachment") or {}).get("data") for c in res.get("content") or []]
        for payload in payloads:
            if not isinstance(payload, str):
                continue
            try:
                data = base64.b64decode(payload, validate=False)
            except ValueError:
                continue
            if is_cda(data):
                reports.append(validator.validate(data, filename=f"{name}#{where}"))
    return reports


# --- HTTP ---------------------------------------------------------------------------------------

def _param(name: str) -> str | None:
    """A query parameter, or a field of a multipart form (a raw body is never read as a form:
    `curl --data-binary @doc.xml` sends it as application/x-www-form-urlencoded)."""
    value = request.args.get(name)
    if value is None and request.mimetype == "multipart/form-data":
        value = request.form.get(name)
    return value


def _wanted_format() -> str:
    fmt = (_param("format") or "").lower()
    if fmt:
        if fmt not in FORMATS:
            raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
        return fmt
    best = request.accept_mimetypes.best_match(["application/json", SVRL_TYPE, "text/html"],
                                               default="application/json")
    return {SVRL_TYPE: "svrl", "text/html": "html"}.get(best, "json")


def _uploads() -> list[Upload]:
    if request.mimetype == "multipart/form-data":
        out = []
        for key in request.files:
            for f in request.files.getlist(key):
                out.append(Upload(f.filename or key, f.read(), f.mimetype or ""))
        return out
    data = request.get_data(cache=True, parse_form_data=False)
    name = request.args.get("filename") or "(corps de la requête)"
    return [Upload(name, data, request.content_type or "")]


def _render(reports: list[Report], fmt: str) -> Response:
    if fmt == "svrl":
        body = to_svrl(reports[0]) if len(reports) == 1 else to_svrl_many(reports)
        return Response(body, content_type=f"{SVRL_TYPE}; charset=utf-8", headers=_SECURITY_HEADERS)
    if fmt == "html":
        return Response(to_html(reports, back_link="validate"), content_type="text/html; charset=utf-8",
                        headers=_SECURITY_HEADERS)
    return Response(to_json(reports), content_type="application/json; charset=utf-8", headers=_SECURITY_HEADERS)


@bp.post("/validate")
def validate_post() -> Response:
    services = _services()
    request.max_content_length = services.settings.validate_max_bytes
    try:
        uploads = [u for u in _uploads() if u.data.strip()]   # first: the body is not a form
        fmt = _wanted_format()
        profile = _param("profile") or None
        if profile is not None and profile not in PROFILES:
            raise BadRequest(f"unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    except RequestEntityTooLarge:
        return _problem(413, f"the upload exceeds {services.settings.validate_max_bytes} bytes "
                             "(PARTAGE_VALIDATE_MAX_BYTES)")
    except HTTPException as exc:
        return _problem(exc.code or 400, exc.description or "bad request")
    if not uploads:
        return _problem(400, "nothing to validate: post a document as the body, or as a file of a "
                             "multipart/form-data upload")
    reports: list[Report] = []
    for upload in uploads:
        try:
            reports += validate_upload(services, upload, profile)
        except Exception:   # a report for this file, never a traceback to the client
            log.exception("validation of %s failed", upload.name)
            reports.append(_refused(upload.name, "internal-error", "le validateur a échoué sur ce fichier ; "
                                    "le journal du serveur en donne le détail"))
    log.info("validated %d upload(s): %d report(s), %d failing", len(uploads), len(reports),
             sum(not r.valid for r in reports))
    limit = services.settings.max_report_findings
    shown = [_bounded(r, limit) for r in reports[:limit]]
    if len(reports) > limit:
        shown.append(_left_out(reports[limit:], limit))
    return _render(shown, fmt)


def _bounded(report: Report, limit: int) -> Report:
    """At most `limit` findings in a report (the first ones), then one saying how many were left out."""
    if len(report.findings) > limit:
        left = len(report.findings) - limit
        report.findings = report.findings[:limit] + [Finding(
            "report-truncated", INFO, PARSE, f"{left} autre(s) remarque(s) non affichée(s) (PARTAGE_MAX_REPORT_FINDINGS "
            f"{limit})", "/")]
    return report


def _left_out(rest: list[Report], limit: int) -> Report:
    """What stands for the reports past the first `limit`: never "conforme" (they are not shown),
    "non conforme" when one of them is, naming those."""
    failed = [r.file for r in rest if not r.valid]
    message = (f"{len(rest)} autre(s) rapport(s) non affiché(s) (PARTAGE_MAX_REPORT_FINDINGS {limit}), "
               f"dont {len(failed)} non conforme(s)" + (f" : {', '.join(failed[:20])}" if failed else "")
               + (" …" if len(failed) > 20 else ""))
    return Report(file=f"({len(rest)} autre(s) rapport(s))", valid=not failed, missing=[message],
                  findings=[Finding("reports-truncated", ERROR if failed else INFO, PARSE, message, "/")])


def _problem(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, content_type="application/json",
                    headers=_SECURITY_HEADERS)


@bp.get("/validate")
def validate_form() -> Response:
    services = _services()
    default = _profile_name(services, None)
    profiles = []
    for name in [default, *sorted(n for n in PROFILES if n != default)]:   # the server's profile first
        gaps = profile_gaps(report_profile(services.settings, name))
        profiles.append({"name": name, "description": PROFILES[name].description, "missing": gaps})
    page = render_template("validate_form.html", profiles=profiles, default=default,
                           max_mb=services.settings.validate_max_bytes // (1024 * 1024))
    return Response(page, content_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS)
