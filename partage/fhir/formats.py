"""FHIR JSON and XML on the wire: content negotiation, parsing, serialising.

Parsing goes through the fhir.resources R4B models, so what the door hands to the
mapping is a structurally valid resource (as a JSON dict); XML is first read by
`partage.xmlsafe` (no DOCTYPE, bounded size and depth) before the models see it. A
single-valued element given twice (two `<code>` in a Coding, a JSON array or a repeated
member name) is refused with its location before the models see it: they would keep
one of the values silently (`partage.mhd.structure` says which elements repeat).
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from flask import Request, Response
from lxml import etree
from pydantic import ValidationError

from ..mhd.structure import Repeat, json_repeats, load_json, xml_repeats
from ..xmlsafe import XmlInputError, parse_xml
from .outcome import FhirError, Issue

JSON_TYPE = "application/fhir+json"
XML_TYPE = "application/fhir+xml"
_XML_NAMES = {"xml", "text/xml", "application/xml", XML_TYPE}
_JSON_NAMES = {"json", "application/json", JSON_TYPE}
FHIR_NS = "{http://hl7.org/fhir}"
FHIR_MEDIA_TYPES = (JSON_TYPE, XML_TYPE, "application/xml", "text/xml")


def _format_param(request: Request) -> str:
    """`_format` as given; a `+` left unencoded in a URL arrives as a space."""
    return request.args.get("_format", "").split(";")[0].strip().replace(" ", "+").lower()


def check_format(request: Request) -> None:
    """406 for a `_format` that is neither JSON nor XML (FHIR R4 http.html#mime-type)."""
    fmt = _format_param(request)
    if fmt and fmt not in _XML_NAMES | _JSON_NAMES:
        raise FhirError.one(406, f"_format={fmt}: this server answers json or xml "
                            f"({JSON_TYPE}, {XML_TYPE})", "not-supported")


def wants_resource(request: Request) -> bool:
    """Whether a Binary read asks for the Binary resource (by `_format` or a FHIR media type
    in Accept) rather than the document's own bytes."""
    if _format_param(request) in _XML_NAMES | _JSON_NAMES:
        return True
    return any(media.split(";")[0].strip().lower() in (JSON_TYPE, XML_TYPE) and quality > 0
               for media, quality in request.accept_mimetypes)


def wants_xml(request: Request) -> bool:
    """`_format` wins, then the Accept header, then the format of the request's own body
    (an XML Bundle posted without Accept is answered in XML); JSON by default."""
    fmt = _format_param(request)
    if fmt:
        return fmt in _XML_NAMES
    accept = request.headers.get("Accept", "")
    for item in accept.split(","):
        media = item.split(";")[0].strip()
        if media in _JSON_NAMES:
            return False
        if media in _XML_NAMES:
            return True
    return (request.mimetype or "").lower() in _XML_NAMES


def _is_xml_body(request: Request) -> bool:
    media = (request.mimetype or "").lower()
    if media in _XML_NAMES:
        return True
    if media in _JSON_NAMES:
        return False
    head = request.get_data(cache=True)[:64].lstrip()
    return head.startswith(b"<")


def _model_errors(exc: ValidationError, resource_type: str) -> FhirError:
    issues = []
    for err in exc.errors()[:20]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        issues.append(Issue(f"{resource_type}{'.' + where if where else ''}: {err.get('msg')}",
                            "structure", expression=where))
    return FhirError(400, issues)


def _repeated(repeats: list[Repeat]) -> FhirError:
    return FhirError(400, [Issue(r.describe(), "structure", expression=r.path) for r in repeats[:20]])


def parse_resource(data: bytes, xml: bool, expected: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Bytes -> a validated resource as FHIR JSON; FhirError(400) when it is not one."""
    if not data.strip():
        raise FhirError.one(400, "the request has no body", "required")
    if xml:
        try:
            root = parse_xml(data)
        except XmlInputError as exc:
            raise FhirError.one(400, f"unreadable XML: {exc}", "structure") from exc
        if not isinstance(root.tag, str) or not root.tag.startswith(FHIR_NS):
            raise FhirError.one(400, "the XML root is not a FHIR resource (namespace http://hl7.org/fhir)",
                                "structure")
        resource_type = root.tag[len(FHIR_NS):]
        repeats = xml_repeats(root)
    else:
        try:
            raw = load_json(data)
        except ValueError as exc:
            raise FhirError.one(400, f"unreadable JSON: {exc}", "structure") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("resourceType"), str):
            raise FhirError.one(400, "the JSON body is not a FHIR resource (no resourceType)", "structure")
        resource_type = raw["resourceType"]
        repeats = json_repeats(raw)
    if expected and resource_type not in ((expected,) if isinstance(expected, str) else expected):
        raise FhirError.one(400, f"expected a {expected} resource, got {resource_type}", "invalid")
    try:
        model_class = get_fhir_model_class(resource_type)
    except (KeyError, ValueError) as exc:
        raise FhirError.one(400, f"unknown resource type {resource_type!r}", "not-supported") from exc
    if repeats:   # the models would keep the last one silently
        raise _repeated(repeats)
    try:
        if xml:
            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            model = model_class.model_validate_xml(data, xmlparser=parser)
        else:
            model = model_class.model_validate(raw)
    except ValidationError as exc:
        raise _model_errors(exc, resource_type) from exc
    except (ValueError, TypeError, etree.XMLSyntaxError) as exc:
        raise FhirError.one(400, f"{resource_type} is not valid FHIR: {exc}", "structure") from exc
    except (LookupError, AttributeError) as exc:   # the models trip over some shapes (resourceType "")
        raise FhirError.one(400, f"{resource_type} is not valid FHIR: cannot read "
                            f"{type(exc).__name__} {exc}", "structure") from exc
    return model.model_dump(mode="json", exclude_none=True)


def read_body(request: Request, expected: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    return parse_resource(request.get_data(cache=True), _is_xml_body(request), expected)


def serialise(resource: dict[str, Any], xml: bool) -> tuple[bytes, str]:
    if not xml:
        return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode(), \
            f"{JSON_TYPE}; charset=utf-8"
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    text = model.model_dump_xml()
    return (text.encode() if isinstance(text, str) else bytes(text)), f"{XML_TYPE}; charset=utf-8"


def respond(resource: dict[str, Any], request: Request, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    body, content_type = serialise(resource, wants_xml(request))
    return Response(body, status=status, content_type=content_type, headers=headers or {})
