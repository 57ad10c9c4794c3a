"""MLLP framing (HL7 v2 over TCP): <VT> message <FS><CR>.

`frame` wraps a message, `MllpDecoder` splits a byte stream back into messages
(incrementally, with a size bound, refusing bytes outside frames), and `MllpClient`
sends one message and waits for its acknowledgement. The listener that uses the
decoder lives in `partage.hl7.server`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from ..metadata.er7 import decode, encode

START = b"\x0b"          # VT
END = b"\x1c\x0d"        # FS CR
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
# Senders commonly put line breaks between frames; anything else outside a frame is garbage.
_BETWEEN_FRAMES = b"\r\n"


class MllpError(ValueError):
    """The byte stream is not valid MLLP, or a peer did not answer in time."""


def frame(message: bytes) -> bytes:
    """`message` wrapped for the wire; refuses bytes that would break the framing."""
    if START in message or b"\x1c" in message:
        raise MllpError("an HL7 message may not contain the MLLP framing bytes 0x0B or 0x1C")
    return START + message + END


class MllpDecoder:
    """Incremental MLLP decoder: feed bytes as they arrive, get whole messages out.

    Between frames only CR/LF is tolerated; anything else, a start byte inside a
    frame, an FS not followed by CR, or a frame longer than max_message raises
    MllpError (the connection should then be dropped: framing cannot be recovered).
    """

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._in_frame = False
        self._scanned = 0   # bytes of the current frame already checked

    @property
    def pending(self) -> int:
        """Bytes held for an unfinished frame (0 between frames)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Messages completed by `data`, in order (consume the generator to process `data`)."""
        self._buffer += data
        while self._buffer:
            if not self._in_frame:
                stray = len(self._buffer) - len(self._buffer.lstrip(_BETWEEN_FRAMES))
                del self._buffer[:stray]
                if not self._buffer:
                    return
                if self._buffer[0] != START[0]:
                    raise MllpError(f"bytes outside an MLLP frame (starting {bytes(self._buffer[:16])!r}); "
                                    "expected 0x0B")
                del self._buffer[0]
                self._in_frame, self._scanned = True, 0
                continue
            end = self._buffer.find(b"\x1c", self._scanned)
            limit = len(self._buffer) if end < 0 else end
            if self._buffer.find(START, self._scanned, limit) >= 0:
                raise MllpError("0x0B (start block) inside an MLLP frame: the previous frame never ended")
            if limit > self.max_message:
                raise MllpError(f"MLLP message longer than {self.max_message} bytes")
            self._scanned = limit
            if end < 0 or end + 1 >= len(self._buffer):
                return   # wait for the rest of the frame (or the CR after FS)
            if self._buffer[end + 1] != END[1]:
                raise MllpError("MLLP end block 0x1C not followed by 0x0D")
            message = bytes(self._buffer[:end])
            del self._buffer[:end + 2]
            self._in_frame, self._scanned = False, 0
            yield message


class MllpClient:
    """A blocking MLLP sender: one connection, one message at a time, each waits for its ACK."""

    def __init__(self, host: str, port: int, timeout: float = 10.0,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_message = max_message
        self._sock: socket.socket | None = None

    def send(self, message: str | bytes) -> str:
        """Send `message` (str is sent in the charset its MSH-18 declares, UTF-8 by default) and
        return the acknowledgement text (read in the charset its MSH-18 declares)."""
        data = encode(message) if isinstance(message, str) else message
        reused = self._sock is not None
        try:
            return self._exchange(data)
        except OSError as exc:
            self.close()
            if not reused:
                raise MllpError(f"MLLP exchange with {self.host}:{self.port} failed: {exc}") from exc
        # The listener may have closed an idle connection: one attempt on a fresh one.
        try:
            return self._exchange(data)
        except OSError as exc:
            self.close()
            raise MllpError(f"MLLP exchange with {self.host}:{self.port} failed: {exc}") from exc

    def _exchange(self, data: bytes) -> str:
        sock = self._connect()
        try:
            sock.sendall(frame(data))
            decoder = MllpDecoder(self.max_message)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"MLLP peer {self.host}:{self.port} closed the connection "
                                          "without acknowledging")
                for reply in decoder.feed(chunk):
                    return decode(reply)[0]
        except TimeoutError as exc:   # before OSError: a timeout is not worth a retry
            self.close()
            raise MllpError(f"no acknowledgement from {self.host}:{self.port} within {self.timeout} s") from exc
        except MllpError:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                raise MllpError(f"cannot connect to MLLP listener {self.host}:{self.port}: {exc}") from exc
            self._sock.settimeout(self.timeout)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
