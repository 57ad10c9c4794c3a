"""The MLLP door against hostile senders, through real sockets: trickle, floods, big frames.

The listener runs with a 2 s per-message deadline, 8 connections and 3 MB of unfinished
frames at most (PARTAGE_MLLP_*), so every probe ends in seconds; after each one a normal
ADT message must still be acknowledged AA.
"""

from __future__ import annotations

import socket
import time

import pytest

from partage.hl7.mllp import MllpClient
from tests import factories as F
from tests.doorprobe import RssWatch, closed_by_peer
from tests.integration.test_patient_feed import adt
from tests.memory import is_linux
from tests.support import LiveServer

MB = 1024 * 1024
ENV = {"PARTAGE_MLLP_IDLE_TIMEOUT": "2", "PARTAGE_MLLP_MAX_CONNECTIONS": "8",
       "PARTAGE_MLLP_MAX_BUFFERED": str(3 * MB), "PARTAGE_MLLP_MAX_MESSAGE": str(2 * MB),
       "PARTAGE_TEXT_INDEXER": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("mllp-doors") / "data", env=ENV) as live:
        yield live


def _still_served(server) -> None:
    with MllpClient("127.0.0.1", server.mllp_port, timeout=10) as client:
        assert "MSA|AA" in client.send(adt("A01", F.patient_id()))


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.mllp_port), timeout=5)


def test_trickled_message_is_cut_at_its_deadline(server):
    """One byte every 0.2 s: bytes keep coming, but the message is not whole within 2 s."""
    message = b"\x0b" + adt("A01", F.patient_id()).encode() + b"\x1c\r"
    with _connect(server) as sock:
        started = time.monotonic()
        closed_at = None
        for byte in message:
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed_at = time.monotonic()
                break
            if closed_by_peer(sock, wait=0.2):
                closed_at = time.monotonic()
                break
        assert closed_at is not None, "the trickling sender was never cut off"
        assert 1.5 <= closed_at - started <= 10.0   # at its 2 s deadline, long before the message's end
    _still_served(server)


def test_idle_connection_is_closed_and_a_kept_connection_gets_a_fresh_deadline(server):
    with _connect(server) as idle:
        time.sleep(2.6)
        assert closed_by_peer(idle, wait=5.0)
    # A message answered resets the deadline: two messages 1.5 s apart on one connection.
    with MllpClient("127.0.0.1", server.mllp_port, timeout=10) as client:
        assert "MSA|AA" in client.send(adt("A01", F.patient_id()))
        time.sleep(1.5)
        assert "MSA|AA" in client.send(adt("A01", F.patient_id()))


def test_connection_flood_is_capped(server):
    flood = []
    try:
        for _ in range(40):
            flood.append(_connect(server))
        # as the listener gets to them, and before the 2 s idle deadline would close any connection
        deadline, refused = time.monotonic() + 1.5, set()
        while len(refused) < 40 - 8 and time.monotonic() < deadline:
            time.sleep(0.2)
            refused |= {i for i, sock in enumerate(flood) if i not in refused and closed_by_peer(sock, wait=0.05)}
        assert len(refused) >= 40 - 8, f"only {len(refused)} of 40 connections refused with a cap of 8"
    finally:
        for sock in flood:
            sock.close()
    time.sleep(0.3)
    _still_served(server)


def test_unfinished_frames_are_capped_across_connections(server):
    """Four senders each hold 1.5 MB of an unfinished frame: the listener keeps at most 3 MB."""
    socks = []
    with RssWatch(server.process.pid) as watch:
        try:
            for _ in range(4):
                sock = _connect(server)
                try:
                    sock.sendall(b"\x0b" + b"MSH|" + b"x" * (3 * MB // 2))
                except OSError:
                    pass
                socks.append(sock)
            time.sleep(0.5)
            closed = sum(closed_by_peer(sock, wait=0.1) for sock in socks)
            assert closed >= 2, f"{closed} of 4 connections closed: more than 3 MB held"
        finally:
            for sock in socks:
                sock.close()
    if is_linux():
        assert watch.growth < 40 * MB
    _still_served(server)


def test_oversized_frame_is_refused(server):
    with _connect(server) as sock:
        try:
            sock.sendall(b"\x0b" + b"MSH|" + b"y" * (3 * MB))
        except OSError:
            pass
        assert closed_by_peer(sock, wait=2.0)
    _still_served(server)


def test_garbage_and_binary_get_no_traceback(server):
    for junk in (b"\x00\x01\x02" * 100, b"\x0b\xff\xfe\x00MSH\x1c\r", b"\x0bnot hl7 at all\x1c\r"):
        with _connect(server) as sock:
            sock.sendall(junk)
            sock.settimeout(3)
            try:
                answer = sock.recv(65536)
            except (TimeoutError, OSError):
                answer = b""
            if answer:   # a frame that made it: an HL7 ACK rejecting it, never a crash
                assert b"MSA|A" in answer and (b"MSA|AE" in answer or b"MSA|AR" in answer)
    assert "Traceback" not in server.log()
    _still_served(server)


@pytest.mark.parametrize("shape", ["segments", "fields", "components", "repetitions"])
def test_amplification_on_the_feed_is_bounded(server, shape):
    """1.5 MB messages made of tiny elements: answered in seconds, memory a small multiple of them."""
    message = adt("A01", F.patient_id())
    extra = {"segments": "NTE|1\r" * 250_000, "fields": "NTE|" + "|" * 1_500_000 + "\r",
             "components": "NTE|1|" + "^" * 1_500_000 + "\r",
             "repetitions": "PID|||" + "1^^^&1.2&ISO~" * 100_000 + "\r"}[shape]
    message += extra
    with RssWatch(server.process.pid) as watch, MllpClient("127.0.0.1", server.mllp_port, timeout=30) as client:
        started = time.monotonic()
        ack = client.send(message)
        elapsed = time.monotonic() - started
    assert "MSA|A" in ack and elapsed < 10
    if is_linux():
        assert watch.growth <= 20 * len(message), f"{shape}: +{watch.growth // 1024} KB for {len(message) // 1024} KB"
    _still_served(server)
