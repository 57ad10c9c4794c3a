"""Fit the kit's codes to the affinity domain, as the toolkit's CodesUpdater does.

The test plans' metadata predates the kit's codes.xml: many classCode, typeCode, ...
values in the templates are not in it, and a registry enforcing the domain rightly
refuses them. Before running against an environment the toolkit rewrites its kit:
every code not in codes.xml becomes one that is (picked round-robin per code type),
the same old code always becoming the same new one, in submissions and in stored
query parameters alike. This module builds that mapping once over the whole kit, in a
fixed order, and applies it to each template when it is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ...xmlsafe import parse_xml
from .plan import PlanError, TestKit, resolve_file
from .rim import children, local

# Stored-query parameter -> classification scheme of the codes it carries.
QUERY_PARAMETERS = {
    "$XDSDocumentEntryClassCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "$XDSDocumentEntryTypeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "$XDSDocumentEntryPracticeSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "$XDSDocumentEntryHealthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "$XDSDocumentEntryEventCodeList": "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
    "$XDSDocumentEntryConfidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "$XDSDocumentEntryFormatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "$XDSSubmissionSetContentType": "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500",
    "$XDSFolderCodeList": "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5",
}
_QUOTED_CODE = re.compile(r"'([^'^]*)\^\^([^']*)'")


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    display: str = ""


@dataclass
class CodeMap:
    """codes.xml by classification scheme, and the replacements chosen so far."""

    allowed: dict[str, list[Code]]
    replacements: dict[tuple[str, str, str], Code] = field(default_factory=dict)
    reserved: set[tuple[str, str, str]] = field(default_factory=set)   # domain codes the kit uses itself
    collecting: bool = False
    _next: dict[str, int] = field(default_factory=dict)

    def known(self, classification: str, code: str, scheme: str) -> bool:
        return any(c.code == code and c.scheme == scheme for c in self.allowed.get(classification, []))

    def replacement(self, classification: str, code: str, scheme: str) -> Code | None:
        """The domain code standing for (code, scheme); None when it is fine or not constrained."""
        if classification not in self.allowed or not self.allowed[classification]:
            return None
        key = (classification, code, scheme)
        if self.known(classification, code, scheme):
            if self.collecting:
                self.reserved.add(key)
            return None
        if self.collecting:
            return None
        if key not in self.replacements:
            self.replacements[key] = self._pick(classification)
        return self.replacements[key]

    def _pick(self, classification: str) -> Code:
        """Round-robin over the domain's codes (as the toolkit), skipping codes already in use.

        The toolkit's plain round-robin can turn a foreign code into one the kit already
        submits elsewhere (SUMMARIES became REPORTS), which changes what queries count.
        """
        choices = self.allowed[classification]
        taken = {(c.code, c.scheme) for k, c in self.replacements.items() if k[0] == classification}
        taken |= {(k[1], k[2]) for k in self.reserved if k[0] == classification}
        start = self._next.get(classification, 0)
        for offset in range(len(choices)):
            candidate = choices[(start + offset) % len(choices)]
            if (candidate.code, candidate.scheme) not in taken:
                self._next[classification] = start + offset + 1
                return candidate
        self._next[classification] = start + 1
        return choices[start % len(choices)]

    # ------------------------------------------------------------------- templates
    def translate_metadata(self, root: etree._Element) -> int:
        """Rewrite the Classifications of a submission template in place; returns how many."""
        changed = 0
        for classification in [e for e in root.iter() if local(e) == "Classification"]:
            scheme_uuid = classification.get("classificationScheme")
            code = classification.get("nodeRepresentation")
            value = _coding_scheme_value(classification)
            if not scheme_uuid or code is None or value is None:
                continue
            new = self.replacement(scheme_uuid, code, (value.text or "").strip())
            if new is None:
                continue
            classification.set("nodeRepresentation", new.code)
            value.text = new.scheme
            for name in children(classification, "Name"):
                for text in children(name, "LocalizedString"):
                    text.set("value", new.display)
            changed += 1
        return changed

    def translate_query(self, root: etree._Element) -> int:
        """Rewrite the coded parameters ('code^^scheme') of an AdhocQueryRequest in place."""
        changed = 0
        for slot in [e for e in root.iter() if local(e) == "Slot"]:
            classification = QUERY_PARAMETERS.get(slot.get("name", ""))
            if classification is None:
                continue
            for value in [e for e in slot.iter() if local(e) == "Value"]:
                def swap(match: re.Match[str], classification: str = classification) -> str:
                    nonlocal changed
                    new = self.replacement(classification, match.group(1), match.group(2))
                    if new is None:
                        return match.group(0)
                    changed += 1
                    return f"'{new.code}^^{new.scheme}'"
                value.text = _QUOTED_CODE.sub(swap, value.text or "")
        return changed

    def translate_expression(self, text: str) -> str:
        """An Assert XPath comparing a replaced code ('57016-8') with its classification's value."""
        for (classification, code, _), new in self.replacements.items():
            if classification in text and f"'{code}'" in text:
                text = text.replace(f"'{code}'", f"'{new.code}'")
        return text

    def translate(self, kind: str, root: etree._Element, section_dir: Path) -> None:
        if kind == "StoredQueryTransaction":
            if not _not_in_ce_format(section_dir):
                self.translate_query(root)
        else:
            self.translate_metadata(root)


def _coding_scheme_value(classification: etree._Element) -> etree._Element | None:
    for slot in children(classification, "Slot"):
        if slot.get("name") == "codingScheme":
            for value_list in children(slot, "ValueList"):
                values = children(value_list, "Value")
                if values:
                    return values[0]
    return None


def _not_in_ce_format(section_dir: Path) -> bool:
    """The toolkit leaves a query alone when errors.properties says its codes are malformed on purpose."""
    errors = section_dir / "errors.properties"
    return errors.is_file() and "not_in_CE_format" in errors.read_text(encoding="utf-8", errors="replace")


def load_codes(path: Path | str) -> CodeMap:
    """A NIST codes.xml (CodeType name= classScheme=, Code code= codingScheme= display=)."""
    try:
        root = parse_xml(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read codes file {path}: {exc}") from exc
    allowed: dict[str, list[Code]] = {}
    for code_type in root.iter("CodeType"):
        scheme_uuid = code_type.get("classScheme")
        if not scheme_uuid:
            continue   # mimeType: not a classification
        allowed[scheme_uuid] = [Code(c.get("code", ""), c.get("codingScheme", ""), c.get("display", ""))
                                for c in code_type.iter("Code")]
    if not allowed:
        raise PlanError(f"{path} holds no CodeType with a classScheme: not a NIST codes.xml")
    return CodeMap(allowed)


def prepare_code_map(kit: TestKit, codes_path: Path | str) -> CodeMap:
    """Load codes.xml and fix every replacement by walking the whole kit in a fixed order.

    Fixing them up front makes the mapping independent of which tests are selected,
    so a code submitted by one test and queried by another map to the same value.
    """
    code_map = load_codes(codes_path)
    for collecting in (True, False):   # first the domain codes the kit uses, then the replacements
        code_map.collecting = collecting
        _walk(kit, code_map)
    return code_map


def _walk(kit: TestKit, code_map: CodeMap) -> None:
    for test_id in sorted(kit.tests):
        test = kit.tests[test_id]
        for name in test.all_section_names:
            try:
                section = test.section(name)
            except PlanError:
                continue
            for step in section.steps:
                tx = step.transaction
                if tx is None or not tx.metadata_file:
                    continue
                path = resolve_file(section.directory, tx.metadata_file)
                if path is None:
                    continue
                try:
                    root = parse_xml(path.read_bytes())
                except ValueError:
                    continue
                code_map.translate(tx.kind, root, section.directory)
