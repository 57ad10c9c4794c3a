"""The operations of a TestScript as asbestos' OperationRunner runs them: read, search,
create, transaction, mhd-pdb-transaction, save-to-cache, and the requests asbestos answers
itself (eventPart, ftkLoadFixture). A response becomes a fixture (GenericSetupAction.postExecute)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urljoin

from lxml import etree

from . import fixtures as fixture_service
from . import hapi
from .model import ERROR, FAIL, PASS, Action, Fixture, ScriptError, Unsupported
from .scripts import F, query_params, resource_type_of, value_of

if TYPE_CHECKING:
    from .engine import Engine


def perform(script: Engine, op: etree._Element, action: Action, followed: bool) -> None:
    code = value_of(op.find(F + "type"), "code") or ""
    has = [x for x in ("sourceId", "targetId", "params", "url") if value_of(op, x) is not None]
    if len(has) > 1:
        source = script.fixtures.get(value_of(op, "sourceId") or "")
        if not (source is not None and not source.has_http) and code != "save-to-cache":
            action.error("has multiple of sourceId, targetId, params, url - only one is allowed")
            return
    if op.find(F + "destination") is not None:
        action.error("destination not supported")
        return
    content_type = value_of(op, "contentType")
    if content_type:
        script.fmt = hapi.JSON if "json" in content_type else hapi.XML
    if code in ("read", "search"):
        _read(script, op, action, followed, search=code == "search")
    elif code == "create":
        _create(script, op, action, followed)
    elif code in ("transaction", "mhd-pdb-transaction"):
        _transaction(script, op, action, followed, pdb=code == "mhd-pdb-transaction")
    elif code == "save-to-cache":
        _save_to_cache(script, op, action, followed)
    elif code == "eventPart":
        _internal(script, op, action, followed, "eventPart")
    elif code == "internalFtkRequest":
        headers = _headers(script, op, action)
        request_code = headers.get("x-internalFtkRequestCode")
        if not op.findall(F + "requestHeader") or request_code is None:
            action.error("internalFtkRequest is missing its x-internalFtkRequestCode requestHeader")
            return
        if request_code == "ftkLoadFixture":
            _internal(script, op, action, followed, "ftkLoadFixture")
        elif request_code == "ftkGetEventPart":
            _internal(script, op, action, followed, "eventPart")
        elif request_code == "ftkFunctionCode":
            raise Unsupported("asbestos' internal function service (ftkFunctionCode)")
        else:
            action.error(f"do not understand request code of x-internalFtkRequestCode:{request_code}")
    elif code in ("ftkValidate",):
        raise Unsupported("asbestos' FHIR IG validation service (ftkValidate)")
    else:
        raise Unsupported(f"operation type {code!r}")

def _headers(script: Engine, op: etree._Element, action: Action) -> dict[str, str]:
    out = {}
    for header in op.findall(F + "requestHeader"):
        value = script.update_reference(value_of(header, "value"), action)
        out[value_of(header, "field") or ""] = value or ""
    return out

def _request_headers(script: Engine, op: etree._Element, action: Action) -> dict[str, str]:
    headers = _headers(script, op, action)
    headers.setdefault("accept-charset", "utf-8")
    accept = value_of(op, "accept")
    if accept:
        headers["accept"] = hapi.CONTENT_TYPES[hapi.JSON if "json" in accept else hapi.XML]
    return headers

def _source(script: Engine, op: etree._Element, action: Action) -> Fixture | None:
    source_id = value_of(op, "sourceId")
    if source_id is None:
        action.error(f"has no sourceId on operation {value_of(op.find(F + 'type'), 'code')}")
        return None
    source = script.fixture(source_id)
    if source is None:
        action.error(f"sourceId {source_id} does not exist")
        return None
    if source.resource is None:
        action.error(f"sourceId {source_id}  does not reference a resource")
        return None
    return source

def _to_send(script: Engine, source: Fixture, action: Action) -> dict[str, Any]:
    """GenericSetupAction.updateResourceToSend: the fixture's JSON with its variables
    substituted, parsed again (the fixture itself keeps the substituted form)."""
    text = json.dumps(source.resource, ensure_ascii=False)
    updated = script.update_reference(text, action)
    if updated is None:
        action.error(f"Update to Fixture {source.id} failed.")
        return source.resource  # type: ignore[return-value]
    resource = hapi.read_json(updated).resource
    source.resource, source._view = resource, None
    return resource

def _record(script: Engine, op: etree._Element, action: Action, fixture: Fixture, followed: bool,
            expected_type: str | None = None) -> None:
    """GenericSetupAction.postExecute: the response becomes a fixture (responseId or a new id)."""
    action.log = f"{fixture.method} {fixture.url} -> HTTP {fixture.status}{_diagnostics(fixture)}"
    if not followed:
        if fixture.status is None or not 200 <= fixture.status < 300 or _has_errors(fixture):
            if action.result == PASS:   # asbestos records this failure without a message
                action.result = FAIL
            action.notes.append(f"failed with status {fixture.status} (not followed by an assertion)")
        if fixture.resource is not None and expected_type and fixture.response_type() != expected_type:
            action.error(f"Expected resource of type {expected_type} received {fixture.response_type()} instead")
    script._op_counter += 1
    fid = value_of(op, "responseId") or f"ID{script._op_counter}"
    fixture.id = fid
    script._put(fid, fixture)
    action.response = fixture

def _target(script: Engine, op: etree._Element, action: Action, resource_type: str | None,
            search: bool = False, read: bool = False, internal: str | None = None) -> str | None:
    base = script.env.fhir_base
    url = value_of(op, "url")
    if url is not None and (read or search):
        resolved = script.update_reference(url, action)
        if resolved is None:
            return None
        if resolved.startswith(("http://", "https://")):
            return resolved
        if internal is not None:
            return f"internal:{internal}{resolved}"
        return urljoin(base.rstrip("/") + "/", resolved.lstrip("/"))
    if url is not None:
        return url if url.startswith(("http://", "https://")) else urljoin(base.rstrip("/") + "/", url)
    params = value_of(op, "params")
    if params is not None:
        resource = value_of(op, "resource")
        if not resource:
            action.error("has params but no resource")
            return None
        raw = script.update_reference(params.strip(), action)
        if raw is None:
            action.error(f"Cannot resolve variable references in {params}")
            return None
        raw = raw[1:] if raw.startswith("/") else raw
        if not read and not search:
            return f"{base}/{resource.strip()}/{raw}"
        names = set(query_params("?" + raw.lstrip("?")).keys()) if "=" in raw else set()
        if names <= {"_format"} and not raw.startswith("?"):
            raw = quote_plus(raw)
        if raw.startswith("?") and not search:
            action.error("resulting URL is search (contains ?) - use search operation type instead")
            return None
        return f"{base}/{resource.strip()}{raw if raw.startswith('?') else '/' + raw}"
    if value_of(op, "targetId") is not None:
        target = script.fixtures.get(value_of(op, "targetId") or "")
        if target is None or not target.has_http:
            action.error("targetId does not have id and type")
            return None
        return target.headers.get("location") or target.url
    if read or search:
        action.error("Unable to construct URL for operation")
        return None
    return f"{base}/{resource_type}" if resource_type else base

def _read(script: Engine, op: etree._Element, action: Action, followed: bool, *, search: bool) -> None:
    url = _target(script, op, action, value_of(op, "resource"), search=search, read=not search)
    if url is None:
        if action.result != ERROR:
            action.error("cannot generate targetUrl")
        return
    headers = _request_headers(script, op, action)
    headers.setdefault("accept", hapi.CONTENT_TYPES[script.fmt])
    accept = headers["accept"]
    response = script.env.request("GET", url, headers)
    fixture = Fixture("", None, response.status_code, {k.lower(): v for k, v in response.headers.items()},
                      "GET", url)
    if response.status_code == 200:
        if not response.content.strip():
            if search:
                raise ScriptError("Search must return Bundle - received nothing instead")
        else:
            fmt = hapi.JSON if accept == hapi.CONTENT_TYPES[hapi.JSON] else hapi.XML
            parsed = hapi.read(response.content, fmt)
            fixture.resource, fixture.warnings = parsed.resource, parsed.warnings
            _check_type(fixture, url, search)
    expected = "Bundle" if search else (value_of(op, "resource") or None)
    _record(script, op, action, fixture, followed, expected)

def _check_type(fixture: Fixture, url: str, search: bool) -> None:
    """FhirClient.gobbleGetResponse: what a read or a search must answer."""
    expected = resource_type_of(url)
    returned = fixture.resource.get("resourceType") if fixture.resource else None
    if not expected or returned in (None, "OperationOutcome", "CapabilityStatement", expected) \
            or expected == "metadata":
        return
    if returned == "Bundle":
        entries = fixture.resource.get("entry") or []  # type: ignore[union-attr]
        if entries:
            first = (entries[0] or {}).get("resource") or {}
            if first.get("resourceType") != expected:
                raise ScriptError(f"Search returned bundle containing {first.get('resourceType')} "
                                  f"instead of {expected}")
            if not search:
                fixture.resource = first
        return
    raise ScriptError(f"Read must return {expected} - received {returned} instead")

def _post(script: Engine, url: str, resource: dict[str, Any], fmt: str, headers: dict[str, str]) -> Fixture:
    """FhirClient.writeResource: HAPI's encoding posted; the answer parsed if it is FHIR."""
    headers = dict(headers)
    headers["content-type"] = hapi.CONTENT_TYPES[fmt]
    headers.setdefault("accept", hapi.CONTENT_TYPES[fmt])
    response = script.env.request("POST", url, headers, hapi.write(resource, fmt))
    fixture = Fixture("", None, response.status_code, {k.lower(): v for k, v in response.headers.items()},
                      "POST", url)
    text = response.text
    if text:
        if not text.startswith(("{", "<")):
            raise ScriptError(text[:500])
        try:
            parsed = hapi.read(text, hapi.XML if "xml" in response.headers.get("Content-Type", "") else hapi.JSON)
            fixture.resource, fixture.warnings = parsed.resource, parsed.warnings
        except hapi.FormatError:
            pass
    return fixture

def _transaction(script: Engine, op: etree._Element, action: Action, followed: bool, *, pdb: bool) -> None:
    source = _source(script, op, action)
    if source is None:
        return
    resource = _to_send(script, source, action)
    if pdb:
        resource = copy.deepcopy(resource)
        fixture_service.allocate_ids(resource)
        source.resource, source._view = resource, None
    headers = _request_headers(script, op, action)
    url = _target(script, op, action, None)
    fixture = _post(script, url or script.env.fhir_base, resource, script.fmt, headers)
    if source.warnings:
        action.notes += source.warnings
    _record(script, op, action, fixture, followed)

def _create(script: Engine, op: etree._Element, action: Action, followed: bool) -> None:
    source = _source(script, op, action)
    if source is None:
        return
    resource = _to_send(script, source, action)
    content_type = value_of(op, "contentType") or ""
    fmt = hapi.JSON if "json" in content_type else hapi.XML   # GenericSetupAction.format
    kind = hapi.class_name(resource["resourceType"])
    url = _target(script, op, action, kind)
    fixture = _post(script, url or f"{script.env.fhir_base}/{kind}", resource, fmt,
                         _request_headers(script, op, action))
    _record(script, op, action, fixture, followed, kind)

def _save_to_cache(script: Engine, op: etree._Element, action: Action, followed: bool) -> None:
    source_id = value_of(op, "sourceId")
    name = script.update_reference(value_of(op, "url"), action)
    if source_id is None or name is None:
        action.error("save-to-cache needs a sourceId and a url")
        return
    source = script.fixture(source_id)
    if source is None or source.resource is None or source.resource.get("resourceType") != "Bundle":
        action.error("SaveToCache: source must be a Bundle")
        return
    bundle = source.resource
    entries = bundle.get("entry") or []
    kind = "Bundle"
    if bundle.get("total") == 1 and entries and isinstance((entries[0] or {}).get("resource"), dict):
        kind = entries[0]["resource"].get("resourceType", "Bundle")
    script.env.cache[(kind, name)] = copy.deepcopy(bundle)
    action.notes.append(f"saved as {kind}/{name}")
    _record(script, op, action, Fixture("", source.resource, source.status, source.headers, source.method,
                                     source.url), followed)

def _internal(script: Engine, op: etree._Element, action: Action, followed: bool, service: str) -> None:
    """eventPart / ftkLoadFixture: asbestos answers them itself (see `_serve_internal`)."""
    url = _target(script, op, action, None, search=True, internal=service)
    if url is None:
        return
    relative = url[len(f"internal:{service}"):] if url.startswith("internal:") else url
    status, resource, warnings = _serve_internal(script, service, relative)
    fixture = Fixture("", resource, status, {"content-type": "application/fhir+json"}, "GET",
                      f"(asbestos {service}){relative}", warnings=warnings)
    action.notes += warnings
    _record(script, op, action, fixture, followed, "Bundle")

def _serve_internal(script: Engine, service: str, relative: str) -> tuple[int, dict[str, Any] | None, list[str]]:
    params = query_params(relative)
    if service == "ftkLoadFixture":
        try:
            loaded = fixture_service.load_fixture(script.env.collections, script.ctx.collection, script.ctx.test, params)
        except fixture_service.FixtureError as exc:
            return 400, None, [f"fixture service: {exc}"]
        return 200, loaded.bundle, [f"{loaded.path.name}: {w}" for w in loaded.warnings]
    # eventPart: /<Id>/<test>?module=...&testIndex=..&actionIndex=..&return=responseBody
    test_id = relative.split("?", 1)[0].strip("/")
    record = script.env.records.get(test_id)
    if record is None:
        return 400, None, [f"TestReport was not found for {test_id} (not yet run)"]
    if not record.passed:
        return 400, None, [f"{test_id}: Test did not Pass."]
    module = params.get("module")
    report = record.modules.get(module or "")
    if report is None or params.get("eventPartLocation") != "operation.detail" \
            or params.get("return") != "responseBody":
        raise Unsupported(f"eventPart {relative}")
    try:
        section = report.tests()[int(params.get("testIndex", "0"))]
        answer = section.actions[int(params.get("actionIndex", "0"))].response
    except (IndexError, ValueError):
        return 400, None, ["no such event part"]
    if answer is None or answer.resource is None:
        return 400, None, ["Response body is null"]
    return 200, copy.deepcopy(answer.resource), []


def _has_errors(fixture: Fixture) -> bool:
    """ResourceWrapper.isOk for a POST: an OperationOutcome with error issues is not ok."""
    resource = fixture.resource or {}
    if fixture.method != "POST" or resource.get("resourceType") != "OperationOutcome":
        return False
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in resource.get("issue") or [])


def _diagnostics(fixture: Fixture) -> str:
    """The server's own words on an error answer (OperationOutcome diagnostics), for the log."""
    resource = fixture.resource or {}
    if (fixture.status or 0) < 400 or resource.get("resourceType") != "OperationOutcome":
        return ""
    texts = [i.get("diagnostics", "") for i in resource.get("issue", []) if isinstance(i, dict)]
    return " (" + "; ".join(t for t in texts if t)[:400] + ")" if any(texts) else ""
