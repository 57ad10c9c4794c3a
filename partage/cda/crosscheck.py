"""Layer 5: the CDA header against the XDS / MHD metadata submitted with it.

A document whose metadata says one patient and whose header says another must not be
indexed: the CI-SIS (and IHE) define most XDS DocumentEntry attributes as copies of
header fields. This module compares a CdaHeader with a plain dict of metadata values,
keyed like partage.metadata.model.DocumentEntry fields; keys that are absent are not
checked. Values may be strings in their XDS wire form (CX, XCN, DTM, "code^^scheme"),
(code, scheme) tuples, or objects with `.code`/`.scheme` (the model's Code).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..metadata.datatypes import CE, CX, HD, XCN
from .ans_maps import MODEL_TO_FORMAT, TRE_A03, TYPE_TO_CLASS
from .constants import CONFIDENTIALITY_SYSTEM, XDS_SD_FORMAT_CODES
from .findings import ERROR, METADATA, WARNING, Finding
from .header import CdaCode, CdaHeader, Ident

_CD = "/hl7:ClinicalDocument"
CDA_MIME_TYPE = "text/xml"


def _code_of(value: Any) -> tuple[str, str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, tuple | list) and len(value) >= 2 and isinstance(value[0], str):
        return (value[0], _norm(value[1]))
    if hasattr(value, "code"):
        return (value.code, _norm(getattr(value, "scheme", "") or getattr(value, "code_system", "")))
    if isinstance(value, str):   # code^^codingScheme
        ce = CE.parse(value)
        return (ce.identifier, _norm(ce.coding_system))
    return None


def _codes_of(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, str) or hasattr(value, "code") or (isinstance(value, tuple) and value
                                                              and isinstance(value[0], str)):
        value = [value]
    return [c for c in (_code_of(v) for v in value) if c]


def _norm(scheme: str) -> str:
    return scheme[8:] if scheme.startswith("urn:oid:") else scheme


def _authority(hd: HD) -> str:
    return _norm(hd.universal_id or hd.namespace_id)


def parse_cx(cx: CX | str) -> Ident:
    """A CX (or its HL7 text) as (root, extension): 'ext^^^&root&ISO' -> (root, ext)."""
    value = cx if isinstance(cx, CX) else CX.parse(cx, strict=False)
    return (_authority(value.assigning_authority), value.id)


def parse_xcn_id(xcn: XCN | str) -> Ident:
    """An XCN (or its HL7 text) as (root, id number)."""
    value = xcn if isinstance(xcn, XCN) else XCN.parse(xcn, strict=False)
    return (_authority(value.assigning_authority), value.id_number)


def cda_unique_id(ident: Ident | None) -> str:
    """XDS uniqueId of a CDA document: root, or root^extension (CI-SIS / IHE)."""
    if ident is None:
        return ""
    root, ext = ident
    return f"{root}^{ext}" if ext else root


def ts_offset_readable(ts: str) -> bool:
    """No time-zone offset, or one that can be applied: ±HHMM, hours below 24, minutes below 60
    (HL7 v3 TS). "+01", "+01:00" or "+0199" cannot: the value's UTC time is unknown."""
    for sign in ("+", "-"):
        if sign in ts:
            offset = ts.split(sign, 1)[1]
            return len(offset) == 4 and offset.isdigit() and int(offset[:2]) < 24 and int(offset[2:]) < 60
    return True


def ts_to_utc(ts: str) -> str:
    """HL7 TS with an offset -> UTC digits of the same precision; without offset, as is (an
    offset that is not readable, see ts_offset_readable, is dropped: check it first)."""
    digits, sign, offset = ts, "", ""
    for s in ("+", "-"):
        if s in ts:
            digits, offset = ts.split(s, 1)
            sign = s
            break
    digits = digits.split(".", 1)[0]
    if not sign or len(digits) < 10 or not ts_offset_readable(ts) or not digits.isdigit():
        return digits
    padded = (digits + "0000")[:14]
    try:
        moment = datetime.strptime(padded, "%Y%m%d%H%M%S")
    except ValueError:
        return digits
    delta = timedelta(hours=int(offset[:2]), minutes=int(offset[2:]))
    moment = moment - delta if sign == "+" else moment + delta
    return moment.strftime("%Y%m%d%H%M%S")[:len(digits)]


def _same_time(cda_ts: str, xds_dtm: str) -> bool:
    if not ts_offset_readable(cda_ts):   # its UTC time is unknown: nothing can be said to match it
        return False
    a, b = ts_to_utc(cda_ts), xds_dtm.strip()
    n = min(len(a), len(b))
    return n >= 4 and a[:n] == b[:n]


def _f(rule: str, message: str, location: str, severity: str = ERROR) -> Finding:
    return Finding(rule, severity, METADATA, message, location)


def _code_matches(cda: CdaCode | None, xds: tuple[str, str]) -> bool:
    return cda is not None and cda.code == xds[0] and (not xds[1] or _norm(cda.code_system) == xds[1])


def cross_check(header: CdaHeader, xds: Mapping[str, Any]) -> list[Finding]:
    """Findings where the metadata disagree with the header (only keys present are checked)."""
    out: list[Finding] = []
    patient_ids = header.patient.ids if header.patient else []

    for key, rule, label in (("patient_id", "xds-patientId-mismatch", "patientId"),
                             ("source_patient_id", "xds-sourcePatientId-mismatch", "sourcePatientId")):
        if xds.get(key):
            wanted = parse_cx(str(xds[key]))
            if wanted not in patient_ids:
                out.append(_f(rule, f"le {label} des métadonnées XDS, {xds[key]}, n'est aucun des identifiants "
                              "du patient dans le CDA : "
                              f"{', '.join(CX(e, HD.iso(r)).format() for r, e in patient_ids) or '(aucun)'}",
                              f"{_CD}/hl7:recordTarget/hl7:patientRole/hl7:id"))

    if xds.get("unique_id") and str(xds["unique_id"]) != cda_unique_id(header.id):
        out.append(_f("xds-uniqueId-mismatch", f"l'uniqueId des métadonnées XDS, {xds['unique_id']}, diffère de "
                      f"l'identifiant du CDA ({cda_unique_id(header.id) or 'absent'})", f"{_CD}/hl7:id"))

    type_code = _code_of(xds.get("type_code"))
    if type_code and not _code_matches(header.code, type_code):
        shown = f"{header.code.code} ({header.code.code_system})" if header.code else "absent"
        out.append(_f("xds-typeCode-mismatch", f"le typeCode des métadonnées XDS, {type_code[0]} "
                      f"({type_code[1]}), diffère de ClinicalDocument/code : {shown}", f"{_CD}/hl7:code"))

    class_code = _code_of(xds.get("class_code"))
    derived_class = TYPE_TO_CLASS.get((header.code.code, _norm(header.code.code_system))) if header.code else None
    if class_code and derived_class and header.code and (class_code[0] != derived_class
                                                         or class_code[1] not in ("", TRE_A03)):
        out.append(_f("xds-classCode-mismatch", f"le classCode des métadonnées XDS, {class_code[0]}, n'est pas la "
                      f"classe que la table ASS_X04 associe au type du document {header.code.code} : "
                      f"{derived_class} ({TRE_A03})", f"{_CD}/hl7:code"))

    if "confidentiality_codes" in xds and header.confidentiality:
        conf = _codes_of(xds["confidentiality_codes"])
        wanted = (header.confidentiality.code, _norm(header.confidentiality.code_system or CONFIDENTIALITY_SYSTEM))
        others = sorted({c[0] for c in conf if c[1] == wanted[1] and c[0] != wanted[0]})
        if not any(c[0] == wanted[0] and (not c[1] or c[1] == wanted[1]) for c in conf):
            out.append(_f("xds-confidentialityCode-mismatch", f"les confidentialityCode des métadonnées XDS "
                          f"n'incluent pas le confidentialityCode du CDA, {wanted[0]}", f"{_CD}/hl7:confidentialityCode"))
        elif others:   # the other occurrences are the masking flags, not a second level (N/R/V)
            out.append(_f("xds-confidentialityCode-mismatch", f"les confidentialityCode des métadonnées XDS portent "
                          f"{', '.join(others)} en plus du confidentialityCode du CDA, {wanted[0]}, dans le même "
                          f"système ({wanted[1]})", f"{_CD}/hl7:confidentialityCode"))

    for key, rule, label, value, where in (
            ("creation_time", "xds-creationTime-mismatch", "creationTime", header.effective_time,
             "hl7:effectiveTime"),
            ("service_start_time", "xds-serviceStartTime-mismatch", "serviceStartTime",
             header.service_event.start if header.service_event else "",
             "hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime/hl7:low"),
            ("service_stop_time", "xds-serviceStopTime-mismatch", "serviceStopTime",
             header.service_event.stop if header.service_event else "",
             "hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime/hl7:high")):
        if xds.get(key) and value and not _same_time(value, str(xds[key])):
            out.append(_f(rule, f"le {label} des métadonnées XDS, {xds[key]}, diffère de "
                          f"l'élément {where.rsplit(':', 1)[-1]} du CDA, {value} (UTC {ts_to_utc(value)})", f"{_CD}/{where}"))

    if xds.get("language_code") and str(xds["language_code"]).lower() != header.language_code.lower():
        out.append(_f("xds-languageCode-mismatch", f"le languageCode des métadonnées XDS, {xds['language_code']}, "
                      f"diffère du languageCode du CDA, {header.language_code or '(absent)'}", f"{_CD}/hl7:languageCode"))

    if xds.get("title") and " ".join(str(xds["title"]).split()) != header.title:
        out.append(_f("xds-title-mismatch", f"le titre des métadonnées XDS, « {xds['title']} », diffère du "
                      f"titre du CDA, « {header.title} »", f"{_CD}/hl7:title", WARNING))

    if xds.get("legal_authenticator"):
        wanted = parse_xcn_id(str(xds["legal_authenticator"]))
        have = header.legal_authenticator.ids if header.legal_authenticator else []
        if wanted not in have and not any(w[1] == wanted[1] and not wanted[0] for w in have):
            out.append(_f("xds-legalAuthenticator-mismatch", f"le legalAuthenticator des métadonnées XDS, "
                          f"{xds['legal_authenticator']}, n'est pas le legalAuthenticator du CDA", f"{_CD}/hl7:legalAuthenticator/hl7:assignedEntity/hl7:id"))

    facility = _code_of(xds.get("healthcare_facility_type_code"))
    if facility and header.encounter is not None and not _code_matches(header.encounter.facility_code, facility):
        out.append(_f("xds-healthcareFacilityTypeCode-mismatch", f"le healthcareFacilityTypeCode des métadonnées "
                      f"XDS, {facility[0]}, diffère de healthCareFacility/code",
                      f"{_CD}/hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:code"))

    setting = _code_of(xds.get("practice_setting_code"))
    if setting:
        orgs = [p.organization.industry_code for e in header.service_events for p in e.performers
                if p.organization is not None and p.organization.industry_code]
        if orgs and not any(_code_matches(c, setting) for c in orgs):
            out.append(_f("xds-practiceSettingCode-mismatch", f"le practiceSettingCode des métadonnées XDS, "
                          f"{setting[0]}, diffère du standardIndustryClassCode de l'organisation de "
                          "l'exécutant (performer)",
                          f"{_CD}/hl7:documentationOf/hl7:serviceEvent/hl7:performer/hl7:assignedEntity"
                          "/hl7:representedOrganization/hl7:standardIndustryClassCode"))

    if xds.get("mime_type") and str(xds["mime_type"]) != CDA_MIME_TYPE:
        out.append(_f("xds-mimeType", f"un document CDA se soumet avec le mimeType {CDA_MIME_TYPE}, "
                      f"pas {xds['mime_type']}", "/"))

    fmt = _code_of(xds.get("format_code"))
    expected_format = XDS_SD_FORMAT_CODES.get(header.media_type) if header.body == "nonXMLBody" else None
    if header.body != "nonXMLBody":
        expected_format = next((MODEL_TO_FORMAT[root][0] for root, _ in reversed(header.template_ids)
                                if root in MODEL_TO_FORMAT), None)
    if fmt and expected_format and fmt[0] != expected_format and header.body != "nonXMLBody":
        out.append(_f("xds-formatCode-mismatch", f"un document de ce modèle a le formatCode {expected_format} "
                      f"(table ASS_A11), pas {fmt[0]}", f"{_CD}/hl7:templateId"))
    elif fmt and expected_format and fmt[0] != expected_format:
        out.append(_f("xds-formatCode-mismatch", f"un document non structuré {header.media_type} a le formatCode "
                      f"{expected_format}, pas {fmt[0]}", f"{_CD}/hl7:component/hl7:nonXMLBody/hl7:text/@mediaType"))

    if xds.get("authors"):
        author_ids = {(_norm(r), e) for a in header.authors for r, e in a.ids if e}
        xds_ids = [parse_xcn_id(p) for p in _author_persons(xds["authors"]) if p]
        foreign = [i for i in xds_ids if i[1] and not _is_cda_author(i, author_ids)]
        if foreign:   # said, by name: an authorPerson gets an author's rights (docs/cda-rules.md)
            out.append(_f("xds-author-mismatch", "authorPerson des métadonnées XDS qui n'est aucun auteur du "
                          f"CDA : {', '.join(CX(e, HD.iso(r)).format() for r, e in foreign)} (auteurs du CDA : "
                          f"{', '.join(CX(e, HD.iso(r)).format() for r, e in sorted(author_ids)) or 'aucun'})",
                          f"{_CD}/hl7:author/hl7:assignedAuthor/hl7:id", WARNING))
        elif xds_ids and not any(_is_cda_author(i, author_ids) for i in xds_ids):
            out.append(_f("xds-author-mismatch", "aucun authorPerson des métadonnées XDS ne porte l'identifiant "
                          "d'un auteur du CDA", f"{_CD}/hl7:author/hl7:assignedAuthor/hl7:id", WARNING))
    return out


def _is_cda_author(ident: Ident, author_ids: set[Ident]) -> bool:
    """An XCN id (root, number) names a CDA author: the same pair, or the number when the XCN
    gives no assigning authority."""
    return ident in author_ids if ident[0] else any(ident[1] == e for _r, e in author_ids)


def _author_persons(authors: Iterable[Any]) -> list[XCN | str]:
    """authorPerson values: XCN texts, XCNs (partage.cda.gate.entry_metadata hands these), or
    Authors (their .person)."""
    if isinstance(authors, str | XCN):
        return [authors]
    return [a if isinstance(a, str | XCN) else getattr(a, "person", None) or "" for a in authors]
