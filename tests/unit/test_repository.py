"""Content-addressed blob store: digests, idempotence, no torn or leftover files."""

import hashlib
import io
import threading

import pytest

from partage.repository.store import FilesystemBlobStore


def test_put_records_xds_and_address_digests(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    data = b"hello world" * 1000
    blob = store.put(io.BytesIO(data))
    assert blob.sha1 == hashlib.sha1(data).hexdigest()
    assert blob.address == hashlib.sha256(data).hexdigest()
    assert blob.size == len(data)
    with store.open(blob.address) as f:
        assert f.read() == data
    assert list(store.addresses()) == [blob.address]
    assert store.temp_files() == []


def test_same_content_twice_is_one_blob(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    a, b = store.put(io.BytesIO(b"x")), store.put(io.BytesIO(b"x"))
    assert a == b and len(list(store.addresses())) == 1 and store.temp_files() == []


def test_concurrent_puts_of_the_same_content(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    data = b"y" * 3_000_000
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.put(io.BytesIO(data))))
               for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len({r.address for r in results}) == 1
    with store.open(results[0].address) as f:
        assert f.read() == data
    assert store.temp_files() == []


def test_failed_read_leaves_no_temp_file(tmp_path):
    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError("network gone")

    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(OSError):
        store.put(Broken())
    assert store.temp_files() == [] and list(store.addresses()) == []


def test_addresses_are_validated(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(ValueError):
        store.open("../../etc/passwd")
    assert not store.exists("0" * 64)


def test_a_new_blob_directory_is_made_durable_in_its_parent(tmp_path, monkeypatch):
    """The blob is renamed into root/ab/cd/: directories created for it are synced into their
    parents (else a power loss after the answer could take the directory, and the blob, away);
    a second blob in the same directory syncs that directory only."""
    from partage.repository import store as blob_store

    synced: list = []
    monkeypatch.setattr(blob_store, "_fsync_dir", lambda path: synced.append(path))
    store = FilesystemBlobStore(tmp_path)
    first = store.put(io.BytesIO(b"first"))
    leaf = store.path(first.address).parent
    assert synced == [tmp_path, leaf.parent, leaf]   # ab in root, cd in ab, the blob in cd
    synced.clear()
    data = next(f"x{i}".encode() for i in range(1_000_000)   # deterministic: the first with the same ab/cd
                if hashlib.sha256(f"x{i}".encode()).hexdigest()[:4] == first.address[:4])
    second = store.put(io.BytesIO(data))
    assert store.path(second.address).parent == leaf and synced == [leaf]
