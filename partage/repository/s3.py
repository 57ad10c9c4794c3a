"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, Scaleway, OVH...).

Selected with `PARTAGE_BLOB_URL=s3://bucket/prefix`; `PARTAGE_S3_ENDPOINT_URL` names a
non-AWS endpoint (e.g. http://minio:9000). Credentials and region come from boto3's
usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles): they
never pass through Partage's settings.

The same contract as the filesystem store: the address is the SHA-256 of the bytes,
known only once they are all read, so `put` spools the stream to a local temporary
file while hashing (SHA-1 + SHA-256 + size in one pass, never the whole document in
memory), then uploads it under `prefix/ab/cd/<sha256>` (multipart above 8 MB). An S3
PUT or a completed multipart upload is atomic: readers see the whole object or none,
the equivalent of the filesystem store's rename. An address already present is not
uploaded again (content addressing makes the bytes identical).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from .store import CHUNK, BlobStore, StoredBlob, _valid_address

MULTIPART_CHUNK = 8 * 1024 * 1024


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 client=None, spool_dir: str | None = None, max_concurrency: int = 4) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None)
        self.spool_dir = spool_dir
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_CHUNK, multipart_chunksize=MULTIPART_CHUNK,
                                       max_concurrency=max_concurrency)

    @classmethod
    def from_url(cls, url: str, **kwargs) -> S3BlobStore:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 blob URL (s3://bucket/prefix): {url!r}")
        return cls(parsed.netloc, parsed.path, **kwargs)

    def key(self, address: str) -> str:
        if not _valid_address(address):
            raise ValueError(f"not a blob address: {address!r}")
        tail = f"{address[:2]}/{address[2:4]}/{address}"
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def put(self, source: BinaryIO) -> StoredBlob:
        sha1, sha256, size = hashlib.sha1(), hashlib.sha256(), 0
        with tempfile.TemporaryFile(dir=self.spool_dir, prefix="partage-s3-") as spool:
            while chunk := source.read(CHUNK):
                sha1.update(chunk)
                sha256.update(chunk)
                size += len(chunk)
                spool.write(chunk)
            address = sha256.hexdigest()
            if not self.exists(address):
                spool.seek(0)
                self.client.upload_fileobj(spool, self.bucket, self.key(address), Config=self.transfer,
                                           ExtraArgs={"ContentType": "application/octet-stream",
                                                      "Metadata": {"sha1": sha1.hexdigest()}})
        return StoredBlob(address, sha1.hexdigest(), size)

    def open(self, address: str) -> BinaryIO:
        """The object's body, streamed (botocore StreamingBody: read(n), close, context manager)."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(address))["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(address) from exc

    def exists(self, address: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(address))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, address: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(address))

    def addresses(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        start = f"{self.prefix}/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                if _valid_address(name) and item["Key"] == self.key(name):
                    yield name

    def status(self) -> dict[str, str]:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return {"backend": "s3", "status": "ok"}
        except Exception as exc:   # health must answer, not raise
            return {"backend": "s3", "status": f"error: {exc.__class__.__name__}"}

