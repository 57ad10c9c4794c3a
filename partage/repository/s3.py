"""Blobs in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph RGW, Scaleway, OVH...).

Selected with `PARTAGE_BLOB_URL=s3://bucket/prefix` (one bucket per deployment);
`PARTAGE_S3_ENDPOINT_URL` names a non-AWS endpoint (e.g. http://seaweedfs:8333). Credentials
and region come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
~/.aws, instance roles): they never pass through Partage's settings.

The same contract as the filesystem store: the address is the SHA-256 of the bytes, known
only once they are all read. Nothing is spooled to the worker's disk (workers keep no
state): a document up to `PART_SIZE` is hashed in memory and sent with one PUT; a larger
one is streamed as a multipart upload under `prefix/incoming/<uuid>` while it is hashed,
part by part (at most one part in memory), then copied by the server to its address
`prefix/ab/cd/<sha256>` and the incoming object deleted. Every PUT and part carries its
Content-MD5, which the server checks. A completed PUT, multipart upload or copy is atomic:
readers see the whole object or none. An address already present is not written again
(content addressing makes the bytes identical). Reads are checked against the address
(`VerifiedStream`). A crash between the upload and the copy leaves an object under
`incoming/`, never a wrong one under an address; `stale_incoming` lists them for fsck.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import IO, BinaryIO, Literal, ParamSpec, Protocol, TypedDict, TypeVar, overload
from urllib.parse import urlparse

# boto3 and botocore ship no type information (their stubs are separate packages).
import boto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError  # type: ignore[import-untyped]
from botocore.exceptions import ConnectionError as S3ConnectionError

from .store import (
    BlobStore,
    BlobStoreUnavailable,
    BlobStream,
    StoredBlob,
    VerifiedStream,
    _valid_address,
)

P = ParamSpec("P")
R = TypeVar("R")
PART_SIZE = 8 * 1024 * 1024   # S3's minimum part is 5 MiB; one part is the most held in memory
INCOMING = "incoming"
# How long a call waits for the store (PARTAGE_S3_TIMEOUT): a store that accepts connections but
# does not answer (frozen, overloaded) is a 503 after a bounded time, not a request thread held for
# minutes (botocore's defaults: 60 s a read, 5 attempts). Connecting gets at most 5 s of it; a
# failed call is tried ATTEMPTS times in all (botocore's "standard" retries, with back-off).
S3_TIMEOUT = 30.0
ATTEMPTS = 2
UPLOAD_MARK = "?uploadId="   # a leftover that is an upload never completed: <key>?uploadId=<id>


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Listed(TypedDict):
    Key: str
    LastModified: datetime


class _ListPage(TypedDict, total=False):
    Contents: list[_Listed]


class _ListPaginator(Protocol):
    def paginate(self, *, Bucket: str, Prefix: str) -> Iterable[_ListPage]: ...


class _PendingUpload(TypedDict):
    Key: str
    UploadId: str
    Initiated: datetime


class _UploadsPage(TypedDict, total=False):
    Uploads: list[_PendingUpload]


class _UploadsPaginator(Protocol):
    def paginate(self, *, Bucket: str, Prefix: str) -> Iterable[_UploadsPage]: ...


class _S3Exceptions(Protocol):
    NoSuchKey: type[Exception]


class _Object(TypedDict):
    Body: BinaryIO   # a botocore StreamingBody: read(n), close
    ContentLength: int


class _Upload(TypedDict):
    UploadId: str


class _UploadedPart(TypedDict):
    ETag: str


class S3Client(Protocol):
    """The calls this store makes on a boto3 S3 client (boto3 builds its clients at run time)."""

    exceptions: _S3Exceptions

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentMD5: str, ContentType: str,
                   Metadata: dict[str, str]) -> object: ...

    def copy(self, CopySource: dict[str, str], Bucket: str, Key: str, *, ExtraArgs: dict[str, object],
             Config: TransferConfig) -> None: ...

    def create_multipart_upload(self, *, Bucket: str, Key: str, ContentType: str) -> _Upload: ...

    def upload_part(self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes,
                    ContentMD5: str) -> _UploadedPart: ...

    def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str,
                                  MultipartUpload: dict[str, list[dict[str, object]]]) -> object: ...

    def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> object: ...

    def get_object(self, *, Bucket: str, Key: str) -> _Object: ...

    def head_object(self, *, Bucket: str, Key: str) -> object: ...

    def delete_object(self, *, Bucket: str, Key: str) -> object: ...

    def list_objects_v2(self, *, Bucket: str, Prefix: str, MaxKeys: int) -> object: ...

    @overload
    def get_paginator(self, operation_name: Literal["list_objects_v2"]) -> _ListPaginator: ...

    @overload
    def get_paginator(self, operation_name: Literal["list_multipart_uploads"]) -> _UploadsPaginator: ...


# Codes S3 answers with a 4xx about the exchange, not the request: the store could not read the
# request in time (RequestTimeout: a stalled store or network, which botocore itself retries as
# transient) or received other bytes than were sent (BadDigest: the Content-MD5 differs;
# IncompleteBody): sent again, the same request succeeds.
EXCHANGE_FAILED = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
                             "BadDigest", "IncompleteBody"})


def _store_failing(exc: ClientError) -> bool:
    """An error the store answered about itself (5xx: InternalError, SlowDown, ServiceUnavailable;
    429) or about the exchange (EXCHANGE_FAILED), not about the request: the store is down for
    now, as if unreachable."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    code = exc.response.get("Error", {}).get("Code", "")
    return bool(status >= 500 or status == 429 or code in EXCHANGE_FAILED)


def _reachable(method: Callable[P, R]) -> Callable[P, R]:
    """A store call whose connection fails (before the answer, or while its body is read: cut,
    short of its length, stalled past the timeout), or that the store answers with a server
    error (once boto3's retries are spent), raises BlobStoreUnavailable."""
    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (S3ConnectionError, HTTPClientError, IncompleteReadError) as exc:
            raise BlobStoreUnavailable("the document store is unavailable; try again later") from exc
        except ClientError as exc:
            if _store_failing(exc):
                raise BlobStoreUnavailable("the document store is failing; try again later") from exc
            raise
    return call


class _Body:
    """An object's body as it streams in: the store failing while it is read (a node dying
    mid-answer, a body stalled past the timeout) is the store unavailable, as it is before the
    answer's headers, not a blob that differs from its address."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    @_reachable
    def read(self, n: int = -1, /) -> bytes:
        return self._raw.read() if n is None or n < 0 else self._raw.read(n)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _read_part(source: IO[bytes], size: int) -> bytes:
    """Exactly `size` bytes, or fewer only at the end of the stream."""
    parts, got = [], 0
    while got < size:
        chunk = source.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 client: S3Client | None = None, part_size: int = PART_SIZE, timeout: float = S3_TIMEOUT) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        bounded = Config(connect_timeout=min(timeout, 5.0), read_timeout=timeout,
                         retries={"mode": "standard", "max_attempts": ATTEMPTS})
        self.client: S3Client = client or boto3.client("s3", endpoint_url=endpoint_url or None, config=bounded)
        self.part_size = part_size
        self.copy_config = TransferConfig(multipart_threshold=4 * 1024 ** 3, multipart_chunksize=256 * 1024 ** 2)

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, client: S3Client | None = None,
                 part_size: int = PART_SIZE, timeout: float = S3_TIMEOUT) -> S3BlobStore:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 blob URL (s3://bucket/prefix): {url!r}")
        return cls(parsed.netloc, parsed.path, endpoint_url=endpoint_url, client=client, part_size=part_size,
                   timeout=timeout)

    def _under_prefix(self, tail: str) -> str:
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def key(self, address: str) -> str:
        if not _valid_address(address):
            raise ValueError(f"not a blob address: {address!r}")
        return self._under_prefix(f"{address[:2]}/{address[2:4]}/{address}")

    @_reachable
    def put(self, source: IO[bytes]) -> StoredBlob:
        sha1, sha256 = hashlib.sha1(), hashlib.sha256()
        first = _read_part(source, self.part_size)
        sha1.update(first)
        sha256.update(first)
        if len(first) < self.part_size:   # the whole document: one PUT
            address = sha256.hexdigest()
            if not self.exists(address):
                self.client.put_object(Bucket=self.bucket, Key=self.key(address), Body=first,
                                       ContentMD5=_md5(first), ContentType="application/octet-stream",
                                       Metadata={"sha1": sha1.hexdigest()})
            return StoredBlob(address, sha1.hexdigest(), len(first))
        incoming = self._under_prefix(f"{INCOMING}/{uuid.uuid4().hex}")
        size = self._upload_parts(incoming, first, source, sha1, sha256)
        address = sha256.hexdigest()
        try:
            if not self.exists(address):
                self.client.copy({"Bucket": self.bucket, "Key": incoming}, self.bucket, self.key(address),
                                 ExtraArgs={"Metadata": {"sha1": sha1.hexdigest()}, "MetadataDirective": "REPLACE",
                                            "ContentType": "application/octet-stream"},
                                 Config=self.copy_config)
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=incoming)
        return StoredBlob(address, sha1.hexdigest(), size)

    def _upload_parts(self, key: str, first: bytes, source: IO[bytes], sha1: _Digest, sha256: _Digest) -> int:
        """Stream `first` and the rest of `source` as a multipart upload to `key`; the size."""
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key,
                                                     ContentType="application/octet-stream")
        upload_id = upload["UploadId"]
        parts: list[dict[str, object]] = []
        size, part, number = 0, first, 1
        try:
            while part:
                answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                 PartNumber=number, Body=part, ContentMD5=_md5(part))
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                size += len(part)
                number += 1
                part = _read_part(source, self.part_size)
                sha1.update(part)
                sha256.update(part)
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return size

    @_reachable
    def open(self, address: str) -> BlobStream:
        """The object's body, streamed and checked against the address as it is read."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(address))
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(address) from exc
        return VerifiedStream(_Body(answer["Body"]), address, int(answer["ContentLength"]))

    @_reachable
    def exists(self, address: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(address))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    @_reachable
    def delete(self, address: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(address))

    def _objects(self, start: str) -> Iterator[_Listed]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            yield from page.get("Contents", ())

    def addresses(self) -> Iterator[str]:
        for item in self._objects(f"{self.prefix}/" if self.prefix else ""):
            name = item["Key"].rsplit("/", 1)[-1]
            if _valid_address(name) and item["Key"] == self.key(name):
                yield name

    @_reachable
    def age(self, address: str) -> float:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self.key(address))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return 0.0
            raise
        modified = answer.get("LastModified") if isinstance(answer, dict) else None
        return time.time() - modified.timestamp() if modified is not None else 0.0

    def leftovers(self, min_age_seconds: float) -> list[str]:
        return self.stale_incoming(min_age_seconds)

    def remove_leftover(self, name: str) -> None:
        if not name.startswith(self._under_prefix(f"{INCOMING}/")):
            raise ValueError(f"not an upload left under {INCOMING}/: {name!r}")
        key, marked, upload_id = name.partition(UPLOAD_MARK)
        if marked:   # its parts go with it
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        else:
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def stale_incoming(self, min_age_seconds: float = 3600) -> list[str]:
        """What a crash left under incoming/ (never at an address): the keys of uploads completed
        but not copied, and the multipart uploads never completed nor aborted (`<key>?uploadId=<id>`:
        a worker killed while it streamed a document; no listing shows them, the store keeps
        their parts)."""
        now = time.time()
        start = self._under_prefix(f"{INCOMING}/")
        objects = [item["Key"] for item in self._objects(start)
                   if now - item["LastModified"].timestamp() >= min_age_seconds]
        uploads = [f"{item['Key']}{UPLOAD_MARK}{item['UploadId']}"
                   for page in self.client.get_paginator("list_multipart_uploads").paginate(
                       Bucket=self.bucket, Prefix=start)
                   for item in page.get("Uploads", ())
                   if now - item["Initiated"].timestamp() >= min_age_seconds]
        return objects + uploads

    def status(self) -> dict[str, str]:
        try:
            # a listing, not HEAD bucket: it proves the keys may read (some servers answer HEAD anyway)
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._under_prefix(""), MaxKeys=1)
            return {"backend": "s3", "status": "ok"}
        except Exception as exc:   # health must answer, not raise
            return {"backend": "s3", "status": f"error: {exc.__class__.__name__}"}
