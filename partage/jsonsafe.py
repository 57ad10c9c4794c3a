"""Bounded JSON parsing for everything that arrives on the wire (FHIR bodies, JSON Patch).

`json.loads` builds every object before anyone can look at it, and Python objects cost far
more than the bytes that describe them: `{}` is 2 bytes on the wire and 64 in memory, and a
FHIR model built from it about a kilobyte. So the structure is counted first, on the bytes
(in C, no copy): a body with more `{` and `[` than `base_containers` plus one per
`bytes_per_container` bytes is refused (`TooComplex`) before anything is built. (Brackets
inside strings are counted too: an upper bound, and real FHIR strings hold few.) Nesting is
measured on the parsed value, resource by resource (`containers`), and json.loads' own
recursion limit stops anything deeper first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .failures import TooComplex


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 64
    base_containers: int = 2000
    bytes_per_container: int = 16
    max_resource_containers: int = 5000   # objects + arrays of one resource turned into a model

    def allowed(self, size: int) -> int:
        return self.base_containers + size // self.bytes_per_container


DEFAULT_LIMITS = JsonLimits()


def scan(data: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> int:
    """An upper bound of the objects and arrays in `data`; TooComplex beyond the limits."""
    count = data.count(b"{") + data.count(b"[")
    allowed = limits.allowed(len(data))
    if count > allowed:
        raise TooComplex(f"JSON with {count} objects and arrays in {len(data)} bytes: more than the "
                         f"{allowed} allowed (PARTAGE_MAX_JSON_CONTAINERS + one per "
                         f"{limits.bytes_per_container} bytes)")
    return count


def loads(data: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """json.loads after `scan`: ValueError when malformed, TooComplex when over a limit."""
    scan(data, limits)
    try:
        return json.loads(data)
    except RecursionError:
        raise TooComplex(f"JSON nested deeper than {limits.max_depth} levels (PARTAGE_MAX_JSON_DEPTH)") from None


def containers(value: Any, stop_after: int, max_depth: int = DEFAULT_LIMITS.max_depth) -> int:
    """Objects and arrays in a parsed value, counted up to `stop_after` (+1); TooComplex when
    they nest deeper than `max_depth`. Walks with one iterator per level: no copy of the value."""
    if not isinstance(value, dict | list):
        return 0
    count = 1
    stack = [iter(value.values() if isinstance(value, dict) else value)]
    while stack and count <= stop_after:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, dict | list):
            count += 1
            if len(stack) >= max_depth:
                raise TooComplex(f"JSON nested deeper than {max_depth} levels (PARTAGE_MAX_JSON_DEPTH)")
            stack.append(iter(item.values() if isinstance(item, dict) else item))
    return count


_END = object()
