"""Text a client sent, kept or compared where NUL cannot go.

PostgreSQL's text cannot hold the NUL character: a value holding one fails the statement
that writes or compares it, and a request that fails that way looks like an outage (503)
or a crash (500). So the doors refuse a NUL where nothing legitimate holds one (an address,
a form field: `holds_nul`), and what must be kept whatever it quotes (an audit record)
writes it as U+FFFD (`without_nul`). XML has its own, wider rule: `xmlsafe.xml_text`.
"""

from __future__ import annotations

from collections.abc import Iterable

NUL = "\x00"


def holds_nul(texts: Iterable[str]) -> bool:
    return any(NUL in text for text in texts)


def address_holds_nul(path: str, params: Iterable[tuple[str, str]]) -> bool:
    """A request's path, or one of its query parameters' names or values, holds a NUL."""
    return holds_nul([path, *(text for pair in params for text in pair)])


def without_nul(text: str) -> str:
    return text.replace(NUL, "\ufffd")
