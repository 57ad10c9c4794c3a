"""The shape of FHIR R4 elements (name, cardinality, type), read from the fhir.resources models.

One place says which elements repeat. The server uses it to refuse a single-valued element
given twice (the FHIR XML schema forbids it; a JSON array there is the same fault); the MHD
test-kit runner uses it to read fixtures as HAPI does (first repeat kept, later ones dropped
with a warning). A repeat is located by a FHIRPath-like path such as
`Bundle.entry[1].resource.context.practiceSetting.coding[0].code`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.utils import (
    determine_version_prefix_from_class,
    get_fhir_type_name,
    is_list_type,
    is_primitive_type,
)
from lxml import etree

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
RESOURCE = "Resource"   # the type of Bundle.entry.resource, contained, Parameters.parameter.resource


@dataclass(frozen=True)
class Child:
    """One element of a FHIR type, as written on the wire."""

    name: str            # "code", "valueString", "entry"
    repeats: bool        # 0..* / 1..*
    type_name: str       # FHIR type: "code", "Coding", "BundleEntry", "Resource", "xhtml"
    primitive: bool


@dataclass(frozen=True)
class Repeat:
    """A single-valued element given more than once."""

    path: str            # where the element is: "Bundle.entry[0].resource.status"
    element: str         # its name: "status"

    def describe(self) -> str:
        return f"{self.path}: the element '{self.element}' is single-valued but repeated"


def model_of(type_name: str) -> Any | None:
    """The fhir.resources (R4B) class of a FHIR type, None for a name FHIR does not define."""
    try:
        return get_fhir_model_class(type_name)
    except (KeyError, ValueError):
        return None


@cache
def children(type_name: str) -> tuple[Child, ...]:
    """The elements of a FHIR type in the order the specification (and FHIR XML) puts them."""
    model = model_of(type_name)
    if model is None:
        return ()
    prefix = determine_version_prefix_from_class(model)
    aliases = model.get_alias_mapping()
    out = []
    for name in model.elements_sequence():
        field = model.model_fields[aliases[name]]
        try:
            child_type = get_fhir_type_name(field, prefix=prefix)
        except ValueError:
            continue
        out.append(Child(name, is_list_type(field), child_type, is_primitive_type(field)))
    return tuple(out)


@cache
def _children_by_name(type_name: str) -> dict[str, Child]:
    return {c.name: c for c in children(type_name)}


def child(type_name: str, name: str) -> Child | None:
    """The element `name` of the FHIR type `type_name`, or None when the type has no such element."""
    return _children_by_name(type_name).get(name)


# --- FHIR XML -------------------------------------------------------------------------------------------

def _local(element: etree._Element) -> tuple[str, str]:
    qname = etree.QName(element)
    return qname.namespace or "", qname.localname


def xml_repeats(root: etree._Element, *, drop: bool = False) -> list[Repeat]:
    """Every single-valued element repeated in this FHIR XML resource. With `drop`, the later
    repeats are removed from the tree (the first one is kept, as HAPI's parser keeps it)."""
    out: list[Repeat] = []
    namespace, name = _local(root)
    if namespace == FHIR_NS:
        _walk_xml(root, name, name, out, drop)
    return out


def _walk_xml(element: etree._Element, type_name: str, path: str, out: list[Repeat], drop: bool) -> None:
    counts: dict[str, int] = {}
    for node in list(element):
        if not isinstance(node.tag, str):
            continue
        namespace, name = _local(node)
        info = child(type_name, name) if namespace == FHIR_NS else None
        if info is None:
            continue          # not an element of this type: the models refuse it, with its own message
        n = counts.get(name, 0)
        counts[name] = n + 1
        if n and not info.repeats:
            out.append(Repeat(f"{path}.{name}", name))
            if drop:
                element.remove(node)
            continue
        where = f"{path}.{name}[{n}]" if info.repeats else f"{path}.{name}"
        if info.primitive:
            _walk_xml(node, "Element", where, out, drop)       # id + extension of a primitive
        elif info.type_name == RESOURCE:
            inner = [c for c in node if isinstance(c.tag, str)]
            for i, resource in enumerate(inner):
                ns, resource_type = _local(resource)
                if i:
                    out.append(Repeat(where, name))
                    if drop:
                        node.remove(resource)
                elif ns == FHIR_NS:
                    _walk_xml(resource, resource_type, where, out, drop)
        elif info.type_name != "xhtml":
            _walk_xml(node, info.type_name, where, out, drop)


# --- FHIR JSON ------------------------------------------------------------------------------------------

class _DuplicateKeys(dict):  # type: ignore[type-arg]
    """A JSON object in which some member names occur more than once (the last value kept, as
    Python's json does; `repeated` names them)."""

    repeated: tuple[str, ...] = ()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [k for k, _ in pairs]
    if len(set(names)) == len(names):
        return dict(pairs)
    out = _DuplicateKeys(pairs)
    out.repeated = tuple(sorted({k for k in names if names.count(k) > 1}))
    return out


def load_json(data: bytes | str) -> Any:
    """json.loads that remembers member names given twice in an object (see `json_repeats`)."""
    return json.loads(data, object_pairs_hook=_pairs)


def json_repeats(resource: Any) -> list[Repeat]:
    """Every single-valued element of this FHIR JSON resource given as an array or, when the
    resource was read with `load_json`, given twice in one object."""
    out: list[Repeat] = []
    if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
        _walk_json(resource, resource["resourceType"], resource["resourceType"], out)
    return out


def _walk_json(obj: dict[str, Any], type_name: str, path: str, out: list[Repeat]) -> None:
    for name in getattr(obj, "repeated", ()):
        out.append(Repeat(f"{path}.{name.lstrip('_')}", name.lstrip("_")))
    for key, value in obj.items():
        name = key[1:] if key.startswith("_") else key
        info = child(type_name, name)
        if info is None:
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not info.repeats:
            out.append(Repeat(f"{path}.{name}", name))
        for i, item in enumerate(values):
            if not isinstance(item, dict):
                continue
            where = f"{path}.{name}[{i}]" if info.repeats else f"{path}.{name}"
            if key.startswith("_") or info.primitive:
                _walk_json(item, "Element", where, out)
            elif info.type_name == RESOURCE:
                inner = item.get("resourceType")
                if isinstance(inner, str):
                    _walk_json(item, inner, where, out)
            else:
                _walk_json(item, info.type_name, where, out)
