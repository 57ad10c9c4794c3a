"""The lineages of more than one version, and the patients holding their versions
(`lineage_patients`, migrations 0011 and 0012); and the lineages of transforms (the source
of an XFRM, migration 0019), which the view judges with the documents they transform.

Nearly every document is alone in its lineage, its own newest version: the view asks this
coordinator table which lineages of a page have other versions, and reads the newest
versions of those only (none, for most pages: no read of the shards at all). A lineage's
patient is nearly always one, the patient of its documents, which is why the view narrows
that read to the documents' own patients (their shards). An ITI-57 new version naming
another patient moves a document and leaves its older versions, and the documents they
replaced, with the first: both patients are recorded, and the view adds them, so that a
masking of the moved document hides what it left behind
(tests/integration/test_access_attacks.py).

Written where a version joins a lineage (`register.insert_objects`, for a replacement and for
an ITI-57 new version), in the same transaction; a record whose lineage lost its other versions (a removal) only
costs the view a read that finds one version. `partage fsck` reports a lineage of several
versions not recorded (`consistency.unrecorded_lineages`)."""

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


def holders(conn: Connection, lineages: Iterable[str]) -> dict[str, set[int]]:
    """Of these lineages, those of more than one version, each with the patients holding its
    versions (a lineage of one version is not there)."""
    out: dict[str, set[int]] = {}
    for chunk in chunks(sorted(set(lineages))):
        for lineage, pk in conn.execute(select(LP.c.lineage, LP.c.patient_pk).where(LP.c.lineage.in_(chunk))):
            out.setdefault(lineage, set()).add(pk)
    return out


def merge(conn: Connection, gone: int, keep: int) -> None:
    """ITI-8 A40: the merged patient's lineages are the survivor's."""
    conn.execute(delete(LP).where(LP.c.patient_pk == gone,
                                  LP.c.lineage.in_(select(LP.c.lineage).where(LP.c.patient_pk == keep))))
    conn.execute(update(LP).where(LP.c.patient_pk == gone).values(patient_pk=keep))


def forget(conn: Connection, patient_pk: int) -> None:
    """A purged record's lineages (access_state.purge_record): its versions are gone."""
    conn.execute(delete(LP).where(LP.c.patient_pk == patient_pk))
