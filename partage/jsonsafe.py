"""Bounded JSON parsing for everything that arrives on the wire (FHIR bodies, JSON Patch).

`json.loads` builds every object before anyone can look at it, and Python objects cost far
more than the bytes that describe them: `{}` is 2 bytes on the wire and 64 in memory, and a
FHIR model built from it about a kilobyte. So the structure is counted first, on the bytes:
strings are skipped, objects and arrays counted and their nesting measured; a body deeper
than `max_depth`, or with more containers than `base_containers` plus one per
`bytes_per_container` bytes, is refused (`TooComplex`) before anything is built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .failures import TooComplex

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class JsonLimits:
    max_depth: int = 64
    base_containers: int = 2000
    bytes_per_container: int = 8
    max_resource_containers: int = 5000   # objects + arrays of one resource turned into a model

    def allowed(self, size: int) -> int:
        return self.base_containers + size // self.bytes_per_container


DEFAULT_LIMITS = JsonLimits()


def scan(data: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> int:
    """The number of objects and arrays in `data`; TooComplex beyond the limits."""
    bare = _STRING.sub(b"", data)
    count = bare.count(b"{") + bare.count(b"[")
    allowed = limits.allowed(len(data))
    if count > allowed:
        raise TooComplex(f"JSON with {count} objects and arrays in {len(data)} bytes: more than the "
                         f"{allowed} allowed (PARTAGE_MAX_JSON_CONTAINERS + one per "
                         f"{limits.bytes_per_container} bytes)")
    depth = 0
    for match in _BRACKET.finditer(bare):
        if match.group() in (b"{", b"["):
            depth += 1
            if depth > limits.max_depth:
                raise TooComplex(f"JSON nested deeper than {limits.max_depth} levels (PARTAGE_MAX_JSON_DEPTH)")
        else:
            depth -= 1
    return count


def loads(data: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """json.loads after `scan`: ValueError when malformed, TooComplex when over a limit."""
    scan(data, limits)
    return json.loads(data)


def containers(value: Any, stop_after: int) -> int:
    """Objects and arrays in a parsed value, counted up to `stop_after` (+1)."""
    count, todo = 0, [value]
    while todo and count <= stop_after:
        item = todo.pop()
        if isinstance(item, dict):
            count += 1
            todo.extend(item.values())
        elif isinstance(item, list):
            count += 1
            todo.extend(item)
    return count
