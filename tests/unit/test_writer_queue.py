"""SQLite writers queue on a file lock before `BEGIN IMMEDIATE` (`registry.store.WriterQueue`),
and the audit proof is a rehearsal that leaves nothing (`Registry.rehearsal`)."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest
from sqlalchemy import func, select

from partage.registry import schema
from partage.registry.store import Registry


@pytest.fixture
def registry(tmp_path):
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    reg.migrate()
    yield reg
    reg.dispose()


def _lock_is_free(path: str) -> bool:
    """Whether another open file description could take the writers' lock now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)   # closing releases a lock taken here
    return True


def test_a_write_holds_the_writers_lock_until_it_ends(registry, tmp_path):
    lock_path = f"{tmp_path / 'r.sqlite3'}-writer"
    with registry.write() as conn:
        conn.exec_driver_sql("SELECT 1")
        assert not _lock_is_free(lock_path)
    assert _lock_is_free(lock_path)


def test_a_turn_taken_again_by_its_thread_nests(registry, tmp_path):
    """Never a wait on itself: the inner turn returns at once and the outer keeps the lock."""
    lock_path = f"{tmp_path / 'r.sqlite3'}-writer"
    queue = registry._writers
    done, held = threading.Event(), []

    def nested() -> None:
        with queue.turn():
            with queue.turn():
                held.append(not _lock_is_free(lock_path))
            held.append(not _lock_is_free(lock_path))   # the outer turn still holds it
        done.set()

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    assert done.wait(5), "a nested turn waited on itself"
    assert held == [True, True]
    assert _lock_is_free(lock_path)


def test_the_rehearsal_queues_like_a_write_and_its_insert_is_gone(registry, tmp_path):
    lock_path = f"{tmp_path / 'r.sqlite3'}-writer"
    row = dict(recorded_at="2026-12-03T00:00:00Z", action="probe", request="", outcome=8, decision="error",
               actor_id="a", actor_name="", actor_kind="unknown", actor_role="", purpose="", reason="",
               structure="", address="", credential_id="", patient_pk=None, patient_id="", objects="[]",
               detail="probe")
    with registry.rehearsal() as conn:
        assert not _lock_is_free(lock_path)
        conn.execute(schema.audit_events.insert(), row)
        assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 1
    with registry.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 0


def test_a_failing_rehearsal_raises_and_leaves_nothing(registry):
    with pytest.raises(ZeroDivisionError), registry.rehearsal() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
        raise ZeroDivisionError
    with registry.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").scalar() == 0


def test_a_forked_child_waits_for_the_parents_write(registry, tmp_path):
    """The child opens the lock file itself: a descriptor inherited over fork would share the
    parent's lock and let both write at once, each then waiting in SQLite's busy handler."""
    with registry.write() as conn:   # opens the parent's descriptor before the fork
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    read_end, write_end = os.pipe()       # child -> parent: how long its write waited
    told, tell = os.pipe()                # parent -> child: "I am inside my write"
    inside, release = threading.Event(), threading.Event()

    def parent_write() -> None:
        with registry.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            inside.set()
            release.wait(5)

    pid = os.fork()
    if pid == 0:   # the child: its write must wait for the parent's to end
        status = 1
        try:
            os.close(read_end)
            os.close(tell)
            os.read(told, 1)
            fd = registry._writers._descriptor()   # this process's own descriptor
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                status = 3   # the lock looked free while the parent held it
            except BlockingIOError:
                pass
            if status == 3:
                os._exit(3)
            with registry.write() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")
            os.write(write_end, f"{time.monotonic():.6f}".encode())   # one clock for both processes
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    os.close(told)
    writer = threading.Thread(target=parent_write)
    writer.start()
    assert inside.wait(5)
    os.write(tell, b"!")
    time.sleep(0.5)   # the child asks for its turn meanwhile and must be kept waiting
    released = time.monotonic()
    release.set()
    writer.join(5)
    child_done = float(os.read(read_end, 64) or b"-1")
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could take the lock the parent held"
    assert child_done >= released, "the child's write ended while the parent held its write"
    with registry.read() as conn:
        assert sorted(conn.exec_driver_sql("SELECT x FROM t").scalars()) == [1, 2]
