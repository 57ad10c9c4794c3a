"""IHE SVS value-set files (the format ANS publishes its JDV in): load one, or a directory.

Parsed with the same hardened parser as CDA documents (the files are configuration, but a
directory of files fetched from elsewhere deserves the same care). Empty files exist
upstream (three in the ANS repository): they are skipped with a warning, not fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from lxml import etree

from ..cda.parser import ParseLimits, XmlRejected, parse_xml

log = logging.getLogger("partage.terminology")

SVS_NS = "urn:ihe:iti:svs:2008"
_VALUE_SET_TAGS = (f"{{{SVS_NS}}}ValueSet", f"{{{SVS_NS}}}DescribedValueSet")
_CONCEPT = f"{{{SVS_NS}}}Concept"
_LIMITS = ParseLimits(max_bytes=64 * 1024 * 1024)


def norm_system(system: str) -> str:
    """Compare OIDs with or without their urn:oid: prefix."""
    return system[8:] if system.startswith("urn:oid:") else system


@dataclass(frozen=True)
class ValueSet:
    oid: str
    name: str
    concepts: frozenset[tuple[str, str]]            # (code, codeSystem)
    display: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, hash=False)
    source: str = ""                                # file it was read from
    version: str = ""                               # revisionDate / dateMaj / version

    @property
    def stem(self) -> str:
        return Path(self.source).stem if self.source else ""

    @cached_property
    def codes(self) -> frozenset[str]:
        """Codes alone, for checks that (like the ANS schematrons) ignore the code system."""
        return frozenset(code for code, _ in self.concepts)

    def contains(self, code: str, system: str | None = None) -> bool:
        if system is None:
            return code in self.codes
        return (code, norm_system(system)) in self.concepts

    def __len__(self) -> int:
        return len(self.concepts)


class ValueSets(dict[str, ValueSet]):
    """Value sets by OID, also reachable by file stem (e.g. "JDV_J07_XdsTypeCode_CISIS")."""

    def __init__(self) -> None:
        super().__init__()
        self._by_stem: dict[str, ValueSet] = {}

    def add(self, value_set: ValueSet) -> None:
        if value_set.oid in self:
            log.info("value set %s (%s) also defined in %s; keeping %s", value_set.oid,
                        value_set.source, self[value_set.oid].source, self[value_set.oid].source)
        else:
            self[value_set.oid] = value_set
        if value_set.stem:
            self._by_stem.setdefault(value_set.stem, value_set)

    def by_name(self, stem: str) -> ValueSet | None:
        return self._by_stem.get(stem)

    def names(self) -> list[str]:
        return sorted(self._by_stem)


def _read(root: etree._Element, source: str) -> Iterator[ValueSet]:
    candidates = [root] if root.tag in _VALUE_SET_TAGS else [
        el for el in root.iter(*_VALUE_SET_TAGS)]
    for vs in candidates:
        concepts = set()
        display: dict[tuple[str, str], str] = {}
        for concept in vs.iter(_CONCEPT):
            key = (concept.get("code", ""), norm_system(concept.get("codeSystem", "")))
            if not key[0]:
                continue
            concepts.add(key)
            if concept.get("displayName"):
                display.setdefault(key, concept.get("displayName", ""))
        yield ValueSet(
            oid=norm_system(vs.get("id", "")), name=vs.get("displayName", "") or vs.get("name", ""),
            concepts=frozenset(concepts), display=display, source=source,
            version=vs.get("revisionDate") or vs.get("dateMaj") or vs.get("version") or "")


def load_svs_file(path: str | Path) -> ValueSet | None:
    """The (first) value set of an SVS file; None, with a warning, when the file is empty."""
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        log.warning("value-set file %s is empty; skipped", path)
        return None
    return next(_read(parse_xml(data, _LIMITS), str(path)), None)


def load_svs_directory(directory: str | Path) -> ValueSets:
    """Every *.xml SVS file of a directory, by OID; unreadable or empty files are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"value-set directory not found: {directory}")
    out = ValueSets()
    for path in sorted(directory.glob("*.xml")):
        data = path.read_bytes()
        if not data.strip():
            log.warning("value-set file %s is empty; skipped", path)
            continue
        try:
            root = parse_xml(data, _LIMITS)
        except XmlRejected as exc:
            log.warning("value-set file %s refused: %s", path, exc)
            continue
        found = False
        for value_set in _read(root, str(path)):
            found = True
            out.add(value_set)
        if not found:
            log.warning("%s holds no SVS ValueSet; skipped", path)
    return out
