"""FHIR resources read and written the way asbestos (HAPI FHIR, R4) reads and writes them.

asbestos never sends a fixture file as it is: HAPI parses it into objects, and what goes on
the wire is HAPI's re-serialisation. HAPI's parser is lenient where a schema is not: a
single-valued element given twice keeps its *first* value (later ones are dropped with a
warning), an unknown element is dropped with a warning, and missing required elements are
no error at all (the server must judge them). `read_xml` does the same and returns the
warnings, so that the runner's report can say what the server was actually sent.

In memory, HAPI keeps a contained resource's id with its `#` (`#sourcePatient`), which the
asbestos FHIRPath assertions compare with `#...` references: `memory_view` gives that view.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

from ...mhd.structure import FHIR_NS, RESOURCE, XHTML_NS, child, children, xml_repeats
from ...xmlsafe import XmlInputError, parse_xml

JSON, XML = "json", "xml"
CONTENT_TYPES = {JSON: "application/fhir+json", XML: "application/fhir+xml"}
_INTEGERS = {"integer", "unsignedInt", "positiveInt", "integer64"}
# HAPI's model classes whose simple name is not the resource type
_CLASS_NAMES = {"List": "ListResource"}


class FormatError(ValueError):
    """HAPI would throw a DataFormatException: the text is not a FHIR resource at all."""


@dataclass
class Parsed:
    resource: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def class_name(resource_type: str) -> str:
    """The simple name of HAPI's model class for a resource type (what asbestos compares)."""
    return _CLASS_NAMES.get(resource_type, resource_type)


# --- reading ----------------------------------------------------------------------------------------

def read_xml(data: bytes | str) -> Parsed:
    raw = data.encode() if isinstance(data, str) else data
    try:
        root = parse_xml(raw)
    except XmlInputError as exc:
        raise FormatError(f"not well-formed XML: {exc}") from exc
    namespace, resource_type = etree.QName(root).namespace, etree.QName(root).localname
    if namespace != FHIR_NS or not children(resource_type):
        raise FormatError(f"the XML root <{resource_type}> is not a FHIR resource")
    warnings = [f"Multiple repetitions of non-repeatable element '{r.element}' found while parsing "
                f"(at {r.path}): the first one is kept"
                for r in xml_repeats(root, drop=True)]
    resource = {"resourceType": resource_type, **_element(root, resource_type, resource_type, warnings)}
    return Parsed(resource, warnings)


def read_json(data: bytes | str) -> Parsed:
    try:
        resource = json.loads(data)
    except ValueError as exc:
        raise FormatError(f"not JSON: {exc}") from exc
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise FormatError("the JSON is not a FHIR resource (no resourceType)")
    return Parsed(resource)


def read(data: bytes | str, fmt: str) -> Parsed:
    return read_xml(data) if fmt == XML else read_json(data)


def _primitive(text: str | None, type_name: str) -> Any:
    if text is None or text == "":
        return None
    if type_name == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if type_name in _INTEGERS:
        try:
            return int(text)
        except ValueError:
            return text
    if type_name == "decimal":
        try:
            number = Decimal(text)
        except InvalidOperation:
            return text
        return int(number) if number == number.to_integral_value() and "." not in text else float(number)
    return text


def _element(node: etree._Element, type_name: str, path: str, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    is_resource = child(type_name, "id") is not None and child(type_name, "id").type_name == "id"  # type: ignore[union-attr]
    if not is_resource and node.get("id") is not None:
        out["id"] = node.get("id")
    if type_name == "Extension" and node.get("url") is not None:
        out["url"] = node.get("url")
    for item in node:
        if not isinstance(item.tag, str):
            continue
        qname = etree.QName(item)
        info = child(type_name, qname.localname) if qname.namespace in (FHIR_NS, XHTML_NS) else None
        if info is None or (qname.namespace == XHTML_NS) != (info.type_name == "xhtml"):
            warnings.append(f"Unknown element '{qname.localname}' found while parsing (in {path}): dropped")
            continue
        name = info.name
        if info.type_name == "xhtml":
            value: Any = etree.tostring(item, encoding="unicode", with_tail=False)
            extra = None
        elif info.primitive:
            value = _primitive(item.get("value"), info.type_name)
            extra = _element(item, "Element", f"{path}.{name}", warnings) or None
        elif info.type_name == RESOURCE:
            inner = [c for c in item if isinstance(c.tag, str)]
            extra = None
            if not inner:
                continue
            resource_type = etree.QName(inner[0]).localname
            value = {"resourceType": resource_type,
                     **_element(inner[0], resource_type, f"{path}.{name}", warnings)}
        else:
            value = _element(item, info.type_name, f"{path}.{name}", warnings)
            extra = None
        if info.repeats:
            values = out.setdefault(name, [])
            values.append(value)
            if info.primitive:
                extras = out.setdefault("_" + name, [])
                extras.extend([None] * (len(values) - 1 - len(extras)))
                extras.append(extra)
        else:
            if value is not None:
                out[name] = value
            if extra:
                out["_" + name] = extra
    for key in [k for k in out if k.startswith("_") and isinstance(out[k], list)]:
        if not any(out[key]):
            del out[key]
    return out


# --- writing ---------------------------------------------------------------------------------------

def write(resource: dict[str, Any], fmt: str) -> bytes:
    """HAPI's encoding of a resource: JSON as it is, XML in the order the specification gives."""
    if fmt == JSON:
        return json.dumps(resource, ensure_ascii=False).encode()
    resource_type = resource["resourceType"]
    root = etree.Element(f"{{{FHIR_NS}}}{resource_type}", nsmap={None: FHIR_NS})  # type: ignore[dict-item]  # lxml-stubs: the default namespace's key is None
    _fill(root, resource, resource_type)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(node: etree._Element, obj: dict[str, Any], type_name: str) -> None:
    is_resource = "resourceType" in obj
    if not is_resource and obj.get("id") is not None:
        node.set("id", str(obj["id"]))
    if type_name == "Extension" and obj.get("url") is not None:
        node.set("url", str(obj["url"]))
    for info in children(type_name):
        if (info.name == "id" and not is_resource) or (info.name == "url" and type_name == "Extension"):
            continue
        value, extra = obj.get(info.name), obj.get("_" + info.name)
        if value is None and extra is None:
            continue
        values = value if isinstance(value, list) else [value]
        extras = extra if isinstance(extra, list) else [extra] * len(values)
        for i, item in enumerate(values):
            item_extra = extras[i] if i < len(extras) else None
            if item is None and item_extra is None:
                continue
            if info.type_name == "xhtml":
                try:
                    node.append(etree.fromstring(str(item)))
                except etree.XMLSyntaxError:
                    continue
                continue
            sub = etree.SubElement(node, f"{{{FHIR_NS}}}{info.name}")
            if info.primitive:
                if item is not None:
                    sub.set("value", _text(item))
                if isinstance(item_extra, dict):
                    _fill(sub, item_extra, "Element")
            elif info.type_name == RESOURCE and isinstance(item, dict):
                inner_type = str(item.get("resourceType", ""))
                inner = etree.SubElement(sub, f"{{{FHIR_NS}}}{inner_type}")
                _fill(inner, item, inner_type)
            elif isinstance(item, dict):
                _fill(sub, item, info.type_name)


# --- HAPI's in-memory view -------------------------------------------------------------------------

def memory_view(resource: Any) -> Any:
    """The resource as HAPI holds it: contained resources' ids carry their `#`."""
    view = copy.deepcopy(resource)
    _hash_contained(view)
    return view


def _hash_contained(node: Any) -> None:
    if isinstance(node, dict):
        for contained in node.get("contained", []) or []:
            if isinstance(contained, dict) and contained.get("id") and not str(contained["id"]).startswith("#"):
                contained["id"] = "#" + str(contained["id"])
        for value in node.values():
            _hash_contained(value)
    elif isinstance(node, list):
        for item in node:
            _hash_contained(item)
