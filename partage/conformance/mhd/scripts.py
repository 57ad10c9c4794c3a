"""Reading asbestos TestScripts: element values, modifier extensions, module headers,
`#{TestCollection.properties:...}` references, query strings."""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

from ...xmlsafe import parse_xml
from .model import ScriptError, Unsupported

F = "{http://hl7.org/fhir}"
IMPORT = "https://github.com/usnistgov/asbestos/wiki/TestScript-Import"
CONDITIONAL = "https://github.com/usnistgov/asbestos/wiki/TestScript-Conditional"
NO_ERRORS = "urn:noErrors"
MULTI_ERRORS = "urn:multipleErrors"
EXPECT_FAILURE = "urn:asbestos:test:action:expectFailure"
ASSERTION_IDS = "urn:asbestos:test:action:assertionIdList"
MANUAL = "urn:asbestos:test:action:mayHaveBugsWhichRequireManualReview"
SUB_FIXTURE = "urn:subFixture"
_PROPERTY = re.compile(r"#\{([^}]*)\}")


def value_of(element: etree._Element | None, name: str) -> str | None:
    if element is None:
        return None
    child = element.find(F + name)
    return child.get("value") if child is not None else None


def modifier_extension(element: etree._Element, url: str) -> etree._Element | None:
    for ext in element.findall(F + "modifierExtension"):
        if ext.get("url") == url:
            return ext
    return None


def extension_values(ext: etree._Element) -> list[tuple[str, str]]:
    out = []
    for item in ext.findall(F + "extension"):
        value = next((c.get("value") for c in item if isinstance(c.tag, str) and c.get("value") is not None), "")
        out.append((item.get("url", ""), value or ""))
    return out


def java_hash_order(keys: list[str]) -> list[str]:
    """The iteration order of a java.util.HashMap holding these String keys (asbestos puts a
    module's input fixtures in one; the last becomes the module's "last operation")."""
    def java_hash(text: str) -> int:
        h = 0
        for ch in text.encode("utf-16-be").decode("utf-16-be"):
            h = (31 * h + ord(ch)) & 0xFFFFFFFF
        return h
    capacity = 16
    while len(keys) > capacity * 0.75:
        capacity *= 2

    def bucket(key: str) -> int:
        h = java_hash(key)
        return (h ^ (h >> 16)) & (capacity - 1)
    return sorted(keys, key=lambda k: (bucket(k), keys.index(k)))


def property_value(properties: dict[str, str], text: str) -> str:
    """AsbestosPropertyReference.getValue: the first `#{TestCollection.properties:Name}` replaced."""
    match = _PROPERTY.search(text)
    if not match:
        return text
    parts = match.group(1).split(":", 2)
    if len(parts) < 2 or parts[0] != "TestCollection.properties":
        return text
    value = properties.get(parts[1])
    if value is None:
        if len(parts) > 2 and parts[2] == "DefaultToGlobalServiceProperty":
            raise Unsupported(f"{match.group(0)} names asbestos' own service properties")
        raise ScriptError(f"Null property {parts[1]} in TestCollection.properties")
    return text[:match.start()] + value + text[match.end():]


def query_params(url: str) -> dict[str, str]:
    """Request.getParametersMap: the raw name=value pairs of a query string."""
    query = url.split("?", 1)[1] if "?" in url else ""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[name] = value
    return out


def resource_type_of(url: str) -> str:
    """Ref.getResourceType of a FHIR URL: the capitalised segment after the base."""
    path = url.split("?", 1)[0].rstrip("/")
    segments = [s for s in path.split("/") if s]
    for segment in reversed(segments):
        if segment[:1].isupper():
            return segment
    return ""


def module_header(path: Path) -> dict[str, list[str]]:
    """ComponentDefinition: the module's declared parameters, in order."""
    root = parse_xml(path.read_bytes())
    header = modifier_extension(root, "urn:module")
    out: dict[str, list[str]] = {k: [] for k in ("urn:fixture-in", "urn:fixture-out", "urn:variable-in",
                                                  "urn:variable-in-no-translation", "urn:variable-out")}
    if header is None:
        raise ScriptError(f"TestScript module {path.name} has no module header")
    for url, value in extension_values(header):
        if url not in out:
            raise ScriptError(f"Do not understand extension {url} in ComponentDefinition {path.name}")
        out[url].append(value)
    return out
