"""Scale-out, adversarial review (round 2): two `partage serve` hosts on one sharded coordinator
(two shard clusters, documents in SeaweedFS), authentication on.

docs/deployment.md ("Web hosts", "Sharding the registry", "Documents in an S3-compatible object
store") and docs/robustness.md: any request to any host; a single-use credential is spent for
every host; a uniqueId has one winner whatever host each racer reached; a shard that is down
or does not answer is a 503 for its patients within a bounded time, the other shard's patients
still served, nothing lost or half-written; the object store down is a 503 with nothing
registered; an upload a crash left behind is found by fsck.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import threading
import time
import uuid

import pytest
import requests
from lxml import etree

from partage.access import saml
from partage.access.credentials import sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID
from partage.fsck import check, remove_leftovers
from partage.hl7.mllp import MllpClient
from partage.metadata.datatypes import XCN
from partage.registry import sharding
from partage.registry.access_state import Records
from partage.repository.s3 import S3BlobStore, _md5
from partage.services import Services
from tests import factories as F
from tests.integration.test_patient_feed import adt
from tests.notify_support import Endpoint, notified_documents, subscribe, subscription_address
from tests.pg_shards import sharded_services
from tests.s3_support import start_local_s3
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

pytestmark = pytest.mark.postgres

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
DOCTOR = "810000000002"


@dataclasses.dataclass
class Layout:
    a: LiveServer
    b: LiveServer
    services: Services
    clusters: list
    shards: list[sharding.Shard]
    url: str
    s3: object
    env: dict


@pytest.fixture(scope="module")
def layout(tmp_path_factory, authority, pg_shard_clusters):
    root = tmp_path_factory.mktemp("scale2")
    with contextlib.ExitStack() as stack:
        s3 = start_local_s3(root / "s3")
        stack.callback(s3.stop)
        env = {**s3.environment, "PARTAGE_BLOB_URL": "s3://partage/scale2"}
        url, services, shards = sharded_services(stack, root, pg_shard_clusters, "partage_scale2", env)
        servers = [stack.enter_context(LiveServer(root / name, database_url=url, insecure_dev=False, mllp=name == "a",
                                                  env=env, extra_args=["--trust", authority.ca_file]))
                   for name in ("a", "b")]
        yield Layout(servers[0], servers[1], services, pg_shard_clusters, shards, url, s3, env)


# ------------------------------------------------------------------ helpers
def _partition_of(layout, pk: int) -> int:
    count = sum(len(s.partitions) for s in layout.shards)
    with layout.services.registry.read() as conn:
        for i in range(count):
            if conn.exec_driver_sql("SELECT satisfies_hash_partition('registry_objects'::regclass, %(n)s, %(i)s, "
                                    "%(pk)s::integer)", {"n": count, "i": i, "pk": pk}).scalar():
                return i
    raise AssertionError("no partition")


def _shard_of(layout, pk: int) -> int:
    part = _partition_of(layout, pk)
    return next(k for k, s in enumerate(layout.shards) if part in s.partitions)


def _patient(layout, *, on_shard: int | None = None):
    while True:
        pid = F.patient_id()
        with layout.services.registry.write() as conn:
            pk = layout.services.registry.upsert_patient(conn, [pid])
        if on_shard is None or _shard_of(layout, pk) == on_shard:
            Records(layout.services.registry).open(pid, medecin_traitant="810001234567")
            return pid, pk


def _doc(pid, entry_id):
    doc = F.document(pid, entry_id)
    doc.authors[0].person = XCN.parse(f"{DOCTOR}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    return doc


def _soap(server, authority, pid, name="doctor") -> XdsClient:
    actor = sample_actors(pid)[name]
    return XdsClient(server.base_url, security=lambda: saml.security_header(authority.saml_assertion(actor)))


def _find(client, pid):
    return client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                 "$XDSDocumentEntryStatus": [APPROVED]})


def _submit(server, authority, pid, docs):
    return _soap(server, authority, pid).provide_and_register(
        F.submission(pid, docs, contents=False), {d.entry_uuid: f"<doc>{d.entry_uuid}</doc>".encode() for d in docs})


def _busy(reply) -> bool:
    return (reply.http_status == 503 and reply.body.tag == f"{SOAP}Fault"
            and b"XDSRegistryBusy" in etree.tostring(reply.body))


def _claims(layout, unique_id: str) -> int:
    with layout.services.registry.read() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM unique_ids WHERE unique_id = %(u)s",
                                    {"u": unique_id}).scalar()


def _rows_with_unique_id(layout, unique_id: str) -> int:
    with layout.services.registry.read() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM registry_objects WHERE unique_id = %(u)s",
                                    {"u": unique_id}).scalar()


def _entries(layout, unique_id: str) -> list[str]:
    """entryUUIDs of a uniqueId, from the coordinator's global index (no shard asked)."""
    with layout.services.registry.read() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT entry_uuid FROM entry_uuids WHERE unique_id = %(u)s",
                                                   {"u": unique_id})]


def _within(seconds: float, work):
    """`work()`'s result if it returns within `seconds`, else an AssertionError (the call goes on)."""
    out: list = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"no answer within {seconds} s")
    if failure:
        raise failure[0]
    return out[0], time.monotonic() - started


class BlackHole:
    """A TCP listener that accepts connections and never says a word: a shard host that is up
    at the TCP level but does not answer (frozen, overloaded, half-partitioned)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.stopped = True
        self.sock.close()
        for conn in self.held:
            conn.close()


class FreezableProxy:
    """A TCP relay to `target`; frozen, it keeps every connection open and relays nothing: a
    store that accepts connections and requests but does not answer (frozen, overloaded)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.sock.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set() and not self.closed.is_set():
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()


# ------------------------------------------------------------------ two hosts, one registry
def test_a_saml_assertion_spent_on_one_host_is_refused_by_the_other_on_the_sharded_layout(layout, authority):
    pid, _ = _patient(layout)
    header = saml.security_header(authority.saml_assertion(sample_actors(pid)["gp"]))
    params = {"$XDSDocumentEntryPatientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED]}
    assert XdsClient(layout.a.base_url, security=header).stored_query("FindDocuments", params).status == "Success"
    replayed = XdsClient(layout.b.base_url, security=header).stored_query("FindDocuments", params)
    text = etree.tostring(replayed.body, encoding="unicode")
    assert replayed.body.tag == f"{SOAP}Fault" and "already used" in text, text[:300]


def test_one_unique_id_raced_on_both_hosts_has_one_winner(layout, authority):
    pid, _ = _patient(layout)
    first, second = _doc(pid, "one"), _doc(pid, "two")
    second.unique_id = first.unique_id            # same uniqueId, other bytes: one must lose
    replies: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def send(name, server, doc):
        barrier.wait()
        replies[name] = _submit(server, authority, pid, [doc])

    threads = [threading.Thread(target=send, args=("a", layout.a, first)),
               threading.Thread(target=send, args=("b", layout.b, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r.status for r in replies.values())
    assert statuses == ["Failure", "Success"], {k: (r.status, r.error_codes) for k, r in replies.items()}
    loser = next(r for r in replies.values() if r.status == "Failure")
    assert set(loser.error_codes) <= {"XDSDuplicateUniqueIdInRegistry", "XDSNonIdenticalHash"}, loser.error_codes
    assert _claims(layout, first.unique_id) == 1 and _rows_with_unique_id(layout, first.unique_id) == 1


def test_each_registration_is_notified_once_though_both_hosts_run_a_sender(layout, authority):
    """docs/notifications.md: several hosts may each run a sender; the outbox rows are leased:
    every Notify arrives once, whatever host filed the document."""
    pid, _ = _patient(layout)
    with Endpoint() as endpoint:
        reply = subscribe(_soap(layout.a, authority, pid, "gp"), layout.a.base_url, endpoint.url, patient=str(pid))
        assert subscription_address(reply), etree.tostring(reply.body)[:400]
        docs = [_doc(pid, f"n{i}") for i in range(6)]
        for i, doc in enumerate(docs):
            assert _submit((layout.a, layout.b)[i % 2], authority, pid, [doc]).status == "Success"
        got = endpoint.wait(len(docs), 30)
        time.sleep(2)   # a duplicate would come now
        got = list(endpoint.received)
    ids = [i for r in got for i in notified_documents(r)[1]]
    assert len(got) == len(docs) and len(set(ids)) == len(docs), [notified_documents(r) for r in got]
    assert len({r.message_id for r in got}) == len(docs)


# ------------------------------------------------------------------ a shard down
def test_a_shard_down_is_a_503_for_its_patients_on_every_door_and_loses_nothing(layout, authority):
    up, _ = _patient(layout, on_shard=0)
    down, _ = _patient(layout, on_shard=1)
    kept = _doc(down, "kept")
    assert _submit(layout.a, authority, down, [kept]).status == "Success"
    assert _submit(layout.b, authority, up, [_doc(up, "fine")]).status == "Success"
    layout.clusters[1].stop()
    try:
        # GetDocuments by uniqueId of a document on the stopped shard: an outage, not "no such document"
        by_uid = _soap(layout.b, authority, down).stored_query(
            "GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{kept.unique_id}')"]})
        assert _busy(by_uid), (by_uid.http_status, etree.tostring(by_uid.body)[:400])
        [entry] = [e for e in _entries(layout, kept.unique_id)]
        by_uuid = _soap(layout.a, authority, down).stored_query(
            "GetDocuments", {"$XDSDocumentEntryEntryUUID": [f"('{entry}')"]})
        assert _busy(by_uuid), (by_uuid.http_status, etree.tostring(by_uuid.body)[:400])
        retrieved, documents = _soap(layout.a, authority, down).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID,
                                                                         [kept.unique_id])
        assert not documents and (_busy(retrieved) or "XDSRegistryBusy" in retrieved.error_codes
                                  or retrieved.http_status == 503), etree.tostring(retrieved.body)[:400]
        # FHIR: an OperationOutcome with 503 and Retry-After
        token = authority.jwt(sample_actors(down)["doctor"])
        search = (f"{layout.b.base_url}/fhir/DocumentReference?status=current&patient.identifier="
                  f"urn:oid:{down.assigning_authority.universal_id}|{down.id}")
        answer = requests.get(search, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 503 and answer.json()["resourceType"] == "OperationOutcome", answer.text[:300]
        assert answer.headers.get("Retry-After")
        # the other shard's patient is served by both hosts
        for server in (layout.a, layout.b):
            assert len(objects_of(_find(_soap(server, authority, up), up))) == 1
    finally:
        layout.clusters[1].start()
    assert {o.unique_id for o in objects_of(_find(_soap(layout.a, authority, down), down))} == {kept.unique_id}
    assert check(layout.services, min_age_seconds=0).consistent


def test_a_merge_across_shards_with_one_shard_down_is_refused_whole_then_completes(layout, authority):
    keep, keep_pk = _patient(layout, on_shard=0)
    gone, gone_pk = _patient(layout, on_shard=1)
    assert _submit(layout.a, authority, keep, [_doc(keep, "k")]).status == "Success"
    moved = _doc(gone, "g")
    assert _submit(layout.a, authority, gone, [moved]).status == "Success"
    message = adt("A40", str(keep), mrg=str(gone), control=uuid.uuid4().hex[:10])
    layout.clusters[1].stop()
    try:
        with MllpClient("127.0.0.1", layout.a.mllp_port, timeout=30) as mllp:
            ack = mllp.send(message)
        assert "MSA|AE" in ack or "MSA|AR" in ack, ack
    finally:
        layout.clusters[1].start()
    # nothing half-done: the merged patient still has its document, the survivor only its own
    assert {o.unique_id for o in objects_of(_find(_soap(layout.b, authority, gone), gone))} == {moved.unique_id}
    assert len(objects_of(_find(_soap(layout.b, authority, keep), keep))) == 1
    assert check(layout.services, min_age_seconds=0).consistent
    with MllpClient("127.0.0.1", layout.a.mllp_port, timeout=30) as mllp:   # sent again: it completes
        assert "MSA|AA" in mllp.send(message)
    assert len(objects_of(_find(_soap(layout.b, authority, keep), keep))) == 2
    assert check(layout.services, min_age_seconds=0).consistent


def test_a_shard_that_accepts_but_never_answers_is_a_bounded_503(layout, authority):
    """A shard host frozen or half-partitioned (TCP up, PostgreSQL silent): its patients' requests
    must end with the outage answer in bounded time (robustness: bounded time for every input),
    not wait forever holding an application thread, and the other shard's patients are served."""
    up, _ = _patient(layout, on_shard=0)
    down, _ = _patient(layout, on_shard=1)
    hole = BlackHole()
    name = layout.shards[1].name
    original = layout.shards[1].url
    with layout.services.registry.write() as conn:
        conn.exec_driver_sql(f"ALTER SERVER {name} OPTIONS (SET port '{hole.port}')")
    try:
        reply, took = _within(25, lambda: _find(_soap(layout.b, authority, down), down))
        assert _busy(reply), (reply.http_status, etree.tostring(reply.body)[:400])
        assert took < 20
        found, _ = _within(25, lambda: _find(_soap(layout.b, authority, up), up))
        assert found.status == "Success"
    finally:
        with layout.services.registry.write() as conn:
            conn.exec_driver_sql(f"ALTER SERVER {name} OPTIONS (SET port '{original.port}')")
        hole.close()


# ------------------------------------------------------------------ the object store
def test_a_missing_object_is_an_xds_error_not_a_500(layout, authority):
    pid, _ = _patient(layout)
    doc = _doc(pid, "gone")
    body = b"<doc>bytes that will vanish " + os.urandom(8).hex().encode() + b"</doc>"
    reply = _soap(layout.a, authority, pid).provide_and_register(F.submission(pid, [doc], contents=False),
                                                                 {doc.entry_uuid: body})
    assert reply.status == "Success", reply.error_codes
    store = layout.services.blobs
    store.delete(hashlib.sha256(body).hexdigest())
    retrieved, documents = _soap(layout.b, authority, pid).retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [doc.unique_id])
    assert retrieved.http_status in (200, 503) and not documents
    assert retrieved.status == "Failure" or _busy(retrieved), etree.tostring(retrieved.body)[:400]


def test_the_object_store_down_is_a_503_and_nothing_is_registered(layout, authority):
    pid, _ = _patient(layout)
    doc = _doc(pid, "nostore")
    layout.s3.stop()
    try:
        reply = _submit(layout.b, authority, pid, [doc])
        assert reply.http_status == 503, (reply.http_status, etree.tostring(reply.body)[:400])
    finally:
        layout.s3.start()
    assert _claims(layout, doc.unique_id) == 0 and _rows_with_unique_id(layout, doc.unique_id) == 0
    assert _submit(layout.b, authority, pid, [doc]).status == "Success"


def test_a_multipart_upload_a_crash_left_is_reported_and_aborted_by_fsck(layout):
    """A worker killed while it streamed a large document (parts sent, never completed nor
    aborted) leaves an incomplete multipart upload: invisible to a listing, its parts kept (and
    billed) by the store. docs/deployment.md: "an upload that fails is aborted", fsck reports
    uploads a crash left under incoming/ and --repair removes them."""
    store = layout.services.blobs
    assert isinstance(store, S3BlobStore)
    key = store._under_prefix(f"incoming/{uuid.uuid4().hex}")
    client = store.client
    upload = client.create_multipart_upload(Bucket=store.bucket, Key=key, ContentType="application/octet-stream")
    part = os.urandom(5 * 1024 * 1024)
    client.upload_part(Bucket=store.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=part,
                       ContentMD5=_md5(part))
    # ... and the worker was killed here
    report = check(layout.services, min_age_seconds=0)
    assert any(key in name for name in report.temp_files), report.temp_files
    remove_leftovers(layout.services, report)
    uploads = client.list_multipart_uploads(Bucket=store.bucket, Prefix=key).get("Uploads", [])
    assert uploads == []


def test_a_registry_sharded_before_gets_bounded_shard_connections_at_migration(layout):
    """Migration: foreign servers made without the connection bounds gain them (an operator's own
    value kept); `partage serve` at head then changes nothing."""
    registry = layout.services.registry
    with registry.write() as conn:
        conn.exec_driver_sql(f"ALTER SERVER {layout.shards[0].name} OPTIONS (SET connect_timeout '9')")
        conn.exec_driver_sql(f"ALTER SERVER {layout.shards[1].name} OPTIONS (DROP connect_timeout, "
                             "DROP keepalives, DROP tcp_user_timeout)")
        conn.exec_driver_sql("DROP TABLE hl7_answers")   # what migration 0015 adds
        conn.exec_driver_sql("ALTER TABLE audit_events DROP COLUMN issuer")   # and 0017
        conn.exec_driver_sql("ALTER TABLE notification_outbox DROP COLUMN content_digest")   # and 0018
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0013'")
    registry.engine.dispose()
    registry.migrate()
    with registry.read() as conn:
        options = {name: dict(o.split("=", 1) for o in opts) for name, opts in conn.exec_driver_sql(
            "SELECT srvname, srvoptions FROM pg_foreign_server WHERE srvname LIKE 'partage_shard_%%'")}
    assert options[layout.shards[0].name]["connect_timeout"] == "9"
    assert {k: options[layout.shards[1].name].get(k) for k in ("connect_timeout", "keepalives")} == {
        "connect_timeout": "5", "keepalives": "1"}


def test_an_object_store_that_accepts_but_never_answers_is_a_bounded_503(layout, authority, tmp_path):
    """PARTAGE_S3_TIMEOUT bounds each call to the store: frozen, it is the outage answer (503,
    nothing registered) within seconds, not a request thread held for minutes (robustness:
    bounded time for every input)."""
    proxy = FreezableProxy(layout.s3.s3_port)
    env = {**layout.env, "PARTAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "PARTAGE_S3_TIMEOUT": "2"}
    try:
        with LiveServer(tmp_path / "c", database_url=layout.url, insecure_dev=False, mllp=False, env=env,
                        extra_args=["--trust", authority.ca_file]) as server:
            pid, _ = _patient(layout)
            stored = _doc(pid, "before")
            assert _submit(server, authority, pid, [stored]).status == "Success"
            proxy.frozen.set()
            doc = _doc(pid, "frozen")
            reply, took = _within(25, lambda: _submit(server, authority, pid, [doc]))
            assert reply.http_status == 503, (reply.http_status, etree.tostring(reply.body)[:400])
            assert took < 20
            retrieved, took = _within(25, lambda: _soap(server, authority, pid).retrieve(
                DEFAULT_REPOSITORY_UNIQUE_ID, [stored.unique_id]))
            assert retrieved[0].http_status in (200, 503) and not retrieved[1] and took < 20
            proxy.frozen.clear()
    finally:
        proxy.close()
    assert _claims(layout, doc.unique_id) == 0 and _rows_with_unique_id(layout, doc.unique_id) == 0
