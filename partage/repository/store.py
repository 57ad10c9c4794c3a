"""Document bytes, content-addressed.

The address is the SHA-256 of the bytes; SHA-1 and size are computed in the same pass
because XDS metadata carries them (DocumentEntry.hash / size). Writes go to a temporary
file, are fsynced, then renamed into place, so a crash leaves either the whole blob or
an orphan temp file (removed by `partage fsck`), never a torn one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredBlob:
    address: str   # SHA-256, lowercase hex
    sha1: str      # lowercase hex, as XDS DocumentEntry.hash
    size: int


class BlobStore(ABC):
    """What the repository needs from a storage backend (filesystem, S3-compatible...)."""

    @abstractmethod
    def put(self, source: IO[bytes]) -> StoredBlob:
        """Store the stream's bytes (from its current position) and return their digests."""

    @abstractmethod
    def open(self, address: str) -> BinaryIO:
        """A readable binary stream of the blob; FileNotFoundError if absent."""

    @abstractmethod
    def exists(self, address: str) -> bool: ...

    @abstractmethod
    def delete(self, address: str) -> None: ...

    @abstractmethod
    def addresses(self) -> Iterator[str]:
        """Every stored address (for fsck)."""

    @abstractmethod
    def status(self) -> dict[str, str]: ...


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
        sha1, sha256, size = hashlib.sha1(), hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
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
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, final)
                _fsync_dir(final.parent)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        return StoredBlob(address, sha1.hexdigest(), size)

    def open(self, address: str) -> BinaryIO:
        return open(self.path(address), "rb")

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

    def status(self) -> dict[str, str]:
        ok = os.access(self.root, os.W_OK)
        return {"backend": "filesystem", "status": "ok" if ok else "error: not writable"}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
