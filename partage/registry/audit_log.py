"""The audit trail's tables: one row per access (`audit_events`, append-only) and the notices
owed to patients (`access_notifications`). What a row says is `partage.access.audit`'s
business; how it is stored and read is here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from ..textsafe import without_nul
from . import schema
from .search_index import DateMatch

EVENTS = schema.audit_events
NOTICES = schema.access_notifications
# Built once: every request writes an audit row.
_INSERT_EVENT = EVENTS.insert()
_INSERT_NOTICE = NOTICES.insert()


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every NUL character made U+FFFD: a record quotes what a client sent (the
    request line, a reason, a credential's names), and PostgreSQL's text cannot hold NUL; a
    request that could not be audited would not be served."""
    return {key: without_nul(value) if isinstance(value, str) else value for key, value in row.items()}


def probe(conn: Connection, row: dict[str, Any]) -> None:
    """Insert `row` in a transaction the caller rolls back (`Registry.rehearsal`): proves a
    record can be written (same triggers, rights and locks as the real one), leaves nothing."""
    conn.execute(_INSERT_EVENT, _storable(row))


def append(conn: Connection, row: dict[str, Any]) -> int:
    """Write one audit row; its key."""
    key = conn.execute(_INSERT_EVENT, _storable(row)).inserted_primary_key
    assert key is not None   # a single-row insert always has one
    return int(key[0])


def add_notice(conn: Connection, **values: Any) -> None:
    """A notice owed to a patient, in the transaction of the audit row it is about."""
    conn.execute(_INSERT_NOTICE, values)


def _iso(digits: str) -> str:
    """14 digits (a search range's side, UTC) -> the prefix of `recorded_at` they name."""
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:{digits[12:14]}"


def recorded(match: DateMatch) -> ColumnElement[bool]:
    """A FHIR date search on the instant a row was recorded (ISO text, UTC, compared as text)."""
    column, low, high = EVENTS.c.recorded_at, _iso(match.low), _iso(match.high)
    return {"eq": and_(column >= low, column < high), "ne": or_(column < low, column >= high),
            "gt": column >= high, "sa": column >= high, "ge": column >= low,
            "lt": column < low, "eb": column < low, "le": column < high}[match.prefix]


def _criteria(patient_pk: int | None, actor_id: str, dates: Sequence[DateMatch]) -> list[ColumnElement[bool]]:
    out = [recorded(match) for match in dates]
    if patient_pk is not None:
        out.append(EVENTS.c.patient_pk == patient_pk)
    if actor_id:
        out.append(EVENTS.c.actor_id == actor_id)
    return out


def events(conn: Connection, *, patient_pk: int | None = None, actor_id: str = "", limit: int = 100,
           since_pk: int = 0, before_pk: int = 0, dates: Sequence[DateMatch] = ()) -> list[dict[str, Any]]:
    """Audit rows, newest first, for a patient and/or an actor, recorded when `dates` say (all);
    keys above `since_pk` and below `before_pk` (when given)."""
    query = select(EVENTS).where(*_criteria(patient_pk, actor_id, dates))
    if since_pk:
        query = query.where(EVENTS.c.pk > since_pk)
    if before_pk:
        query = query.where(EVENTS.c.pk < before_pk)
    return [row._asdict() for row in conn.execute(query.order_by(EVENTS.c.pk.desc()).limit(limit)).all()]



def event(conn: Connection, pk: int) -> dict[str, Any] | None:
    """One audit row by its key."""
    found = conn.execute(select(EVENTS).where(EVENTS.c.pk == pk)).first()
    return found._asdict() if found is not None else None


def notices(conn: Connection, patient_pk: int) -> list[dict[str, Any]]:
    """The notices owed to a patient, oldest first."""
    return [row._asdict() for row in
            conn.execute(select(NOTICES).where(NOTICES.c.patient_pk == patient_pk).order_by(NOTICES.c.pk)).all()]


def mark_notices_sent(conn: Connection, pks: Iterable[int], sent_at: str) -> None:
    """Notices handed over by hand (`partage access notifications --mark-sent`)."""
    conn.execute(NOTICES.update().where(NOTICES.c.pk.in_(list(pks))).values(sent_at=sent_at))
