"""Byte-level mutations of a valid seed message: the shapes broken input takes in practice
(truncation, flipped bytes, duplicated or deleted spans, spliced-in hostile fragments)."""

from __future__ import annotations

from hypothesis import strategies as st

HOSTILE = [
    b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    b"&e;", b"]]>", b"<", b">", b"\x00", b"\xff\xfe", b"--", b"\r\n\r\n", b"\x0b", b"\x1c\r",
    b'xmlns="urn:x"', b"<x:y/>", b'"', b"'", b"%", b"|", b"^", b"~", b"\\", b"&", b"{", b"}",
    b"9" * 40, b"-1", b"1e309", b"\xe9", "é".encode(), b"<a>" * 200,
]


@st.composite
def mutated(draw, seed: bytes, max_mutations: int = 4) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_mutations))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate", "hostile"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif op == "duplicate":
            span = bytes(data[at:at + draw(st.integers(1, 256))])
            data[at:at] = span
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from(HOSTILE))
    return bytes(data)
