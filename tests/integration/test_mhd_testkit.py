"""`partage testkit mhd`: the NIST MHD v4.2 Document Recipient scripts against a running server,
and the same scripts against a server that gives a wrong answer (which must fail)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from partage.conformance.mhd import runner
from tests.conftest import PROJECT_ROOT, corpus_path
from tests.support import LiveServer

FIXTURE_CODES = PROJECT_ROOT / "tests" / "data" / "mhd-fixture-codes.xml"
COMPREHENSIVE = "MHDv420_DocumentRecipient_comprehensive"
MINIMAL = "MHDv420_DocumentRecipient_minimal"


@pytest.fixture(scope="module")
def collections():
    return corpus_path("mhd", "TestCollections")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("mhdkit") / "data"
    with LiveServer(data, mllp=False, extra_args=["--codes", str(FIXTURE_CODES)]) as live:
        yield live


def test_scripts_pass_against_the_server(server, collections):
    out = io.StringIO()
    results = runner.run(collections, f"{server.base_url}/fhir", [COMPREHENSIVE], out=out,
                         tests=["1_Prerequisite_Single_Document_with_Binary", "Missing_TypeCode",
                                "Bad_Patient_Link", "Document_Replace"])
    text = out.getvalue()
    assert [(r.test, r.outcome) for r in results] == [
        ("1_Prerequisite_Single_Document_with_Binary", "pass"), ("Bad_Patient_Link", "pass"),
        ("Document_Replace", "pass"), ("Missing_TypeCode", "pass")], text
    assert "setup  pass     Test_Patients/Alex_Alder" in text
    assert "[1/4] pass" in text and text.rstrip().endswith("4 passed, 0 failed, 0 not run")


def test_cli_exit_status_and_json(server, collections, tmp_path):
    report = tmp_path / "mhd.json"
    done = subprocess.run([sys.executable, "-m", "partage.cli", "testkit", "mhd", "--collections",
                           str(collections.parent), "--fhir", f"{server.base_url}/fhir", "--collection", MINIMAL,
                           "--test", "1_Prerequisite_Single_Document_with_Binary", "--test", "Missing_SourceId",
                           "--json", str(report)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("2 passed, 0 failed, 0 not run")
    assert {r["test"]: r["outcome"] for r in json.loads(report.read_text())} == {
        "1_Prerequisite_Single_Document_with_Binary": "pass", "Missing_SourceId": "pass"}


class _Accepting(BaseHTTPRequestHandler):
    """Forwards to the real server, but answers every refused transaction with a 200
    transaction-response: a Document Recipient that accepts broken Bundles."""

    upstream = ""

    def _forward(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        r = requests.request(method, self.upstream + self.path, data=body, headers=headers, timeout=60)
        status, payload, content_type = r.status_code, r.content, r.headers.get("Content-Type", "")
        if method == "POST" and self.path.rstrip("/") == "/fhir" and status == 400:
            status, content_type = 200, "application/fhir+json"
            payload = json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": [
                {"response": {"status": "201 Created", "location": "DocumentReference/fake"}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:   # noqa: N802 (http.server's naming)
        self._forward("GET")

    def do_POST(self) -> None:   # noqa: N802
        self._forward("POST")

    def log_message(self, *args) -> None:
        pass


def test_a_wrong_answer_fails(server, collections):
    handler = type("Handler", (_Accepting,), {"upstream": server.base_url})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        out = io.StringIO()
        base = f"http://127.0.0.1:{proxy.server_address[1]}/fhir"
        results = runner.run(collections, base, [COMPREHENSIVE], out=out,
                             tests=["1_Prerequisite_Single_Document_with_Binary", "Missing_TypeCode"])
    finally:
        proxy.shutdown()
        proxy.server_close()
    outcomes = {r.test: r for r in results}
    assert outcomes["1_Prerequisite_Single_Document_with_Binary"].outcome == "pass", out.getvalue()
    wrong = outcomes["Missing_TypeCode"]
    assert wrong.outcome == "fail", out.getvalue()
    assert "HTTP 200, expected 400" in wrong.reason, wrong.reason
    assert out.getvalue().rstrip().endswith("1 passed, 1 failed, 0 not run")


def test_nist_domain_refuses_the_comprehensive_fixtures_codes(tmp_path, collections):
    """docs/conformance.md, run 1: the NIST XDS domain has none of the comprehensive fixtures'
    SNOMED CT / formatCode codes, so the valid comprehensive Bundle is refused for them (one
    affinity-domain rule for both doors); the minimal Bundles carry no codes and pass."""
    codes = corpus_path("nist", "environment", "codes.xml")
    with LiveServer(tmp_path / "data", mllp=False, extra_args=["--codes", str(codes)]) as live:
        out = io.StringIO()
        base = f"{live.base_url}/fhir"
        refused = runner.run(collections, base, [COMPREHENSIVE], out=out,
                             tests=["1_Prerequisite_Single_Document_with_Binary"])
        accepted = runner.run(collections, base, [MINIMAL], out=out,
                              tests=["1_Prerequisite_Single_Document_with_Binary"])
    assert [r.outcome for r in refused] == ["fail"] and "HTTP 400, expected 200" in refused[0].reason
    steps = json.dumps(refused[0].as_dict())
    assert "264372000 (2.16.840.1.113883.6.96) is not in the affinity domain" in steps
    assert [r.outcome for r in accepted] == ["pass"], out.getvalue()
