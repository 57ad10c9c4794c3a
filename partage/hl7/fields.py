"""Typed reading of the message fields both feeds use."""

from __future__ import annotations

from ..metadata.datatypes import CX, DatatypeError
from ..metadata.er7 import Segment


def patient_identifiers(segment: Segment, n: int) -> list[CX]:
    """The repetitions of SEG-n (PID-3, MRG-1) that are identifiers with an assigning authority
    (a universal id); the others, and those that are not CX at all, are left out."""
    usable: list[CX] = []
    for text in segment.repetitions(n):
        try:
            cx = CX.parse(text.strip(), strict=False)
        except DatatypeError:
            continue
        if cx.id.strip() and cx.assigning_authority.universal_id.strip():
            usable.append(cx)
    return usable
