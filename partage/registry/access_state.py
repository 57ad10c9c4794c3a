"""The per-patient state the access rules need: record open/closed (consent), the
médecin traitant, the professionals the patient blocked, opposition to bris de glace.

The registry owns these tables (`patient_access`, `patient_blocks`); `partage.access`
decides with the `RecordState` read here, operators change it with `partage access ...`
and patients through FHIR Consent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, cast, delete, null, select, union_all

from ..metadata.datatypes import CX
from . import derived, entry_index, lineages, schema
from .clock import utc_now
from .register import release_unique_ids
from .store import Registry

OPEN, CLOSED, NONE = "open", "closed", "none"
PURGED = "purged"         # a closed record whose content `purge_record` deleted
RETENTION_YEARS = 10      # a closed record is kept this long, then purged


class RecordError(Exception):
    """An operation the record's state does not allow (e.g. blocking the médecin traitant)."""


@dataclass(frozen=True)
class RecordState:
    patient_pk: int | None
    status: str = NONE                 # none (no consent yet) | open | closed
    medecin_traitant: str = ""
    blocked: frozenset[str] = frozenset()
    bdg_opposed: bool = False
    closed_at: str = ""


NO_RECORD = RecordState(patient_pk=None)


def version(state: RecordState) -> str:
    """The version of what the patient manages (the FHIR Consent's meta.versionId and ETag): it
    changes whenever the status, the médecin traitant, a block or the opposition changes."""
    text = json.dumps([state.status, state.medecin_traitant, sorted(state.blocked), state.bdg_opposed])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WantedState:
    """A whole record state, set at once (the FHIR Consent's update)."""

    status: str                          # open | closed | none
    medecin_traitant: str = ""           # "": the current one stays
    blocked: frozenset[str] = frozenset()
    bdg_opposed: bool = False


def load(conn: Connection, patient_pk: int | None) -> RecordState:
    if patient_pk is None:
        return NO_RECORD
    return load_many(conn, [patient_pk])[patient_pk]


# Built once: read for every request that touches a record (values bound at execution). One
# statement, one round trip: the records' rows (`professional_id` NULL), then their blocks.
_A, _B = schema.patient_access, schema.patient_blocks
_STATE_OF = union_all(
    select(_A.c.patient_pk, _A.c.status, _A.c.medecin_traitant, _A.c.bdg_opposed, _A.c.closed_at,
           cast(null(), _B.c.professional_id.type).label("professional_id"))
    .where(_A.c.patient_pk.in_(bindparam("pks", expanding=True))),
    select(_B.c.patient_pk, cast(null(), _A.c.status.type), cast(null(), _A.c.medecin_traitant.type),
           cast(null(), _A.c.bdg_opposed.type), cast(null(), _A.c.closed_at.type), _B.c.professional_id)
    .where(_B.c.patient_pk.in_(bindparam("pks", expanding=True))))


def load_many(conn: Connection, patient_pks: list[int]) -> dict[int, RecordState]:
    """The states of several patients, in one statement."""
    out: dict[int, RecordState] = {}
    if not patient_pks:
        return out
    blocked: dict[int, set[str]] = {}
    records: dict[int, Row[Any]] = {}
    for found in conn.execute(_STATE_OF, {"pks": patient_pks}):
        if found.professional_id is None:
            records[found.patient_pk] = found
        else:
            blocked.setdefault(found.patient_pk, set()).add(found.professional_id)
    for pk in patient_pks:
        row = records.get(pk)
        bl = frozenset(blocked.get(pk, ()))
        out[pk] = RecordState(patient_pk=pk, blocked=bl) if row is None else RecordState(
            patient_pk=pk, status=row.status, medecin_traitant=row.medecin_traitant, blocked=bl,
            bdg_opposed=bool(row.bdg_opposed), closed_at=row.closed_at or "")
    return out


class Records:
    """Changes to the access state, each in its own transaction."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _pk(self, conn: Connection, patient_id: CX) -> int:
        pk = self.registry.patient_pk(conn, patient_id)
        if pk is None:
            raise RecordError(f"patient {patient_id} is not known (feed it first, ITI-8)")
        return pk

    def state(self, patient_id: CX) -> RecordState:
        with self.registry.read() as conn:
            return load(conn, self.registry.patient_pk(conn, patient_id))

    def _upsert(self, conn: Connection, pk: int, **values: str | int | None) -> None:
        a = schema.patient_access
        now = utc_now()
        exists = conn.execute(select(a.c.patient_pk).where(a.c.patient_pk == pk)).first()
        if exists is None:
            conn.execute(a.insert().values(patient_pk=pk, status=values.pop("status", OPEN),
                                           medecin_traitant=values.pop("medecin_traitant", ""),
                                           bdg_opposed=int(values.pop("bdg_opposed", 0) or 0),
                                           opened_at=now, updated_at=now, **values))
        elif values:
            conn.execute(a.update().where(a.c.patient_pk == pk).values(updated_at=now, **values))

    # Each change is a rule on the state read in the caller's transaction (RecordError when the
    # state does not allow it); the public methods run one each, `set_state` several at once.
    def _open(self, conn: Connection, pk: int, medecin_traitant: str) -> None:
        if load(conn, pk).status == NONE:
            self._upsert(conn, pk, status=OPEN)
        else:
            self._upsert(conn, pk, status=OPEN, closed_at=None)
        if medecin_traitant:
            self._set_medecin_traitant(conn, pk, medecin_traitant)

    def _close(self, conn: Connection, pk: int) -> None:
        if load(conn, pk).status != OPEN:
            raise RecordError("the record is not open")
        self._upsert(conn, pk, status=CLOSED, closed_at=utc_now())

    def _set_medecin_traitant(self, conn: Connection, pk: int, professional_id: str) -> None:
        """The médecin traitant, never blocked: naming one lifts any block on them."""
        if load(conn, pk).status == NONE:
            raise RecordError("the record does not exist (no consent)")
        self._upsert(conn, pk, medecin_traitant=professional_id)
        b = schema.patient_blocks
        conn.execute(delete(b).where(b.c.patient_pk == pk, b.c.professional_id == professional_id))

    def _block(self, conn: Connection, pk: int, professional_id: str) -> None:
        state = load(conn, pk)
        if state.status == NONE:
            raise RecordError("the record does not exist (no consent)")
        if professional_id == state.medecin_traitant:
            raise RecordError("the médecin traitant cannot be blocked")
        if professional_id not in state.blocked:
            conn.execute(schema.patient_blocks.insert().values(
                patient_pk=pk, professional_id=professional_id, created_at=utc_now()))

    @staticmethod
    def _unblock(conn: Connection, pk: int, professional_id: str) -> None:
        b = schema.patient_blocks
        conn.execute(delete(b).where(b.c.patient_pk == pk, b.c.professional_id == professional_id))

    def _oppose(self, conn: Connection, pk: int, opposed: bool) -> None:
        if load(conn, pk).status == NONE:
            raise RecordError("the record does not exist (no consent)")
        self._upsert(conn, pk, bdg_opposed=int(opposed))

    def _change(self, patient_id: CX, change: Callable[[Connection, int], None]) -> None:
        with self.registry.write() as conn:
            pk = self._pk(conn, patient_id)
            try:
                change(conn, pk)
            except RecordError as exc:
                raise RecordError(f"{patient_id}: {exc}") from None

    def open(self, patient_id: CX, *, medecin_traitant: str = "") -> None:
        """The patient consented: the record exists and is open (a closed one reopens)."""
        self._change(patient_id, lambda conn, pk: self._open(conn, pk, medecin_traitant))

    def close(self, patient_id: CX) -> None:
        self._change(patient_id, self._close)

    def set_medecin_traitant(self, patient_id: CX, professional_id: str) -> None:
        self._change(patient_id, lambda conn, pk: self._set_medecin_traitant(conn, pk, professional_id))

    def block(self, patient_id: CX, professional_id: str) -> None:
        self._change(patient_id, lambda conn, pk: self._block(conn, pk, professional_id))

    def unblock(self, patient_id: CX, professional_id: str) -> None:
        self._change(patient_id, lambda conn, pk: self._unblock(conn, pk, professional_id))

    def oppose_bris_de_glace(self, patient_id: CX, opposed: bool = True) -> None:
        self._change(patient_id, lambda conn, pk: self._oppose(conn, pk, opposed))

    def set_state(self, patient_id: CX, wanted: WantedState,
                  check: Callable[[RecordState], None] | None = None) -> None:
        """The whole state, changed at once (FHIR Consent update): all of it or nothing, each
        part judged by the rule of its change alone. The patient's row is locked first, so that
        a concurrent change waits and is judged against this one's outcome; `check` then sees
        the current state in the same transaction (a version precondition: If-Match)."""
        def change(conn: Connection, pk: int) -> None:
            conn.execute(select(schema.patients.c.pk).where(schema.patients.c.pk == pk).with_for_update())
            state = load(conn, pk)
            if check is not None:
                check(state)
            if wanted.status == NONE:
                if state.status != NONE or wanted.medecin_traitant or wanted.blocked or wanted.bdg_opposed:
                    raise RecordError("without a record (no consent) there is nothing to set; a record "
                                      "cannot go back to having no consent (close it)")
                return
            if (wanted.medecin_traitant or state.medecin_traitant) in wanted.blocked:
                raise RecordError("the médecin traitant cannot be blocked")
            if wanted.status == OPEN and state.status != OPEN:
                self._open(conn, pk, "")
            elif wanted.status == CLOSED and state.status not in (CLOSED, PURGED):
                self._close(conn, pk)
            if wanted.medecin_traitant and wanted.medecin_traitant != state.medecin_traitant:
                self._set_medecin_traitant(conn, pk, wanted.medecin_traitant)
            now = load(conn, pk)
            for pro in sorted(wanted.blocked - now.blocked):
                self._block(conn, pk, pro)
            for pro in sorted(now.blocked - wanted.blocked):
                self._unblock(conn, pk, pro)
            if wanted.bdg_opposed != now.bdg_opposed:
                self._oppose(conn, pk, wanted.bdg_opposed)

        self._change(patient_id, change)

    def purgeable(self, now: datetime | None = None) -> list[int]:
        """Patients whose record was closed more than RETENTION_YEARS ago."""
        moment = (now or datetime.now(UTC)) - timedelta(days=365 * RETENTION_YEARS + RETENTION_YEARS // 4)
        limit = moment.strftime("%Y%m%d%H%M%S")
        a = schema.patient_access
        with self.registry.read() as conn:
            return list(conn.execute(select(a.c.patient_pk).where(
                a.c.status == CLOSED, a.c.closed_at.is_not(None), a.c.closed_at < limit)).scalars())


def purge_record(registry: Registry, patient_pk: int) -> tuple[int, set[str]]:
    """Delete a closed record's registry objects, with what derives from them (facts, text) and
    the tombstones of what was removed from it earlier; the audit trail stays. Returns the
    number of objects removed and the blob addresses no object uses any more (the caller
    deletes them)."""
    obj, a = schema.registry_objects, schema.patient_access
    with registry.write() as conn:
        state = load(conn, patient_pk)
        if state.status != CLOSED:
            raise RecordError(f"patient #{patient_pk}'s record is not closed")
        rows = conn.execute(select(obj.c.pk, obj.c.entry_uuid, obj.c.unique_id, obj.c.blob_address, obj.c.lid,
                                   obj.c.kind).where(obj.c.patient_pk == patient_pk)).all()
        uuids = [r.entry_uuid for r in rows]
        linked = conn.execute(select(obj.c.pk, obj.c.entry_uuid, obj.c.patient_pk).where(
            obj.c.kind == schema.KIND_ASSOCIATION, obj.c.source_uuid.in_(uuids) | obj.c.target_uuid.in_(uuids),
            *entry_index.route_references(conn, uuids))).all() if uuids else []
        assocs: dict[int, str] = {r.pk: r.entry_uuid for r in linked}
        pks = {r.pk for r in rows} | set(assocs)
        # the patients of those rows, so that a sharded registry deletes on their shards only
        owners = sorted({patient_pk} | {r.patient_pk for r in linked if r.patient_pk is not None})
        for table in (schema.object_codes, schema.object_authors):
            conn.execute(delete(table).where(table.c.patient_pk.in_(owners), table.c.object_pk.in_(list(pks))))
        conn.execute(delete(obj).where(obj.c.patient_pk.in_(owners), obj.c.pk.in_(list(pks))))
        entry_index.removed(conn, [*uuids, *assocs.values()])   # a sharded registry's global index
        release_unique_ids(conn, [r.unique_id for r in rows])
        derived.forget_orphans(conn, [r.lid or r.entry_uuid for r in rows if r.kind == schema.KIND_DOCUMENT])
        tombstones = schema.removed_objects
        addresses = {r.blob_address for r in rows if r.blob_address} | set(conn.execute(
            select(tombstones.c.blob_address).where(tombstones.c.patient_pk == patient_pk,
                                                    tombstones.c.blob_address.is_not(None))).scalars())
        conn.execute(delete(tombstones).where(tombstones.c.patient_pk == patient_pk))
        used = set(conn.execute(select(obj.c.blob_address).where(obj.c.blob_address.in_(list(addresses))))
                   .scalars()) | set(conn.execute(select(tombstones.c.blob_address).where(
                       tombstones.c.blob_address.in_(list(addresses)))).scalars()) if addresses else set()
        conn.execute(delete(schema.patient_blocks).where(schema.patient_blocks.c.patient_pk == patient_pk))
        lineages.forget(conn, patient_pk)
        conn.execute(a.update().where(a.c.patient_pk == patient_pk).values(status=PURGED, updated_at=utc_now()))
    return len(pks), addresses - used
