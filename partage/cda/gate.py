"""The CDA profile at the door: the per-document check of the ingest flow.

Which documents are checked: every document whose bytes are XML with the root element
{urn:hl7-org:v3}ClinicalDocument, whatever the mimeType the submitter declared (a CDA
sent as application/octet-stream is still a CDA) and however far into the bytes its start
tag lies (a long comment before it hides nothing); an auto-présentable CDA (an
xsl:stylesheet root embedding one, which the parser recognises); and XML that cannot be
read up to its root but names the HL7 v3 namespace (the parser's finding refuses it).
Anything else (PDF, text/plain, a DICOM SR, XML of another kind) is not CDA and this layer
does not look at it.

The DocumentEntry's metadata go to the cross-check (layer 5). A finding of a blocking
layer with a blocking severity refuses the submission with the transaction's metadata
error code (XDSRepositoryMetadataError for ITI-41/ITI-65, XDSRegistryMetadataError
otherwise), one XdsError per finding: the rule id, the layer and the message in codeContext
(French, like the report: `finding_context`, read back by `rule_in_context`), the XPath and
line in location. Other findings are returned as warnings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from lxml import etree

from ..metadata.errors import ErrorCode, XdsError
from .constants import CLINICAL_DOCUMENT, HL7
from .findings import LAYERS, PARSE, SCHEMA, SCHEMATRON, Finding, Report
from .messages import LAYER_NAMES
from .parser import too_large
from .profile import DEFAULT_PROFILE, Profile, Validator, get_profile, get_validator

log = logging.getLogger("partage.cda")

MAX_FINDINGS_REPORTED = 50       # per document, in one SOAP fault / OperationOutcome

# Layer numbers as the issue counts them (1 schema ... 5 metadata), for --validation-blocking.
LAYER_NUMBERS = {"1": SCHEMA, "2": "rules", "3": SCHEMATRON, "4": "terminology", "5": "metadata"}


# --- which bytes are CDA ---------------------------------------------------------------------

# The bytes a document is read in while looking for its root, and the pieces fed to the pull
# parser: the root's start tag is near the top, and parsing a whole 60 KB head to read one tag
# cost a millisecond per document on the ingest path.
SNIFF_BLOCK = 64 * 1024
SNIFF_CHUNK = 2048
_XML_FIRST = (b"<", b"\xef", b"\xff", b"\xfe", b"\x00")   # "<", or a UTF-8 / UTF-16 byte order mark
# The HL7 v3 namespace as a document may spell it (UTF-8, UTF-16 either way).
_HL7_MARKS = tuple(HL7.encode(encoding) for encoding in ("utf-8", "utf-16-le", "utf-16-be"))
_STYLESHEET = "{http://www.w3.org/1999/XSL/Transform}stylesheet"

Source = bytes | bytearray | memoryview | BinaryIO


def _chunks(source: Source) -> Iterator[bytes]:
    """The source's bytes in SNIFF_CHUNK pieces (a file is read in blocks and left at 0)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        for offset in range(0, len(view), SNIFF_CHUNK):
            yield bytes(view[offset:offset + SNIFF_CHUNK])
        return
    source.seek(0)
    try:
        while block := source.read(SNIFF_BLOCK):
            for offset in range(0, len(block), SNIFF_CHUNK):
                yield block[offset:offset + SNIFF_CHUNK]
    finally:
        source.seek(0)


def _looks_like_xml(source: Source) -> bool:
    for chunk in _chunks(source):
        stripped = chunk.lstrip()
        if stripped:
            return stripped[:1] in _XML_FIRST
    return False


def _root(source: Source) -> tuple[bool, str | None]:
    """(whether the bytes start as XML, the Clark name of their root element or None).

    A pull parser that never loads a DTD, resolves no entity and touches no network reads
    until the first start tag, however far it is (a long comment or processing instruction
    before the root must not hide a ClinicalDocument), and stops there.
    """
    if not _looks_like_xml(source):
        return False, None
    parser = etree.XMLPullParser(events=("start",), resolve_entities=False, no_network=True,
                                 load_dtd=False, huge_tree=False)
    try:
        for chunk in _chunks(source):
            parser.feed(chunk)
            for _event, element in parser.read_events():
                return True, str(element.tag) if isinstance(element, etree._Element) else None
    except etree.XMLSyntaxError:
        pass
    return True, None


def root_tag(source: Source) -> str | None:
    """The Clark name of the root element of XML bytes (or a file), or None: not XML, not
    readable XML up to its root, or no root at all."""
    return _root(source)[1]


def _mentions_hl7(source: Source) -> bool:
    """Whether the HL7 v3 namespace appears anywhere in the bytes (read in pieces that overlap)."""
    overlap = max(len(mark) for mark in _HL7_MARKS) - 1
    tail = b""
    for chunk in _chunks(source):
        window = tail + chunk
        if any(mark in window for mark in _HL7_MARKS):
            return True
        tail = window[-overlap:]
    return False


def is_cda(source: Source) -> bool:
    """Bytes (or a file) that the ingest flow validates as CDA (see the module docstring).

    A ClinicalDocument root, wherever its start tag is; an auto-présentable CDA (an XSLT
    program embedding one); and XML that cannot be read up to its root but names the HL7
    v3 namespace: the validator then refuses it, saying why, instead of it being filed
    unchecked as "not a CDA".
    """
    xml, tag = _root(source)
    if tag == CLINICAL_DOCUMENT:
        return True
    if tag == _STYLESHEET or (xml and tag is None):
        return _mentions_hl7(source)
    return False


# --- metadata handed to the cross-check ----------------------------------------------------

_ENTRY_FIELDS = ("patient_id", "source_patient_id", "unique_id", "type_code", "class_code", "format_code",
                 "creation_time", "service_start_time", "service_stop_time", "language_code", "title",
                 "legal_authenticator", "healthcare_facility_type_code", "practice_setting_code",
                 "mime_type")


def entry_metadata(entry: Any) -> dict[str, Any]:
    """A DocumentEntry (model) -> the plain dict partage.cda.crosscheck compares with the header."""
    out: dict[str, Any] = {}
    for name in _ENTRY_FIELDS:
        value = getattr(entry, name, None)
        if value:
            out[name] = value
    if getattr(entry, "confidentiality_codes", None):
        out["confidentiality_codes"] = list(entry.confidentiality_codes)
    if getattr(entry, "authors", None):
        out["authors"] = [a.person for a in entry.authors if getattr(a, "person", "")]
    return out


# --- the profile the server runs -----------------------------------------------------------

def parse_blocking(text: str) -> frozenset[str] | None:
    """'schema,rules,4,5' / 'none' / 'all' / '' (profile default) -> blocking layer names.

    Parse errors always block: bytes that claim to be a CDA and are not readable XML (or
    carry a DOCTYPE) are never indexed.
    """
    text = (text or "").strip().lower()
    if not text or text == "default":
        return None
    if text == "none":
        return frozenset({PARSE})
    if text == "all":
        return frozenset(LAYERS)
    layers = {PARSE}
    for item in (t.strip() for t in text.replace(";", ",").split(",")):
        if not item:
            continue
        name = LAYER_NUMBERS.get(item, item)
        if name not in LAYERS:
            raise ValueError(f"unknown validation layer {item!r}; known: 1-5, "
                             f"{', '.join(LAYERS[1:])}, 'none', 'all'")
        layers.add(name)
    return frozenset(layers)


def profile_from_settings(settings: Any, name: str | None = None) -> Profile:
    """The named profile (default: settings.validation_profile) with the server's resources."""
    profile = get_profile(name or getattr(settings, "validation_profile", "") or None,
                          schema=settings.cda_schema_dir or None,
                          valuesets=settings.cda_valuesets_dir or None,
                          schematron=settings.cda_schematron or None,
                          model_schematrons=settings.cda_model_schematrons or None,
                          cache_dir=settings.cache_dir or None)
    if name is None:
        blocking = parse_blocking(getattr(settings, "validation_blocking", ""))
        if blocking is not None:
            profile = profile.with_options(blocking=blocking)
    return profile


def report_profile_name(settings: Any, name: str | None = None) -> str:
    """The profile a validation report is judged by (`/validate`, `partage validate`): the one
    asked for, else the server's (--validation-profile, PARTAGE_VALIDATION_PROFILE)."""
    return name or getattr(settings, "validation_profile", "") or DEFAULT_PROFILE


def report_profile(settings: Any, name: str | None = None) -> Profile:
    """That profile with the server's resources, as the profile defines "valid": the server's
    --validation-blocking is an ingest policy and does not apply to a report."""
    return profile_from_settings(settings, report_profile_name(settings, name))


def validator_for(settings: Any, name: str | None = None) -> Validator:
    return get_validator(profile_from_settings(settings, name))


# --- the check --------------------------------------------------------------------------------

def _where(f: Finding) -> str:
    where = f.location or "/"
    return f"{where} (ligne {f.line})" if f.line is not None else where


def finding_context(entry_id: str, f: Finding) -> str:
    """The codeContext of one finding: 'DocumentEntry X : règle CDA RULE (LAYER) : message'."""
    return f"DocumentEntry {entry_id} : règle CDA {f.rule} ({LAYER_NAMES.get(f.layer, f.layer)}) : {f.message}"


_CONTEXT_RULE = re.compile(r"règle CDA (\S+) \((?:" + "|".join(
    re.escape(name) for name in sorted({*LAYER_NAMES.values(), *LAYER_NAMES}, key=len, reverse=True))
    + r")\) : ")


def rule_in_context(context: str) -> tuple[str, str] | None:
    """(rule id, message) of a codeContext written by `finding_context`, else None."""
    match = _CONTEXT_RULE.search(context)
    return (match.group(1), context[match.end():]) if match else None


def entry_in_context(context: str) -> str:
    """The DocumentEntry id a codeContext written by `finding_context` names ("" if none)."""
    match = _CONTEXT_RULE.search(context)
    head = context[:match.start()] if match else ""
    return head.removeprefix("DocumentEntry ").removesuffix(" : ") if head.startswith("DocumentEntry ") else ""


def findings_to_errors(entry_id: str, code: str,
                       blocking: Iterable[Finding]) -> list[XdsError]:
    out = []
    blocking = list(blocking)
    for f in blocking[:MAX_FINDINGS_REPORTED]:
        out.append(XdsError(code, finding_context(entry_id, f), _where(f)))
    if len(blocking) > MAX_FINDINGS_REPORTED:
        out.append(XdsError(code, f"DocumentEntry {entry_id} : {len(blocking) - MAX_FINDINGS_REPORTED} autre(s) "
                                  "remarque(s) CDA non listée(s) (envoyez le document à /validate pour toutes "
                                  "les voir)", "/"))
    return out


class CdaGate:
    """Callable per-document check: (DocumentEntry, DocumentContent, error code) -> XdsErrors."""

    def __init__(self, validator: Validator) -> None:
        self.validator = validator

    @classmethod
    def from_settings(cls, settings: Any) -> CdaGate:
        return cls(validator_for(settings))

    def blocks(self, f: Finding) -> bool:
        p = self.validator.profile
        return f.layer in p.blocking and f.severity in p.blocking_severities

    def check_bytes(self, data: bytes, entry: Any = None) -> Report:
        meta = entry_metadata(entry) if entry is not None else None
        return self.validator.validate(data, filename=getattr(entry, "entry_uuid", ""), xds_metadata=meta)

    def __call__(self, entry: Any, content: Any,
                 error_code: str = ErrorCode.REPOSITORY_METADATA) -> list[XdsError]:
        if content is None or not is_cda(content.file):
            return []
        refused = too_large(content.size, self.validator.profile.limits)
        if refused is not None:   # the parser's own refusal, without reading the bytes
            return findings_to_errors(entry.entry_uuid, error_code, [refused])
        content.file.seek(0)
        data = content.file.read()
        content.file.seek(0)
        report = self.check_bytes(data, entry)
        content.cda = report.clinical_document   # the clinical index reads facts from this tree
        errors = [f for f in report.findings if self.blocks(f)]
        warnings = [f for f in report.findings if not self.blocks(f) and f.severity != "info"]
        if errors:
            log.info("CDA of %s refused: %s", entry.entry_uuid, ", ".join(sorted({f.rule for f in errors})))
        out = findings_to_errors(entry.entry_uuid, error_code, errors)
        out += [XdsError(error_code, e.context, e.location, warning=True)
                for e in findings_to_errors(entry.entry_uuid, error_code, warnings)]
        return out

