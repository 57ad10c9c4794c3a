"""The outbox: what is owed to subscribers and to patients, written in the transaction that
causes it, then claimed and marked by the sender (`partage.notify.sender`).

Two lanes share one claim/lease/backoff discipline:

- `EVENTS` (`notification_outbox`): one row per (registration, subscription) that may be
  concerned, written by `enqueue_registration` on the registration's connection, and one
  per FHIR handshake. A registration that rolls back leaves no row; one that commits always
  has its rows, whatever happens to the process afterwards.
- `NOTICES` (`access_notifications`): the patients' notices (bris de glace and centre 15
  accesses, written with the access's audit row; new documents, written here).

`claim` takes due rows — pending, their next attempt due, not leased or the lease expired —
with `FOR UPDATE SKIP LOCKED` on PostgreSQL and inside `BEGIN IMMEDIATE` on SQLite, and
leases them to a token. `settle` and `retry` only touch a row still leased to that token,
so a sender that lost its lease (too slow) changes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, exists, func, or_, select, update

from ..metadata.model import SubmissionRequest
from . import schema
from . import subscriptions as subs
from .patients import patient_pk as _patient_pk
from .patients import record as _patient_record
from .store import Registry

PENDING = "pending"
DOCUMENT_TOPIC, SUBMISSION_SET_TOPIC = "document", "submission_set"
EVENT, HANDSHAKE = "event", "handshake"
NEW_DOCUMENT = "new_document"


@dataclass(frozen=True)
class Lane:
    """A table the sender drains, and what its rows look like when done."""

    name: str
    table: Table
    done_state: str          # delivered | sent
    done_column: str         # delivered_at | sent_at


EVENTS = Lane("events", schema.notification_outbox, "delivered", "delivered_at")
NOTICES = Lane("notices", schema.access_notifications, "sent", "sent_at")


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- writing
def enqueue_registration(conn: Connection, request: SubmissionRequest, *, patient_documents: bool = False,
                         now: float | None = None, patient_pk: int | None = None) -> int:
    """On the registration's connection: one outbox row per live subscription the
    submission may concern (the subscription's filters and the subscriber's access are
    judged at delivery), and, with `patient_documents`, a notice to the patient when they
    have an e-mail address. Returns the number of rows written. `patient_pk`: the patient
    the registration just resolved (looked up here when not given)."""
    ss = request.submission_set
    if ss is None:
        return 0
    if patient_pk is None:
        patient_pk = _patient_pk(conn, ss.patient_id)
    if patient_pk is None:
        return 0   # registration refuses an unknown patient; nothing to announce
    documents = [d.entry_uuid for d in request.documents]
    written = 0
    rows = []
    for sub in subs.live_for_patient(conn, patient_pk, time.time() if now is None else now):
        if sub.topic == DOCUMENT_TOPIC and not documents:
            continue
        rows.append(_event_row(sub.pk, EVENT, patient_pk=patient_pk,
                               patient_id=ss.patient_id.format() if ss.patient_id else "",
                               submission_set=ss.entry_uuid, documents=documents))
    if rows:
        conn.execute(schema.notification_outbox.insert(), rows)
        written += len(rows)
    if patient_documents and documents:
        record = _patient_record(conn, patient_pk)
        if record is not None and record.email:
            conn.execute(schema.access_notifications.insert().values(
                patient_pk=patient_pk, created_at=iso_now(), kind=NEW_DOCUMENT,
                message=f"{len(documents)} new document(s) in the record", documents=json.dumps(documents),
                notice_id=str(uuid.uuid4()), state=PENDING, attempts=0))
            written += 1
    return written


def enqueue_handshake(conn: Connection, subscription_pk: int) -> str:
    """A FHIR handshake owed to a new (or re-activated) subscription; returns its delivery id."""
    row = _event_row(subscription_pk, HANDSHAKE)
    conn.execute(schema.notification_outbox.insert(), row)
    return str(row["delivery_id"])


def _event_row(subscription_pk: int, kind: str, *, patient_pk: int | None = None, patient_id: str = "",
               submission_set: str = "", documents: Sequence[str] = ()) -> dict[str, Any]:
    return {"delivery_id": str(uuid.uuid4()), "subscription_pk": subscription_pk, "kind": kind,
            "patient_pk": patient_pk, "patient_id": patient_id, "submission_set": submission_set,
            "documents": json.dumps(list(documents)), "created_at": iso_now(), "state": PENDING,
            "attempts": 0, "next_attempt_at": 0.0, "last_error": ""}


# --------------------------------------------------------------------------- claiming
def _token() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def _due(lane: Lane, now: float) -> tuple[Any, ...]:
    t = lane.table
    clauses = [t.c.state == PENDING, or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now),
               or_(t.c.claimed_until.is_(None), t.c.claimed_until < now)]
    if lane is NOTICES:
        clauses.append(t.c.sent_at.is_(None))   # `partage access notifications --mark-sent`
    else:
        clauses.append(or_(t.c.kind == HANDSHAKE, ~_held_back(t, now)))
    return tuple(clauses)


def _held_back(t: Table, now: float) -> Any:
    """An event waits while an earlier event of its subscription is still pending and not
    claimable (waiting for its next attempt, or leased): a subscription's notifications go
    out in order, a failed one is not overtaken while it is retried (docs/notifications.md).
    A handshake is never held back: it goes first."""
    earlier = t.alias("earlier")
    return exists().where(earlier.c.subscription_pk == t.c.subscription_pk, earlier.c.pk < t.c.pk,
                          earlier.c.kind == EVENT, earlier.c.state == PENDING,
                          or_(earlier.c.next_attempt_at > now, earlier.c.claimed_until >= now))


def claim(registry: Registry, lane: Lane, *, lease_s: float, limit: int = 20,
          now: float | None = None, busy: Sequence[int] = (),
          admit: Callable[[Row[Any]], bool] | None = None) -> tuple[str, list[Row[Any]]]:
    """Lease up to `limit` due rows (oldest first) to a fresh token; each claim counts as an
    attempt. The rows are returned as they were before this claim (`attempts`: earlier ones).
    `busy` (events): subscriptions whose deliveries are in progress, whose rows wait their turn.
    `admit` (events): asked for each due row in order, with its subscription's `subscriber`
    (actor id) and `endpoint`; a row it refuses is not leased, nor counted: it stays due as it
    was (the sender's share of its threads, `partage.notify.sender`). It answers alike for
    every row of one subscription, so a subscription's rows are leased in order or not at all."""
    t = lane.table
    now = time.time() if now is None else now
    due = _due(lane, now)
    if busy and lane is EVENTS:
        due = (*due, t.c.subscription_pk.notin_(list(busy)))
    with registry.read() as conn:   # an idle poll takes no write lock
        if conn.execute(select(t.c.pk).where(*due).limit(1)).first() is None:
            return "", []
    query = select(t)
    if lane is EVENTS:
        s = schema.subscriptions
        query = select(t, *(select(column).where(s.c.pk == t.c.subscription_pk).scalar_subquery().label(name)
                            for name, column in (("subscriber", s.c.actor_id), ("endpoint", s.c.endpoint))))
    query = query.where(*due).order_by(t.c.pk).with_for_update(skip_locked=True)   # not rendered on SQLite
    token = _token()
    with registry.write() as conn:   # BEGIN IMMEDIATE on SQLite
        if admit is None:
            rows = list(conn.execute(query.limit(limit)).all())
        else:   # page through the due rows until `limit` are admitted or none is left; a refused
            # subscription's rows are left out of the next pages (a stalled subscriber's backlog
            # is not read again page after page)
            rows = []
            after: int | None = None
            refused: set[int] = set()
            while len(rows) < limit:
                page_query = query if after is None else query.where(t.c.pk > after)
                if refused:
                    page_query = page_query.where(t.c.subscription_pk.not_in(sorted(refused)))
                page = conn.execute(page_query.limit(limit)).all()
                for row in page:
                    if len(rows) < limit and admit(row):
                        rows.append(row)
                    elif len(rows) < limit:
                        refused.add(row.subscription_pk)
                if len(page) < limit:
                    break
                after = page[-1].pk
        if rows:
            conn.execute(update(t).where(t.c.pk.in_([r.pk for r in rows])).values(
                claimed_by=token, claimed_until=now + lease_s, attempts=t.c.attempts + 1))
    return token, list(rows)


def _mine(lane: Lane, pk: int, token: str) -> Any:
    return and_(lane.table.c.pk == pk, lane.table.c.claimed_by == token)


def settle(registry: Registry, lane: Lane, pk: int, token: str, state: str, error: str = "",
           **values: Any) -> bool:
    """Mark a leased row done (`lane.done_state`), skipped or failed; False if the lease was lost."""
    if state == lane.done_state:
        values[lane.done_column] = iso_now()
    with registry.write() as conn:
        changed = conn.execute(update(lane.table).where(_mine(lane, pk, token)).values(
            state=state, claimed_by=None, claimed_until=None, last_error=error[:2000], **values)).rowcount
    return changed == 1


def retry(registry: Registry, lane: Lane, pk: int, token: str, at: float, error: str = "", *,
          count: bool = True) -> bool:
    """Give a leased row back, due again at `at` (`count`=False: this claim was no attempt)."""
    values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "next_attempt_at": at,
                              "last_error": error[:2000]}
    if not count:
        values["attempts"] = lane.table.c.attempts - 1
    with registry.write() as conn:
        return conn.execute(update(lane.table).where(_mine(lane, pk, token)).values(**values)).rowcount == 1


def stamp(registry: Registry, pk: int, token: str, subscription_pk: int, digest: str) -> tuple[int, str] | None:
    """The row's event number and the id of the message about to be sent, or None when the
    lease was lost.

    The event number is given once (the first time it is sent) and kept on retries, so the
    numbers the subscriber sees have no gap for what it was not shown. The message id
    (`delivery_id`: wsa:MessageID, Bundle.id) is kept while what is sent is the same (`digest`
    of its content): a retransmission is the same message, which the recipient deduplicates.
    A retry judged again that carries something else (a document unmasked, or masked, since)
    is another message: it gets a new id (WS-Addressing 1.0 Core 3.2: a [message id] identifies
    one message), or a recipient deduplicating on the id would drop it."""
    t = schema.notification_outbox
    with registry.write() as conn:
        row = conn.execute(select(t.c.event_number, t.c.claimed_by, t.c.delivery_id, t.c.content_digest)
                           .where(t.c.pk == pk)).first()
        if row is None or row.claimed_by != token:
            return None
        values: dict[str, Any] = {}
        number = row.event_number
        if number is None:
            number = values["event_number"] = subs.next_event_number(conn, subscription_pk)
        delivery_id = str(row.delivery_id)
        if row.content_digest != digest:
            if row.content_digest is not None:
                delivery_id = values["delivery_id"] = str(uuid.uuid4())
            values["content_digest"] = digest
        if values:
            conn.execute(update(t).where(t.c.pk == pk).values(**values))
    return int(number), delivery_id


# --------------------------------------------------------------------------- reading
def audit_row(conn: Connection, audit_pk: int | None) -> Row[Any] | None:
    """The audit record a patient's access notice is about."""
    if audit_pk is None:
        return None
    t = schema.audit_events
    return conn.execute(select(t).where(t.c.pk == audit_pk)).first()


def backlog(registry: Registry) -> dict[str, dict[str, int]]:
    """Rows by state, per lane (tests, operators reading the backlog)."""
    out: dict[str, dict[str, int]] = {}
    with registry.read() as conn:
        for lane in (EVENTS, NOTICES):
            t = lane.table
            out[lane.name] = {state: int(n) for state, n in
                              conn.execute(select(t.c.state, func.count()).group_by(t.c.state)).all()}
    return out


def rows(registry: Registry, lane: Lane, *, subscription_pk: int | None = None,
         patient_pk: int | None = None) -> list[Row[Any]]:
    t = lane.table
    query = select(t).order_by(t.c.pk)
    if subscription_pk is not None:
        query = query.where(t.c.subscription_pk == subscription_pk)
    if patient_pk is not None:
        query = query.where(t.c.patient_pk == patient_pk)
    with registry.read() as conn:
        return list(conn.execute(query).all())
