"""FHIR JSON and XML on the wire: content negotiation, parsing, serialising.

Parsing goes through the fhir.resources R4B models, so what the door hands to the
mapping is a structurally valid resource (as a JSON dict); XML is first read by
`partage.xmlsafe` (no DOCTYPE, bounded size and depth) before the models see it. A
single-valued element given twice (two `<code>` in a Coding, a JSON array or a repeated
member name) is refused with its location before the models see it: they would keep
one of the values silently (`partage.mhd.structure` says which elements repeat).
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal
from typing import Any

import simplejson
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from flask import Request, Response, current_app
from lxml import etree
from pydantic import ValidationError
from werkzeug.datastructures import MultiDict

from .. import jsonsafe
from ..config import Settings
from ..failures import TooComplex
from ..xmlsafe import XmlInputError, parse_xml, xml_text
from .outcome import FhirError, Issue
from .structure import Repeat, json_repeats, load_json, xml_repeats

JSON_TYPE = "application/fhir+json"
XML_TYPE = "application/fhir+xml"
# FHIR R4 datatypes.html#string: no character below U+0020 but tab, CR and LF. In JSON such a
# character can only come escaped (\u0000); an odd run of backslashes makes the escape.
_CONTROL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u00(?:0[0-8bcef]|1[0-9a-f])", re.IGNORECASE)
# The generic types (http.html#mime-type) and DSTU2's, which older clients still send.
_XML_NAMES = {"xml", "text/xml", "application/xml", XML_TYPE, "application/xml+fhir"}
_JSON_NAMES = {"json", "application/json", "text/json", JSON_TYPE, "application/json+fhir"}
FHIR_NS = "{http://hl7.org/fhir}"
FHIR_MEDIA_TYPES = (JSON_TYPE, XML_TYPE, "application/xml", "text/xml")


_FORM_READ = "partage.search_form"   # the environ key of a POST _search form once the search read it


def search_form(request: Request) -> MultiDict[str, str] | None:
    """The parameters of a `POST _search` form body (FHIR R4 search.html#Introduction:
    application/x-www-form-urlencoded, the same search as a GET with them in the URL), or None.
    Read by the search, after the request was authenticated (never before: docs/robustness.md,
    an unauthenticated body is refused unread)."""
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        form: MultiDict[str, str] = request.form
        request.environ[_FORM_READ] = form
        return form
    return None


def _format_param(request: Request) -> str:
    """`_format` as given, in the URL or in a `POST _search` form the search has read (the same
    parameter: search.html; an answer given before, a 401, does not read the body for it); a
    `+` left unencoded in a URL arrives as a space."""
    form = request.environ.get(_FORM_READ)
    fmt = request.args.get("_format", "") or (form.get("_format", "") if form is not None else "")
    return fmt.split(";")[0].strip().replace(" ", "+").lower()


def check_strings(data: bytes) -> None:
    """400 for JSON whose strings hold a control character FHIR forbids (read on the bytes)."""
    if _CONTROL_ESCAPE.search(data):
        raise FhirError.one(400, "a FHIR string holds a control character (below U+0020 other than tab, "
                                 "CR and LF: FHIR R4 datatypes, string)", "invalid")


def check_format(request: Request) -> None:
    """406 for a `_format` that is neither JSON nor XML (FHIR R4 http.html#mime-type)."""
    fmt = _format_param(request)
    if fmt and fmt not in _XML_NAMES | _JSON_NAMES:
        raise FhirError.one(406, f"_format={fmt}: this server answers json or xml "
                            f"({JSON_TYPE}, {XML_TYPE})", "not-supported")


def wants_resource(request: Request, mime_type: str) -> bool:
    """Whether a Binary read (ITI-68) answers the Binary resource rather than the document's own
    bytes of type `mime_type`: `_format` asks for the resource; else Accept decides (RFC 9110
    12.5.1), the bytes when their type is acceptable at least as much as a FHIR one (no Accept,
    or `*/*`: the bytes). Neither acceptable is a 406 (MHD ITI-68 Table 3.68.4.2.2-1: the
    Document Responder does not transform the document)."""
    if _format_param(request) in _XML_NAMES | _JSON_NAMES:
        return True
    accept = request.accept_mimetypes
    if not accept:
        return False
    as_bytes = accept.quality(mime_type.split(";")[0].strip().lower())
    # the resource in FHIR's own types or the generic ones (http.html#mime-type)
    as_resource = max(accept.quality(media) for media in (*FHIR_MEDIA_TYPES, "application/json"))
    if as_bytes <= 0 and as_resource <= 0:
        raise FhirError.one(406, f"the document is {mime_type}; Accept {request.headers.get('Accept', '')!r} "
                                 f"takes neither it nor the Binary resource ({JSON_TYPE}, {XML_TYPE})",
                            "not-supported")
    return as_resource > as_bytes


def wants_xml(request: Request) -> bool:
    """`_format` wins, then the Accept header, then the format of the request's own body
    (an XML Bundle posted without Accept is answered in XML); JSON by default."""
    fmt = _format_param(request)
    if fmt:
        return fmt in _XML_NAMES
    # Werkzeug's parse of Accept (RFC 9110 12.5.1): by quality, highest first, the client's
    # order among equals; q=0 is "not acceptable". Media types compare case-insensitively.
    for media, quality in request.accept_mimetypes:
        media = media.lower()
        if quality > 0 and media in _JSON_NAMES | _XML_NAMES:
            return media in _XML_NAMES
    return (request.mimetype or "").lower() in _XML_NAMES


def _is_xml_body(request: Request) -> bool:
    """The body's format from its Content-Type. A type that is neither FHIR XML nor JSON is a 415
    (FHIR R4 http.html#mime-type: the correct mime type SHALL be used; RFC 9110 15.5.16): read as
    FHIR, a text/plain or form body would be taken for what it does not say it is. Without a
    Content-Type the bytes are looked at (RFC 9110 8.3)."""
    media = (request.mimetype or "").lower()
    if media in _XML_NAMES:
        return True
    if media in _JSON_NAMES:
        return False
    if media:
        raise FhirError.one(415, f"a {media} body is not a FHIR resource: send {JSON_TYPE} or {XML_TYPE}",
                            "not-supported")
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


def parse_resource(data: bytes, xml: bool, expected: str | tuple[str, ...] | None = None,
                   limits: jsonsafe.JsonLimits = jsonsafe.DEFAULT_LIMITS,
                   max_entries: int = 5000) -> dict[str, Any]:
    """Bytes -> a validated resource as FHIR JSON; FhirError(400) when it is not one.

    Bounded (docs/robustness.md): the JSON structure is counted before it is built
    (`partage.jsonsafe`), a Bundle may hold `max_entries` entries, and its entries are turned
    into models one at a time, each of at most `limits.max_resource_containers` objects.
    """
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
            jsonsafe.scan(data, limits)   # counted before anything is built
            raw = load_json(data)         # remembers member names given twice
        except TooComplex as exc:
            raise FhirError.one(400, str(exc), "too-costly") from exc
        except RecursionError:
            raise FhirError.one(400, f"JSON nested deeper than {limits.max_depth} levels", "too-costly") from None
        except ValueError as exc:
            raise FhirError.one(400, f"unreadable JSON: {exc}", "structure") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("resourceType"), str):
            raise FhirError.one(400, "the JSON body is not a FHIR resource (no resourceType)", "structure")
        check_strings(data)
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
    if xml:
        if resource_type == "Bundle" and len(root.findall(FHIR_NS + "entry")) > max_entries:
            raise FhirError.one(400, f"a Bundle may hold at most {max_entries} entries "
                                     "(PARTAGE_MAX_BUNDLE_ENTRIES)", "too-costly")
    elif resource_type == "Bundle" and isinstance(raw.get("entry"), list):
        if len(raw["entry"]) > max_entries:
            raise FhirError.one(400, f"a Bundle may hold at most {max_entries} entries "
                                     "(PARTAGE_MAX_BUNDLE_ENTRIES)", "too-costly")
        entries = raw.pop("entry")
        shell = _validated(model_class, raw, resource_type, limits)
        entry_class = get_fhir_model_class("BundleEntry")
        shell["entry"] = [_validated(entry_class, entry, f"Bundle.entry.{n}", limits)
                          for n, entry in enumerate(entries)]
        return shell
    if not xml:
        return _validated(model_class, raw, resource_type, limits)
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        model = model_class.model_validate_xml(data, xmlparser=parser)
    except ValidationError as exc:
        raise _model_errors(exc, resource_type) from exc
    except (ValueError, TypeError, etree.XMLSyntaxError) as exc:
        raise FhirError.one(400, f"{resource_type} is not valid FHIR: {exc}", "structure") from exc
    except (LookupError, AttributeError) as exc:   # the models trip over some shapes (resourceType "")
        raise FhirError.one(400, f"{resource_type} is not valid FHIR: cannot read "
                            f"{type(exc).__name__} {exc}", "structure") from exc
    return model.model_dump(mode="json", exclude_none=True)


def _validated(model_class: type[FHIRAbstractModel], raw: Any, where: str, limits: jsonsafe.JsonLimits) -> dict[str, Any]:
    """One JSON value through its model and back, the model dropped at once (memory stays bounded)."""
    try:
        too_many = jsonsafe.containers(raw, limits.max_resource_containers, limits.max_depth) \
            > limits.max_resource_containers
    except TooComplex as exc:
        raise FhirError.one(400, f"{where}: {exc}", "too-costly") from exc
    if too_many:
        raise FhirError.one(400, f"{where} has more than {limits.max_resource_containers} objects and arrays",
                            "too-costly")
    try:
        return model_class.model_validate(raw).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise _model_errors(exc, where) from exc
    except (ValueError, TypeError) as exc:
        raise FhirError.one(400, f"{where} is not valid FHIR: {exc}", "structure") from exc
    except (LookupError, AttributeError) as exc:   # the models trip over some shapes (resourceType "")
        raise FhirError.one(400, f"{where} is not valid FHIR: cannot read "
                            f"{type(exc).__name__} {exc}", "structure") from exc


def read_body(request: Request, expected: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    settings: Settings = current_app.extensions["partage"].settings
    return parse_resource(request.get_data(cache=True), _is_xml_body(request), expected,
                          json_limits(settings), settings.max_bundle_entries)


def json_limits(settings: Settings) -> jsonsafe.JsonLimits:
    return jsonsafe.JsonLimits(max_depth=settings.max_json_depth, base_containers=settings.max_json_containers)


# FHIR R4 decimal (datatypes.html#decimal): its precision is significant, so a Decimal is written
# with its own digits (12.20 stays 12.20), never through a float (0.30000000000000004, 1e400 -> inf).
DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def fhir_decimal_text(number: Decimal) -> str:
    """A finite Decimal in the lexical form of a FHIR decimal (no '+', no leading zeros, no '.5')."""
    if not number.is_finite():
        raise ValueError(f"{number}: a FHIR decimal is a finite number")
    text = str(number)
    if not DECIMAL.fullmatch(text):   # str() of a Decimal gives 1E+3, 0.5, -0: all match; anything else
        text = format(number, "f")
    return text


def dumps_json(resource: dict[str, Any]) -> str:
    """FHIR JSON of a resource whose decimals may be Decimal: simplejson writes each as a JSON
    number with its own digits (the json module would refuse it, or go through a float)."""
    return simplejson.dumps(resource, ensure_ascii=False, separators=(",", ":"), use_decimal=True,
                            allow_nan=False)


def serialise(resource: dict[str, Any], xml: bool) -> tuple[bytes, str]:
    if not xml:
        return dumps_json(resource).encode(), f"{JSON_TYPE}; charset=utf-8"
    decimals: dict[str, str] = {}
    writable = _xml_writable(resource, decimals, secrets.randbelow(10**8))
    model = get_fhir_model_class(resource["resourceType"]).model_validate(writable)
    xml_body = model.model_dump_xml()   # annotated str by fhir_core, but the UTF-8 encoded bytes
    body = xml_body if isinstance(xml_body, bytes) else xml_body.encode()
    for stand_in, text in decimals.items():   # fhir_core writes a decimal through float: its digits back
        body = body.replace(f'value="{stand_in}"'.encode(), f'value="{text}"'.encode(), 1)
    return body, f"{XML_TYPE}; charset=utf-8"


def _xml_writable(value: Any, decimals: dict[str, str], nonce: int) -> Any:
    """`value` with every string made writable into XML (stored text may quote a client's NUL
    bytes) and every Decimal replaced by a stand-in number of this call (`nonce`: random digits)
    whose float text `decimals` maps to the Decimal's own digits."""
    if isinstance(value, str):
        return xml_text(value)
    if isinstance(value, dict):
        return {k: _xml_writable(v, decimals, nonce) for k, v in value.items()}
    if isinstance(value, list):
        return [_xml_writable(v, decimals, nonce) for v in value]
    if isinstance(value, Decimal):
        stand_in = f"0.9{nonce:08d}{len(decimals):05d}1"   # 15 digits: its float text is itself
        decimals[stand_in] = fhir_decimal_text(value)
        return Decimal(stand_in)
    return value


def respond(resource: dict[str, Any], request: Request, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    body, content_type = serialise(resource, wants_xml(request))
    return Response(body, status=status, content_type=content_type, headers=headers or {})
