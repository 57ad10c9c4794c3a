"""IHE SVS value-set files (the format ANS publishes its JDV in): the one value-set loader.

`load_value_sets(directory)` is what every user of value sets calls (the XDS affinity
domain, the CDA terminology layer): the configured directory's files over Partage's own
shipped defaults (`terminology/defaults`), loaded once per directory. Files are parsed with
the hardened parser (`partage.xmlsafe`): the files are configuration, but a directory of
files fetched from elsewhere deserves the same care. Empty files exist upstream (three in
the ANS repository): they are skipped with a warning, not fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from lxml import etree

from ..xmlsafe import XmlInputError, parse_xml

log = logging.getLogger("partage.terminology")

SVS_NS = "urn:ihe:iti:svs:2008"
DEFAULTS_DIR = Path(__file__).resolve().with_name("defaults")
_VALUE_SET_TAGS = (f"{{{SVS_NS}}}ValueSet", f"{{{SVS_NS}}}DescribedValueSet")
_CONCEPT = f"{{{SVS_NS}}}Concept"
_MAX_BYTES = 64 * 1024 * 1024
_MAX_DEPTH = 64


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
    def shipped(self) -> bool:
        """True for Partage's own defaults (not a file of the configured directory); read by
        every validation's terminology report, so computed once."""
        return bool(self.source) and Path(self.source).parent == DEFAULTS_DIR

    @cached_property
    def origin(self) -> str:
        """Where a report says the set comes from: Partage's defaults, or its file's name."""
        return "fourni par Partage" if self.shipped else Path(self.source).name

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

    def __init__(self, directory: str = "") -> None:
        super().__init__()
        self.directory = directory                  # the configured directory ("" = defaults only)
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

    def stems(self) -> list[ValueSet]:
        """Every file's value set, by file stem (configured files first, then the defaults)."""
        return list(self._by_stem.values())


def read_value_sets(root: etree._Element, source: str) -> Iterator[ValueSet]:
    """The value sets of a parsed SVS document (a ValueSet root, or a response holding some)."""
    candidates = [root] if root.tag in _VALUE_SET_TAGS else list(root.iter(*_VALUE_SET_TAGS))
    for vs in candidates:
        concepts: set[tuple[str, str]] = set()
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


def _parse_file(path: Path) -> etree._Element | None:
    data = path.read_bytes()
    if not data.strip():
        log.warning("value-set file %s is empty; skipped", path)
        return None
    return parse_xml(data, max_bytes=_MAX_BYTES, max_depth=_MAX_DEPTH)


def load_svs_file(path: str | Path) -> ValueSet | None:
    """The (first) value set of an SVS file; None, with a warning, when the file is empty.

    Raises XmlInputError for a file the hardened parser refuses.
    """
    root = _parse_file(Path(path))
    return None if root is None else next(read_value_sets(root, str(path)), None)


def _add_directory(out: ValueSets, directory: Path) -> None:
    for path in sorted(directory.glob("*.xml")):
        try:
            root = _parse_file(path)
        except XmlInputError as exc:
            log.warning("value-set file %s refused: %s", path, exc)
            continue
        if root is None:
            continue
        found = False
        for value_set in read_value_sets(root, str(path)):
            found = True
            out.add(value_set)
        if not found:
            log.warning("%s holds no SVS ValueSet; skipped", path)


def load_svs_directory(directory: str | Path) -> ValueSets:
    """Every *.xml SVS file of one directory, by OID; unreadable or empty files are skipped."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"value-set directory not found: {folder}")
    out = ValueSets(str(folder))
    _add_directory(out, folder)
    return out


@lru_cache(maxsize=8)
def _load(directory: str) -> ValueSets:
    out = ValueSets(directory)
    if directory:
        folder = Path(directory)
        if not folder.is_dir():
            raise FileNotFoundError(f"value-set directory not found: {folder}")
        _add_directory(out, folder)
    if DEFAULTS_DIR.is_dir():
        _add_directory(out, DEFAULTS_DIR)
    return out


def load_value_sets(directory: str | Path | None = None) -> ValueSets:
    """The configured directory's value sets over the shipped defaults; loaded once per directory.

    A 500-file directory takes about 0.2 s. The same OID in both: the configured file wins.
    """
    return _load(str(Path(directory).resolve()) if directory else "")
