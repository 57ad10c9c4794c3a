"""Subscribing and unsubscribing, for both doors: who may, for how long, to where.

A subscription needs the credentials a query needs (the door authenticates the actor the
same way), and it is refused where the query would show nothing: a patient-dependent
subscription needs the patient's record to be open to the actor (`Reader.record`, noted on
the request's audit record), and an unknown patient is answered exactly like a record the
actor may not open. Emergency modes (bris de glace, centre 15) are for one access, not a
standing one: a subscription in those modes is refused. Only its subscriber (or an
administrator) reads, cancels or re-activates a subscription; to anyone else it does not exist.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from sqlalchemy import Connection

from ..access.actor import ADMIN, INSECURE_DEV, NORMAL, PATIENT, REPRESENTATIVE, Actor
from ..query.view import Reader
from ..registry import outbox
from ..registry import subscriptions as rows
from ..services import Services
from .destinations import Destinations, endpoint_problem
from .model import ACTIVE, ERROR, FHIR, OFF, REQUESTED, Subscription

__all__ = ["SubscriptionError", "Subscriptions", "endpoint_problem"]

DAY_S = 86400.0
# Live subscriptions one subscriber may hold for one scope (one patient's record, or every
# patient's): each costs an outbox row in every registration of its scope and a POST per
# notification, so one credential cannot make every registration write thousands of rows. A
# practice subscribing to each of its patients' records is not bounded by it.
MAX_LIVE_PER_SCOPE = 20


class SubscriptionError(Exception):
    """A subscription request refused; `kind` says which standard error the door answers."""

    INVALID, FORBIDDEN, NOT_FOUND, TERMINATION, UNSUPPORTED = (
        "invalid", "forbidden", "not-found", "termination", "not-supported")

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Subscriptions:
    """One actor's subscriptions (the door authenticated the actor)."""

    def __init__(self, services: Services, actor: Actor) -> None:
        self.services = services
        self.actor = actor
        self.registry = services.registry

    # --- creating ---------------------------------------------------------------------------
    def end_time(self, requested: float | None, now: float | None = None) -> float:
        """The termination time: the one asked for, at most `subscription_max_days` ahead (the
        broker assigns it when none is asked); SubscriptionError(TERMINATION) if in the past."""
        now = time.time() if now is None else now
        longest = now + self.services.settings.subscription_max_days * DAY_S
        if requested is None:
            return longest
        if requested <= now:
            raise SubscriptionError(SubscriptionError.TERMINATION, "the termination time is not in the future")
        return min(requested, longest)

    def create(self, sub: Subscription, *, handshake: bool) -> Subscription:
        """Check and store a new subscription for this actor. `handshake` (FHIR): it starts
        `requested` and a handshake is queued; DSUB subscriptions are active at once."""
        self._admissible(sub)
        sub = dataclasses.replace(sub, actor=self.actor, id=uuid.uuid4().hex,
                                  status=REQUESTED if handshake else ACTIVE, events=0, error="")
        with self.registry.write() as conn:
            sub.patient_pk = self._admit(conn, sub)
            sub.pk = rows.insert(conn, sub.row_values())
            if handshake:
                outbox.enqueue_handshake(conn, sub.pk)
            row = rows.by_pk(conn, sub.pk)
        assert row is not None
        return Subscription.from_row(row)

    # The rules a subscription is made under, checked again when one is re-activated (a
    # subscription made live again is a standing access asked for again).
    def _admissible(self, sub: Subscription) -> None:
        """Before the record is read: the access mode of the request, the scope a patient may
        subscribe to, the endpoint (partage.notify.destinations)."""
        if self.actor.purpose != NORMAL:
            raise SubscriptionError(SubscriptionError.FORBIDDEN,
                                    f"a subscription is a standing access: it cannot be made in the "
                                    f"{self.actor.purpose} access mode, which is for one access")
        if self.actor.kind in (PATIENT, REPRESENTATIVE) and sub.patient_id is None:
            raise SubscriptionError(SubscriptionError.FORBIDDEN,
                                    "a patient or a representative subscribes to the patient's own record, "
                                    "not to every patient's")
        problem = Destinations.from_settings(self.services.settings).url_problem(sub.endpoint)
        if problem:
            raise SubscriptionError(SubscriptionError.INVALID, problem)

    def _admit(self, conn: Connection, sub: Subscription) -> int | None:
        """In the write's transaction: the patient's record open to the subscriber (`sub.actor`),
        and the subscriber's live subscriptions to that scope under the bound. Returns the
        patient's pk (None: every patient)."""
        pk = self.registry.patient_pk(conn, sub.patient_id) if sub.patient_id is not None else None
        if sub.patient_id is not None and (pk is None or not Reader(self.services, sub.actor).record(
                conn, pk, sub.patient_id)):
            raise SubscriptionError(SubscriptionError.FORBIDDEN,
                                    f"no record of patient {sub.patient_id.format()} is open to you")
        if rows.live_count_of_actor(conn, sub.actor.id[:128], pk, time.time()) >= MAX_LIVE_PER_SCOPE:
            scope = "this patient's record" if pk is not None else "every patient's record"
            raise SubscriptionError(SubscriptionError.FORBIDDEN,
                                    f"a subscriber holds at most {MAX_LIVE_PER_SCOPE} live subscriptions to "
                                    f"{scope}; cancel one first")
        return pk

    # --- reading and changing -------------------------------------------------------------------
    def _sees_all(self) -> bool:
        return self.actor.kind in (ADMIN, INSECURE_DEV)

    def _owns(self, sub: Subscription) -> bool:
        return self._sees_all() or (sub.actor.id == self.actor.id and sub.actor.kind == self.actor.kind)

    def get(self, public_id: str) -> Subscription:
        with self.registry.read() as conn:
            row = rows.by_public_id(conn, public_id)
        sub = Subscription.from_row(row) if row is not None else None
        if sub is None or not self._owns(sub):
            raise SubscriptionError(SubscriptionError.NOT_FOUND, f"no subscription {public_id} is yours")
        return sub

    def mine(self, door: str | None = None) -> list[Subscription]:
        with self.registry.read() as conn:
            found = rows.of_actor(conn, None if self._sees_all() else self.actor.id[:128])
        subs = [Subscription.from_row(r) for r in found]
        return [s for s in subs if self._owns(s) and (door is None or s.door == door)]

    def cancel(self, public_id: str) -> Subscription:
        """Unsubscribe (DSUB Unsubscribe, FHIR status=off): nothing more is sent, pending
        notifications included."""
        sub = self.get(public_id)
        with self.registry.write() as conn:
            rows.update_fields(conn, sub.pk or 0, status=OFF)
        return dataclasses.replace(sub, status=OFF)

    def reactivate(self, public_id: str) -> Subscription:
        """FHIR: a subscription `off` or in `error` asks again (a new handshake)."""
        sub = self.get(public_id)
        if sub.door != FHIR or sub.status not in (OFF, ERROR):
            raise SubscriptionError(SubscriptionError.INVALID,
                                    f"only a subscription that is off or in error can be re-activated "
                                    f"(this one is {sub.status})")
        if sub.ends_at <= time.time():
            raise SubscriptionError(SubscriptionError.TERMINATION, "the subscription has ended")
        self._admissible(sub)
        with self.registry.write() as conn:
            self._admit(conn, sub)
            if not rows.update_fields(conn, sub.pk or 0, statuses=(OFF, ERROR), status=REQUESTED, error=""):
                raise SubscriptionError(SubscriptionError.INVALID, "the subscription changed meanwhile; read it again")
            outbox.enqueue_handshake(conn, sub.pk or 0)
        return dataclasses.replace(sub, status=REQUESTED, error="")
