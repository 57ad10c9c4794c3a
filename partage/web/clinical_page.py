"""The professional's page: one patient's record at a glance, server-rendered HTML in French.

    GET  /dossier/<patient id>                      one screen (1920x1080): identity strip, volet de
                                                    synthèse, allergies, current treatments, latest
                                                    results by panel, the timeline of documents
                                                    (filters: type, author, from, to) and the
                                                    keyword search (q)
    GET  /dossier/<patient id>/resultats?code=&system=   one analyte's history: a plot, every value
    GET  /dossier/<patient id>/documents/<doc id>   one document, readable: CDA narrative as HTML,
                                                    a PDF inline
    GET  /dossier/<patient id>/documents/<doc id>/content   its bytes (after the same check)
    POST /dossier/<patient id>/acces                the access mode for this patient (normal, or
                                                    bris de glace with its reason)

`<patient id>` is the opaque public id (as in /fhir/Patient/<id>). The actor is the
signed-in professional (`partage.web.login`: OpenID Connect, a session cookie), or the
bearer JWT of the FHIR door for a client program; `--insecure-dev`: none needed. Every
piece of the page is read through `partage.query.clinical`, i.e. after the one gate: what
the actor may not see is not on the page, and the page says that something is not shown,
never what. Each request leaves one audit record (`partage.server.auditing`) with the actor's
access mode. No JavaScript; the plots are inline SVG.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from markupsafe import Markup
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WerkzeugResponse

from ..access import audit, authn
from ..access.actor import BRIS_DE_GLACE, PROFESSIONAL, Actor, AuthenticationRequired
from ..cda.parser import XmlRejected, parse_cda
from ..clinical.extract import LAB
from ..clinical.narrative import render as render_narrative
from ..metadata.datatypes import CX
from ..metadata.model import DocumentEntry
from ..metadata.query import DocumentFilter
from ..query.clinical import ClinicalReader, FactQuery, summary_content
from ..query.view import Reader
from ..registry import patients as registry_patients
from ..registry.patients import PatientRecord
from ..repository.store import BlobUnavailable, open_checked
from ..services import Services
from ..terminology.labels import Labels, labels
from ..textsafe import address_holds_nul, holds_nul
from . import formatting as fmt
from . import glance, plot
from .login import LoginRequired, check_csrf, csrf_token, session_actor, signed_in_name
from .pages import html as _page
from .pages import message, view_error

log = logging.getLogger("partage.web")
bp = Blueprint("clinical_page", __name__, url_prefix="/dossier", template_folder="templates")
bp.register_error_handler(Exception, view_error)   # French pages, no stack trace
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_REASON = 500


@bp.before_request
def _no_nul() -> None:
    """A NUL in the address or a field is no page (`partage.textsafe`): 400, as the FHIR door answers."""
    if address_holds_nul(request.path, request.args.items(multi=True)) or holds_nul(request.form.values()):
        abort(400)


def _services() -> Services:
    services: Services = current_app.extensions["partage"]
    return services


def _actor(services: Services, rid: str = "") -> Actor:
    """A client program's bearer JWT, else the signed-in professional (in the access mode chosen
    for this patient); --insecure-dev: the development actor."""
    authorization = request.headers.get("Authorization")
    if authorization or services.settings.insecure_dev:
        return authn.http_actor(services, authorization, address=request.remote_addr or "")
    actor = session_actor(rid)
    if actor is None:
        audit.note_auth_failure("no signed-in session")
        raise LoginRequired()
    return actor


REFUSED_CREDENTIALS = [   # why a credential was refused (partage.access.authn), said in French
    ("replay", "Ce jeton a déjà été utilisé : un jeton à usage unique ne sert qu'une fois."),
    ("expired", "Ce jeton a expiré."),
    ("not yet valid", "Ce jeton n'est pas encore valable."),
    ("audience", "Ce jeton n'est pas destiné à ce serveur."),
    ("certificate", "Ce jeton n'est pas signé par une autorité de confiance."),
]


def _error_description(reason: str) -> str:
    """The reason as an RFC 6750 (3) error_description may carry it: %x20-21 / %x23-5B / %x5D-7E only
    (a token's own text, a non-Latin-1 `alg`, could not even be sent in a header)."""
    text = reason.replace('"', "'")
    return "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text)[:200]


@bp.errorhandler(AuthenticationRequired)
def _unauthenticated(exc: AuthenticationRequired) -> Response:
    """401 in French; the reason also goes, as RFC 6750 says, in WWW-Authenticate (for programs)."""
    reason = str(exc)
    said = next((text for key, text in REFUSED_CREDENTIALS if key in reason), "")
    response = message("Identification requise", " ".join(filter(None, [
        said, "Votre identification n'a pas pu être vérifiée. Connectez-vous pour consulter ce dossier."])), 401,
        link=("/connexion", "Se connecter"))
    described = _error_description(reason)
    response.headers["WWW-Authenticate"] = 'Bearer realm="partage"' if not reason or "is required" in reason \
        else f'Bearer realm="partage", error="invalid_token", error_description="{described}"'
    return response


@bp.errorhandler(LoginRequired)
def _login_required(exc: LoginRequired) -> WerkzeugResponse:  # noqa: ARG001 — Flask passes it
    if "text/html" in (request.headers.get("Accept") or ""):   # a browser: sign in, then come back
        response = redirect(url_for("login.sign_in", suite=request.full_path.rstrip("?")))
        response.headers["Cache-Control"] = "no-store"
        return response
    return _unauthenticated(AuthenticationRequired(""))   # no credentials at all: no error code (RFC 6750)


def _refused(rid: str, actor: Actor) -> Response:
    """The refusal names no one (no identity, no counts); a signed-in professional of a profession
    allowed to may ask for bris de glace (the gate decides again)."""
    extra: dict[str, Any] = {}
    if actor.auth_method == "oidc" and actor.kind == PROFESSIONAL and actor.purpose != BRIS_DE_GLACE \
            and actor.role in _services().access_table.emergency_professions:
        extra = {"bdg_form": url_for("clinical_page.access_mode", rid=rid), "csrf": csrf_token()}
    return message("Accès refusé", "Vous n'avez pas accès à ce dossier.", 403, **extra)


def _patient(services: Services, actor: Actor, rid: str,
             reader: Reader | None = None) -> tuple[PatientRecord, CX, str]:
    """The patient behind the page's id if the actor may open the record (404 when unknown,
    a refusal that names no one when the gate says no), and its médecin traitant's id.
    `reader`: the page's own (the record's state is then loaded once for the whole page)."""
    reader = reader or Reader(services, actor)
    with services.registry.read() as conn:
        pk = registry_patients.by_public_id(conn, rid)
        record = registry_patients.record(conn, pk) if pk is not None else None
        if record is None or record.xds_patient_id is None:
            abort(404)
        allowed = reader.record(conn, record.pk, record.xds_patient_id)
        medecin_traitant = reader.record_states(conn, [record.pk])[record.pk].medecin_traitant if allowed else ""
    if not allowed:
        abort(_refused(rid, actor))
    return record, record.xds_patient_id, medecin_traitant


# --- helpers the templates call -----------------------------------------------------------------
def doc_id(doc: DocumentEntry) -> str:
    uuid = doc.entry_uuid
    return uuid[9:] if uuid.startswith("urn:uuid:") else uuid


def _labels(services: Services) -> Labels:
    return labels(services.settings.cda_valuesets_dir)


def _chosen(args: MultiDict[str, str]) -> dict[str, str]:
    """The page's query parameters: the timeline's filters and the search words."""
    return {k: (args.get(k) or "").strip()[:200] for k in ("class", "type", "author", "from", "to", "q")}


def _day(text: str) -> str:
    digits = "".join(ch for ch in text if ch.isdigit())
    return digits[:8] if len(digits) >= 8 else ""


def _common(rid: str, actor: Actor) -> dict[str, Any]:
    services = _services()
    names = _labels(services)
    page_url = url_for("clinical_page.patient_page", rid=rid)   # links below are built on it (url_for is slow)
    return {"rid": rid, "actor": actor, "day": fmt.day, "day_time": fmt.day_time, "authors": glance.authors,
            "doc_type": lambda d: glance.document_type(d, names), "Markup": Markup,
            "doc_url": lambda d: f"{page_url}/documents/{doc_id(d)}", "page_url": page_url,
            "access_url": url_for("clinical_page.access_mode", rid=rid),
            "logout_url": url_for("login.sign_out"),
            "session_user": signed_in_name() if actor.auth_method == "oidc" else "",
            "csrf": csrf_token() if actor.auth_method == "oidc" else ""}


# --- routes ---------------------------------------------------------------------------------------
@bp.get("/<rid>")
def patient_page(rid: str) -> Response:
    services = _services()
    chosen = _chosen(request.args)
    with services.registry.snapshot():   # the page's reads (session included): one transaction
        actor = _actor(services, rid)
        reader = ClinicalReader(services, actor)
        record, patient_id, medecin_traitant = _patient(services, actor, rid, reader.queries.reader)
        content = summary_content(reader, patient_id)
        hits = reader.search(patient_id, chosen["q"], documents=content["by_lid"]) if chosen["q"] else []
    names = _labels(services)
    view = glance.build(content, record, names, medecin_traitant, fmt.today_paris())
    filtered = any(chosen[k] for k in ("class", "type", "author", "from", "to"))
    everything = glance.timeline(content["documents"], names)
    rows = glance.filtered(everything, type_code=chosen["type"], class_code=chosen["class"], author=chosen["author"],
                           low=_day(chosen["from"]), high=_day(chosen["to"])) if filtered else everything
    types = sorted({(r.document.type_code.code, r.type_label) for r in everything if r.document.type_code},
                   key=lambda t: t[1].casefold())
    author_names = sorted({n for r in everything for n in r.authors.split(", ") if n})

    history_base = url_for("clinical_page.results_history", rid=rid)

    def history_url(line: glance.ResultLine) -> str:
        return f"{history_base}?{urlencode({'code': line.code or line.full_name, 'system': line.system})}"

    body = render_template(
        "clinical_page.html", g=view, rows=rows, hits=hits, chosen=chosen, filtered=filtered,
        types=types, author_names=author_names, history_url=history_url,
        search_incomplete=reader.filtered and not view.incomplete,
        generated=datetime.now(fmt.PARIS).strftime("%d/%m/%Y à %H:%M"), **_common(rid, actor))
    return _page(body)


@bp.get("/<rid>/resultats")
def results_history(rid: str) -> Response:
    services = _services()
    code, system = (request.args.get("code") or "").strip()[:200], (request.args.get("system") or "").strip()[:64]
    with services.registry.snapshot():
        actor = _actor(services, rid)
        reader = ClinicalReader(services, actor)
        _record, patient_id, _mt = _patient(services, actor, rid, reader.queries.reader)
        if not code:
            abort(404)
        docs = reader.documents(patient_id)
        facts = reader.facts(patient_id, FactQuery(kinds=[LAB], codes=[(system, code)]), documents=docs)
        if not facts:   # a result without a code is named by its display
            facts = [f for f in reader.facts(patient_id, FactQuery(kinds=[LAB]), documents=docs)
                     if not f.code and f.display == code]
    if not facts:
        abort(404)
    names = _labels(services)
    latest = facts[0]
    unit = fmt.unit(latest.unit)
    points = []
    for f in reversed(facts):
        moment = fmt.paris(f.effective) or (datetime.strptime(f.effective[:8], "%Y%m%d").replace(tzinfo=fmt.PARIS)
                                            if len(f.effective) >= 8 and f.effective[:8].isdigit() else None)
        if f.value_num is not None and math.isfinite(f.value_num) and moment is not None \
                and fmt.unit(f.unit) == unit:   # INF / NaN (valid xs:double) cannot be plotted
            points.append(plot.Point(moment, f.value_num, glance.value_text(f), fmt.day(f.effective)))
    low_v, high_v = fmt.split_quantity(latest.ref_low)[0], fmt.split_quantity(latest.ref_high)[0]
    low = float(low_v) if _is_number(low_v) else None
    high = float(high_v) if _is_number(high_v) else None
    label = fmt.short_label(latest.display or latest.code)
    rows = []
    for f in facts:
        flag, note = glance.flag(f, names)
        rows.append({"date": fmt.day(f.effective), "value": glance.value_text(f), "flag": flag, "flag_note": note,
                     "reference": glance.reference(f), "title": f.document.title or "document",
                     "url": url_for("clinical_page.document_page", rid=rid, doc_rid=doc_id(f.document))})
    body = render_template("clinical_history.html", name=label, full_name=latest.display, points=points, rows=rows,
                           reference=glance.reference(latest), incomplete=reader.filtered,
                           svg=plot.history_svg(points, low, high, unit, f"{label} : historique"),
                           back_url=url_for("clinical_page.patient_page", rid=rid))
    return _page(body)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _located_document(services: Services, actor: Actor, rid: str, doc_rid: str) -> tuple[DocumentEntry, Any]:
    """The document this actor may see in this patient's record, and where its bytes are; 404 otherwise."""
    reader = ClinicalReader(services, actor)
    with services.registry.snapshot():
        _record, patient_id, _mt = _patient(services, actor, rid, reader.queries.reader)
        if not _UUID.fullmatch(doc_rid):
            abort(404)
        docs = reader.documents(patient_id, DocumentFilter(entry_uuids=[f"urn:uuid:{doc_rid}"]))
        doc = next(iter(docs.values()), None)
        located = reader.queries.locate_document(doc.unique_id) if doc else None
    if doc is None or located is None:
        abort(404)
    return doc, located


@bp.get("/<rid>/documents/<doc_rid>")
def document_page(rid: str, doc_rid: str) -> Response:
    services = _services()
    actor = _actor(services, rid)
    doc, located = _located_document(services, actor, rid, doc_rid)
    narrative, inline = "", False
    mime = (doc.mime_type or "").lower()
    if mime == "application/pdf":
        inline = True
    elif mime in ("text/xml", "application/xml", "application/hl7-v3+xml"):
        try:
            stream = open_checked(services.blobs, located.blob_address, doc.size)
            try:
                data = stream.read(20 * 1024 * 1024 + 1)
            finally:
                stream.close()
        except OSError as exc:   # the bytes are not the registered ones: the French error page, said
            log.error("document %s of %s: %s", doc_rid, rid, exc)
            abort(500)
        try:
            cda = parse_cda(data).clinical_document
        except XmlRejected:
            cda = None
        narrative = render_narrative(cda) if cda is not None else ""
    body = render_template("clinical_document.html", doc=doc, narrative=Markup(narrative), inline=inline,
                           type_label=glance.document_type(doc, _labels(services)),
                           content_url=url_for("clinical_page.document_content", rid=rid, doc_rid=doc_rid),
                           back_url=url_for("clinical_page.patient_page", rid=rid), **_common(rid, actor))
    return _page(body)


@bp.get("/<rid>/documents/<doc_rid>/content")
def document_content(rid: str, doc_rid: str) -> Response:
    services = _services()
    doc, located = _located_document(services, _actor(services, rid), rid, doc_rid)
    try:   # checked before the answer starts: never a download that breaks off after its 200
        stream = open_checked(services.blobs, located.blob_address, doc.size)
    except BlobUnavailable as exc:
        log.error("document %s of %s: %s", doc_rid, rid, exc)
        abort(500)

    def chunks() -> Any:
        with stream:
            while chunk := stream.read(1 << 16):
                yield chunk
    mime = doc.mime_type or "application/octet-stream"
    pdf = mime == "application/pdf"
    response_headers: dict[str, Any] = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                                        "Content-Disposition": "inline" if pdf else "attachment"}
    if not pdf:   # anything else is downloaded, never run (browsers refuse PDFs in a sandbox)
        response_headers["Content-Security-Policy"] = "sandbox"
    return Response(chunks(), content_type=mime, headers=response_headers, direct_passthrough=True)


@bp.post("/<rid>/acces")
def access_mode(rid: str) -> WerkzeugResponse:
    """Switch this patient's access mode in the session: bris de glace needs a reason (kept,
    audited with every access, and the patient is told); normal ends it."""
    services = _services()
    if request.headers.get("Authorization") or services.settings.insecure_dev:
        _actor(services, rid)   # authenticated (a replay refused), but a token's access mode is the token's
        return message("Mode d'accès", "Le mode d'accès d'un jeton est celui qu'il porte.", 400)
    if session_actor() is None:
        audit.note_auth_failure("no signed-in session")
        raise LoginRequired()
    check_csrf()
    chosen = request.form.get("mode", "")
    modes = dict(session.get("bdg") or {})
    if chosen == "bris_de_glace":
        reason = " ".join((request.form.get("reason") or "").split())[:MAX_REASON]
        if not reason:
            return message("Motif requis", "L'accès en bris de glace demande un motif.", 400,
                           link=(url_for("clinical_page.patient_page", rid=rid), "Retour"))
        modes[rid] = reason
    elif chosen == "normal":
        modes.pop(rid, None)
    else:
        abort(400)
    previous = dict(session.get("bdg") or {})
    session["bdg"] = modes
    actor = _actor(services, rid)   # the new mode, noted on this request's audit record
    try:
        _patient(services, actor, rid)
    except HTTPException:   # the gate refused this mode: the session keeps the one it had
        session["bdg"] = previous
        raise
    return redirect(url_for("clinical_page.patient_page", rid=rid), 303)
