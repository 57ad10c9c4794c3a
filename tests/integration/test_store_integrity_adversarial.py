"""The blob store under attack: bytes changed on disk after registration (ITI-43, FHIR Binary,
fsck), a blob path replaced by a symlink or a directory, fsck --repair racing a submission
of already-stored bytes, and a full disk. In-process (the Flask app over a temporary SQLite
data directory, --insecure-dev)."""

from __future__ import annotations

import io
import os
import time
import uuid

import pytest
from lxml import etree

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.ebxml import constants as C
from partage.ebxml.mtom import build_multipart, read_soap_request
from partage.ebxml.soap import build_envelope, parse_envelope
from partage.fsck import check, remove_leftovers
from partage.ingest import IngestService
from partage.services import Services
from tests import factories as F
from tests.integration.test_mhd import NIR, provide_bundle, text_doc
from tests.xdsclient import Reply, X, provide_and_register_body

FHIR_JSON = {"Accept": "application/fhir+json"}
ORIGINAL = b"hello world original"
MODES = ["same-size", "truncated", "symlink-passwd", "symlink-other-blob", "directory"]


@pytest.fixture
def services(tmp_path):
    svc = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True))
    yield svc
    svc.close()


@pytest.fixture
def client(services):
    from partage.server.app import create_app
    return create_app(services=services).test_client()


def _soap(client, url, action, body, attachments=()):
    envelope = build_envelope(action, body, to=url)
    content_type, chunks, _ = build_multipart(envelope, list(attachments), action=action)
    r = client.post(url, data=b"".join(chunks), headers={"Content-Type": content_type})
    data = r.get_data()   # raises if the streamed answer broke off
    message = read_soap_request(r.headers.get("Content-Type", ""), io.BytesIO(data), max_total=1 << 30)
    return Reply(r.status_code, parse_envelope(message.root, require_action=False).body, message.parts)


def _submit_xds(client, services, payload: bytes) -> str:
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    request = F.submission(pid, contents=False)
    reply = _soap(client, "/xds/repository", C.ACTION_PNR,
                  *provide_and_register_body(request, {request.documents[0].entry_uuid: payload}))
    assert reply.status == "Success", reply.error_codes
    return request.documents[0].unique_id


def _retrieve(client, uid: str) -> Reply:
    body = etree.Element(X + "RetrieveDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    item = etree.SubElement(body, X + "DocumentRequest")
    etree.SubElement(item, X + "RepositoryUniqueId").text = DEFAULT_REPOSITORY_UNIQUE_ID
    etree.SubElement(item, X + "DocumentUniqueId").text = uid
    return _soap(client, "/xds/repository", C.ACTION_RETRIEVE, body)


def _submit_fhir(client, payload: bytes) -> str:
    """ITI-65; the Binary path of the document."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": NIR, "value": pid.id}],
                                           "name": [{"family": "DUPONT", "given": ["Jeanne"]}]})
    assert r.status_code == 201, r.get_data(as_text=True)
    r = client.post("/fhir", json=provide_bundle(text_doc(pid, "d1"), payload, pid.id), headers=FHIR_JSON)
    assert r.status_code == 200, r.get_data(as_text=True)
    rid = r.get_json()["entry"][0]["response"]["location"].rsplit("/", 1)[1]
    doc = client.get(f"/fhir/DocumentReference/{rid}", headers=FHIR_JSON).get_json()
    return "/fhir/" + doc["content"][0]["attachment"]["url"].split("/fhir/", 1)[1]


def _damage(services, address: str, mode: str, other: str | None = None) -> None:
    path = services.blobs.path(address)
    os.chmod(path, 0o644)
    if mode == "same-size":
        path.write_bytes(ORIGINAL.replace(b"original", b"TAMPERED"))
    elif mode == "truncated":
        path.write_bytes(ORIGINAL[:5])
    elif mode == "symlink-passwd":
        path.unlink()
        path.symlink_to("/etc/passwd")
    elif mode == "symlink-other-blob":
        path.unlink()
        path.symlink_to(services.blobs.path(other))
    elif mode == "directory":
        path.unlink()
        path.mkdir()
    elif mode == "missing":
        path.unlink()


def _address_of(services, data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- ITI-43
@pytest.mark.parametrize("mode", MODES)
def test_iti43_never_serves_changed_bytes_and_answers_a_repository_error(client, services, mode):
    """ITI TF-2 3.43.4.2.3: a document the repository cannot return gets its own RegistryError
    (XDSRepositoryError) in a well-formed response. The retrieve streamed an answer that broke
    off mid-body (the client saw a truncated multipart under a 200)."""
    other = _submit_xds(client, services, b"another document entirely")
    uid = _submit_xds(client, services, ORIGINAL)
    _damage(services, _address_of(services, ORIGINAL), mode, _address_of(services, b"another document entirely"))
    try:
        reply = _retrieve(client, uid)
    except Exception as exc:
        pytest.fail(f"ITI-43 answer broke off instead of a RegistryError: {exc.__class__.__name__}: {exc}")
    assert "XDSRepositoryError" in reply.error_codes, (reply.status, reply.error_codes)
    assert reply.status == "Failure"
    for part in reply.parts.values():
        assert b"TAMPERED" not in bytes(part) and b"root:" not in bytes(part)
    assert other


# --------------------------------------------------------------------------- FHIR Binary (ITI-68)
@pytest.mark.parametrize("mode", [*MODES, "missing"])
@pytest.mark.parametrize("accept", [{}, FHIR_JSON], ids=["raw", "resource"])
def test_binary_of_a_damaged_blob_is_a_clear_operation_outcome(client, services, mode, accept):
    """ITI-68 (MHD 2.3.68.4.2): an error is an OperationOutcome. A blob changed, missing or
    replaced on disk answered a 500 'internal error' tagged XDSRegistryError, or (raw form) a
    200 whose body broke off after the headers promised the registry's Content-Length."""
    _submit_fhir(client, b"another document entirely")
    path = _submit_fhir(client, ORIGINAL)
    _damage(services, _address_of(services, ORIGINAL), mode, _address_of(services, b"another document entirely"))
    try:
        r = client.get(path, headers=accept)
        data = r.get_data()
    except Exception as exc:
        pytest.fail(f"Binary answer broke off: {exc.__class__.__name__}: {exc}")
    assert r.status_code != 200 and b"TAMPERED" not in data and b"root:" not in data
    outcome = r.get_json(force=True)
    assert outcome["resourceType"] == "OperationOutcome"
    codes = [c["code"] for issue in outcome["issue"] for c in issue.get("details", {}).get("coding", [])]
    assert "XDSRepositoryError" in codes, outcome


# --------------------------------------------------------------------------- fsck
@pytest.mark.parametrize("mode", MODES)
def test_fsck_reports_a_blob_whose_bytes_do_not_match(services, mode):
    """docs/robustness.md: fsck proves every registered document's content is present. A blob
    whose bytes no longer hash to its address (changed, truncated, a symlink to another file, a
    directory) was reported 'consistent': the only tool to find it before a reader does."""
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid, payload=b"another document"))
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid, payload=ORIGINAL))
    assert check(services, min_age_seconds=0).consistent
    _damage(services, _address_of(services, ORIGINAL), mode, _address_of(services, b"another document"))
    report = check(services, min_age_seconds=0)
    assert not report.consistent, "fsck says consistent over a blob that does not hold the document's bytes"


def test_fsck_repair_keeps_an_old_blob_that_a_submission_reuses_during_the_run(services):
    """fsck --repair must never delete a blob still referenced. --min-age protects a blob written
    by a submission in flight, but a submission of bytes already stored (content addressing:
    `put` does not write again, the old mtime stays) is not protected: fsck lists the old unused
    blob, the submission registers a document on it, the repair deletes its bytes."""
    leftover = services.blobs.put(io.BytesIO(ORIGINAL))   # a transaction that never committed, long ago
    old = time.time() - 86400
    os.utime(services.blobs.path(leftover.address), (old, old))
    report = check(services, min_age_seconds=300)
    assert report.unreferenced_blobs == [leftover.address]
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid, payload=ORIGINAL))
    remove_leftovers(services, report)   # the same fsck run goes on to repair
    assert services.blobs.exists(leftover.address), "fsck --repair deleted the bytes of a registered document"
    assert check(services, min_age_seconds=0).missing_blobs == []


# --------------------------------------------------------------------------- disk full
def test_a_full_disk_refuses_the_submission_cleanly(tmp_path, tiny_disk):
    """ITI-41 on a blob store that fills up: a 503 SOAP Fault with Retry-After, subcode
    XDSRepositoryOutOfResources (ITI TF-3 Table 4.2.4.1-2: the store is an outage, as the database
    down is, not an 'internal error'), nothing registered, no temp file left, and the server
    answers the next request."""
    from partage.server.app import create_app
    services = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True, blob_url=str(tiny_disk)))
    try:
        client = create_app(services=services).test_client()
        pid = F.patient_id()
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid])
        request = F.submission(pid, contents=False)
        big = os.urandom(1024 * 1024)
        body, attachments = provide_and_register_body(request, {request.documents[0].entry_uuid: big})
        envelope = build_envelope(C.ACTION_PNR, body, to="/xds/repository")
        content_type, chunks, _ = build_multipart(envelope, attachments, action=C.ACTION_PNR)
        r = client.post("/xds/repository", data=b"".join(chunks), headers={"Content-Type": content_type})
        assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.get_data(as_text=True))
        assert b"soap:Fault" in r.get_data() and b"XDSRepositoryOutOfResources" in r.get_data()
        assert list((tiny_disk / "tmp").iterdir()) == []
        assert check(services, min_age_seconds=0).registered_documents == 0
        uid = _submit_xds(client, services, b"small enough")
        assert _retrieve(client, uid).status == "Success"
    finally:
        services.close()


# --------------------------------------------------------------------------- S3 (a real SeaweedFS)
@pytest.fixture
def s3_services(s3, tmp_path, monkeypatch):
    import boto3
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for key, value in s3.environment.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    prefix = f"adv-{os.urandom(4).hex()}"
    svc = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True, blob_url=f"s3://partage/{prefix}",
                                 s3_endpoint_url=s3.endpoint))
    svc.prefix = prefix
    yield svc
    svc.close()


def test_fsck_reports_and_repairs_uploads_a_crash_left_under_incoming(s3_services, s3):
    """s3.py and docs/deployment.md: a crash between the multipart upload and the copy leaves an
    object under prefix/incoming/, and `stale_incoming` lists them for fsck. fsck never calls it
    (it looks for temp files only in a local store): each crash leaves up to a document's size
    (documents above 8 MB take this path) in the bucket for ever, reported nowhere."""
    from tests.s3_support import s3_client
    key = f"{s3_services.prefix}/incoming/{uuid.uuid4().hex}"
    s3_client(s3).put_object(Bucket="partage", Key=key, Body=b"x" * 1024)
    report = check(s3_services, min_age_seconds=0)
    assert key in report.temp_files, "fsck does not see the upload left under incoming/"
    remove_leftovers(s3_services, report)
    assert s3_client(s3).list_objects_v2(Bucket="partage", Prefix=key).get("KeyCount", 0) == 0


def test_fsck_min_age_protects_a_young_s3_blob(s3_services):
    """docs/robustness.md: --min-age keeps a blob written by a submission still in flight (put,
    not yet registered). On S3 fsck takes every object for infinitely old, although the store
    lists each object's LastModified (stale_incoming reads it): `fsck --repair` during traffic
    deletes the bytes of a submission about to commit."""
    young = s3_services.blobs.put(io.BytesIO(b"written a moment ago, registration in flight"))
    report = check(s3_services, min_age_seconds=300)
    assert young.address not in report.unreferenced_blobs


def test_an_s3_outage_is_a_503_with_nothing_registered(tmp_path, s3, monkeypatch):
    """The object store down (connection refused) while a document is submitted: like the
    database down (partage.failures, docs/robustness.md), a 503 with Retry-After and nothing
    registered, not a 500 'internal error' that the door's own doc calls a bug."""
    import boto3

    from partage.server.app import create_app
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for key, value in s3.environment.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    from tests.support import free_port
    svc = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True, blob_url="s3://partage/down",
                                 s3_endpoint_url=f"http://127.0.0.1:{free_port()}"))
    try:
        client = create_app(services=svc).test_client()
        pid = F.patient_id(uuid.uuid4().int % 10**9)
        r = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": NIR,
                                                                                         "value": pid.id}],
                                               "name": [{"family": "DUPONT", "given": ["Jeanne"]}]})
        assert r.status_code == 201
        r = client.post("/fhir", json=provide_bundle(text_doc(pid, "d1"), b"payload", pid.id), headers=FHIR_JSON)
        assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.get_data(as_text=True))
        assert check_registered(svc) == 0
    finally:
        svc.close()


def check_registered(services) -> int:
    from partage.registry import consistency
    with services.registry.read() as conn:
        return len(consistency.document_blobs(conn))


# --------------------------------------------------------------------------- ITI-86 and fsck
def test_fsck_repair_keeps_the_bytes_a_removal_tombstone_holds(services):
    """docs/access.md "Removal leaves a tombstone": after ITI-86 the address of the bytes is kept
    in removed_objects and "the bytes stay in the store"; deleting them for good is the
    administrator's audited `access purge --removed`. fsck counts only registry_objects as
    references: it reports the removed document's bytes UNUSED and --repair deletes them,
    unaudited, under the tombstone that still names them. A second document with the same bytes
    keeps them either way."""
    from partage.lifecycle import remove_documents
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    removed = F.submission(pid, payload=b"removed by ITI-86")
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(removed)
    shared_a = F.submission(pid, payload=b"the same bytes twice")
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(shared_a)
    shared_b = F.submission(pid, payload=b"the same bytes twice")
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(shared_b)
    result = remove_documents(services, INSECURE_DEV_ACTOR, [
        (DEFAULT_REPOSITORY_UNIQUE_ID, removed.documents[0].unique_id),
        (DEFAULT_REPOSITORY_UNIQUE_ID, shared_a.documents[0].unique_id)])
    assert result.removed == 2 and not result.errors
    report = check(services, min_age_seconds=0)
    remove_leftovers(services, report)
    assert services.blobs.exists(_address_of(services, b"the same bytes twice"))
    assert services.blobs.exists(_address_of(services, b"removed by ITI-86")), \
        "fsck --repair deleted the bytes a removal tombstone keeps (not the audited purge)"


# --------------------------------------------------------------------------- the page
@pytest.mark.corpus
def test_the_page_never_starts_a_download_of_changed_bytes(tmp_path):
    """The page's document download (/dossier/<rid>/documents/<doc>/content) streamed a 200 whose
    body broke off when the blob's bytes were changed on disk (the browser saves a truncated
    file as if complete). Expected: an error status before any byte, as ITI-43 and ITI-68."""
    import re

    from partage.server.app import create_app
    from tests.integration.test_page_adversarial import _record
    from tests.page_support import dev_services
    with dev_services(tmp_path / "data") as services:
        rid = _record(services)
        client = create_app(services=services).test_client()
        doc = re.findall(r"/documents/([0-9a-f-]{36})", client.get(f"/dossier/{rid}").get_data(as_text=True))[0]
        [address] = list(services.blobs.addresses())
        path = services.blobs.path(address)
        os.chmod(path, 0o644)
        data = bytearray(path.read_bytes())
        data[-20] ^= 1
        path.write_bytes(bytes(data))
        try:
            r = client.get(f"/dossier/{rid}/documents/{doc}/content")
            r.get_data()
        except Exception as exc:
            pytest.fail(f"the download broke off after its 200: {exc.__class__.__name__}: {exc}")
        assert r.status_code != 200
