"""Realistic synthetic data for the benchmarks: patients, CDA documents, XDS metadata.

- Patients: test INS-NIR (1.2.250.1.213.1.4.10) with a valid control key, numbered so
  that every run with the same seed makes the same registry. The number of documents
  per patient is skewed (a discrete Pareto law, alpha 1.1, capped): most patients have
  a handful, a few have hundreds. The first `probes` patients have exactly
  `probe_docs` documents each: the benchmarks query them at every registry size.
- Documents: built from the ANS CDA models of the shared corpus (`cda/valid`, the ones
  the ANS pipeline passes, read at run time, never copied into the project), with
  fresh ids (ClinicalDocument/id, setId, the patient's INS). Sizes follow a log-normal
  law (median 60 KB) clipped to 10 KB - 10 MB; a document is brought to its size with
  an XML comment of base64 text before its end tag (what a CDA embedding a scanned
  PDF weighs, without changing what the validation layers check).
- Metadata: what a well-behaved source sends, taken from the model's header (typeCode,
  title, confidentiality, times, authors) so that the metadata cross-check agrees.

    from benchmarks.synth import Corpus, Generator
    gen = Generator(Corpus.load(), seed=1)
    for request, payloads in gen.submissions(1000, with_bytes=True): ...
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from partage.cda import to_xds
from partage.cda.crosscheck import cda_unique_id, ts_to_utc
from partage.cda.header import CdaHeader, read_header
from partage.metadata.datatypes import CX, DTM, HD, XCN
from partage.metadata.model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentContent,
    DocumentEntry,
    SubmissionRequest,
    SubmissionSet,
)

ROOT = Path(__file__).resolve().parents[1]
HL7 = "urn:hl7-org:v3"
H = f"{{{HL7}}}"
INS_NIR_TEST = "1.2.250.1.213.1.4.10"
INS_ROOTS = ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11")
RPPS = "1.2.250.1.71.4.2.1"
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"
# J06 classCodes (TRE_A03) with a rough share of a shared record's traffic.
CLASSES = [("10", "Compte rendu", 55), ("11", "Synthèse", 10), ("31", "Imagerie médicale", 10),
           ("42", "Prescription", 10), ("43", "Dispensation", 5), ("52", "Certificat", 5),
           ("90", "Expression personnelle du patient", 5)]
STRUCTURED_FORMAT = Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                         "Format from mimeType")
XDS_SD_FORMATS = {"application/pdf": "urn:ihe:iti:xds-sd:pdf:2008", "text/plain": "urn:ihe:iti:xds-sd:text:2008"}
CONTENT_TYPE = Code("04", "1.2.250.1.213.1.1.4.2.2", "Hospitalisation")
SOURCE_ID = "1.2.250.1.999.2"
DEFAULT_FACILITY = Code("SA01", "1.2.250.1.71.4.2.4", "Etablissement public de santé")
DEFAULT_SETTING = Code("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé")
MIN_SIZE, MAX_SIZE, MEDIAN_SIZE = 10 * 1024, 10 * 1024 * 1024, 60 * 1024


def corpus_dir() -> Path:
    """../shared/corpus, or $PARTAGE_CORPUS."""
    env = os.environ.get("PARTAGE_CORPUS")
    return Path(env) if env else ROOT.parent / "shared" / "corpus"


def nir(index: int) -> str:
    """A well-formed test INS-NIR (13 characters + 2-digit key), unique for index < 95 million."""
    rnd = random.Random(index)
    body = (f"{rnd.choice('12')}{rnd.randint(30, 99):02d}{rnd.randint(1, 12):02d}"
            f"{1 + (index // 1_000_000) % 95:02d}{index % 1_000_000:06d}")
    return f"{body}{97 - int(body) % 97:02d}"


def patient_cx(index: int) -> CX:
    return CX(nir(index), HD.iso(INS_NIR_TEST))


def fresh_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


@dataclass
class Model:
    """One corpus CDA and the metadata its header implies."""

    name: str
    data: bytes
    header: CdaHeader
    mime_type: str = "text/xml"

    @property
    def type_code(self) -> Code | None:
        c = self.header.code
        return Code(c.code, c.code_system, c.display_name) if c else None

    @property
    def class_code(self) -> Code | None:
        """The classCode ASS_X04 gives the document's type (None for a type the table lacks)."""
        try:
            return to_xds.class_code(self.type_code) if self.type_code else None
        except to_xds.MappingError:
            return None

    @property
    def format_code(self) -> Code:
        """The formatCode a DMP client gives this document (ASS_A11 by model, XDS-SD by mediaType)."""
        if self.header.body == "nonXMLBody" and self.header.media_type not in XDS_SD_FORMATS:
            return STRUCTURED_FORMAT
        return to_xds.format_code(self.header)

    @property
    def facility_code(self) -> Code:
        enc = self.header.encounter
        c = enc.facility_code if enc is not None else None
        return Code(c.code, c.code_system, c.display_name) if c else DEFAULT_FACILITY

    @property
    def practice_setting(self) -> Code:
        for event in self.header.service_events:
            for p in event.performers:
                c = p.organization.industry_code if p.organization is not None else None
                if c:
                    return Code(c.code, c.code_system, c.display_name)
        return DEFAULT_SETTING

    def authors(self) -> list[Author]:
        out = []
        for a in self.header.authors:
            for root, ext in a.ids:
                if root == RPPS and ext:
                    given = a.given[0] if a.given else ""
                    out.append(Author(person=XCN.parse(f"{ext}^{a.family}^{given}^^^^^^&{RPPS}&ISO")))
                    break
        return out[:1]


@dataclass
class Corpus:
    models: list[Model]

    @classmethod
    def load(cls, directory: Path | None = None) -> Corpus:
        """The ANS models the reference pipeline passes, with a ClinicalDocument root and no
        relatedDocument (a replacement needs its parent registered first)."""
        base = directory or corpus_dir() / "cda"
        valid = base / "valid" if (base / "valid").is_dir() else base
        verdicts_file = valid.parent / "ans-verdicts.json"
        verdicts = json.loads(verdicts_file.read_text(encoding="utf-8")) if verdicts_file.exists() else {}
        models = []
        for path in sorted(valid.glob("*.xml")):
            if verdicts and verdicts.get(path.name, {}).get("verdict") != "pass":
                continue
            data = path.read_bytes()
            root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True,
                                                          huge_tree=True))
            if root.tag != f"{H}ClinicalDocument":
                continue
            header = read_header(data)
            if header.related_documents or header.id is None or not header.code:
                continue
            if header.patient is None or header.patient.ins is None:
                continue
            models.append(Model(path.name, data, header))
        if not models:
            raise FileNotFoundError(f"no usable CDA model under {valid} (set PARTAGE_CORPUS)")
        return cls(models)


def document_bytes(model: Model, *, patient_index: int, doc_id: str, set_id: str, size: int | None) -> bytes:
    """The model with fresh ids for this patient, padded to `size` bytes (at least its own size)."""
    root = etree.fromstring(model.data, etree.XMLParser(resolve_entities=False, no_network=True,
                                                        huge_tree=True, remove_blank_text=False))
    root.find(f"{H}id").attrib.update({"root": doc_id})
    root.find(f"{H}id").attrib.pop("extension", None)
    set_el = root.find(f"{H}setId")
    if set_el is not None:
        set_el.attrib.pop("extension", None)
        set_el.set("root", set_id)
    for el in root.iterfind(f"{H}recordTarget/{H}patientRole/{H}id"):
        if el.get("root") in INS_ROOTS:
            el.set("root", INS_NIR_TEST)
            el.set("extension", nir(patient_index))
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if size and size > len(data) + 64:
        closing = data.rindex(b"</")
        filler = size - len(data) - len(b"<!--  -->\n")
        raw = os.urandom(filler * 3 // 4 + 3)
        pad = base64.b64encode(raw)[:filler]
        data = data[:closing] + b"<!-- " + pad + b" -->\n" + data[closing:]
    return data


@dataclass
class Generator:
    """Deterministic (per seed) stream of submissions; resumable to grow a registry."""

    corpus: Corpus
    seed: int = 1
    probes: int = 20              # patients with exactly probe_docs documents, queried at every size
    probe_docs: int = 10
    heavy: int = 2                # patients with heavy_docs documents (the "other patients")
    heavy_docs: int = 2000
    alpha: float = 1.1            # Pareto shape of documents per patient
    max_docs_per_patient: int = 1000
    repository_unique_id: str = "2.25.211310386435413264734375473219935735845"
    next_patient: int = 0
    documents: int = 0
    counts: dict[int, int] = field(default_factory=dict)   # patient index -> documents generated

    def __post_init__(self) -> None:
        self.rnd = random.Random(self.seed)

    def docs_for(self, index: int) -> int:
        if index < self.probes:
            return self.probe_docs
        if index < self.probes + self.heavy:
            return self.heavy_docs
        u = 1.0 - self.rnd.random()
        return min(self.max_docs_per_patient, int(1 / u ** (1 / self.alpha)))

    def size(self) -> int:
        value = math.exp(self.rnd.gauss(math.log(MEDIAN_SIZE), 1.2))
        return int(min(MAX_SIZE, max(MIN_SIZE, value)))

    def submissions(self, documents: int, *, with_bytes: bool = False,
                    size: int | None = None) -> Iterator[tuple[SubmissionRequest, dict[str, bytes]]]:
        """Submissions until `documents` more documents are generated (whole patients)."""
        target = self.documents + documents
        while self.documents < target:
            index = self.next_patient
            self.next_patient += 1
            remaining = self.docs_for(index)
            while remaining > 0:
                n = min(remaining, self.rnd.choice((1, 1, 1, 1, 2, 3)))
                remaining -= n
                yield self.submission(index, n, with_bytes=with_bytes, size=size)

    def submission(self, patient_index: int, n: int = 1, *, with_bytes: bool = False,
                   size: int | None = None) -> tuple[SubmissionRequest, dict[str, bytes]]:
        pid = patient_cx(patient_index)
        when = _time(self.rnd)
        ss = SubmissionSet(entry_uuid=uuid.uuid4().urn, unique_id=fresh_oid(), source_id=SOURCE_ID,
                           patient_id=pid, submission_time=DTM(when), content_type_code=CONTENT_TYPE)
        docs, payloads = [], {}
        for _ in range(n):
            model = self.rnd.choice(self.corpus.models)
            doc_id, set_id = fresh_oid(), fresh_oid()
            doc_size = size or self.size()
            entry = self.entry(model, pid, doc_id, when, header_times=with_bytes)
            if with_bytes:
                data = document_bytes(model, patient_index=patient_index, doc_id=doc_id, set_id=set_id,
                                      size=doc_size)
                payloads[entry.entry_uuid] = data
                entry.size, entry.hash = len(data), hashlib.sha1(data).hexdigest()
            else:
                # No bytes (registry-only loads): the size the document would have, and the
                # SHA-1 of its uniqueId standing in for the hash of bytes never made.
                entry.size, entry.hash = doc_size, hashlib.sha1(doc_id.encode()).hexdigest()
            docs.append(entry)
        assocs = [Association(entry_uuid=uuid.uuid4().urn, association_type=AssociationType.HAS_MEMBER,
                              source_uuid=ss.entry_uuid, target_uuid=d.entry_uuid,
                              submission_set_status="Original") for d in docs]
        self.documents += n
        self.counts[patient_index] = self.counts.get(patient_index, 0) + n
        request = SubmissionRequest(ss, docs, [], assocs)
        for d in docs:
            if d.entry_uuid in payloads:
                data = payloads[d.entry_uuid]
                request.contents[d.entry_uuid] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                                                 sha1=d.hash)
        return request, payloads

    def entry(self, model: Model, pid: CX, doc_id: str, when: str, *, header_times: bool) -> DocumentEntry:
        """Metadata from the model's header; times from the header when the bytes go with them
        (the cross-check compares them), else spread over ten years (registry-only loads)."""
        h = model.header
        code, label, _w = self.rnd.choices(CLASSES, weights=[c[2] for c in CLASSES])[0]
        if header_times and model.class_code is not None:   # the bytes travel: the metadata agree
            code, label = model.class_code.code, model.class_code.display
        entry = DocumentEntry(
            entry_uuid=uuid.uuid4().urn, unique_id=cda_unique_id((doc_id, "")), patient_id=pid,
            source_patient_id=pid, mime_type=model.mime_type, language_code=h.language_code or "fr-FR",
            title=" ".join(h.title.split()) or model.name, repository_unique_id=self.repository_unique_id,
            creation_time=DTM(ts_to_utc(h.effective_time)[:14] if h.effective_time else when),
            class_code=Code(code, CLASS_SYSTEM, label), type_code=model.type_code,
            format_code=model.format_code,
            healthcare_facility_type_code=model.facility_code, practice_setting_code=model.practice_setting,
            confidentiality_codes=[Code(h.confidentiality.code, h.confidentiality.code_system or
                                        "2.16.840.1.113883.5.25")] if h.confidentiality else
            [Code("N", "2.16.840.1.113883.5.25", "Normal")],
            authors=model.authors())
        ev = h.service_event
        if not header_times:
            entry.creation_time = entry.service_stop_time = DTM(when)
            entry.service_start_time = DTM(when[:8])
            return entry
        if ev is not None and ev.start:
            entry.service_start_time = DTM(ts_to_utc(ev.start)[:14])
        if ev is not None and ev.stop:
            entry.service_stop_time = DTM(ts_to_utc(ev.stop)[:14])
        return entry


def _time(rnd: random.Random) -> str:
    year = rnd.randint(2015, 2025)
    return f"{year}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}{rnd.randint(0, 23):02d}" \
           f"{rnd.randint(0, 59):02d}{rnd.randint(0, 59):02d}"
