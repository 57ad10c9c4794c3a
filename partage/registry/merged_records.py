"""What an ITI-8 merge (A40) does to the two patients' record states (consent, blocks, the
opposition to bris de glace): the rule `registry.patients.merge` applies in its transaction.

A module of its own: `access_state` reads and writes these tables for the record's flows and
reaches `patients` through `store`; the merge, in `patients`, needs this rule only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from . import schema
from .clock import utc_now


def merge_states(conn: Connection, gone: int, keep: int) -> None:
    """ITI-8 A40, in the merge's transaction: the survivor's record takes the strictest of the
    two states (docs/access.md): closed if either was closed, opposed to bris de glace if either
    was, every professional either blocked stays blocked (a médecin traitant one of them blocked
    is no longer the médecin traitant).
    A survivor without a record (no consent) stays without one: the merged documents are then
    out of reach, never opened by the merge."""
    a, b = schema.patient_access, schema.patient_blocks
    rows = {r.patient_pk: r for r in conn.execute(select(a).where(a.c.patient_pk.in_([gone, keep])))}
    blocked = set(conn.execute(select(b.c.professional_id).where(b.c.patient_pk == keep)).scalars())
    for professional in conn.execute(select(b.c.professional_id).where(b.c.patient_pk == gone)).scalars():
        if professional not in blocked:
            conn.execute(b.insert().values(patient_pk=keep, professional_id=professional, created_at=utc_now()))
            blocked.add(professional)
    conn.execute(b.delete().where(b.c.patient_pk == gone))
    kept, merged = rows.get(keep), rows.get(gone)
    if kept is None or merged is None:
        return
    values: dict[str, Any] = {}
    if merged.status == "closed" and kept.status != "closed":
        values.update(status="closed", closed_at=merged.closed_at or utc_now())
    if merged.bdg_opposed and not kept.bdg_opposed:
        values["bdg_opposed"] = 1
    if kept.medecin_traitant and kept.medecin_traitant in blocked:
        values["medecin_traitant"] = ""
    if values:
        conn.execute(a.update().where(a.c.patient_pk == keep).values(updated_at=utc_now(), **values))
