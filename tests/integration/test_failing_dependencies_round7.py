"""Failing dependencies, round 7 (docs/robustness.md "Failing dependencies: fail closed"):
what the earlier rounds (test_doors_failures, test_doors_round2, test_statement_deadline_round3)
did not break, through a served instance and real clients.

- An S3 store that fails while a document's body is being read (the connection cut after
  part of the object, or the body stalling past PARTAGE_S3_TIMEOUT) is the store failing,
  as a 5xx or a refused connection already is: 503 with Retry-After, XDSRepositoryBusy on
  ITI-43 (ITI TF-3 Table 4.2.4.1-2), a 'transient' OperationOutcome on ITI-68; not an
  "internal error" (a FHIR 500) nor a permanent XDSRepositoryError. Once the store answers
  again, the same document is served byte for byte.
- The audit store refusing the record of an HL7 message after its proof passed (rule 4:
  "if the audit cannot be written, nothing is served"): the ACK goes out only once its
  record is written, else AE with an ERR; the sender's retransmission is then answered as
  the original (nothing processed twice, nothing lost) and audited.
- S3 answering a write 400 RequestTimeout (its socket stalled; botocore's own "transient"):
  the store failing, not the request refused: 503 busy on ITI-41 and ITI-65, nothing registered.
- The document feed (ANS CISIS_CDA_HL7_V2) during an outage: AR ("circumstantial, may be
  resent"), not AE ("syntax error"), so that the sender sends the document again.
"""

from __future__ import annotations

import sqlite3
import threading
from http.server import ThreadingHTTPServer

import pytest
import requests

from partage.ebxml import constants as C
from partage.ebxml.mtom import build_multipart
from partage.ebxml.soap import build_envelope
from partage.hl7.mllp import MllpClient
from tests import factories as F
from tests.integration.test_document_feed import adt_a28
from tests.integration.test_document_feed import header as feed_header
from tests.integration.test_document_feed import message as feed_message
from tests.integration.test_doors_round2 import (
    ENV,
    FHIR_JSON,
    SOAP,
    _assert_503_fhir,
    _assert_503_soap,
    _documents_of,
    _fed_patient,
    _FlakyS3,
    _retrieve_body,
)
from tests.integration.test_mhd import provide_bundle, text_doc
from tests.integration.test_patient_feed import adt
from tests.support import LiveServer, free_port
from tests.xdsclient import provide_and_register_body

NIR = "urn:oid:1.2.250.1.213.1.4.10"
CONTENT = b"compte rendu " * 400   # 5 KB: read to its end before an answer starts (open_checked)


class _BrokenBodyS3(_FlakyS3):
    """The S3 endpoint of test_doors_round2, whose object reads can break after the headers:
    `mode` "cut" declares the whole object's length, sends half of it and closes the connection
    (a store node dying mid-answer); "stall" declares it and sends nothing more until released
    (a store frozen mid-answer)."""

    mode = ""
    release = threading.Event()

    def do_GET(self) -> None:
        key = self._key()
        if not self.mode or key not in self.objects:
            super().do_GET()
            return
        body = self.objects[key]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Last-Modified", "Fri, 04 Dec 2026 10:00:00 GMT")
        self.end_headers()
        if self.mode == "cut":
            self.wfile.write(body[: len(body) // 2])
        else:
            self.wfile.flush()
            self.release.wait(10)
        self.close_connection = True


@pytest.fixture
def broken_body_s3():
    _BrokenBodyS3.objects = {}
    _BrokenBodyS3.mode = ""
    _BrokenBodyS3.failing = threading.Event()
    _BrokenBodyS3.release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _BrokenBodyS3)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        _BrokenBodyS3.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_s3_failing_while_a_document_is_read_is_503_busy_then_served(tmp_path, broken_body_s3):
    """Before: the transport failure raised while reading the body was not the store's outage
    (cut: botocore's ResponseStreamingError is no OSError, an "internal error" on ITI-43 and a
    FHIR 500; stalled: its read timeout is an OSError, taken for a corrupt blob, XDSRepositoryError
    and a FHIR 500), whereas the same failure before the headers was a 503 XDSRepositoryBusy."""
    env = {**ENV, "PARTAGE_BLOB_URL": "s3://partage/blobs", "PARTAGE_S3_ENDPOINT_URL": broken_body_s3,
           "PARTAGE_S3_TIMEOUT": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    with LiveServer(tmp_path / "data", env=env) as server:
        pid = _fed_patient(server)
        doc = text_doc(pid, "d1")
        r = requests.post(f"{server.base_url}/fhir", json=provide_bundle(doc, CONTENT, pid.id), timeout=30,
                          headers={"Accept": FHIR_JSON})
        assert r.status_code == 200, r.text[:600]
        [entry] = _documents_of(server, pid.id)
        binary = entry["resource"]["content"][0]["attachment"]["url"]

        for mode in ("cut", "stall"):
            _BrokenBodyS3.mode = mode
            _BrokenBodyS3.release.clear()
            try:
                retrieve = requests.post(f"{server.base_url}/xds/repository", data=_retrieve_body(doc.unique_id),
                                         timeout=30, headers={"Content-Type": SOAP})
                _assert_503_soap(retrieve, "XDSRepositoryBusy")
                read = requests.get(binary, timeout=30)
                _assert_503_fhir(read)
                for answer in (retrieve, read):
                    assert b"Traceback" not in answer.content and CONTENT[:40] not in answer.content, mode
            finally:
                _BrokenBodyS3.mode = ""
                _BrokenBodyS3.release.set()

            # the store answers again: the same document, byte for byte, on both doors
            assert requests.get(binary, timeout=30).content == CONTENT
            r = requests.post(f"{server.base_url}/xds/repository", data=_retrieve_body(doc.unique_id), timeout=30,
                              headers={"Content-Type": SOAP})
            assert r.status_code == 200 and b"ResponseStatusType:Success" in r.content, r.text[:600]
            assert CONTENT in r.content
        assert "Traceback" not in server.log()


def _audit_rows(db_path, control: str) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT count(*) FROM audit_events WHERE request LIKE ?",
                          (f"%{control}%",)).fetchone()[0]


def test_hl7_ack_waits_for_its_audit_record(tmp_path):
    """The audit store accepts the proof (the rolled-back insert of the record's first form)
    and refuses the record itself (a trigger on the rows that are not the proof: what the store
    going away, or filling up, between the two does). Before: the feed logged the refusal and
    sent its AA anyway ("the ACK stands"), the message processed and nothing in the trail."""
    with LiveServer(tmp_path / "data", env=ENV) as server:
        db_path = tmp_path / "data" / "registry.sqlite3"
        pid = F.patient_id()
        control = "R7AUDIT0001"
        message = adt("A01", pid, control=control)
        with sqlite3.connect(db_path) as db:
            db.execute("CREATE TRIGGER audit_refuses_records BEFORE INSERT ON audit_events "
                       "WHEN NEW.detail IS NOT 'probe' BEGIN SELECT RAISE(ABORT, 'audit store full'); END")
        try:
            with MllpClient("127.0.0.1", server.mllp_port, timeout=30) as mllp:
                refused = mllp.send(message)
        finally:
            with sqlite3.connect(db_path) as db:
                db.execute("DROP TRIGGER audit_refuses_records")
        assert "MSA|AE" in refused and "\rERR|" in refused and "audit" in refused, refused
        assert "Traceback" not in refused
        assert _audit_rows(db_path, control) == 0

        # the sender sends it again: answered as the message processed (once), and audited
        with MllpClient("127.0.0.1", server.mllp_port, timeout=30) as mllp:
            again = mllp.send(message)
        assert "MSA|AA" in again, again
        assert _audit_rows(db_path, control) == 1
        bundle = requests.get(f"{server.base_url}/fhir/Patient", params={"identifier": f"{NIR}|{pid.id}"},
                              timeout=10).json()
        assert len(bundle.get("entry", [])) == 1
        # and the server keeps serving
        with MllpClient("127.0.0.1", server.mllp_port, timeout=30) as mllp:
            assert "MSA|AA" in mllp.send(adt("A01", F.patient_id()))
        assert "Traceback" not in server.log()


class _TimingOutS3(_FlakyS3):
    """S3 answering a write it could not read in time, as AWS does when the upload's socket
    stalls: 400 RequestTimeout ("Your socket connection to the server was not read from or
    written to within the timeout period"), which botocore itself retries as transient."""

    timing_out = threading.Event()

    def do_PUT(self) -> None:
        if not self.timing_out.is_set():
            super().do_PUT()
            return
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(400, b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>RequestTimeout</Code><Message>'
                          b'Your socket connection to the server was not read from or written to within the '
                          b'timeout period. Idle connections will be closed.</Message></Error>')

    do_POST = do_PUT


def test_s3_timing_out_a_write_is_503_busy_and_registers_nothing(tmp_path):
    """Before: the 400 RequestTimeout left once boto3's retries were spent was taken for a
    refusal of the request itself: ITI-41 an "internal error" XDSRepositoryError, ITI-65 a
    FHIR 500 — where a stalled store must be the outage it is (503 + Retry-After,
    XDSRepositoryBusy, 'transient'), and the same submission accepted once it answers."""
    _TimingOutS3.objects = {}
    _TimingOutS3.failing = threading.Event()
    _TimingOutS3.timing_out = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _TimingOutS3)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    env = {**ENV, "PARTAGE_BLOB_URL": "s3://partage/blobs",
           "PARTAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{httpd.server_address[1]}",
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "1"}
    try:
        with LiveServer(tmp_path / "data", env=env) as server:
            pid = _fed_patient(server)
            bundle = provide_bundle(text_doc(pid, "d1"), CONTENT, pid.id)
            _TimingOutS3.timing_out.set()
            _assert_503_fhir(requests.post(f"{server.base_url}/fhir", json=bundle, timeout=30,
                                           headers={"Accept": FHIR_JSON}))
            body, attachments = provide_and_register_body(F.submission(pid, contents=False), {"doc1": b"x" * 64})
            envelope = build_envelope(C.ACTION_PNR, body, to=f"{server.base_url}/xds/repository")
            content_type, chunks, _ = build_multipart(envelope, attachments, action=C.ACTION_PNR)
            _assert_503_soap(requests.post(f"{server.base_url}/xds/repository", data=b"".join(chunks), timeout=30,
                                           headers={"Content-Type": content_type}), "XDSRepositoryBusy")
            assert _documents_of(server, pid.id) == []
            _TimingOutS3.timing_out.clear()
            r = requests.post(f"{server.base_url}/fhir", json=bundle, timeout=30, headers={"Accept": FHIR_JSON})
            assert r.status_code == 200, r.text[:600]
            [entry] = _documents_of(server, pid.id)
            assert requests.get(entry["resource"]["content"][0]["attachment"]["url"], timeout=30).content == CONTENT
            assert "Traceback" not in server.log()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_document_feed_outage_is_answered_ar_and_the_document_is_taken_when_sent_again(tmp_path):
    """ANS CISIS_CDA_HL7_V2 (docs/hl7-feed.md "AE or AR"): AE is the IG's "syntax error", AR
    "circumstantial, may be resent"; the document feed answers its own failures AR. Before: a
    message the listener could not handle because a dependency was down (here the audit store
    refusing writes) was answered AE, telling the sender not to send it again as it is, so the
    document was lost; now AR with an ERR, and the same message sent again is indexed."""
    with LiveServer(tmp_path / "data", env=ENV) as server:
        db_path = tmp_path / "data" / "registry.sqlite3"
        cda = open("examples/cda-lettre-de-liaison.xml", "rb").read()
        ins = feed_header(cda)["ins"]
        mdm = feed_message("MDM", cda)
        with MllpClient("127.0.0.1", server.mllp_port, timeout=30) as mllp:
            assert "MSA|AA" in mllp.send(adt_a28(ins))
            with sqlite3.connect(db_path) as db:
                db.execute("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events "
                           "BEGIN SELECT RAISE(ABORT, 'audit store down'); END")
            try:
                refused = mllp.send(mdm)
            finally:
                with sqlite3.connect(db_path) as db:
                    db.execute("DROP TRIGGER audit_down")
            assert "\rMSA|AR|" in refused and "\rERR|" in refused and "audit" in refused, refused
            assert "Traceback" not in refused
            again = mllp.send(mdm)
        assert "\rMSA|AA|" in again, again
        bundle = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=10,
                              params={"patient.identifier": f"urn:oid:{ins[0]}|{ins[1]}", "status": "current"}).json()
        assert len(bundle.get("entry", [])) == 1, bundle
        assert "Traceback" not in server.log()
