"""The S3 blob backend against an S3 server (moto in server mode, over HTTP), alone and behind a
real `partage serve` (ITI-41 in, ITI-43 out)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import requests

try:
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError:   # the S3 test dependency is absent: say so, do not pass silently
    boto3 = None

pytestmark = pytest.mark.skipif(boto3 is None, reason="boto3 and moto[server] (the 'test' extra) are not installed")

from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID  # noqa: E402
from partage.repository import open_blob_store  # noqa: E402
from tests import factories as F  # noqa: E402
from tests.support import LiveServer, free_port  # noqa: E402
from tests.xdsclient import XdsClient  # noqa: E402

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)   # moto's state is per process, not per server
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="partage")
    yield endpoint
    server.stop()


def test_put_open_exists_delete_and_list(s3):
    store = open_blob_store("s3://partage/blobs/", "unused", s3_endpoint_url=s3)
    assert store.status() == {"backend": "s3", "status": "ok"}
    data = os.urandom(20 * 1024 * 1024 + 7)          # above the multipart threshold
    stored = store.put(io.BytesIO(data))
    assert stored.address == hashlib.sha256(data).hexdigest()
    assert stored.sha1 == hashlib.sha1(data).hexdigest() and stored.size == len(data)
    assert store.put(io.BytesIO(data)) == stored        # same bytes, same address, no second copy
    small = store.put(io.BytesIO(b"<doc/>"))
    with store.open(stored.address) as stream:
        assert hashlib.sha256(b"".join(iter(lambda: stream.read(1 << 20), b""))).hexdigest() == stored.address
    assert sorted(store.addresses()) == sorted([stored.address, small.address])
    client = boto3.client("s3", endpoint_url=s3)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="partage")["Contents"]]
    assert f"blobs/{stored.address[:2]}/{stored.address[2:4]}/{stored.address}" in keys
    store.delete(small.address)
    assert not store.exists(small.address) and store.exists(stored.address)
    with pytest.raises(FileNotFoundError):
        store.open(small.address)
    with pytest.raises(ValueError):
        store.open("../../etc/passwd")


def test_missing_bucket_is_reported_by_status(s3):
    store = open_blob_store("s3://no-such-bucket", "unused", s3_endpoint_url=s3)
    assert store.status()["status"].startswith("error")


def test_server_stores_and_serves_documents_from_s3(s3, tmp_path, monkeypatch):
    from partage.hl7.mllp import MllpClient
    from tests.integration.test_patient_feed import adt

    monkeypatch.setenv("PARTAGE_BLOB_URL", "s3://partage/docs")
    monkeypatch.setenv("PARTAGE_S3_ENDPOINT_URL", s3)
    with LiveServer(tmp_path / "data") as server:
        pid = F.patient_id()
        with MllpClient("127.0.0.1", server.mllp_port) as mllp:
            assert "MSA|AA" in mllp.send(adt("A01", pid))
        client = XdsClient(server.base_url)
        request = F.submission(pid, contents=False)
        payload = os.urandom(3 * 1024 * 1024)
        reply = client.provide_and_register(request, {"doc1": payload})
        assert reply.status == "Success", reply.error_codes
        health = client.session.get(f"{server.base_url}/healthz").json()
        assert "s3" in str(health)
        reply, docs = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [request.documents[0].unique_id])
        assert reply.status == "Success"
        assert docs[request.documents[0].unique_id].read() == payload
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3).list_objects_v2(Bucket="partage")["Contents"]]
    assert keys == [f"docs/{h[:2]}/{h[2:4]}/{h}" for h in [hashlib.sha256(payload).hexdigest()]]
    assert not list((tmp_path / "data").glob("blobs/??/??/*"))    # nothing went to the filesystem
