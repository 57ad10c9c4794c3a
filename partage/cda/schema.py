"""Layer 1: W3C XML Schema validation against the CDA schema of a configured directory.

The official schema files are not shipped (HL7 licence); a deployment points at a
directory holding CDA_extended.xsd (the ANS variant, preferred) or CDA.xsd. Without one the
layer reports "not run". The schema is compiled once per path and per thread (lxml
validators keep their error log on the object, so threads must not share one).
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from .findings import ERROR, SCHEMA, Finding
from .locate import element_at_node_path, xpath_of
from .messages import schema_message

SCHEMA_NAMES = ("CDA_extended.xsd", "cda/CDA_extended.xsd", "CDA.xsd", "cda/CDA.xsd",
                "infrastructure/cda/CDA_extended.xsd")
MAX_SCHEMA_FINDINGS = 50


class SchemaNotFound(FileNotFoundError):
    pass


def find_schema(location: str | Path) -> Path:
    """The CDA schema file: `location` itself if it is a .xsd, else a known name inside it."""
    path = Path(location)
    if path.is_file():
        return path.resolve()
    for name in SCHEMA_NAMES:
        candidate = path / name
        if candidate.is_file():
            return candidate.resolve()
    raise SchemaNotFound(f"no CDA schema (CDA_extended.xsd or CDA.xsd) in {path}")


_local = threading.local()


def _compile(path: Path) -> etree.XMLSchema:
    # Schema files are local configuration; still, never fetch anything over the network.
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(path), parser))


def load_schema(path: str | Path) -> etree.XMLSchema:
    """The compiled schema for this thread (compiled on first use, about 0.1 s)."""
    cache = getattr(_local, "schemas", None)
    if cache is None:
        cache = _local.schemas = {}
    key = str(path)
    schema = cache.get(key)
    if schema is None:
        schema = cache[key] = _compile(Path(key).resolve())
    return schema


def check_schema(root: etree._Element, schema_path: str | Path) -> list[Finding]:
    """Validate the tree as parsed (auto-présentable wrappers included, as the ANS tool does)."""
    schema = load_schema(schema_path)
    if schema.validate(root):
        return []
    findings: list[Finding] = []
    tree = root.getroottree()
    for entry in schema.error_log:  # type: ignore[attr-defined]  # lxml-stubs: _ErrorLog is iterable
        if len(findings) >= MAX_SCHEMA_FINDINGS:
            findings.append(Finding("xsd-invalid", ERROR, SCHEMA,
                                    f"plus de {MAX_SCHEMA_FINDINGS} erreurs de schéma ; les suivantes ne "
                                    "sont pas listées"))
            break
        location = "/"
        if entry.path:
            node = element_at_node_path(tree, entry.path)
            location = xpath_of(node) if node is not None else entry.path
        findings.append(Finding("xsd-invalid", ERROR, SCHEMA, schema_message(entry.message), location,
                                entry.line or None))
    return findings
