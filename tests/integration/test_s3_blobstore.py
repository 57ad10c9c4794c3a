"""The S3 blob backend against a real S3 server (SeaweedFS over HTTP, signed requests), alone
and behind a real `partage serve` (ITI-41 in, ITI-43 out)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys

import boto3
import pytest

from partage.cli.dev_s3 import weed_binary
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID
from partage.hl7.mllp import MllpClient
from partage.repository import open_blob_store
from partage.repository.s3 import S3BlobStore
from partage.repository.store import BlobCorrupted
from tests import factories as F
from tests.integration.test_patient_feed import adt
from tests.s3_support import s3_client
from tests.support import LiveServer, free_port
from tests.xdsclient import XdsClient


@pytest.fixture
def keys(s3, monkeypatch):
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)   # boto3 keeps the credentials it resolved
    for key, value in s3.environment.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    return s3


def _prefix(request) -> str:
    return f"t-{request.node.name[:40]}-{os.urandom(3).hex()}"


class CountingStream(io.BytesIO):
    """A source that records the largest read it was asked for (no read of the whole stream)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = 0

    def read(self, n: int | None = -1) -> bytes:
        assert n is not None and n >= 0, "the store must never read a document whole"
        self.largest = max(self.largest, n)
        return super().read(n)


def test_put_open_exists_delete_and_list(keys, request):
    prefix = _prefix(request)
    store = open_blob_store(f"s3://partage/{prefix}/", "unused", s3_endpoint_url=keys.endpoint)
    assert store.status() == {"backend": "s3", "status": "ok"}
    data = os.urandom(20 * 1024 * 1024 + 7)          # three parts: streamed as a multipart upload
    source = CountingStream(data)
    stored = store.put(source)
    assert source.largest <= 8 * 1024 * 1024          # at most one part in memory
    assert stored.address == hashlib.sha256(data).hexdigest()
    assert stored.sha1 == hashlib.sha1(data).hexdigest() and stored.size == len(data)
    assert store.put(io.BytesIO(data)) == stored        # same bytes, same address, no second copy
    small = store.put(io.BytesIO(b"<doc/>"))
    with store.open(stored.address) as stream:
        assert hashlib.sha256(b"".join(iter(lambda: stream.read(1 << 20), b""))).hexdigest() == stored.address
    assert sorted(store.addresses()) == sorted([stored.address, small.address])
    keys_now = [o["Key"] for o in s3_client(keys).list_objects_v2(Bucket="partage", Prefix=prefix)["Contents"]]
    assert sorted(keys_now) == sorted(f"{prefix}/{a[:2]}/{a[2:4]}/{a}" for a in (stored.address, small.address))
    store.delete(small.address)
    assert not store.exists(small.address) and store.exists(stored.address)
    with pytest.raises(FileNotFoundError):
        store.open(small.address)
    with pytest.raises(ValueError):
        store.open("../../etc/passwd")


def test_bytes_changed_in_the_store_are_refused_when_read(keys, request):
    prefix = _prefix(request)
    store = open_blob_store(f"s3://partage/{prefix}", "unused", s3_endpoint_url=keys.endpoint)
    stored = store.put(io.BytesIO(b"<ClinicalDocument>original</ClinicalDocument>"))
    s3_client(keys).put_object(Bucket="partage", Key=store.key(stored.address),
                               Body=b"<ClinicalDocument>tampered</ClinicalDocument>")
    with pytest.raises(BlobCorrupted), store.open(stored.address) as stream:
        stream.read()
    truncated = store.put(io.BytesIO(b"x" * 1000))
    s3_client(keys).put_object(Bucket="partage", Key=store.key(truncated.address), Body=b"x" * 999)
    with pytest.raises(BlobCorrupted), store.open(truncated.address) as stream:
        while stream.read(100):
            pass


def test_a_failed_upload_leaves_nothing_at_an_address(keys, request):
    prefix = _prefix(request)
    store = open_blob_store(f"s3://partage/{prefix}", "unused", s3_endpoint_url=keys.endpoint)
    assert isinstance(store, S3BlobStore)

    class Broken(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if self.tell() >= 9 * 1024 * 1024:
                raise OSError("the client went away")
            return super().read(n)

    with pytest.raises(OSError, match="went away"):
        store.put(Broken(os.urandom(12 * 1024 * 1024)))
    assert list(store.addresses()) == []
    client = s3_client(keys)
    assert client.list_objects_v2(Bucket="partage", Prefix=prefix).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket="partage", Prefix=prefix).get("Uploads", []) == []


def test_missing_bucket_is_reported_by_status(keys):
    store = open_blob_store("s3://no-such-bucket", "unused", s3_endpoint_url=keys.endpoint)
    assert store.status()["status"].startswith("error")


def test_wrong_keys_are_refused(s3, monkeypatch):
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "else")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = open_blob_store("s3://partage/x", "unused", s3_endpoint_url=s3.endpoint)
    assert store.status()["status"].startswith("error")
    with pytest.raises(Exception, match="InvalidAccessKeyId|AccessDenied|SignatureDoesNotMatch|403"):
        store.put(io.BytesIO(b"data"))


def test_server_stores_and_serves_documents_from_s3(keys, tmp_path, monkeypatch, request):
    prefix = _prefix(request)
    monkeypatch.setenv("PARTAGE_BLOB_URL", f"s3://partage/{prefix}")
    monkeypatch.setenv("PARTAGE_S3_ENDPOINT_URL", keys.endpoint)
    with LiveServer(tmp_path / "data") as server:
        pid = F.patient_id()
        with MllpClient("127.0.0.1", server.mllp_port) as mllp:
            assert "MSA|AA" in mllp.send(adt("A01", pid))
        client = XdsClient(server.base_url)
        request_ = F.submission(pid, contents=False)
        payload = os.urandom(11 * 1024 * 1024)       # above one part: multipart through the server
        reply = client.provide_and_register(request_, {"doc1": payload})
        assert reply.status == "Success", reply.error_codes
        health = client.session.get(f"{server.base_url}/healthz").json()
        assert "s3" in str(health)
        reply, docs = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [request_.documents[0].unique_id])
        assert reply.status == "Success"
        assert docs[request_.documents[0].unique_id].read() == payload
    listed = s3_client(keys).list_objects_v2(Bucket="partage", Prefix=prefix)["Contents"]
    h = hashlib.sha256(payload).hexdigest()
    assert [o["Key"] for o in listed] == [f"{prefix}/{h[:2]}/{h[2:4]}/{h}"]
    assert not list((tmp_path / "data").glob("blobs/??/??/*"))    # nothing went to the filesystem


def test_the_dev_command_runs_a_store_a_server_can_use(tmp_path, monkeypatch):
    """`partage dev-s3` prints the environment to use, serves signed S3 there, stops on Ctrl-C."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed here")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "partage.cli", "dev-s3", "--dir", str(tmp_path / "s3"),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        exports = dict(process.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(5))
        assert exports["PARTAGE_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{port}"
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            monkeypatch.setenv(key, exports[key])
        store = open_blob_store(exports["PARTAGE_BLOB_URL"], "unused",
                                s3_endpoint_url=exports["PARTAGE_S3_ENDPOINT_URL"])
        stored = store.put(io.BytesIO(b"<doc/>"))
        with store.open(stored.address) as stream:
            assert stream.read() == b"<doc/>"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    with pytest.raises(OSError):   # the S3 gateway went with it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
