"""A fake MHD Document Recipient / Responder that can be told to answer wrongly.

It exists to prove that the MHD test-kit runner notices a wrong server. In `correct` mode it
accepts every ITI-65 transaction (it validates nothing: a Recipient that accepts broken
Bundles, which the kit's negative tests must catch), remembers DocumentReferences, Lists and
Patients, and answers searches on them. The other modes make one mistake each:

- `no_location`: the transaction-response entries carry no `location`;
- `html_errors`: every transaction is refused with a 400 HTML page (no OperationOutcome);
- `empty_search`: every search answers an empty searchset.

It reads FHIR JSON or XML (XML through the fhir.resources models, not the runner's reader)
and answers JSON.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fhir.resources.R4B import get_fhir_model_class
from lxml import etree
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

MODES = ("correct", "no_location", "html_errors", "empty_search")
JSON_TYPE = "application/fhir+json"


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class FakeRecipient:
    def __init__(self, mode: str = "correct") -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []       # every transaction Bundle, as sent
        self.headers: list[dict[str, str]] = []        # the headers of every request
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self.base = f"http://127.0.0.1:{self._server.server_port}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeRecipient:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- HTTP -------------------------------------------------------------------------------------
    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.headers.append(dict(request.headers))
        path = request.path.rstrip("/")
        try:
            body = _read(request) if request.method == "POST" else {}
        except (ValueError, etree.XMLSyntaxError) as exc:
            return _outcome(400, f"unreadable: {exc}")(environ, start_response)
        if request.method == "POST" and path == "/fhir":
            response = self._transaction(body)
        elif request.method == "POST" and path == "/fhir/Patient":
            response = self._create_patient(body)
        elif request.method == "GET" and path.count("/") == 2:
            response = self._search(path.split("/")[2], parse_qs(urlsplit(request.url).query))
        elif request.method == "GET" and path.count("/") == 3:
            _, _, kind, rid = path.split("/")
            resource = self.resources.get((kind, rid))
            response = _json(resource, 200) if resource else _outcome(404, "not found")
        else:
            response = _outcome(404, "no such interaction")
        return response(environ, start_response)

    def _store(self, resource: dict[str, Any]) -> str:
        rid = uuid.uuid4().hex
        resource = {**resource, "id": rid}
        self.resources[(resource["resourceType"], rid)] = resource
        return rid

    def _transaction(self, bundle: dict[str, Any]) -> Response:
        self.received.append(bundle)
        if self.mode == "html_errors":
            return Response("<html><body>Bad Request</body></html>", 400, content_type="text/html")
        full_urls = {e.get("fullUrl"): e for e in bundle.get("entry", [])}
        entries = []
        ids: dict[str, str] = {}
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") or {}
            ids[entry.get("fullUrl", "")] = self._store(resource)
        for entry in bundle.get("entry", []):
            kind = (entry.get("resource") or {}).get("resourceType", "")
            rid = ids[entry.get("fullUrl", "")]
            stored = self.resources[(kind, rid)]
            _resolve_references(stored, full_urls, ids, self.base)
            response: dict[str, Any] = {"status": "201 Created", "etag": 'W/"1"',
                                        "lastModified": "2026-01-01T00:00:00Z"}
            if self.mode != "no_location":
                response["location"] = f"{self.base}/{kind}/{rid}"
            entries.append({"response": response})
        return _json({"resourceType": "Bundle", "type": "transaction-response", "entry": entries}, 200)

    def _create_patient(self, patient: dict[str, Any]) -> Response:
        rid = self._store(patient)
        response = _json(self.resources[("Patient", rid)], 201)
        response.headers["Location"] = f"{self.base}/Patient/{rid}"
        return response

    def _search(self, kind: str, params: dict[str, list[str]]) -> Response:
        found = [r for (k, _), r in self.resources.items() if k == kind]
        if self.mode == "empty_search":
            found = []
        for name, values in params.items():
            found = [r for r in found if _matches(r, name, values[0], self.resources)]
        return _json({"resourceType": "Bundle", "type": "searchset", "total": len(found),
                      "entry": [{"fullUrl": f"{self.base}/{kind}/{r['id']}", "resource": r} for r in found]}, 200)


def _read(request: Request) -> dict[str, Any]:
    data = request.get_data()
    if "xml" in (request.mimetype or ""):
        root = etree.fromstring(data)
        model = get_fhir_model_class(etree.QName(root).localname).model_validate_xml(data)
        return model.model_dump(mode="json", exclude_none=True)
    return json.loads(data)


def _json(resource: Any, status: int) -> Response:
    return Response(json.dumps(resource), status, content_type=JSON_TYPE)


def _outcome(status: int, text: str) -> Response:
    return _json({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": "processing", "diagnostics": text}]}, status)


def _resolve_references(node: Any, full_urls: dict[str, Any], ids: dict[str, str], base: str) -> None:
    """urn:uuid references to other entries become the stored resources' URLs."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in ids:
            kind = (full_urls[ref].get("resource") or {}).get("resourceType", "")
            node["reference"] = f"{base}/{kind}/{ids[ref]}"
        for value in node.values():
            _resolve_references(value, full_urls, ids, base)
    elif isinstance(node, list):
        for item in node:
            _resolve_references(item, full_urls, ids, base)


def _identifier_matches(identifiers: list[dict[str, Any]], value: str) -> bool:
    system, _, code = value.rpartition("|")
    return any(i.get("value") == code and (not system or i.get("system") == system) for i in identifiers)


def _matches(resource: dict[str, Any], name: str, value: str, store: dict[tuple[str, str], Any]) -> bool:
    if name == "identifier":
        identifiers = list(resource.get("identifier") or [])
        if resource.get("masterIdentifier"):
            identifiers.append(resource["masterIdentifier"])
        return _identifier_matches(identifiers, value)
    if name == "status":
        return resource.get("status") == value
    if name in ("patient.identifier", "subject.identifier"):
        ref = (resource.get("subject") or {}).get("reference", "")
        patient = store.get(("Patient", ref.rsplit("/", 1)[-1]))
        return patient is not None and _identifier_matches(patient.get("identifier") or [], value)
    if name == "given":
        return any(value in n.get("given", []) for n in resource.get("name", []))
    if name == "family":
        return any(n.get("family") == value for n in resource.get("name", []))
    if name == "birthdate":
        return resource.get("birthDate") == value
    if name == "code":
        return any(c.get("code") == value.rpartition("|")[2]
                   for c in (resource.get("code") or {}).get("coding", []))
    return True
