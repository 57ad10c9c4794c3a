"""Patients: their identifiers (CX), demographics, and the opaque id URLs name them by.

The ITI-8 feed and FHIR create patients; every other table names a patient by `patient_pk`,
which never leaves the server. What URLs and FHIR resources carry is `public_id`, random,
so that ids cannot be enumerated; a Patient created through FHIR with a client-chosen id
keeps that id as an identifier under `FHIR_ID_AUTHORITY`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, select, update

from ..metadata.datatypes import CX, HD, XTN, DatatypeError
from ..textsafe import holds_nul
from . import entry_index, lineages, merged_records, patient_index, schema
from .batches import chunks
from .clock import utc_now

# "FHIR Patient logical ids of this Partage server", in the UUID-derived arc 2.25.
FHIR_ID_AUTHORITY = "2.25.211310386435413264734375473219935735847"
# The tables registry.sharding distributes over the shards.
SHARDED_TABLES = ("registry_objects", "object_codes", "object_authors")
MAX_MERGE_CHAIN = 32   # merge chains are short; the bound guards against a cycle
# An addr-spec as RFC 5322 3.4.1 writes it plainly (dot-atom local part, a dotted host name):
# what a To: header carries unchanged. Specials, controls, quoted strings, domain literals and
# encoded words ("=?") would make another recipient of it (a group "a:b@c" writes to b@c, a
# comment "(" cuts the address); non-ASCII addresses need SMTPUTF8, which is not used.
_EMAIL = re.compile(r"(?!.*=\?)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


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
    def email(self) -> str:
        """Where the patient's notices are e-mailed (docs/notifications.md): the first
        `telecom` of system `email` of a Patient created through FHIR, else the first e-mail
        repetition of PID-13 the ITI-8 feed sent (XTN `^NET^Internet^address`); "" if none."""
        stored = self.demographics.get("fhir")
        telecoms = stored.get("telecom") if isinstance(stored, dict) else None
        for telecom in telecoms if isinstance(telecoms, list) else []:
            if isinstance(telecom, dict) and telecom.get("system") == "email":
                address = _address(str(telecom.get("value") or ""))
                if address:
                    return address
        for text in self.demographics.get("telecom") or []:
            try:
                xtn = XTN.parse(str(text), strict=False)
            except DatatypeError:
                continue
            if xtn.equipment_type.lower() == "internet" or xtn.use_code == "NET":
                address = _address(xtn.email)
                if address:
                    return address
        return ""

    @property
    def xds_patient_id(self) -> CX | None:
        """The CX that XDS metadata carries: the first identifier that is not a FHIR id."""
        return next((cx for cx in self.identifiers
                     if cx.assigning_authority.universal_id != FHIR_ID_AUTHORITY), None)


def _address(text: str) -> str:
    """An e-mail address fit for a To: header (one address, no spaces or line breaks), or ""."""
    text = text.strip().removeprefix("mailto:")
    return text if _EMAIL.fullmatch(text) else ""


def fhir_id_cx(rid: str) -> CX:
    return CX(rid, HD.iso(FHIR_ID_AUTHORITY))


def new_public_id() -> str:
    return secrets.token_hex(16)


# Built once (values bound at execution): a statement built per call costs its construction
# and cache key each time, about 0.1 ms, and these run several times per submission.
_BY_IDENTIFIER = select(schema.patient_identifiers.c.patient_pk, schema.patients.c.merged_into).join(
    schema.patients, schema.patients.c.pk == schema.patient_identifiers.c.patient_pk).where(
    schema.patient_identifiers.c.authority == bindparam("authority"),
    schema.patient_identifiers.c.value == bindparam("value"))
_BY_IDENTIFIER_LOCKED = _BY_IDENTIFIER.with_for_update(read=True, of=schema.patients)
_BY_VALUE = select(schema.patient_identifiers.c.patient_pk, schema.patients.c.merged_into).join(
    schema.patients, schema.patients.c.pk == schema.patient_identifiers.c.patient_pk).where(
    schema.patient_identifiers.c.value == bindparam("value")).limit(bindparam("limit"))
_MERGED_INTO = select(schema.patients.c.merged_into).where(schema.patients.c.pk == bindparam("pk"))


def identifier_problem(cx: CX) -> str:
    """Why an identifier cannot be kept as given (its parts longer than their columns), or ""."""
    columns = schema.patient_identifiers.c
    for label, value, column in (("CX.1", cx.id, columns.value),
                                 ("CX.4", cx.assigning_authority.universal_id, columns.authority),
                                 ("CX.5", cx.id_type, columns.id_type)):
        limit = column.type.length   # type: ignore[attr-defined]   # String(n)
        if limit is not None and len(value or "") > limit:
            return f"identifier {label} is longer than {limit} characters"
    return ""


def patient_pk(conn: Connection, cx: CX | None) -> int | None:
    """The surviving patient behind an identifier, or None if it was never fed."""
    return _followed(conn, _identifier_row(conn, cx, _BY_IDENTIFIER))


def patient_pks_by_value(conn: Connection, value: str, limit: int = 16) -> set[int]:
    """The surviving patients behind an identifier of this value under any authority (a FHIR
    token without system, search.html#token), merges followed as `patient_pk` does; at most
    `limit` identifiers read (the index on the value alone, migration 0006)."""
    if not value or holds_nul([value]):
        return set()
    rows = conn.execute(_BY_VALUE, {"value": value, "limit": limit}).all()
    return {pk for row in rows if (pk := _followed(conn, row)) is not None}


def active_patient_pk(conn: Connection, cx: CX | None) -> int | None:
    """The patient a write files objects for (a submission, an update), when the identifier is
    still an active one: None if it was never fed, or if its patient was merged into another
    (ITI-8 A40: the subsumed id takes no new documents; XDSUnknownPatientId).

    The patient's row is share-locked until the write commits (PostgreSQL; SQLite has one
    writer): a concurrent merge, which updates the merged patient's row first, waits and then
    moves what the write filed, or the write waits for the merge and finds the id merged away.
    Unlocked, documents filed while a merge committed stayed under a patient no identifier
    leads to any more."""
    row = _identifier_row(conn, cx, _BY_IDENTIFIER_LOCKED)
    return int(row[0]) if row is not None and row[1] is None else None


def _identifier_row(conn: Connection, cx: CX | None, statement: Any) -> Any:
    """(patient pk, merged_into) of the patient holding identifier `cx`, or None."""
    if cx is None or not cx.id or not cx.assigning_authority.universal_id:
        return None
    if holds_nul([cx.id, cx.assigning_authority.universal_id]):
        return None   # no identifier holds one (and PostgreSQL could not compare it)
    return conn.execute(statement, {"authority": cx.assigning_authority.universal_id, "value": cx.id}).first()


def _followed(conn: Connection, row: Any) -> int | None:
    """(pk, merged_into) -> the surviving patient (one statement per merge followed, none otherwise)."""
    if row is None:
        return None
    return int(row[0]) if row[1] is None else surviving(conn, row[1])


def surviving(conn: Connection, pk: int) -> int:
    for _ in range(MAX_MERGE_CHAIN):
        nxt = conn.execute(_MERGED_INTO, {"pk": pk}).scalar()
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
    existed = pk is not None
    if pk is None:
        key = conn.execute(p.insert().values(
            demographics=json.dumps(demographics or {}), public_id=new_public_id(), created_at=now, updated_at=now
        )).inserted_primary_key
        assert key is not None   # a single-row insert always has one
        pk = key[0]
        patient_index.reindex(conn, pk, demographics or {})
    elif demographics is not None:
        conn.execute(update(p).where(p.c.pk == pk).values(demographics=json.dumps(demographics), updated_at=now,
                                                          revision=p.c.revision + 1))
        patient_index.reindex(conn, pk, demographics)
    added = False
    for cx in parsed:
        if patient_pk(conn, cx) is None:
            conn.execute(t.insert().values(patient_pk=pk, authority=cx.assigning_authority.universal_id,
                                           value=cx.id, id_type=cx.id_type))
            added = True
    if added and existed and demographics is None:   # a new identifier is a new version too
        conn.execute(update(p).where(p.c.pk == pk).values(updated_at=now, revision=p.c.revision + 1))
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
    p = schema.patients
    conn.execute(update(p).where(p.c.pk == gone).values(merged_into=keep, updated_at=utc_now()))
    merged_records.merge_states(conn, gone, keep)
    sharded = entry_index.sharded(conn)
    across = not entry_index.same_server(conn, gone, keep)
    entry_index.moved(conn, gone, keep)
    lineages.merge(conn, gone, keep)
    if across:
        _settle_merged_into(conn, gone)
    for table in _merged_tables():
        if sharded and table.name in SHARDED_TABLES:
            (_copy if across else _move)(conn, table, gone, keep)
        else:
            conn.execute(update(table).where(table.c.patient_pk == gone).values(patient_pk=keep))
    return keep


def _merged_tables() -> tuple[Table, ...]:
    """The tables whose rows a merge gives to the surviving patient."""
    return (schema.registry_objects, schema.object_codes, schema.object_authors, schema.clinical_facts,
            schema.document_text, schema.subscriptions)


def stranded(conn: Connection) -> dict[int, list[str]]:
    """An unsharded registry: objects filed under a merged patient (merged patient pk ->
    entryUUIDs). No identifier leads to them (`patient_pk` follows the merge), so no query
    finds them: what a submission that resolved the patient before a concurrent merge
    committed could leave before `active_patient_pk` locked the patient. A sharded registry's merge
    leftovers are `shard_recovery.merge_leftovers`'."""
    if entry_index.sharded(conn):
        return {}
    p, objs = schema.patients, schema.registry_objects
    out: dict[int, list[str]] = {}
    for pk, entry_uuid in conn.execute(select(objs.c.patient_pk, objs.c.entry_uuid).join(
            p, p.c.pk == objs.c.patient_pk).where(p.c.merged_into.is_not(None)).order_by(objs.c.pk)):
        out.setdefault(int(pk), []).append(entry_uuid)
    return out


def rehome(conn: Connection, gone: int) -> int:
    """fsck --repair of `stranded`: a merged patient's rows go to its survivor, as the merge
    would have moved them. Returns the survivor's pk."""
    keep = surviving(conn, gone)
    lineages.merge(conn, gone, keep)
    for table in _merged_tables():
        conn.execute(update(table).where(table.c.patient_pk == gone).values(patient_pk=keep))
    return keep


def _settle_merged_into(conn: Connection, pk: int) -> None:
    """Before a patient's rows are copied on: the originals earlier merges into it left on
    their shards go (their copies are this patient's), or they would stand in the way of the
    copies where the next survivor's partition is theirs."""
    p = schema.patients
    for earlier in conn.execute(select(p.c.pk).where(p.c.merged_into == pk)).scalars():
        drop_copied(conn, int(earlier), pk)


def settle_merge(conn: Connection, merged: CX) -> int:
    """The second step of a merge across two shards, in its own transaction once the merge has
    committed: delete the merged patient's rows left on its shard, those whose copy is on the
    survivor's (`_copy`). Returns the rows deleted (0 where the merge moved them, or was not)."""
    if not entry_index.sharded(conn):
        return 0   # an unsharded merge moves the rows in its own transaction
    row = conn.execute(_BY_IDENTIFIER, {"authority": merged.assigning_authority.universal_id,
                                        "value": merged.id}).first()
    if row is None or row.merged_into is None:
        return 0
    return drop_copied(conn, int(row[0]), surviving(conn, row.merged_into))


def drop_copied(conn: Connection, gone: int, keep: int) -> int:
    """Delete the rows of patient `gone` whose object has its copy (the same key) under `keep`:
    the objects, and their code and author rows by object (a copy rewritten since, by a status
    change, has new code rows of its own)."""
    objs = schema.registry_objects
    copy = objs.alias("copy")
    deleted = 0
    for name in ("object_codes", "object_authors"):
        table = schema.metadata.tables[name]
        deleted += conn.execute(table.delete().where(
            table.c.patient_pk == gone,
            select(copy.c.pk).where(copy.c.patient_pk == keep, copy.c.pk == table.c.object_pk).exists())).rowcount
    deleted += conn.execute(objs.delete().where(
        objs.c.patient_pk == gone,
        select(copy.c.pk).where(copy.c.patient_pk == keep, copy.c.pk == objs.c.pk).exists())).rowcount
    return deleted


def _move(conn: Connection, table: Table, gone: int, keep: int) -> None:
    """Move a merged patient's rows to the survivor's partition on the same shard.

    An UPDATE of patient_pk would not: PostgreSQL does not move a row out of a foreign
    partition (postgres_fdw runs the UPDATE on the shard, where the row stays, under the
    wrong hash). Delete and insert again, in one statement, through the partitioned parent:
    one shard, one remote transaction, so both or neither."""
    names, values = _columns_for(table)
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {table.name} WHERE patient_pk = %(gone)s RETURNING *) "
        f"INSERT INTO {table.name} ({names}) SELECT {values} FROM moved",
        {"gone": gone, "keep": keep})


def _columns_for(table: Table) -> tuple[str, str]:
    """The column list of an INSERT of a merged patient's rows, and the SELECT list that gives
    them to the survivor (`%(keep)s` for patient_pk)."""
    names = [f'"{c.name}"' for c in table.c]
    values = ["%(keep)s" if c.name == "patient_pk" else f'"{c.name}"' for c in table.c]
    return ", ".join(names), ", ".join(values)


class MergeConflict(Exception):
    """A merge across shards found rows of another patient where the survivor's copies go."""


def _copy(conn: Connection, table: Table, gone: int, keep: int) -> None:
    """Copy a merged patient's rows to the survivor's partition on another shard, leaving them
    where they are until the merge has committed (`settle_merge` deletes them then).

    postgres_fdw has no two-phase commit: a move across two shards in one transaction could
    commit the delete on one and fail the insert on the other, and lose the rows. Copied
    first, the worst is a copy without its merge (the coordinator's commit failed): the global
    index still names the merged patient, fsck reports the copy, and the merge sent again
    completes (ON CONFLICT DO NOTHING: what was copied is not copied twice; anything else in
    the way is a MergeConflict, the merge refused).

    The originals are written first (an UPDATE that changes nothing): a write on them that is
    under way holds the merge until it commits, and one that comes after fails on the shard
    (postgres_fdw's remote transactions are REPEATABLE READ) instead of changing an original
    that is about to go."""
    conn.exec_driver_sql(f"UPDATE {table.name} SET patient_pk = patient_pk WHERE patient_pk = %(gone)s",
                         {"gone": gone})
    names, values = _columns_for(table)
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({names}) SELECT {values} FROM {table.name} "
        f"WHERE patient_pk = %(gone)s ON CONFLICT DO NOTHING", {"gone": gone, "keep": keep})
    keys = list(conn.execute(select(table.c.pk).where(table.c.patient_pk == gone)).scalars())
    copied = sum(conn.execute(select(func.count()).select_from(table).where(
        table.c.patient_pk == keep, table.c.pk.in_(chunk))).scalar() or 0 for chunk in chunks(keys))
    if copied != len(keys):
        raise MergeConflict(f"{len(keys) - copied} rows of {table.name} could not be copied to the survivor's "
                            "shard: other rows hold their keys there (partage fsck names them)")
