"""Subscriptions (DSUB ITI-52, DSUBm ITI-110): the rows, by id, by subscriber, by patient.

`partage.notify` decides who may subscribe and turns rows into its model; this module is
only the SQL. A subscription is found for a registration by its patient (`patient_pk`) or
because it names none (multi-patient), while it is `requested` or `active` and not ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, or_, select, update

from . import schema
from .clock import utc_now

S = schema.subscriptions
LIVE = ("requested", "active")


def insert(conn: Connection, values: Mapping[str, Any]) -> int:
    now = utc_now()
    key = conn.execute(S.insert().values(**values, created_at=now, updated_at=now)).inserted_primary_key
    assert key is not None
    return int(key[0])


def by_public_id(conn: Connection, public_id: str) -> Row[Any] | None:
    return conn.execute(select(S).where(S.c.public_id == public_id)).first() if public_id else None


def by_pk(conn: Connection, pk: int) -> Row[Any] | None:
    return conn.execute(select(S).where(S.c.pk == pk)).first()


def of_actor(conn: Connection, actor_id: str | None, limit: int = 1000) -> list[Any]:
    """A subscriber's subscriptions (every one when `actor_id` is None), newest first."""
    query = select(S).order_by(S.c.pk.desc()).limit(limit)
    if actor_id is not None:
        query = query.where(S.c.actor_id == actor_id)
    return list(conn.execute(query).all())


def live_count_of_actor(conn: Connection, actor_id: str, patient_pk: int | None, now: float) -> int:
    """How many live (requested or active, not ended) subscriptions this subscriber id holds
    for one patient's record (`patient_pk`), or for every patient's (None)."""
    scope = S.c.patient_pk == patient_pk if patient_pk is not None else S.c.patient_pk.is_(None)
    return int(conn.execute(select(func.count()).select_from(S).where(
        S.c.actor_id == actor_id, scope, S.c.status.in_(LIVE), S.c.ends_at > now)).scalar_one())


_LIVE_FOR_PATIENT = select(S.c.pk, S.c.topic).where(   # built once: read by every registration
    or_(S.c.patient_pk == bindparam("patient_pk"), S.c.patient_pk.is_(None)),
    S.c.status.in_(LIVE), S.c.ends_at > bindparam("now")).order_by(S.c.pk)


def live_for_patient(conn: Connection, patient_pk: int, now: float) -> list[Any]:
    """Subscriptions a registration for this patient may concern: the patient's own and the
    multi-patient ones, requested or active, not ended."""
    return list(conn.execute(_LIVE_FOR_PATIENT, {"patient_pk": patient_pk, "now": now}).all())


def update_fields(conn: Connection, pk: int, *, statuses: Sequence[str] | None = None, **values: Any) -> bool:
    """Change a subscription; with `statuses`, only while it is still in one of them (the
    sender's `active` or `error` never overwrites the `off` its subscriber set meanwhile).
    True if it changed."""
    query = update(S).where(S.c.pk == pk)
    if statuses is not None:
        query = query.where(S.c.status.in_(list(statuses)))
    return bool(conn.execute(query.values(**values, updated_at=utc_now())).rowcount == 1)


def next_event_number(conn: Connection, pk: int) -> int:
    """Count one more event delivered on the subscription; returns its number (1, 2, ...)."""
    conn.execute(update(S).where(S.c.pk == pk).values(events=S.c.events + 1))
    return int(conn.execute(select(S.c.events).where(S.c.pk == pk)).scalar_one())


