"""Numeric logical ids (AuditEvent, clinical facts, `pk-N` patients) read from a URL, range-checked.

`str.isdigit` accepts "²" and any number of digits; the database takes 64-bit integers. An id
that is not a plain decimal number within that range names nothing: the caller answers 404.
"""

from __future__ import annotations

MAX_ROW_ID = 2**63 - 1
MAX_OFFSET = 10**9


def numeric_id(text: str) -> int | None:
    """`text` as a row key, or None when it cannot be one."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= MAX_ROW_ID else None


def paging_number(text: str, default: int, *, lowest: int = 0, highest: int = MAX_OFFSET) -> int:
    """A `_count` / `_offset` value clamped to [lowest, highest]; ValueError when not a number."""
    text = (text or "").strip()
    if not text:
        return default
    if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit()) or len(text) > 19:
        raise ValueError(f"{text[:40]!r} is not a whole number")
    return max(lowest, min(int(text), highest))
