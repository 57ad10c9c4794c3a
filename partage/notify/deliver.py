"""One outbox row delivered: judged at delivery time as the subscriber's read, rendered by
the door that made the subscription, POSTed, audited, and marked.

What the subscriber is told is what a query by the subscriber would return *now*: the
registration's documents that still match the filters (the query flow runs ITI-18's
FindDocuments or FindSubmissionSets with them) and that the one visibility gate lets the
subscriber see. A registration the subscriber may not see (masked, blocked, record closed
since...) sends nothing, and leaves no gap in the event numbers.

Each attempt that sends something writes one audit record (action ITI-53 for DSUB, ITI-112
for FHIR; the subscriber as actor, the documents named, the endpoint and HTTP status in the
detail), shown writable before anything is sent (fail closed: when the audit store refuses,
the row waits); POSTs go only to allowed destinations (partage.notify.destinations); a failure is retried with exponential backoff (1 s, 2 s, 4 s ... at most 5 min)
until `notify_max_attempts`, then given up (`failed`; a FHIR subscription goes to `error`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..access import audit
from ..access.actor import INSECURE_DEV
from ..metadata.datatypes import CX
from ..metadata.model import AnyObject, DocumentEntry, SubmissionSet
from ..metadata.query import DocumentFilter
from ..query import QueryService
from ..registry import outbox
from ..registry import subscriptions as rows
from ..registry.outbox import EVENTS
from ..services import Services
from .channels import Event, Handshaking, Outcome, Renderer, Transport
from .destinations import Destinations
from .model import ACTIVE, DOCUMENT, ERROR, FHIR, OFF, REQUESTED, Filter, Subscription, cx_of

log = logging.getLogger("partage.notify")

BACKOFF_MAX_S = 300.0
WAIT_HANDSHAKE_S = 1.0      # an event waits this long for its subscription's handshake


def backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones: 1, 2, 4 ... capped, +-20 %."""
    base = min(2.0 ** max(attempts - 1, 0), BACKOFF_MAX_S)
    return base * random.uniform(0.8, 1.2)


def new_documents(queries: QueryService, patient: CX, entry_uuids: list[str], wanted: Filter) -> list[DocumentEntry]:
    """What is still new of a registration's documents, judged now as the reader of `queries`:
    Approved (one deprecated since, replaced or moved to another patient by ITI-57, or removed,
    is no longer a new document of this record), matching `wanted`, and let through by the one
    visibility gate (ITI-18 FindDocuments). Subscribers' notifications and the patient's
    e-mail alike."""
    if not entry_uuids:
        return []
    found = queries.find_documents(patient, wanted.document_filter(entry_uuids)).objects
    return [d for d in found if isinstance(d, DocumentEntry) and wanted.keeps(d)]


def visible_objects(services: Services, sub: Subscription, row: Any) -> list[AnyObject]:
    """What of this registration the subscriber may see now, through its filters."""
    queries = QueryService(services, sub.actor)
    patient = sub.patient_id or cx_of(row.patient_id)
    if patient is None:
        return []
    if sub.topic == DOCUMENT:
        return list(new_documents(queries, patient, json.loads(row.documents or "[]"), sub.filter))
    sets = queries.find_submission_sets(patient, sub.filter.submission_set_filter()).objects
    if not any(isinstance(s, SubmissionSet) and s.entry_uuid == row.submission_set and sub.filter.keeps(s)
               for s in sets):
        return []
    contents = queries.get_submission_set_and_contents(DocumentFilter(), entry_uuid=row.submission_set)
    return list(contents.objects)


def content_digest(objects: list[AnyObject]) -> str:
    """What a notification carries, as a digest: the same objects with the same metadata give
    the same digest (a retry that is a retransmission keeps its message id, outbox.stamp)."""
    return hashlib.sha256(repr(sorted(repr(o) for o in objects)).encode()).hexdigest()


class Deliveries:
    """Delivers claimed outbox rows (one sender thread may run several at once)."""

    def __init__(self, services: Services, renderers: Mapping[str, Renderer]) -> None:
        self.services = services
        self.renderers = renderers
        self.settings = services.settings
        self.transport = Transport(Destinations.from_settings(self.settings), self.settings.notify_timeout)

    def run(self, row: Any, token: str) -> str:
        """Deliver one claimed row; returns what became of it (for logs and counts)."""
        with self.services.registry.read() as conn:
            found = rows.by_pk(conn, row.subscription_pk)
        sub = Subscription.from_row(found) if found is not None else None
        settle = self._settler(row, token)
        if sub is None:
            return settle("skipped", "the subscription no longer exists")
        if sub.status == OFF:
            return settle("skipped", "the subscription was cancelled")
        if sub.ends_at <= time.time():
            return settle("skipped", "the subscription has ended")
        renderer = self.renderers.get(sub.door)
        if renderer is None:
            outbox.retry(self.services.registry, EVENTS, row.pk, token, time.time() + BACKOFF_MAX_S,
                         f"no renderer for {sub.door} subscriptions in this process", count=False)
            return "postponed"
        if row.kind == outbox.HANDSHAKE:
            return self._handshake(sub, renderer, row, token)
        if sub.status == REQUESTED:   # the handshake goes first
            outbox.retry(self.services.registry, EVENTS, row.pk, token, time.time() + WAIT_HANDSHAKE_S,
                         "waiting for the subscription's handshake", count=False)
            return "postponed"
        if sub.status == ERROR:
            return settle("skipped", "the subscription is in error")
        if sub.actor.kind == INSECURE_DEV and not self.settings.insecure_dev:
            return settle("skipped", "made in insecure development mode; this server authenticates")
        return self._event(sub, renderer, row, token)

    def _settler(self, row: Any, token: str) -> Callable[..., str]:
        def settle(state: str, reason: str = "", **values: Any) -> str:
            outbox.settle(self.services.registry, EVENTS, row.pk, token, state, reason, **values)
            if state != "delivered":
                log.info("notification %s (subscription #%s): %s: %s", row.delivery_id, row.subscription_pk,
                         state, reason)
            return state
        return settle

    def _event(self, sub: Subscription, renderer: Renderer, row: Any, token: str) -> str:
        settle = self._settler(row, token)
        context = audit.begin(renderer.action, request=f"POST {sub.endpoint}"[:300])
        try:
            audit.note_actor(sub.actor)
            objects = visible_objects(self.services, sub, row)
            if not objects:
                return settle("skipped", "nothing the subscriber may see matches")
            stamped = outbox.stamp(self.services.registry, row.pk, token, sub.pk or 0, content_digest(objects))
            if stamped is None:
                return "lost"   # another sender took the row over (lease expired)
            number, message_id = stamped
            event = Event(message_id, sub, objects, number, datetime.now(UTC))
            message = renderer.event(self.services, event)
            ctx = audit.current()
            try:   # fail closed: nothing leaves unless its audit record can be written
                if ctx is not None:
                    audit.open_record(self.services, ctx)
            except audit.AuditUnavailable as exc:
                outbox.retry(self.services.registry, EVENTS, row.pk, token, time.time() + backoff(int(row.attempts) + 1),
                             str(exc), count=False)
                return "postponed"
            result = self.transport.post(sub.endpoint, message)
            self._audit(row, sub, result)
        finally:
            audit.end(context)
        return self._outcome(sub, row, token, result)

    def _handshake(self, sub: Subscription, renderer: Renderer, row: Any, token: str) -> str:
        if sub.status != REQUESTED:
            return self._settler(row, token)("skipped", f"the subscription is {sub.status}")
        if not isinstance(renderer, Handshaking):
            return self._settler(row, token)("skipped", f"{renderer.action} subscriptions have no handshake")
        result = self.transport.post(sub.endpoint, renderer.handshake(self.services, sub, row.delivery_id))
        # DSUBm ITI-112: a handshake that cannot be sent or is refused puts the subscription in
        # error at once (the subscriber re-activates it once its endpoint answers). Only while it
        # is still `requested`: cancelled during the handshake, it stays `off`.
        with self.services.registry.write() as conn:
            rows.update_fields(conn, sub.pk or 0, statuses=(REQUESTED,), status=ACTIVE if result.ok else ERROR,
                               error="" if result.ok else f"handshake: {result.detail}"[:500])
        return self._settler(row, token)("delivered" if result.ok else "failed", result.detail)

    def _outcome(self, sub: Subscription, row: Any, token: str, result: Outcome) -> str:
        settle = self._settler(row, token)
        if result.ok:
            return settle("delivered", result.detail)
        attempts = int(row.attempts) + 1   # the claim counted this attempt
        if result.permanent or attempts >= self.settings.notify_max_attempts:
            if sub.door == FHIR:   # DSUBm: a recipient that cannot be reached puts the subscription in error
                with self.services.registry.write() as conn:   # (one cancelled meanwhile stays off)
                    rows.update_fields(conn, sub.pk or 0, statuses=rows.LIVE, status=ERROR,
                                       error=f"notification {row.delivery_id}: {result.detail}"[:500])
            return settle("failed", f"{result.detail} (attempt {attempts})")
        outbox.retry(self.services.registry, EVENTS, row.pk, token, time.time() + backoff(attempts),
                     f"{result.detail} (attempt {attempts})")
        return "retry"

    def _audit(self, row: Any, sub: Subscription, result: Outcome) -> None:
        ctx = audit.current()
        if ctx is None:
            return
        ctx.remarks.append(f"notification {row.delivery_id} to {sub.endpoint}: {result.detail}")
        if not result.ok:
            ctx.failure = f"notification {row.delivery_id} not delivered to {sub.endpoint}: {result.detail}"
        try:
            audit.finish(self.services, ctx, 200 if result.ok else 502)
        except Exception:   # the delivery happened; a failed audit write is logged, not retried as a send
            log.exception("audit record of notification %s could not be written", row.delivery_id)
