"""`partage testkit mhd`: the NIST MHD v4.2 Document Recipient collections against a running
`partage serve` on the test kit's own affinity domain (`../shared/corpus/mhd/environment/codes.xml`),
in both formats asbestos sends; a server answering a refused Bundle with 200 fails; the same
run against a server with authentication on, with and without a bearer token."""

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
from tests.conftest import corpus_path
from tests.support import LiveServer

COMPREHENSIVE = "MHDv420_DocumentRecipient_comprehensive"
MINIMAL = "MHDv420_DocumentRecipient_minimal"
PREREQUISITE = "1_Prerequisite_Single_Document_with_Binary"


@pytest.fixture(scope="module")
def collections():
    return corpus_path("mhd", "TestCollections")


@pytest.fixture(scope="module")
def kit_codes():
    return corpus_path("mhd", "environment", "codes.xml")


@pytest.fixture(scope="module")
def server(tmp_path_factory, kit_codes):
    data = tmp_path_factory.mktemp("mhdkit") / "data"
    with LiveServer(data, mllp=False, extra_args=["--codes", str(kit_codes)]) as live:
        yield live


def test_every_held_in_test_passes_on_the_kits_own_codes(server, collections, tmp_path):
    """The documented command (docs/conformance.md): 35 of 35, through the CLI."""
    report = tmp_path / "mhd.json"
    done = subprocess.run([sys.executable, "-m", "partage.cli", "testkit", "mhd", "--collections",
                           str(collections.parent), "--fhir", f"{server.base_url}/fhir", "--json", str(report)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("35 passed, 0 failed, 0 not run"), done.stdout[-4000:]
    results = json.loads(report.read_text())
    assert len(results) == 35 and {r["outcome"] for r in results} == {"pass"}
    # the kit's fixtures carry a Coding with two <code>: HAPI keeps the first, and the run says so
    assert "Multiple repetitions of non-repeatable element 'code'" in done.stdout
    prerequisite = next(r for r in results if r["collection"] == COMPREHENSIVE and r["test"] == PREREQUISITE)
    assert any("practiceSetting.coding[0].code" in w for w in prerequisite["warnings"])


def test_xml_as_asbestos_sends_it(server, collections):
    out = io.StringIO()
    results = runner.run(collections, f"{server.base_url}/fhir", [COMPREHENSIVE], out=out, fmt="xml",
                         tests=[PREREQUISITE, "Missing_TypeCode", "Bad_SourcePatientInfo_Link", "Document_Replace"])
    assert {r.test: r.outcome for r in results} == {
        PREREQUISITE: "pass", "Missing_TypeCode": "pass", "Bad_SourcePatientInfo_Link": "pass",
        "Document_Replace": "pass"}, out.getvalue()


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

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
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
                             tests=[PREREQUISITE, "Missing_TypeCode"])
    finally:
        proxy.shutdown()
        proxy.server_close()
    outcomes = {r.test: r for r in results}
    assert outcomes[PREREQUISITE].outcome == "pass", out.getvalue()
    wrong = outcomes["Missing_TypeCode"]
    assert wrong.outcome == "fail", out.getvalue()
    assert "expected is bad" in wrong.reason and "found is okay" in wrong.reason, wrong.reason
    assert out.getvalue().rstrip().endswith("1 passed, 1 failed, 0 not run")


def test_nist_xds_domain_refuses_the_comprehensive_fixtures_codes(tmp_path, collections):
    """The XDS test kit's domain has none of the comprehensive fixtures' SNOMED CT codes: the
    valid comprehensive Bundle is refused for them (one affinity-domain rule for both doors)."""
    codes = corpus_path("nist", "environment", "codes.xml")
    with LiveServer(tmp_path / "data", mllp=False, extra_args=["--codes", str(codes)]) as live:
        out = io.StringIO()
        refused = runner.run(collections, f"{live.base_url}/fhir", [COMPREHENSIVE], out=out, tests=[PREREQUISITE])
    assert [r.outcome for r in refused] == ["fail"]
    assert "found is bad" in refused[0].reason
    assert "264372000 (2.16.840.1.113883.6.96) is not in the affinity domain" in json.dumps(refused[0].as_dict())


def test_with_authentication_on(tmp_path, collections, kit_codes):
    """Against a server without --insecure-dev: no token, every request is refused (401); with
    a token, the server knows the actor: the connector's Patient searches and creations pass,
    and its submissions get the access policy's answer (the kit's Bundles name no author, and
    a connector submits only its own structure's documents)."""
    creds = tmp_path / "creds"
    subprocess.run([sys.executable, "-m", "partage.cli", "dev-credentials", "--out", str(creds)],
                   check=True, capture_output=True, timeout=120)
    with LiveServer(tmp_path / "data", mllp=False, insecure_dev=False,
                    extra_args=["--codes", str(kit_codes), "--trust", str(creds / "ca.pem")]) as live:
        base = f"{live.base_url}/fhir"
        anonymous = io.StringIO()
        runner.run(collections, base, [MINIMAL], out=anonymous, tests=[PREREQUISITE])
        done = subprocess.run([sys.executable, "-m", "partage.cli", "testkit", "mhd", "--collections",
                               str(collections.parent), "--fhir", base, "--collection", MINIMAL, "--test",
                               PREREQUISITE, "--token", str(creds / "connector.jwt")],
                              capture_output=True, text=True, timeout=300)
    assert anonymous.getvalue().count("-> HTTP 401") >= 5, anonymous.getvalue()
    assert "setup  pass" not in anonymous.getvalue()
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("setup  pass") == 5, done.stdout
    assert "HTTP 401" not in done.stdout
    # authenticated, then refused by the access policy (403 with its reason), never unauthenticated
    assert "found is forbidden" in done.stdout and "HTTP 403 (" in done.stdout, done.stdout
