"""Patients: their identifiers (CX), demographics, and the opaque id URLs name them by.

The ITI-8 feed and FHIR create patients; every other table names a patient by `patient_pk`,
which never leaves the server. What URLs and FHIR resources carry is `public_id`, random,
so that ids cannot be enumerated; a Patient created through FHIR with a client-chosen id
keeps that id as an identifier under `FHIR_ID_AUTHORITY`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from ..metadata.datatypes import CX, HD
from . import schema
from .clock import utc_now

# "FHIR Patient logical ids of this Partage server", in the UUID-derived arc 2.25.
FHIR_ID_AUTHORITY = "2.25.211310386435413264734375473219935735847"
MAX_MERGE_CHAIN = 32   # merge chains are short; the bound guards against a cycle


@dataclass
class PatientRecord:
    pk: int
    public_id: str
    identifiers: list[CX] = field(default_factory=list)   # in registration order
    demographics: dict[str, Any] = field(default_factory=dict)

    @property
    def fhir_id(self) -> str:
        """The id of the FHIR Patient: the one a FHIR client gave it, else the public id."""
        return next((cx.id for cx in self.identifiers
                     if cx.assigning_authority.universal_id == FHIR_ID_AUTHORITY), self.public_id)

    @property
    def xds_patient_id(self) -> CX | None:
        """The CX that XDS metadata carries: the first identifier that is not a FHIR id."""
        return next((cx for cx in self.identifiers
                     if cx.assigning_authority.universal_id != FHIR_ID_AUTHORITY), None)


def fhir_id_cx(rid: str) -> CX:
    return CX(rid, HD.iso(FHIR_ID_AUTHORITY))


def new_public_id() -> str:
    return secrets.token_hex(16)


def patient_pk(conn: Connection, cx: CX | None) -> int | None:
    """The surviving patient behind an identifier, or None if it was never fed."""
    if cx is None or not cx.id or not cx.assigning_authority.universal_id:
        return None
    t, p = schema.patient_identifiers, schema.patients
    row = conn.execute(select(t.c.patient_pk, p.c.merged_into).join(p, p.c.pk == t.c.patient_pk).where(
        t.c.authority == cx.assigning_authority.universal_id, t.c.value == cx.id)).first()
    return _followed(conn, row)


def _followed(conn: Connection, row: Any) -> int | None:
    """(pk, merged_into) -> the surviving patient (one statement per merge followed, none otherwise)."""
    if row is None:
        return None
    return int(row[0]) if row[1] is None else surviving(conn, row[1])


def surviving(conn: Connection, pk: int) -> int:
    p = schema.patients
    for _ in range(MAX_MERGE_CHAIN):
        nxt = conn.execute(select(p.c.merged_into).where(p.c.pk == pk)).scalar()
        if nxt is None:
            return pk
        pk = nxt
    return pk


def by_public_id(conn: Connection, rid: str) -> int | None:
    """A patient by the id a URL or a FHIR reference carries (public id or FHIR id)."""
    if not rid:
        return None
    p = schema.patients
    row = conn.execute(select(p.c.pk, p.c.merged_into).where(p.c.public_id == rid)).first()
    return _followed(conn, row) if row is not None else patient_pk(conn, fhir_id_cx(rid))


def record(conn: Connection, pk: int) -> PatientRecord | None:
    p, t = schema.patients, schema.patient_identifiers
    row = conn.execute(select(p.c.pk, p.c.public_id, p.c.demographics).where(p.c.pk == pk)).first()
    if row is None:
        return None
    ids = conn.execute(select(t.c.value, t.c.authority, t.c.id_type)
                       .where(t.c.patient_pk == pk).order_by(t.c.pk)).all()
    return PatientRecord(row.pk, row.public_id or "", [CX(i.value, HD.iso(i.authority), i.id_type or "") for i in ids],
                         json.loads(row.demographics or "{}"))


def upsert(conn: Connection, identifiers: Iterable[CX], demographics: dict[str, Any] | None = None) -> int:
    """Create or update the patient known by any of these identifiers."""
    parsed = list(identifiers)
    t, p = schema.patient_identifiers, schema.patients
    now = utc_now()
    pk = next((found for found in (patient_pk(conn, cx) for cx in parsed) if found is not None), None)
    if pk is None:
        pk = conn.execute(p.insert().values(
            demographics=json.dumps(demographics or {}), public_id=new_public_id(), created_at=now, updated_at=now
        )).inserted_primary_key[0]
    elif demographics is not None:
        conn.execute(update(p).where(p.c.pk == pk).values(demographics=json.dumps(demographics), updated_at=now))
    for cx in parsed:
        if patient_pk(conn, cx) is None:
            conn.execute(t.insert().values(patient_pk=pk, authority=cx.assigning_authority.universal_id,
                                           value=cx.id, id_type=cx.id_type))
    return pk


def merge(conn: Connection, surviving_id: CX, merged_id: CX) -> int:
    """ITI-8 A40: the merged id's documents now belong to the surviving patient."""
    keep = patient_pk(conn, surviving_id)
    if keep is None:
        keep = upsert(conn, [surviving_id])
    gone = patient_pk(conn, merged_id)
    if gone is None:
        upsert(conn, [merged_id])
        gone = patient_pk(conn, merged_id)
    if gone is None or gone == keep:
        return keep
    p, objs = schema.patients, schema.registry_objects
    conn.execute(update(p).where(p.c.pk == gone).values(merged_into=keep, updated_at=utc_now()))
    for table in (objs, schema.object_codes, schema.object_authors, schema.clinical_facts, schema.document_text):
        conn.execute(update(table).where(table.c.patient_pk == gone).values(patient_pk=keep))
    return keep


def live(conn: Connection, limit: int) -> list[int]:
    """Patients not merged into another, oldest first (an unfiltered Patient search)."""
    p = schema.patients
    return list(conn.execute(select(p.c.pk).where(p.c.merged_into.is_(None)).order_by(p.c.pk).limit(limit))
                .scalars())
