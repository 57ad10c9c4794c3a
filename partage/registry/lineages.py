"""Which patients hold a lineage (`lineage_patients`): nearly always one, the patient of its
documents, which is why the view narrows its reads of a lineage's newest versions to the
documents' own patients (their shards). An ITI-57 new version naming another patient moves a
document and leaves its older versions, and the documents they replaced, with the first: the
update records both patients here, and the view adds them, so that a masking of the moved
document hides what it left behind (tests/integration/test_access_attacks.py)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import schema
from .batches import chunks

LP = schema.lineage_patients


def record(conn: Connection, lineage: str, patient_pks: Iterable[int]) -> None:
    """The lineage is held by these patients too (those already recorded stay)."""
    rows = [{"lineage": lineage, "patient_pk": pk} for pk in sorted(set(patient_pks))]
    insert = pg_insert(LP) if conn.dialect.name == "postgresql" else sqlite_insert(LP)
    conn.execute(insert.on_conflict_do_nothing(index_elements=["lineage", "patient_pk"]), rows)


def patients_of(conn: Connection, lineages: Iterable[str]) -> set[int]:
    """The patients recorded as holding these lineages (none for a lineage never moved)."""
    out: set[int] = set()
    for chunk in chunks(sorted(set(lineages))):
        out.update(conn.execute(select(LP.c.patient_pk).where(LP.c.lineage.in_(chunk))).scalars())
    return out


def merge(conn: Connection, gone: int, keep: int) -> None:
    """ITI-8 A40: the merged patient's lineages are the survivor's."""
    conn.execute(delete(LP).where(LP.c.patient_pk == gone,
                                  LP.c.lineage.in_(select(LP.c.lineage).where(LP.c.patient_pk == keep))))
    conn.execute(update(LP).where(LP.c.patient_pk == gone).values(patient_pk=keep))
