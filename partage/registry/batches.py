"""How many values one `IN (...)` list carries, and the slices of a longer list.

One size for every look-up by a list of keys: short enough for SQLite's bound-parameter
limit and for a plan PostgreSQL makes quickly, long enough that a page or a submission is one
statement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

IN_LIST = 500

_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int = IN_LIST) -> Iterator[list[_T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
