"""Corpus documents as submissions for one test patient: the CDA's patient and id rewritten
(in memory, at test time), XDS metadata built from its header so the cross-check agrees."""

from __future__ import annotations

import hashlib
import io
import uuid

from lxml import etree

from partage.cda import to_xds
from partage.cda.crosscheck import cda_unique_id, ts_to_utc
from partage.cda.header import read_header
from partage.metadata.datatypes import CX, DTM, HD, XCN
from partage.metadata.model import Author, Code, DocumentContent
from partage.registry import patients
from tests import factories as F

HL7 = "{urn:hl7-org:v3}"
INS_NIR_TEST = "1.2.250.1.213.1.4.10"
MASQUE_PS = Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué aux professionnels de santé")


def for_patient(data: bytes, nir: str, *, doc_root: str | None = None, author: str | None = None) -> bytes:
    """The document with its patient INS-NIR replaced and a fresh ClinicalDocument/id; with
    `author`, its first author's id is that professional's (RPPS) number: the DocumentEntry's
    authorPerson must be an author of the CDA (crosscheck xds-author-mismatch)."""
    root = etree.fromstring(data)
    doc = root if root.tag == HL7 + "ClinicalDocument" else root.find(f".//{HL7}ClinicalDocument")
    for ident in doc.findall(f"{HL7}recordTarget/{HL7}patientRole/{HL7}id"):
        ident.set("root", INS_NIR_TEST)
        ident.set("extension", nir)
    first_author = doc.find(f"{HL7}author/{HL7}assignedAuthor/{HL7}id")
    if author is not None and first_author is not None:
        first_author.set("root", "1.2.250.1.71.4.2.1")
        first_author.set("extension", author)
    cid = doc.find(f"{HL7}id")
    cid.set("root", doc_root or f"1.2.250.1.999.7.{uuid.uuid4().int % 10**15}")
    if "extension" in cid.attrib:
        del cid.attrib["extension"]
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def patient_cx(nir: str) -> CX:
    return CX(nir, HD.iso(INS_NIR_TEST))


def public_id(services, cx: CX) -> str:
    """The opaque id URLs and FHIR name the patient by (what a client learns from a search)."""
    with services.registry.read() as conn:
        record = patients.record(conn, services.registry.patient_pk(conn, cx))
    assert record is not None, cx
    return record.fhir_id


def metadata_for(data: bytes, **overrides) -> dict:
    """DocumentEntry fields agreeing with the CDA header."""
    h = read_header(data)
    root, ext = h.patient.ids[0]
    out = {"patient_id": CX(ext, HD.iso(root)), "source_patient_id": CX(ext, HD.iso(root)),
           "unique_id": cda_unique_id(h.id), "title": h.title or "Document",
           "language_code": h.language_code or "fr-FR", "mime_type": "text/xml",
           "creation_time": DTM(ts_to_utc(h.effective_time)[:14] if h.effective_time else "20240101000000"),
           "service_start_time": None, "service_stop_time": None, "legal_authenticator": None}
    if h.encounter is not None and h.encounter.facility_code:
        fc = h.encounter.facility_code
        out["healthcare_facility_type_code"] = Code(fc.code, fc.code_system, fc.display_name or "")
    settings = [p.organization.industry_code for e in h.service_events for p in e.performers
                if p.organization is not None and p.organization.industry_code]
    if settings:
        out["practice_setting_code"] = Code(settings[0].code, settings[0].code_system,
                                            settings[0].display_name or "")
    if h.code:
        out["type_code"] = Code(h.code.code, h.code.code_system, h.code.display_name or "")
        out["class_code"] = to_xds.class_code(out["type_code"])     # ASS_X04, as a DMP client derives it
    out["format_code"] = to_xds.format_code(h)                      # ASS_A11: the document's model
    if h.confidentiality:
        out["confidentiality_codes"] = [Code(h.confidentiality.code, h.confidentiality.code_system or
                                             "2.16.840.1.113883.5.25")]
    person = h.authors[0].ids[0] if h.authors and h.authors[0].ids else None
    if person:
        out["authors"] = [Author(person=XCN(person[1], "AUTEUR", "Test", assigning_authority=HD.iso(person[0])))]
    out.update(overrides)
    return out


def submission(data: bytes, entry_id: str = "doc1", *, extra_confidentiality: list[Code] | None = None,
               **overrides):
    """A one-document ITI-41 SubmissionRequest for these CDA bytes."""
    fields = metadata_for(data, **overrides)
    if extra_confidentiality:
        fields["confidentiality_codes"] = [*fields.get("confidentiality_codes", []), *extra_confidentiality]
    pid = fields["patient_id"]
    request = F.submission(pid, [F.document(pid, entry_id, **fields)], contents=False)
    request.contents[entry_id] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                                 sha1=hashlib.sha1(data).hexdigest())
    return request


def pdf_submission(pid: str, data: bytes, entry_id: str = "doc1", **overrides):
    fields = dict(mime_type="application/pdf", title="Compte rendu PDF",
                  format_code=Code("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3"))
    fields.update(overrides)
    request = F.submission(pid, [F.document(pid, entry_id, **fields)], contents=False)
    request.contents[entry_id] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                                 sha1=hashlib.sha1(data).hexdigest())
    return request


def make_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer says `text` (ASCII), written by hand."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def wait_for_text_index(services, timeout: float = 60.0) -> None:
    """Wait until a server's background indexer has done every queued PDF text job."""
    import time

    from partage.clinical.queue import backlog

    deadline = time.monotonic() + timeout
    while backlog(services.registry)["waiting"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"PDF text jobs still queued after {timeout} s: {backlog(services.registry)}")
        time.sleep(0.1)


def retyped(data: bytes, type_code: str, display: str) -> bytes:
    """The same CDA filed as another LOINC document type (so its ASS_X04 class changes with it)."""
    root = etree.fromstring(data)
    code = root.find("{urn:hl7-org:v3}code")
    code.set("code", type_code)
    code.set("displayName", display)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
