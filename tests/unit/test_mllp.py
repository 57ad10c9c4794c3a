"""MLLP framing, the incremental decoder and the blocking client."""

from __future__ import annotations

import socket
import threading

import pytest

from partage.hl7.mllp import MllpClient, MllpDecoder, MllpError, frame

MSG = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.3.1\rPID|||1^^^&1.2&ISO\r"


def test_frame_wraps_with_vt_fs_cr():
    assert frame(MSG) == b"\x0b" + MSG + b"\x1c\x0d"


@pytest.mark.parametrize("bad", [b"a\x0bb", b"a\x1cb"])
def test_frame_refuses_framing_bytes(bad):
    with pytest.raises(MllpError):
        frame(bad)


def test_decoder_splits_messages_fed_byte_by_byte():
    stream = frame(MSG) + b"\r\n" + frame(b"second")
    decoder = MllpDecoder()
    out = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i:i + 1]))
    assert out == [MSG, b"second"]
    assert decoder.pending == 0


def test_decoder_yields_several_messages_from_one_chunk():
    assert list(MllpDecoder().feed(frame(b"1") + frame(b"2") + frame(b"3"))) == [b"1", b"2", b"3"]


def test_split_between_fs_and_cr():
    decoder = MllpDecoder()
    assert list(decoder.feed(b"\x0babc\x1c")) == []
    assert list(decoder.feed(b"\r")) == [b"abc"]


@pytest.mark.parametrize("stream, message", [
    (b"garbage" + frame(b"x"), "outside"),
    (frame(b"x") + b"junk", "outside"),
    (b"\x0babc\x1cX", "not followed"),
    (b"\x0babc\x0bdef\x1c\r", "inside"),
])
def test_decoder_refuses_bad_framing(stream, message):
    with pytest.raises(MllpError, match=message):
        list(MllpDecoder().feed(stream))


def test_decoder_enforces_max_size_before_the_end_arrives():
    decoder = MllpDecoder(max_message=10)
    assert list(decoder.feed(b"\x0b12345")) == []
    with pytest.raises(MllpError, match="longer"):
        list(decoder.feed(b"678901"))
    assert list(MllpDecoder(max_message=10).feed(frame(b"1234567890"))) == [b"1234567890"]


class AckServer:
    """A one-thread MLLP listener that answers each message with an ACK naming it."""

    def __init__(self, close_after_each: bool = False, silent: bool = False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received = []
        self.close_after_each = close_after_each
        self.silent = silent
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                decoder = MllpDecoder()
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    for message in decoder.feed(data):
                        self.received.append(message)
                        if self.silent:
                            continue
                        conn.sendall(frame(b"MSH|^~\\&|ACK\rMSA|AA|" + message[:3]))
                        if self.close_after_each:
                            break
                    if self.close_after_each and self.received:
                        break

    def close(self):
        self.sock.close()


def test_client_sends_and_returns_the_ack():
    server = AckServer()
    try:
        with MllpClient("127.0.0.1", server.port, timeout=5) as client:
            assert client.send("one").endswith("MSA|AA|one")
            assert client.send(b"two").endswith("MSA|AA|two")
        assert server.received == [b"one", b"two"]
    finally:
        server.close()


def test_client_reconnects_when_the_listener_closed_the_connection():
    server = AckServer(close_after_each=True)
    try:
        client = MllpClient("127.0.0.1", server.port, timeout=5)
        assert "AA|abc" in client.send("abc")
        assert "AA|def" in client.send("def")
        client.close()
    finally:
        server.close()


def test_client_times_out_without_ack():
    server = AckServer(silent=True)
    try:
        with pytest.raises(MllpError, match="no acknowledgement"):
            MllpClient("127.0.0.1", server.port, timeout=0.3).send("hello")
    finally:
        server.close()


def test_client_reports_a_refused_connection():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(MllpError, match="cannot connect"):
        MllpClient("127.0.0.1", port, timeout=1).send("x")
