"""`partage serve` runs exactly one notification sender, whatever the number of workers, with
no extra step; a sender that dies is replaced; stopping the server stops it (nothing left
behind), and so does killing the server's master alone."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support import LiveServer

pytestmark = pytest.mark.slow


def _tree(root: int) -> list[int]:
    """The process tree, children of every thread (the sender may be started from one)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(p) for p in f.read().split()]
            except OSError:
                pass
    return out


def _senders(master: int) -> list[int]:
    found = []
    for pid in _tree(master):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"partage.server.background" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads the process tree from /proc (Linux)")
def test_one_sender_per_server_replaced_when_it_dies_and_stopped_with_the_server(tmp_path):
    server = LiveServer(tmp_path / "data", workers=2, mllp=False).start()
    try:
        senders = _senders(server.process.pid)
        assert len(senders) == 1, f"expected one sender for two workers, found {senders}"
        first = senders[0]
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: len(_senders(server.process.pid)) == 1 and first not in _senders(server.process.pid),
                     60), server.log()
        second = _senders(server.process.pid)[0]
        assert "ended unexpectedly" in server.log()
        assert server.stop() == 0
        assert _wait(lambda: not _alive(second), 10), "the sender outlived its server"
    finally:
        server.stop()


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads the process tree from /proc (Linux)")
def test_a_killed_master_leaves_no_sender_behind(tmp_path):
    server = LiveServer(tmp_path / "data", workers=1, mllp=False).start()
    try:
        (sender,) = _senders(server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)   # the master alone
        assert _wait(lambda: not _alive(sender), 10), "the sender outlived its server's master"
    finally:
        server.stop(signal.SIGKILL)
