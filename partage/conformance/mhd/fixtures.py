"""Fixtures of the asbestos test collections: loading, templating, unique ids, JSON.

`ftkLoadFixture` (asbestos' internal request) reads `<base collection>/<test>/Bundle/<id>.xml`,
fills its `<!--@{Name}-->` placeholders from the running test's `Bundle/` folder or its
collection's `Common/` folder, and gives the DocumentReference masterIdentifiers and the
List usual identifiers fresh values so that a fixture can be sent more than once.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from lxml import etree

from ...xmlsafe import parse_xml

FHIR = "http://hl7.org/fhir"
_PLACEHOLDER = re.compile(r"<!--@\{(\w+)\}-->")
_counter = itertools.count(1)
_RUN = int(time.time())


def fill_placeholders(text: str, search_dirs: list[Path]) -> str:
    def replace(match: re.Match) -> str:
        for folder in search_dirs:
            candidate = folder / f"{match.group(1)}.xml"
            if candidate.is_file():
                return candidate.read_text()
        raise FileNotFoundError(f"placeholder @{{{match.group(1)}}} not found in {search_dirs}")
    return _PLACEHOLDER.sub(replace, text)


def _unique(value: str) -> str:
    suffix = f"{_RUN}.{next(_counter)}"
    if value.startswith("urn:oid:"):
        return f"{value}.{suffix}"
    return f"{value}-{suffix}"


def uniquify(xml_text: str) -> str:
    """Fresh masterIdentifier / List usual identifier values (as asbestos does before sending)."""
    root = parse_xml(xml_text.encode())
    ns = {"f": FHIR}
    for value in root.xpath("//f:DocumentReference/f:masterIdentifier/f:value", namespaces=ns):
        value.set("value", _unique(value.get("value", "")))
    for ident in root.xpath("//f:List/f:identifier[f:use/@value='usual']", namespaces=ns):
        for value in ident.xpath("f:value", namespaces=ns):
            value.set("value", _unique(value.get("value", "")))
    return etree.tostring(root, encoding="unicode")


def xml_to_json(xml_text: str, hapi_contained_ids: bool = False) -> dict[str, Any]:
    """FHIR XML -> FHIR JSON through the R4B models (what FHIRPath assertions read).

    `hapi_contained_ids`: write contained resources' ids as HAPI holds them in memory
    (`#id`), which the asbestos assertions compare with `#id` references.
    """
    root = parse_xml(xml_text.encode())
    resource_type = etree.QName(root).localname
    model = get_fhir_model_class(resource_type).model_validate_xml(xml_text.encode())
    data = model.model_dump(mode="json", exclude_none=True)
    if hapi_contained_ids:
        _hash_contained(data)
    return data


def _hash_contained(node: Any) -> None:
    if isinstance(node, dict):
        for contained in node.get("contained", []) or []:
            if isinstance(contained, dict) and contained.get("id") and not contained["id"].startswith("#"):
                contained["id"] = "#" + contained["id"]
        for value in node.values():
            _hash_contained(value)
    elif isinstance(node, list):
        for item in node:
            _hash_contained(item)


def load_fixture(collections: Path, base_collection: str, test_name: str, fixture_id: str,
                 test_dir: Path) -> str:
    path = collections / base_collection / test_name / "Bundle" / f"{fixture_id}.xml"
    text = path.read_text()
    text = fill_placeholders(text, [test_dir / "Bundle", test_dir.parent / "Common"])
    return uniquify(text)
