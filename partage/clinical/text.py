"""The searchable text of a document: CDA narrative (and PDFs embedded in a CDA), PDF bodies.

What a reader sees is what is searched: section titles and narrative blocks of a
structured body, the text layer of a PDF (pypdf; a scanned PDF without text yields
nothing), plain text as it is. Text is bounded (MAX_CHARS) so that one huge document
cannot bloat the index, and PDF reading stops after PDF_TIME_BUDGET_S (after the page
in progress), so that one heavy PDF cannot hold an indexer for long.

PDF text is the expensive part (pypdf parses every content stream): the ingest flow
reads the cheap part only (`pdfs=False`: title, narrative, plain text) in the
registration's transaction and leaves the PDFs to the background indexer
(`partage.clinical.queue`), which reads the whole text (`pdfs=True`) and replaces it.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import time

from lxml import etree
from pypdf import PdfReader

from ..cda.locate import text_of
from .cdaread import HL7, child, clean

log = logging.getLogger("partage.clinical")
MAX_CHARS = 200_000
MAX_PDF_PAGES = 200
PDF_TIME_BUDGET_S = 3.0   # pypdf parses every content stream: image-heavy pages take seconds
_H = f"{{{HL7}}}"


def pdf_text(data: bytes) -> str:
    """The text layer of a PDF, or '' if it has none or cannot be read."""
    try:
        reader = PdfReader(io.BytesIO(data))
        parts = []
        deadline = time.monotonic() + PDF_TIME_BUDGET_S
        for page in reader.pages[:MAX_PDF_PAGES]:
            parts.append(page.extract_text() or "")
            if sum(len(p) for p in parts) > MAX_CHARS or time.monotonic() > deadline:
                break   # the pages read so far are searchable; the rest is not
        return clean(" ".join(parts))[:MAX_CHARS]
    except Exception as exc:   # a malformed PDF is still a document; it is just not searchable
        log.info("PDF text not extracted: %s", exc.__class__.__name__)
        return ""


def _b64_pdf(el: etree._Element) -> str:
    if not _is_b64_pdf(el):
        return ""
    try:
        data = base64.b64decode(text_of(el), validate=False)
    except (binascii.Error, ValueError):
        return ""
    return pdf_text(data)


def _is_b64_pdf(el: etree._Element) -> bool:
    return (el.get("mediaType") or "") == "application/pdf" and (el.get("representation") or "") == "B64"


def has_pdf(mime_type: str, data: bytes, cda: etree._Element | None = None) -> bool:
    """Whether a document has PDF text that `pdfs=False` leaves out (a PDF body, or a PDF
    embedded in a CDA as nonXMLBody or observationMedia)."""
    if cda is None:
        return (mime_type or "").lower() == "application/pdf" or data[:5] == b"%PDF-"
    body = child(cda, "component")
    if body is None:
        return False
    nonxml = child(body, "nonXMLBody", "text")
    if nonxml is not None and _is_b64_pdf(nonxml):
        return True
    structured = child(body, "structuredBody")
    if structured is not None:
        for media in structured.iter(_H + "observationMedia"):
            value = child(media, "value")
            if value is not None and _is_b64_pdf(value):
                return True
    return False


def cda_text(doc: etree._Element, *, pdfs: bool = True) -> str:
    """Title, section titles and narrative of a ClinicalDocument; text of embedded PDFs
    (unless `pdfs` is False)."""
    title = child(doc, "title")
    parts = [clean(title.text) if title is not None else ""]
    body = child(doc, "component")
    if body is None:
        return " ".join(p for p in parts if p)
    structured = child(body, "structuredBody")
    if structured is not None:
        for section in structured.iter(_H + "section"):
            title = child(section, "title")
            if title is not None:
                parts.append(clean(text_of(title)))
            text = child(section, "text")
            if text is not None:
                parts.append(clean(text_of(text)))
        for media in structured.iter(_H + "observationMedia") if pdfs else ():
            value = child(media, "value")
            if value is not None:
                parts.append(_b64_pdf(value))
    nonxml = child(body, "nonXMLBody", "text")
    if nonxml is not None:
        if (nonxml.get("mediaType") or "").startswith("text/") and nonxml.get("representation") != "B64":
            parts.append(clean(text_of(nonxml)))
        elif pdfs:
            parts.append(_b64_pdf(nonxml))
    return " ".join(p for p in parts if p)[:MAX_CHARS]


def document_text(mime_type: str, data: bytes, cda: etree._Element | None = None, *,
                  pdfs: bool = True) -> str:
    """The searchable text of a document's bytes ('' when there is none); without the
    text of PDFs when `pdfs` is False (see `has_pdf`)."""
    if cda is not None:
        return cda_text(cda, pdfs=pdfs)
    mime = (mime_type or "").lower()
    if mime == "application/pdf" or data[:5] == b"%PDF-":
        return pdf_text(data) if pdfs else ""
    if mime.startswith("text/plain"):
        return clean(data[:MAX_CHARS * 2].decode("utf-8", "replace"))[:MAX_CHARS]
    return ""
