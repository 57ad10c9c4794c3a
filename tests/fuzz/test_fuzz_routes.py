"""Every HTTP route, every method it takes, hostile path values, parameters and bodies, sent
through real sockets to `partage serve`: never a 5xx, always the door's own error shape.

The routes are read from the application's own URL map, so a route added later is fuzzed
without touching this file. Bounded by PARTAGE_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import re
import urllib.parse

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from partage.config import Settings
from partage.server.app import create_app
from partage.services import Services
from tests.fuzz.conftest import FUZZ
from tests.support import LiveServer


def _routes(tmp_path) -> list[tuple[str, str]]:
    services = Services.open(Settings(data_dir=tmp_path, insecure_dev=True))
    try:
        app = create_app(services=services)
        found = []
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((method, rule.rule))
        return sorted(found)
    finally:
        services.close()


HOSTILE_VALUES = [
    "", "0", "-1", "9" * 30, "1e400", "NaN", "²", "%00", "\x00", "'; DROP TABLE x;--", "../../etc/passwd",
    "a" * 5000, "urn:oid:", "|", "^^^&&ISO", "\u202e\ufeff", "2024-13-45", "ge2024-01-01", "<x/>", "{}", "[]",
    "270017512345615^^^&1.2.250.1.213.1.4.10&ISO", "urn:oid:1.2.250.1.213.1.4.10|270017512345615", "pk-" + "9" * 25,
]
PARAMETERS = [
    "_count", "_offset", "_sort", "_format", "_id", "_lastUpdated", "_summary", "_elements", "patient",
    "patient.identifier", "subject", "identifier", "status", "date", "period", "type", "category", "code",
    "clinical-status", "format", "profile", "filename", "q", "since", "related", "setting", "facility",
    "event", "security-label", "author.given", "author.family", "creation", "entity", "agent", "action",
]
BODIES = [
    b"", b"\x00\xff" * 10, b"{", b"[" * 5000, b'{"resourceType":"Patient","id":' + b"9" * 5000 + b"}",
    b'{"resourceType":"Bundle","type":"transaction","entry":' + b"[{}," * 3000 + b"{}]}",
    b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><x>&a;</x>", b"<a>" * 300 + b"</a>" * 300,
    b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", b"resourceType=Patient&_count=" + b"9" * 40,
]
CONTENT_TYPES = ["application/fhir+json", "application/json", "application/fhir+xml", "application/soap+xml",
                 "multipart/related; boundary=b", "multipart/form-data; boundary=b",
                 "application/x-www-form-urlencoded", "application/json-patch+json", "text/plain", ""]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    routes = _routes(tmp_path_factory.mktemp("routes"))
    with LiveServer(tmp_path_factory.mktemp("fuzz-routes") / "data", env={"PARTAGE_TEXT_INDEXER": "0"}) as live:
        yield live, routes


def _fill(rule: str, values: list[str]) -> str:
    parts = iter(values)
    return re.sub(r"<[^>]+>", lambda _m: urllib.parse.quote(next(parts, "x"), safe=""), rule)


@given(data=st.data())
@FUZZ
def test_no_route_answers_5xx(target, data):
    server, routes = target
    method, rule = data.draw(st.sampled_from(routes), label="route")
    holes = rule.count("<")
    path = _fill(rule, [data.draw(st.sampled_from(HOSTILE_VALUES) | st.text(max_size=40)) for _ in range(holes)])
    params = data.draw(st.lists(st.tuples(st.sampled_from(PARAMETERS) | st.text(min_size=1, max_size=10),
                                          st.sampled_from(HOSTILE_VALUES) | st.text(max_size=40)), max_size=4))
    headers = {"Accept": data.draw(st.sampled_from(["", "application/fhir+xml", "text/html", "*/*", "x/y"]))}
    body = None
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        body = data.draw(st.sampled_from(BODIES) | st.binary(max_size=200))
        headers["Content-Type"] = data.draw(st.sampled_from(CONTENT_TYPES))
    r = requests.request(method, server.base_url + path, params=params, data=body, headers=headers, timeout=60)
    assert r.status_code < 500, (method, path, params, r.status_code, r.text[:300])
    if path.startswith("/fhir") and r.status_code >= 400:
        assert "OperationOutcome" in r.text, (method, path, r.text[:300])
    if path.startswith("/xds/") and r.status_code >= 400:
        assert "Fault" in r.text, (method, path, r.text[:300])
    assert "Traceback" not in r.text


def test_the_route_list_is_not_empty(target):
    _, routes = target
    assert len(routes) > 20 and ("POST", "/xds/repository") in routes and ("GET", "/healthz") in routes
