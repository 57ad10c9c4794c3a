"""A fork waits for the registry's transactions in progress and closes the pool first
(`registry.store.ForkGuard`): a child never inherits SQLite's lock table mid-write."""

from __future__ import annotations

import os
import threading
import time

from partage.registry.store import Registry


def test_a_child_forked_during_a_write_can_write(tmp_path):
    """Without the guard, a child forked while a thread of the parent is inside a write
    believes the write lock held by a sibling and its own writes time out."""
    registry = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    registry.migrate()
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def long_write() -> None:
        with registry.write() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            inside.set()
            release.wait(5)
            order.append("write ended")

    writer = threading.Thread(target=long_write)
    writer.start()
    assert inside.wait(5)
    threading.Timer(0.3, release.set).start()
    pid = os.fork()   # waits for the write in progress to end
    if pid == 0:   # the child: a fresh registry on the same file must write at once
        status = 1
        try:
            child = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
            started = time.monotonic()
            with child.write() as conn:   # BEGIN IMMEDIATE; without the guard: 30 s, then "locked"
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            status = 0 if time.monotonic() - started < 15 else 2   # not SQLite's 30 s busy wait
        except Exception as exc:
            os.write(2, f"child: {exc!r}\n".encode())
        finally:
            os._exit(status)
    order.append("forked")
    _, status = os.waitpid(pid, 0)
    writer.join()
    assert order == ["write ended", "forked"], "the fork waited for the transaction"
    assert os.waitstatus_to_exitcode(status) == 0, "the child could write at once"
    with registry.write() as conn:   # the parent goes on after the fork
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    with registry.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
    registry.dispose()
