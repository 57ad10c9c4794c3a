"""Pages cut after the gate: the database orders and filters, the gate judges, then a page is cut.

The registry answers candidates in keyset order (`partage.registry.search`); `cut` asks for them
in batches, passes each batch through a judge (the one visibility gate), keeps what the actor may
see and stops once the page is full and one more visible item proves that another page
follows. So a page never holds, and a total never counts, what the actor may not see; and a
heavy record costs a page, not the record. The next page starts after the last item *shown*.

Totals: `count` runs the same path over every candidate (asked for with `_total`); without it,
a total is known for free only when the first page holds every match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

R = TypeVar("R")
Key = tuple[Any, ...]
MIN_BATCH = 16      # fewer rows than this per round trip is not worth a query
COUNT_BATCH = 500   # rows per round trip when counting every match

Fetch = Callable[[Key | None, int], Sequence[R]]     # (after, limit) -> candidates in order
Judge = Callable[[Sequence[R]], Sequence[R]]        # candidates -> those the actor may see, in order


@dataclass(frozen=True)
class PageRequest:
    count: int                   # items on the page (0: none, only the total)
    after: Key | None = None     # the keyset position the page starts after (None: the first page)
    total: bool = False          # count every visible match


@dataclass
class Page(Generic[R]):
    items: list[R]
    next: Key | None             # where the next page starts; None: nothing visible follows
    total: int | None            # every visible match, when known
    withheld: int                # candidates the gate withheld on the way


def cut(fetch: Fetch[R], judge: Judge[R], position: Callable[[R], Key], request: PageRequest) -> Page[R]:
    items: list[R] = []
    after, withheld, more = request.after, 0, False
    while not more:
        size = max(request.count + 1 - len(items), MIN_BATCH)
        rows = fetch(after, size)
        if not rows:
            break
        kept = judge(rows)
        withheld += len(rows) - len(kept)
        for row in kept:
            if len(items) < request.count:
                items.append(row)
            else:
                more = True
                break
        after = position(rows[-1])
        if len(rows) < size:
            break
    total: int | None = None
    if request.total:
        total = count(fetch, judge, position)
    elif request.after is None and not more:
        total = len(items)
    return Page(items, position(items[-1]) if more and items else None, total, withheld)


def count(fetch: Fetch[R], judge: Judge[R], position: Callable[[R], Key]) -> int:
    """Every visible match, through the same judge, in batches."""
    seen: int = 0
    after: Key | None = None
    while True:
        rows = fetch(after, COUNT_BATCH)
        if not rows:
            return seen
        seen += len(judge(rows))
        if len(rows) < COUNT_BATCH:
            return seen
        after = position(rows[-1])
