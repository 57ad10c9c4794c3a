"""Group commit for SQLite (`registry.store.GroupSync`): a writer returns only after an fsync
that began after its commit, and writers waiting together share fsyncs."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from partage.registry.store import GroupSync, Registry
from partage.server.durability import DurableAnswers


class RecordingSync(GroupSync):
    """GroupSync whose fsync is a recorded pause (start, end), so the test sees the ordering."""

    def __init__(self) -> None:
        super().__init__(path=None)  # type: ignore[arg-type]
        self.calls: list[tuple[float, float]] = []

    def _fsync(self) -> None:
        start = time.monotonic()
        time.sleep(0.02)
        self.calls.append((start, time.monotonic()))


def test_each_writer_waits_for_an_fsync_begun_after_its_commit():
    sync = RecordingSync()
    seen: list[tuple[float, float]] = []
    lock = threading.Lock()

    def writer() -> None:
        committed = time.monotonic()
        sync.sync()
        with lock:
            seen.append((committed, time.monotonic()))

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for t in threads:
        t.start()
        time.sleep(0.003)   # commits spread over several fsyncs
    for t in threads:
        t.join()
    assert len(seen) == 16
    for committed, returned in seen:
        covering = [c for c in sync.calls if c[0] >= committed and c[1] <= returned]
        assert covering, f"returned at {returned} without an fsync begun after {committed}"
    assert 1 < len(sync.calls) < 16, "writers waiting together share an fsync"


def test_a_lone_writer_gets_its_own_fsync():
    sync = RecordingSync()
    sync.sync()
    sync.sync()
    assert len(sync.calls) == 2


def test_a_failed_fsync_fails_the_writer_and_the_next_one_retries():
    class Failing(RecordingSync):
        fail = True

        def _fsync(self) -> None:
            if self.fail:
                self.fail = False
                raise OSError(5, "I/O error")
            super()._fsync()

    sync = Failing()
    try:
        sync.sync()
    except OSError:
        pass
    else:
        raise AssertionError("an fsync error must reach the writer (its data may not be on disk)")
    sync.sync()
    assert len(sync.calls) == 1


def test_sqlite_writes_sync_the_wal(tmp_path, monkeypatch):
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    registry.migrate()
    synced: list[str] = []
    real = GroupSync._fsync

    def spy(self: GroupSync) -> None:
        synced.append(str(self.path))
        real(self)

    monkeypatch.setattr(GroupSync, "_fsync", spy)
    with registry.write() as conn:
        conn.exec_driver_sql("SELECT 1")
    with registry.read() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert synced == [str(tmp_path / "r.sqlite3-wal")], "one fsync of the WAL per write, none per read"
    registry.dispose()


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A migrated SQLite registry whose WAL fsyncs are recorded as "fsync" in a list of events."""
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    registry.migrate()
    events: list[str] = []
    monkeypatch.setattr(GroupSync, "_fsync", lambda self: events.append("fsync"))
    yield registry, events
    registry.dispose()


def test_writes_of_one_request_share_one_fsync_at_its_end(recorded):
    registry, events = recorded
    with registry.one_sync():
        for n in range(3):
            with registry.write() as conn:
                conn.exec_driver_sql("SELECT 1")
            events.append(f"write {n}")
    assert events == ["write 0", "write 1", "write 2", "fsync"]
    events.clear()
    try:
        with registry.one_sync():
            with registry.write() as conn:
                conn.exec_driver_sql("SELECT 1")
            raise ValueError("the request failed after a write")
    except ValueError:
        pass
    assert events == ["fsync"], "what was committed before an error is made durable too"


def test_the_answer_starts_only_after_the_sync(recorded):
    """DurableAnswers holds the status line until the request's writes are on disk."""
    registry, events = recorded

    def app(environ, start_response):
        with registry.write() as conn:
            conn.exec_driver_sql("SELECT 1")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Success"]

    body = DurableAnswers(app, registry)({}, lambda status, headers, exc_info=None: events.append(status))
    assert events == ["fsync", "200 OK"] and list(body) == [b"Success"]


def test_a_failed_final_sync_answers_the_doors_503_not_the_prepared_success(recorded, monkeypatch):
    """The writes may not be on disk: the "Success" the application prepared must not go out."""
    registry, events = recorded

    def disk_gone(self) -> None:
        raise OperationalError("fsync", {}, OSError("I/O error"))

    monkeypatch.setattr(GroupSync, "_fsync", disk_gone)

    def app(environ, start_response):
        with registry.write() as conn:
            conn.exec_driver_sql("SELECT 1")
        start_response("200 OK", [("Content-Type", "application/soap+xml")])
        return [b"<Success/>"]

    answered: list[tuple[str, dict]] = []
    body = DurableAnswers(app, registry)({"PATH_INFO": "/xds/iti41", "REQUEST_METHOD": "POST"},
                                         lambda status, headers, exc_info=None: answered.append((status, dict(headers))))
    (status, headers), = answered
    payload = b"".join(body)
    assert status.startswith("503") and headers["Retry-After"] and b"Success" not in payload
    assert b"Fault" in payload and b"XDSRegistryBusy" in payload   # the XDS door's shape
