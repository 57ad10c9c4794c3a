"""The professional's page: one patient's record at a glance, server-rendered HTML.

    GET /dossier/<patient id>                       synthesis, allergies, treatments, problems,
                                                    latest results (with a trend plot), vaccinations,
                                                    the documents (filters: class, type, from, to,
                                                    author) and the keyword search (q)
    GET /dossier/<patient id>/documents/<doc id>    one document, readable: CDA narrative as
                                                    HTML, a PDF inline
    GET /dossier/<patient id>/documents/<doc id>/content   its bytes (after the same policy check)

`<patient id>` is the FHIR Patient id (as in /fhir/Patient/<id>). The actor is the one
of the FHIR door (a bearer JWT; --insecure-dev: none needed), and every piece of the
page is read through partage.query.clinical, i.e. after the access policy: what the actor
may not see is not on the page. The page needs no JavaScript; the trend is an inline SVG.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request
from markupsafe import Markup

from ..access import authn
from ..access.actor import AuthenticationRequired
from ..cda.parser import XmlRejected, parse_cda
from ..clinical.narrative import render as render_narrative
from ..fhir.clinical import summary_content
from ..fhir.mapping import entry_uuid_of, resource_id
from ..fhir.patients import Patients
from ..metadata.datatypes import DTM
from ..metadata.model import Code, DocumentEntry
from ..metadata.query import DocumentFilter, TimeRange
from ..query import QueryService
from ..query.clinical import ClinicalReader, FactRow
from ..query.view import Reader

bp = Blueprint("clinical_page", __name__, url_prefix="/dossier", template_folder="templates")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-src 'self'; object-src 'self'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"
INTERPRETATION_FLAGS = {"H": "↑", "HH": "↑↑", "L": "↓", "LL": "↓↓", "A": "!", "AA": "!!", "N": ""}


def _services():
    return current_app.extensions["partage"]


def _actor(services):
    return authn.http_actor(services, request.headers.get("Authorization"), address=request.remote_addr or "")


@bp.errorhandler(AuthenticationRequired)
def _unauthenticated(exc):
    return Response(f"<!doctype html><title>401</title><p>{html.escape(str(exc))}</p>", 401,
                    {"WWW-Authenticate": 'Bearer realm="partage"', "Content-Type": "text/html; charset=utf-8"})


def _page(body: str, status: int = 200) -> Response:
    return Response(body, status, {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS})


# --- formatting helpers -----------------------------------------------------------------------
def when(value: str | DTM | None) -> str:
    """Stored digits or a DTM -> dd/mm/yyyy (or what precision there is)."""
    text = value.format() if isinstance(value, DTM) else (value or "")
    d = "".join(ch for ch in text if ch.isdigit())
    if len(d) >= 8:
        return f"{d[6:8]}/{d[4:6]}/{d[:4]}"
    if len(d) >= 6:
        return f"{d[4:6]}/{d[:4]}"
    return d[:4]


def _date_digits(value: str) -> str:
    return "".join(ch for ch in (value or "") if ch.isdigit())[:8]


def trend_svg(points: list[FactRow], width: int = 320, height: int = 110) -> Markup:
    """An inline SVG line of a lab value over time (oldest left), with its reference range band."""
    values = [(p.effective, p.value_num) for p in points if p.value_num is not None and p.effective]
    values.sort()
    if len(values) < 2:
        return Markup("")
    nums = [v for _t, v in values]
    low_ref = _num(points[0].ref_low)
    high_ref = _num(points[0].ref_high)
    lo = min(nums + [x for x in (low_ref, high_ref) if x is not None])
    hi = max(nums + [x for x in (low_ref, high_ref) if x is not None])
    span = (hi - lo) or 1.0
    pad_x, pad_y = 28, 14

    def y(v: float) -> float:
        return round(height - pad_y - (v - lo) / span * (height - 2 * pad_y), 1)

    step = (width - 2 * pad_x) / (len(values) - 1)
    coords = [(round(pad_x + i * step, 1), y(v)) for i, (_t, v) in enumerate(values)]
    parts = [f'<svg class="trend" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(points[0].display)}</title>']
    if low_ref is not None and high_ref is not None:
        top, bottom = y(high_ref), y(low_ref)
        parts.append(f'<rect x="{pad_x}" y="{top}" width="{width - 2 * pad_x}" height="{max(bottom - top, 1)}" '
                     'fill="#e3f2e3"/>')
    parts.append('<polyline fill="none" stroke="#1f5fa8" stroke-width="2" points="'
                 + " ".join(f"{x},{yy}" for x, yy in coords) + '"/>')
    for (x, yy), (t, v) in zip(coords, values, strict=True):
        parts.append(f'<circle cx="{x}" cy="{yy}" r="3" fill="#1f5fa8"><title>{html.escape(when(t))}: '
                     f'{v:g}</title></circle>')
    parts.append(f'<text x="2" y="{pad_y}" font-size="10">{hi:g}</text>'
                 f'<text x="2" y="{height - 2}" font-size="10">{lo:g}</text>')
    parts.append(f'<text x="{pad_x}" y="{height - 2}" font-size="10">{html.escape(when(values[0][0]))}</text>'
                 f'<text x="{width - pad_x}" y="{height - 2}" font-size="10" text-anchor="end">'
                 f'{html.escape(when(values[-1][0]))}</text></svg>')
    return Markup("".join(parts))


def _num(text: str) -> float | None:
    try:
        return float((text or "").split()[0])
    except (ValueError, IndexError):
        return None


def _timeline_filter(args) -> tuple[DocumentFilter, dict[str, str]]:
    chosen = {k: (args.get(k) or "").strip() for k in ("class", "type", "author", "from", "to", "q", "lab")}
    f = DocumentFilter()
    if chosen["class"]:
        f.codes["class"] = [[Code(chosen["class"], CLASS_SYSTEM)]]
    if chosen["type"]:
        f.codes["type"] = [[Code(chosen["type"], "")]]
    low, high = _date_digits(chosen["from"]), _date_digits(chosen["to"])
    if low or high:
        f.creation_time = TimeRange(low=low.ljust(14, "0") if low else "",
                                    high=(high + "235959").ljust(14, "9") if high else "")
    if chosen["author"]:
        pattern = chosen["author"].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        f.author_persons = [f"%{pattern}%"]
    return f, chosen


def _authors(doc: DocumentEntry) -> str:
    names = []
    for author in doc.authors:
        person = author.person
        name = " ".join(p for p in (person.given_name, person.family_name) if p) if person else ""
        if name:
            names.append(name)
        elif author.institutions:
            names.append(author.institutions[0].organization_name)
    return ", ".join(names)


REFUSED_PAGE = ("<!doctype html><html lang=\"fr\"><meta charset=\"utf-8\"><title>Accès refusé</title>"
                "<h1>Accès refusé</h1><p>Vous n'avez pas accès à ce dossier.</p></html>")


def _patient(services, actor, rid: str):
    """The patient behind the page's id if the actor may see who it is; 404 when unknown, and
    a refusal that names no one (no identity, no counts) when the one gate says no."""
    record = Patients(services).record(rid)
    if record is None or record.xds_patient_id is None:
        abort(404)
    reader = Reader(services, actor)
    with services.registry.read() as conn:
        allowed = reader.record(conn, record.pk, record.xds_patient_id)
    if not allowed:
        abort(Response(REFUSED_PAGE, 403, {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS}))
    return record


# --- routes -----------------------------------------------------------------------------------
@bp.get("/<rid>")
def patient_page(rid: str) -> Response:
    services = _services()
    actor = _actor(services)
    people = Patients(services)
    record = _patient(services, actor, rid)
    patient_id = record.xds_patient_id
    reader = ClinicalReader(services, actor)
    content = summary_content(reader, patient_id)
    timeline_filter, chosen = _timeline_filter(request.args)
    filtered = any(chosen[k] for k in ("class", "type", "author", "from", "to"))
    documents = list(reader.documents(patient_id, timeline_filter).values()) if filtered else content["documents"]
    hits = reader.search(patient_id, chosen["q"], _timeline_filter(request.args)[0]) if chosen["q"] else []
    labs = content["labs"]
    series: dict[str, list[FactRow]] = {}
    for f in labs:
        series.setdefault(f.code or f.display, []).append(f)
    trend_code = chosen["lab"] or max(series, key=lambda c: len(series[c]), default="")
    trend = series.get(trend_code, [])
    resource = people.resource(record)
    name = " ".join([*(resource.get("name") or [{}])[0].get("given", []),
                     (resource.get("name") or [{}])[0].get("family", "")]).strip()
    classes = sorted({(d.class_code.code, d.class_code.display or d.class_code.code)
                      for d in content["documents"] if d.class_code})
    types = sorted({(d.type_code.code, d.type_code.display or d.type_code.code)
                    for d in content["documents"] if d.type_code})
    body = render_template(
        "clinical_page.html", rid=rid, patient_id=patient_id, name=name or patient_id,
        birth=resource.get("birthDate", ""), content=content, documents=documents, hits=hits,
        chosen=chosen, classes=classes, types=types, trend=trend, trend_svg=trend_svg(trend),
        series=sorted(series.items(), key=lambda kv: -len(kv[1])), when=when, flags=INTERPRETATION_FLAGS,
        doc_id=lambda d: resource_id(d.entry_uuid), authors=_authors, Markup=Markup, filtered=reader.filtered,
        generated=datetime.now(UTC).strftime("%d/%m/%Y %H:%M UTC"))
    return _page(body)


def _visible_document(services, actor, patient_id, doc_rid: str) -> DocumentEntry | None:
    docs = ClinicalReader(services, actor).documents(patient_id, DocumentFilter(entry_uuids=[entry_uuid_of(doc_rid)]))
    return next(iter(docs.values()), None)


def _located_document(services, actor, rid: str, doc_rid: str):
    """The document this actor may see in this patient's record, and where its bytes are; 404 otherwise."""
    record = _patient(services, actor, rid)
    doc = _visible_document(services, actor, record.xds_patient_id, doc_rid)
    located = QueryService(services, actor).locate_document(doc.unique_id) if doc else None
    if doc is None or located is None:
        abort(404)
    return doc, located


@bp.get("/<rid>/documents/<doc_rid>")
def document_page(rid: str, doc_rid: str) -> Response:
    services = _services()
    doc, located = _located_document(services, _actor(services), rid, doc_rid)
    narrative, inline = "", False
    mime = (doc.mime_type or "").lower()
    if mime == "application/pdf":
        inline = True
    elif mime in ("text/xml", "application/xml", "application/hl7-v3+xml"):
        stream = services.blobs.open(located.blob_address)
        try:
            data = stream.read(20 * 1024 * 1024 + 1)
        finally:
            stream.close()
        try:
            cda = parse_cda(data).clinical_document
        except XmlRejected:
            cda = None
        narrative = render_narrative(cda) if cda is not None else ""
    body = render_template("clinical_document.html", rid=rid, doc=doc, doc_rid=doc_rid, when=when,
                           narrative=Markup(narrative), inline=inline, authors=_authors)
    return _page(body)


@bp.get("/<rid>/documents/<doc_rid>/content")
def document_content(rid: str, doc_rid: str) -> Response:
    services = _services()
    doc, located = _located_document(services, _actor(services), rid, doc_rid)
    stream = services.blobs.open(located.blob_address)

    def chunks():
        with stream:
            while chunk := stream.read(1 << 16):
                yield chunk
    mime = doc.mime_type or "application/octet-stream"
    pdf = mime == "application/pdf"
    headers: dict[str, Any] = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                               "Content-Disposition": "inline" if pdf else "attachment"}
    if not pdf:   # anything else is downloaded, never run (browsers refuse PDFs in a sandbox)
        headers["Content-Security-Policy"] = "sandbox"
    return Response(chunks(), content_type=mime, headers=headers, direct_passthrough=True)
