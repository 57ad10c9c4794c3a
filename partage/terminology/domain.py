"""The affinity domain: which codes each XDS metadata attribute may carry.

Configuration, not code. A deployment points `--codes` at a directory of IHE SVS files
(the CI-SIS JDV, as the ANS publishes them) or at a NIST-style codes.xml (the test
kit's domain). Attributes the configuration does not mention are open. Partage ships
its own small CI-SIS defaults (J06 classCode, J08 confidentialityCode) under
`terminology/defaults/`, used where the configured directory has no file for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..xmlsafe import parse_xml
from .svs import load_value_sets

log = logging.getLogger("partage.terminology")

# CI-SIS JDV number -> model attribute it constrains.
JDV_ATTRIBUTES = {
    "J01": "author_specialty",
    "J02": "healthcare_facility_type_code",
    "J03": "content_type_code",
    "J04": "practice_setting_code",
    "J06": "class_code",
    "J07": "type_code",
    "J08": "confidentiality_codes",
    "J10": "format_code",
}

# NIST codes.xml CodeType/@name -> model attribute.
NIST_ATTRIBUTES = {
    "classCode": "class_code",
    "typeCode": "type_code",
    "formatCode": "format_code",
    "healthcareFacilityTypeCode": "healthcare_facility_type_code",
    "practiceSettingCode": "practice_setting_code",
    "confidentialityCode": "confidentiality_codes",
    "eventCodeList": "event_codes",
    "contentTypeCode": "content_type_code",
    "folderCodeList": "codes",
    "associationDocumentation": "documentation",
}


@dataclass
class AffinityDomain:
    name: str
    codes: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    displays: dict[tuple[str, str], str] = field(default_factory=dict)
    mime_types: frozenset[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)   # attribute -> file it came from

    def constrains(self, attribute: str) -> bool:
        return attribute in self.codes

    def allows(self, attribute: str, code: str, scheme: str) -> bool:
        allowed = self.codes.get(attribute)
        return allowed is None or (code, _norm_scheme(scheme)) in allowed

    def display(self, code: str, scheme: str) -> str:
        return self.displays.get((code, _norm_scheme(scheme)), "")

    def allows_mime_type(self, mime_type: str) -> bool:
        return self.mime_types is None or mime_type in self.mime_types


def _norm_scheme(scheme: str) -> str:
    """Compare OIDs with or without their urn:oid: prefix."""
    return scheme[8:] if scheme.startswith("urn:oid:") else scheme


def load_affinity_domain(source: str | Path | None) -> AffinityDomain:
    """An SVS directory, a NIST codes.xml, or nothing (the shipped CI-SIS defaults)."""
    if not source:
        return _svs_domain(None)
    path = Path(source)
    if path.is_dir():
        return _svs_domain(path)
    if path.is_file():
        return load_nist_codes(path)
    raise FileNotFoundError(f"affinity domain codes not found: {path}")


def _svs_domain(directory: Path | None) -> AffinityDomain:
    """The JDV_J<nn> value sets of the one loader (configured directory over the shipped defaults)."""
    domain = AffinityDomain(name=f"CI-SIS ({directory or 'shipped defaults'})")
    chosen: dict[str, str] = {}
    for value_set in load_value_sets(directory).stems():   # configured files come first
        parts = value_set.stem.split("_")
        jdv = parts[1] if len(parts) > 1 and parts[0] == "JDV" else ""
        if jdv not in JDV_ATTRIBUTES or jdv in chosen:
            continue
        chosen[jdv] = value_set.source
        attribute = JDV_ATTRIBUTES[jdv]
        if not value_set.concepts:
            log.warning("value set %s is empty; %s stays open", value_set.source, attribute)
            continue
        domain.codes[attribute] = frozenset(
            (code, _norm_scheme(system)) for code, system in value_set.concepts)
        domain.displays.update({(c, _norm_scheme(s)): d for (c, s), d in value_set.display.items()})
        domain.sources[attribute] = value_set.source
    return domain


def load_nist_codes(path: Path) -> AffinityDomain:
    root = parse_xml(path.read_bytes())
    domain = AffinityDomain(name=f"NIST codes ({path.name})")
    for code_type in root.iter("CodeType"):
        name = code_type.get("name", "")
        if name == "mimeType":
            domain.mime_types = frozenset(c.get("code", "") for c in code_type.iter("Code"))
            continue
        attribute = NIST_ATTRIBUTES.get(name)
        if attribute is None:
            continue
        allowed = set()
        for code in code_type.iter("Code"):
            scheme = _norm_scheme(code.get("codingScheme", ""))
            allowed.add((code.get("code", ""), scheme))
            domain.displays[(code.get("code", ""), scheme)] = code.get("display", "")
        domain.codes[attribute] = frozenset(allowed)
        domain.sources[attribute] = str(path)
    return domain
