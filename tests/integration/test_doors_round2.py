"""Hardened doors, second round (docs/robustness.md, docs/deployment.md): failing document
stores, header limits, hostile inputs the first probes did not send.

A document store that refuses a write (a directory full, read-only or broken; an S3 server
answering 5xx) is a dependency that is down, like the database: 503 with Retry-After in the
door's shape (SOAP Fault, OperationOutcome), never an "internal error", and nothing
registered: the same submission succeeds once the store is back.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.mtom import build_multipart
from partage.ebxml.soap import build_envelope
from partage.hl7.mllp import MllpClient
from partage.notify.mail import Mail, SmtpFailure, message, send
from tests import factories as F
from tests.doorprobe import connect, head, read_answer
from tests.integration.test_mhd import provide_bundle, text_doc
from tests.integration.test_patient_feed import adt
from tests.support import LiveServer, free_port
from tests.xdsclient import provide_and_register_body

SOAP = "application/soap+xml"
FHIR_JSON = "application/fhir+json"
NIR = "urn:oid:1.2.250.1.213.1.4.10"
ENV = {"PARTAGE_TEXT_INDEXER": "0", "PARTAGE_HEADER_TIMEOUT": "3"}
ITI18 = open("examples/iti18-find-documents.xml", "rb").read()
ITI41 = open("examples/iti41-provide.xml", "rb").read()
CDA = open("examples/cda-lettre-de-liaison.xml", "rb").read()


def _fed_patient(server) -> F.CX:
    pid = F.patient_id()
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        assert "MSA|AA" in mllp.send(adt("A01", pid))
    return pid


EXAMPLE_PATIENT = "270017512345615"


def _fed_example_patient(server) -> None:
    """The patient of examples/iti41-provide.xml (its CDA names the same one)."""
    message = open("examples/adt-a01.hl7", "rb").read().decode().replace("\r\n", "\r").replace("\n", "\r")
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        assert "MSA|AA" in mllp.send(message)


def _assert_503_soap(r: requests.Response, code: str) -> None:
    """ITI TF-3 Table 4.2.4.1-2: the repository's store failing is XDSRepositoryBusy, out of
    space XDSRepositoryOutOfResources; as every outage of this server, a 503 Fault."""
    assert r.status_code == 503, (r.status_code, r.text[:600])
    assert int(r.headers["Retry-After"]) > 0
    assert b"soap:Fault" in r.content and b"internal error" not in r.content, r.text[:600]
    assert f"xdsb:{code}".encode() in r.content, r.text[:800]


def _assert_503_fhir(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text[:600])
    assert int(r.headers["Retry-After"]) > 0
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient", outcome


def _documents_of(server, value: str) -> list:
    r = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=10,
                     params={"patient.identifier": f"{NIR}|{value}", "status": "current"})
    assert r.status_code == 200, r.text[:300]
    return r.json().get("entry", [])


# --------------------------------------------------------------------------- header limits
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("round2") / "data", mllp=False, env=ENV) as live:
        yield live


@pytest.mark.parametrize("path,shape", [("/healthz", "json"), ("/fhir/Patient", "fhir"), ("/xds/registry", "soap")])
def test_request_headers_over_32_kb_are_refused_however_they_arrive(server, path, shape):
    """docs/robustness.md: request line + headers, 32 KB, refused. The server's parser counted
    only headers still incomplete: 40 KB of headers arriving in one read were served."""
    method = "POST" if shape == "soap" else "GET"
    extra = {"Content-Type": SOAP, "Content-Length": str(len(ITI18))} if shape == "soap" else {}
    for headers in ({"X-Big": "a" * 40_000}, {f"X-H{i}": "abcdefgh" for i in range(2500)}):
        with connect(server.port) as sock:
            sock.sendall(head(method, path, {**extra, **headers}) + (ITI18 if shape == "soap" else b""))
            answer = read_answer(sock, timeout=10)
        assert answer is not None and answer.status in (400, 431), (path, answer and answer.status)
        if shape == "soap":
            assert b"soap:Fault" in answer.body
        elif shape == "fhir":
            assert answer.content_type.startswith(FHIR_JSON) and b"OperationOutcome" in answer.body
        else:
            assert b'"status": 431' in answer.body or b'"status": 400' in answer.body
    # a bearer token of a few KB, as a JWT is, still goes through
    with connect(server.port) as sock:
        sock.sendall(head("GET", "/healthz", {"Authorization": "Bearer " + "a" * 12_000}))
        answer = read_answer(sock, timeout=10)
    assert answer is not None and answer.status == 200


# --------------------------------------------------------------------------- the blob directory
def test_blob_directory_refusing_writes_is_503_and_registers_nothing(tmp_path):
    """The data directory's blob area cannot take a file (its temporary directory replaced by a
    file: what a read-only or broken mount gives a root process too): ITI-41 and ITI-65 are
    503 + Retry-After, not an 'internal error'; once repaired the very same submissions succeed
    (nothing was registered, no uniqueId claimed) and no temporary file is left behind."""
    with LiveServer(tmp_path / "data", env=ENV) as server:
        pid = _fed_patient(server)
        _fed_example_patient(server)
        iti41 = ITI41
        doc = text_doc(pid, "d1")
        bundle = provide_bundle(doc, b"bonjour", pid.id)
        tmp = tmp_path / "data" / "blobs" / "tmp"
        assert tmp.is_dir()
        shutil.rmtree(tmp)
        tmp.write_bytes(b"")   # not a directory any more
        try:
            _assert_503_soap(requests.post(f"{server.base_url}/xds/repository", data=iti41, timeout=30,
                                           headers={"Content-Type": SOAP}), "XDSRepositoryBusy")
            _assert_503_fhir(requests.post(f"{server.base_url}/fhir", json=bundle, timeout=30,
                                           headers={"Accept": FHIR_JSON}))
            assert _documents_of(server, pid.id) == [] and _documents_of(server, EXAMPLE_PATIENT) == []
        finally:
            tmp.unlink()
            tmp.mkdir()
        r = requests.post(f"{server.base_url}/xds/repository", data=iti41, timeout=30, headers={"Content-Type": SOAP})
        assert r.status_code == 200 and b"ResponseStatusType:Success" in r.content, r.text[:600]
        r = requests.post(f"{server.base_url}/fhir", json=bundle, timeout=30, headers={"Accept": FHIR_JSON})
        assert r.status_code == 200, r.text[:600]
        assert len(_documents_of(server, pid.id)) == 1 and len(_documents_of(server, EXAMPLE_PATIENT)) == 1
        assert os.listdir(tmp) == []


def test_a_full_disk_is_503_out_of_resources_on_both_doors(tmp_path, tiny_disk):
    """ITI-41 (MTOM) and ITI-65 of a document bigger than the space left: XDSRepositoryOutOfResources
    in a 503 Fault, a 503 'transient' OperationOutcome (was: an internal error, a FHIR 500);
    nothing registered, no temporary file left; a small document goes in afterwards."""
    with LiveServer(tmp_path / "data", env={**ENV, "PARTAGE_BLOB_URL": str(tiny_disk)}) as server:
        pid = _fed_patient(server)
        big = os.urandom(1024 * 1024)
        body, attachments = provide_and_register_body(F.submission(pid, contents=False), {"doc1": big})
        envelope = build_envelope(C.ACTION_PNR, body, to=f"{server.base_url}/xds/repository")
        content_type, chunks, _ = build_multipart(envelope, attachments, action=C.ACTION_PNR)
        _assert_503_soap(requests.post(f"{server.base_url}/xds/repository", data=b"".join(chunks), timeout=30,
                                       headers={"Content-Type": content_type}), "XDSRepositoryOutOfResources")
        _assert_503_fhir(requests.post(f"{server.base_url}/fhir", json=provide_bundle(text_doc(pid, "d1"), big,
                                                                                        pid.id),
                                       timeout=30, headers={"Accept": FHIR_JSON}))
        assert _documents_of(server, pid.id) == []
        assert os.listdir(tiny_disk / "tmp") == []
        r = requests.post(f"{server.base_url}/fhir", json=provide_bundle(text_doc(pid, "d1"), b"petit", pid.id),
                          timeout=30, headers={"Accept": FHIR_JSON})
        assert r.status_code == 200, r.text[:600]


# --------------------------------------------------------------------------- an S3 store failing
class _FlakyS3(BaseHTTPRequestHandler):
    """A minimal S3 endpoint: lists an empty bucket (so the server starts and /healthz is ok),
    stores and serves objects while `failing` is clear, and answers every object request
    503 SlowDown while it is set, as S3 does under pressure."""

    objects: dict[str, bytes] = {}
    failing = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", content_type: str = "application/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Last-Modified", "Fri, 04 Dec 2026 10:00:00 GMT")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _key(self) -> str:
        return self.path.split("?", 1)[0]

    def _slow_down(self) -> bool:
        if self.failing.is_set():
            self._answer(503, b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                              b'<Message>Please reduce your request rate.</Message></Error>')
            return True
        return False

    def do_GET(self) -> None:
        if self._key().rstrip("/").count("/") <= 1:   # the bucket: a listing
            self._answer(200, b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
                              b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>partage</Name><KeyCount>0'
                              b'</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>')
        elif not self._slow_down():
            if self._key() in self.objects:
                self._answer(200, self.objects[self._key()], "application/octet-stream")
            else:
                self._answer(404, b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>")

    def do_HEAD(self) -> None:
        if not self._slow_down():
            self._answer(200 if self._key() in self.objects else 404,
                         self.objects.get(self._key(), b""), "application/octet-stream")

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._slow_down():
            self.objects[self._key()] = body
            self._answer(200)

    do_POST = do_PUT


@pytest.fixture
def flaky_s3():
    _FlakyS3.objects.clear()
    _FlakyS3.failing.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _FlakyS3)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _retrieve_body(unique_id: str) -> bytes:
    return (open("examples/iti43-retrieve.xml", "rb").read()
            .replace(b"1.2.250.1.999.1.2024.1", unique_id.encode()))


def test_s3_answering_server_errors_is_503_not_an_internal_error(tmp_path, flaky_s3):
    """S3 answering 5xx (SlowDown, InternalError; boto3's retries spent) is the store down, as
    a refused connection already was: writes and reads are 503 with Retry-After in the door's
    shape (ITI-41 and ITI-43: XDSRepositoryBusy), not an 'internal error' or a FHIR 500."""
    env = {**ENV, "PARTAGE_BLOB_URL": "s3://partage/blobs", "PARTAGE_S3_ENDPOINT_URL": flaky_s3,
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "1"}
    with LiveServer(tmp_path / "data", env=env) as server:
        pid = _fed_patient(server)
        _fed_example_patient(server)
        doc = text_doc(pid, "d1")
        r = requests.post(f"{server.base_url}/fhir", json=provide_bundle(doc, b"bonjour", pid.id), timeout=30,
                          headers={"Accept": FHIR_JSON})
        assert r.status_code == 200, r.text[:600]
        [entry] = _documents_of(server, pid.id)
        binary = entry["resource"]["content"][0]["attachment"]["url"]
        assert requests.get(binary, timeout=10).content == b"bonjour"

        _FlakyS3.failing.set()
        _assert_503_soap(requests.post(f"{server.base_url}/xds/repository", data=ITI41, timeout=30,
                                       headers={"Content-Type": SOAP}), "XDSRepositoryBusy")
        _assert_503_fhir(requests.post(f"{server.base_url}/fhir", json=provide_bundle(text_doc(pid, "d2"), b"x",
                                                                                        pid.id),
                                       timeout=30, headers={"Accept": FHIR_JSON}))
        _assert_503_fhir(requests.get(binary, timeout=10))
        _assert_503_soap(requests.post(f"{server.base_url}/xds/repository", data=_retrieve_body(doc.unique_id),
                                       timeout=30, headers={"Content-Type": SOAP}), "XDSRepositoryBusy")
        assert len(_documents_of(server, pid.id)) == 1 and _documents_of(server, EXAMPLE_PATIENT) == []

        _FlakyS3.failing.clear()
        r = requests.post(f"{server.base_url}/xds/repository", data=ITI41, timeout=30, headers={"Content-Type": SOAP})
        assert r.status_code == 200 and b"ResponseStatusType:Success" in r.content, r.text[:600]
        assert requests.get(binary, timeout=10).content == b"bonjour"


# --------------------------------------------------------------------------- a stalling SMTP peer
def _trickling_smtp(stop: threading.Event) -> int:
    """An SMTP server that accepts and then sends an endless multi-line greeting, one byte every
    0.3 s: each read gets a byte well within any per-read timeout, so only a deadline on the
    whole exchange ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conns.append(conn)
            except TimeoutError:
                pass
            for conn in conns:
                try:
                    conn.send(b"2")
                except OSError:
                    pass
            time.sleep(0.1)
        for conn in conns:
            conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_smtp_peer_that_trickles_its_answer_is_cut_at_the_notification_deadline():
    """docs/notifications.md: `notify_timeout` is what one delivery (HTTP POST, SMTP exchange)
    may take. The rest-hook has a deadline on the whole exchange; an SMTP server sending its
    greeting a byte at a time held the sender thread (and with it the outbox's main loop) for
    as long as it liked."""
    stop = threading.Event()
    port = _trickling_smtp(stop)
    settings = Settings(smtp_host="127.0.0.1", smtp_port=port, notify_timeout=1.0)
    msg = message(settings, "patient@example.org", Mail("Sujet", "Corps", []), "n1")
    outcome: dict[str, object] = {}

    def attempt() -> None:
        started = time.monotonic()
        try:
            send(settings, msg)
            outcome["result"] = "sent"
        except SmtpFailure as exc:
            outcome["result"] = exc
        outcome["took"] = time.monotonic() - started

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(8)
    stop.set()
    try:
        assert not worker.is_alive(), "the SMTP exchange outlived its 1 s deadline by more than 7 s"
        assert isinstance(outcome["result"], SmtpFailure) and not outcome["result"].permanent
        assert outcome["took"] < 4
    finally:
        worker.join(10)
