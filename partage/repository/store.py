"""Document bytes, content-addressed.

The address is the SHA-256 of the bytes; SHA-1 and size are computed in the same pass
because XDS metadata carries them (DocumentEntry.hash / size). Writes go to a temporary
file, are fsynced, then renamed into place, so a crash leaves either the whole blob or
an orphan temp file (removed by `partage fsck`), never a torn one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from ..failures import Unavailable

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredBlob:
    address: str   # SHA-256, lowercase hex
    sha1: str      # lowercase hex, as XDS DocumentEntry.hash
    size: int


class BlobStream(Protocol):
    """What readers of a blob use: read to the end (or some), close, or `with`."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> BlobStream: ...

    def __exit__(self, *exc: object) -> None: ...


class BlobStore(ABC):
    """What the repository needs from a storage backend (filesystem, S3-compatible...)."""

    @abstractmethod
    def put(self, source: IO[bytes]) -> StoredBlob:
        """Store the stream's bytes (from its current position) and return their digests."""

    @abstractmethod
    def open(self, address: str) -> BlobStream:
        """A readable stream of the blob, checked against its address as it is read to the
        end (BlobCorrupted); FileNotFoundError if absent."""

    @abstractmethod
    def exists(self, address: str) -> bool: ...

    @abstractmethod
    def delete(self, address: str) -> None: ...

    @abstractmethod
    def addresses(self) -> Iterator[str]:
        """Every stored address (for fsck)."""

    @abstractmethod
    def status(self) -> dict[str, str]: ...

    @abstractmethod
    def age(self, address: str) -> float:
        """Seconds since the blob was last written (or asked for again by a put); 0 if absent.
        fsck --repair leaves younger unused blobs alone: a submission may be about to register them."""

    @abstractmethod
    def leftovers(self, min_age_seconds: float) -> list[str]:
        """What interrupted writes left, older than min_age (for fsck), by name."""

    @abstractmethod
    def remove_leftover(self, name: str) -> None:
        """Remove one of `leftovers`."""


class BlobCorrupted(OSError):
    """The bytes read back are not the bytes stored: their SHA-256 is not their address."""


class BlobStoreUnavailable(Unavailable):
    """The store cannot take or give documents now (an object store unreachable or failing, a
    directory full or refusing writes): a 503 with Retry-After at every door, as the database
    down is; nothing was registered. `full`: out of space (XDS: XDSRepositoryOutOfResources)."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


def _write_failure(exc: OSError) -> BlobStoreUnavailable:
    """What a client is told of a failed write (the path, the server's business, is not said)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BlobStoreUnavailable("the document store is full; try again later", full=True)
    return BlobStoreUnavailable("the document store cannot write documents now; try again later")


class BlobUnavailable(OSError):
    """A registered blob that cannot be served as registered: absent, unreadable, not of the
    registry's size, or (read before the answer starts) not hashing to its address."""


class VerifiedStream:
    """A blob's stream that checks, once `size` bytes have been read, that their SHA-256 is
    the blob's address; BlobCorrupted otherwise (served bytes are never silently wrong:
    a reader streaming to a client stops short, and the client sees a truncated answer)."""

    def __init__(self, raw: BinaryIO | BlobStream, address: str, size: int) -> None:
        self._raw = raw
        self._address = address
        self._size = size
        self._read = 0
        self._sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self._raw.read() if n is None or n < 0 else self._raw.read(n)
        self._sha256.update(chunk)
        before, self._read = self._read, self._read + len(chunk)
        if (before < self._size <= self._read) or (not chunk and before < self._size) or self._read > self._size:
            self._check()
        return chunk

    def _check(self) -> None:
        if self._read != self._size or self._sha256.hexdigest() != self._address:
            raise BlobCorrupted(f"blob {self._address}: {self._read} bytes read of {self._size}, "
                                "SHA-256 differs from the address")

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> VerifiedStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_checked(blobs: BlobStore, address: str, size: int | None) -> BlobStream:
    """A registered blob's stream for an answer, checked before the answer starts: present and
    readable, of the registry's `size`, and, up to one CHUNK (nearly every document), read to
    its end now and proved against its address, then opened again to be served (nothing held
    in memory, whatever the number of documents of one answer); a larger one is checked as it
    is read (VerifiedStream). BlobUnavailable otherwise, for the caller to answer its standard
    error instead of a 200 that breaks off."""
    try:
        stream = blobs.open(address)
    except FileNotFoundError as exc:
        raise BlobUnavailable(f"blob {address} is absent") from exc
    except OSError as exc:   # a directory, a symlink refused, unreadable
        raise BlobUnavailable(f"blob {address} cannot be read: {exc.__class__.__name__}") from exc
    try:
        stored = getattr(stream, "size", None)
        if size is not None and stored is not None and stored != size:
            raise BlobUnavailable(f"blob {address}: {stored} bytes stored, {size} registered")
        if stored is None or stored > CHUNK:
            return stream
        while stream.read(CHUNK):   # BlobCorrupted at the end if the bytes are not the address's
            pass
    except BlobUnavailable:
        stream.close()
        raise
    except OSError as exc:
        stream.close()
        raise BlobUnavailable(f"blob {address}: {exc}") from exc
    stream.close()
    try:
        return blobs.open(address)
    except OSError as exc:
        raise BlobUnavailable(f"blob {address} cannot be read: {exc.__class__.__name__}") from exc


def _valid_address(address: str) -> bool:
    return len(address) == 64 and all(c in "0123456789abcdef" for c in address)


class FilesystemBlobStore(BlobStore):
    """Blobs under `root/ab/cd/<sha256>`; temp files under `root/tmp`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, address: str) -> Path:
        if not _valid_address(address):
            raise ValueError(f"not a blob address: {address!r}")
        return self.root / address[:2] / address[2:4] / address

    def put(self, source: IO[bytes]) -> StoredBlob:
        """BlobStoreUnavailable when the directory refuses the write (full, read-only, not a
        directory, no rights): a 503 at every door, nothing registered; the source's own
        failures pass as they are."""
        sha1, sha256, size = hashlib.sha1(), hashlib.sha256(), 0
        tmp_name: str | None = None
        source_failure: OSError | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        chunk = source.read(CHUNK)
                    except OSError as exc:
                        source_failure = exc
                        raise
                    if not chunk:
                        break
                    sha1.update(chunk)
                    sha256.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            address = sha256.hexdigest()
            final = self.path(address)
            if final.exists():
                os.unlink(tmp_name)
                # the bytes are needed again: young again, so that fsck --repair (--min-age)
                # does not take an old unused blob a registration is about to reference
                os.utime(final)
            else:
                if not final.parent.is_dir():
                    _make_durable_dirs(final.parent)
                os.replace(tmp_name, final)
                _fsync_dir(final.parent)
        except BaseException as exc:
            if tmp_name is not None and os.path.exists(tmp_name):
                os.unlink(tmp_name)
            if isinstance(exc, OSError) and exc is not source_failure:
                raise _write_failure(exc) from exc
            raise
        return StoredBlob(address, sha1.hexdigest(), size)

    def open(self, address: str) -> BlobStream:
        # never through a symlink put in a blob's place: it would serve another file's bytes
        # until the hash check at the end of a large one
        fd = os.open(self.path(address), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            raw = os.fdopen(fd, "rb")   # IsADirectoryError for a directory
        except BaseException:
            os.close(fd)
            raise
        return VerifiedStream(raw, address, os.fstat(raw.fileno()).st_size)

    def exists(self, address: str) -> bool:
        return self.path(address).exists()

    def delete(self, address: str) -> None:
        try:
            self.path(address).unlink()
        except FileNotFoundError:
            pass

    def addresses(self) -> Iterator[str]:
        for path in self.root.glob("??/??/*"):
            if _valid_address(path.name):
                yield path.name

    def temp_files(self) -> list[Path]:
        return list(self.tmp.iterdir())

    def age(self, address: str) -> float:
        try:
            return time.time() - self.path(address).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def leftovers(self, min_age_seconds: float) -> list[str]:
        now, found = time.time(), []
        for path in self.temp_files():
            try:
                if now - path.stat().st_mtime >= min_age_seconds:
                    found.append(str(path))
            except FileNotFoundError:   # its writer finished meanwhile
                pass
        return found

    def remove_leftover(self, name: str) -> None:
        path = Path(name)
        if path.parent != self.tmp:
            raise ValueError(f"not a temporary file of this store: {name!r}")
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def status(self) -> dict[str, str]:
        ok = os.access(self.root, os.W_OK)
        return {"backend": "filesystem", "status": "ok" if ok else "error: not writable"}


def _make_durable_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each one's entry made durable in its parent (a
    power loss must not take away the directory a blob was renamed into after the answer)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:   # another writer made it meanwhile
            pass
        _fsync_dir(directory.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
