"""The outbox sender: a background thread that delivers what the outbox holds.

`Sender(services, renderers).start()` / `.stop()`. `partage serve` runs exactly one, in a
process the gunicorn master starts (partage.server.background, from partage.server.serve's
`when_ready`), not one per worker; several servers (hosts) may each run one: rows are leased one batch at a time (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so two senders never hold the same row.

Guarantees (docs/notifications.md):
- a notification is written in the registration's transaction (partage.registry.outbox), so a
  registration that rolled back sends nothing and one that committed is never lost;
- a row is marked delivered only after its endpoint answered 2xx; a crash between the POST
  and the mark sends it again after the lease (`LEASE_S`), with the same delivery id
  (wsa:MessageID, Bundle.id), which is what the recipient deduplicates on: exactly once per
  subscriber, deduplicated by id (a retry judged again that carries other content is another
  message, with a new id: outbox.stamp);
- a subscription's rows are delivered in order, one at a time: an event being retried holds
  back the later events of its subscription until it is delivered or given up
  (`outbox.claim`); subscriptions are served in parallel (`WORKERS` threads), so a slow
  endpoint delays only its own subscribers;
- the threads are shared (`_share`): one subscriber (actor id) and one destination (host and
  port) are served on at most `workers // 2` of them at once; their other subscriptions' rows
  are not claimed meanwhile (left due, no attempt counted), so however many subscriptions one
  credential holds, or one host that does not answer serves, the other threads go on serving
  everyone else;
- the patients' e-mails have their own lane (`MAIL_WORKERS` threads, one batch at a time): a
  slow or stalled SMTP server delays only the e-mails, never the subscribers' deliveries.

The sender polls the outbox every `notify_poll` seconds when idle (0.5 s by default: a
registration in any process of any host is seen within that), and drains it when busy.
Patients' e-mails are sent only when `smtp_host` is set; otherwise they stay queued.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..registry import outbox
from ..registry.outbox import EVENTS, NOTICES
from ..services import Services
from .channels import Renderer
from .deliver import Deliveries, backoff
from .destinations import destination
from .mail import Notices

log = logging.getLogger("partage.notify")

BATCH = 20
WORKERS = 4
MAIL_WORKERS = 2
DONE = ("delivered", "skipped", "failed")   # what becomes of a row that a later one may follow


class Sender:
    def __init__(self, services: Services, renderers: Mapping[str, Renderer], *,
                 poll_s: float | None = None, workers: int = WORKERS) -> None:
        self.services = services
        self.settings = services.settings
        self.poll_s = self.settings.notify_poll if poll_s is None else poll_s
        # A batch of one subscription is delivered in sequence: the lease covers it whole.
        self.lease_s = BATCH * self.settings.notify_timeout + 30.0
        self.deliveries = Deliveries(services, renderers)
        self.notices = Notices(services)
        self.workers = workers
        self.share = max(1, workers // 2)   # threads one subscriber, or one destination, may hold
        self._stop = threading.Event()
        self.first_pass = threading.Event()   # set once the outbox was looked at (or that failed)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._mail_pool: ThreadPoolExecutor | None = None
        self._mailing: list[Future[Any]] = []        # the e-mail batch being sent
        # subscription pk -> its deliveries in progress, and whom they hold a thread for (`_share`)
        self._serving: dict[int, tuple[Future[Any], tuple[str, ...]]] = {}
        self._serving_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Sender:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="partage-notify")
        self._mail_pool = ThreadPoolExecutor(max_workers=MAIL_WORKERS, thread_name_prefix="partage-notify-mail")
        self._thread = threading.Thread(target=self._run, name="partage-notify-sender", daemon=True)
        self._thread.start()
        log.info("notification sender started (poll %.1f s, e-mail %s)", self.poll_s,
                 f"via {self.settings.smtp_host}:{self.settings.smtp_port}" if self.settings.smtp_host
                 else "off: no smtp_host")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the deliveries in progress; a row cut short is taken again after its lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._mail_pool is not None:   # an e-mail cut short is taken again after its lease
            self._mail_pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.drain_once()
            except Exception:   # the database is away: try again later
                log.exception("notification sender: claiming from the outbox failed")
                busy = False
            self.first_pass.set()
            if not busy:
                self._stop.wait(self.poll_s)

    # --- work ------------------------------------------------------------------------------------
    def drain_once(self) -> bool:
        """Claim and deliver one batch of each lane; True if anything was claimed."""
        counts = self._events()
        if self.settings.smtp_host:
            counts += self._notices()
        return counts > 0

    def drain(self, rounds: int = 100) -> None:
        """Deliver everything due now (tests, the CLI); stops early once nothing is due."""
        for _ in range(rounds):
            if self._stop.is_set() or not self.drain_once():
                return

    def _events(self) -> int:
        """Claim due rows of the subscriptions not being served, within the share of the threads
        of their subscriber and destination (`_share`), and serve each subscription's rows in
        order on a thread of the pool without waiting for the others: a slow endpoint holds
        back only its own subscription (whose later rows are not claimed meanwhile)."""
        with self._serving_lock:
            busy = sorted(self._serving)
        admit = None if self._pool is None else self._share()
        token, claimed = outbox.claim(self.services.registry, EVENTS, lease_s=self.lease_s, limit=BATCH, busy=busy,
                                      admit=admit)
        if not claimed:
            return 0
        by_subscription: dict[int, list[Any]] = {}
        for row in claimed:
            by_subscription.setdefault(row.subscription_pk, []).append(row)

        def serve(group: list[Any]) -> list[str]:
            """In order; once an event is not done (to be retried, postponed), the subscription's
            later events are given back, not sent before it (the claim holds them until it is)."""
            outcomes: list[str] = []
            waiting = False
            for row in group:
                if waiting and row.kind == outbox.EVENT:
                    outbox.retry(self.services.registry, EVENTS, row.pk, token, time.time(),
                                 "waiting for an earlier notification of its subscription", count=False)
                    outcomes.append("postponed")
                    continue
                outcome = self._one(self.deliveries.run, row, token)
                waiting = waiting or (row.kind == outbox.EVENT and outcome not in DONE)
                outcomes.append(outcome)
            return outcomes

        if self._pool is None:   # drain() without a running sender: in sequence, here
            for group in by_subscription.values():
                serve(group)
            return len(claimed)
        for pk, group in by_subscription.items():
            with self._serving_lock:
                future = self._pool.submit(serve, group)
                self._serving[pk] = (future, _holders(group[0]))
            future.add_done_callback(functools.partial(self._served, pk))
        return len(claimed)

    def _served(self, pk: int, future: Future[Any]) -> None:
        with self._serving_lock:
            if pk in self._serving and self._serving[pk][0] is future:
                del self._serving[pk]

    def _share(self) -> Callable[[Any], bool]:
        """The fairness rule, for one claim: a subscription's rows are handed to the threads only
        while its subscriber and its destination each hold fewer than `share` threads (counting
        the subscriptions being served and those admitted before it in this claim). The others
        stay due, not leased, no attempt counted, and are claimed once a thread of theirs is
        free: one credential's 20 subscriptions, or a host that answers nobody until the
        timeout, hold at most `share` threads, and the others serve everyone else."""
        with self._serving_lock:
            held = Counter(holder for _future, holders in self._serving.values() for holder in holders)
        decided: dict[int, bool] = {}

        def admit(row: Any) -> bool:
            pk = int(row.subscription_pk)
            if pk not in decided:   # alike for every row of a subscription: in order, or not at all
                holders = _holders(row)
                decided[pk] = all(held[holder] < self.share for holder in holders)
                if decided[pk]:
                    held.update(holders)
            return decided[pk]
        return admit

    def _notices(self) -> int:
        """Claim a batch of the patients' e-mails once the previous one is sent, and send it on
        the mail lane's threads without waiting: the loop goes on claiming events meanwhile."""
        if any(not future.done() for future in self._mailing):
            return 0
        token, claimed = outbox.claim(self.services.registry, NOTICES, lease_s=self.lease_s, limit=BATCH)
        if self._mail_pool is None:   # drain() without a running sender: in sequence, here
            for row in claimed:
                self._one(self.notices.run, row, token, NOTICES)
        else:
            self._mailing = [self._mail_pool.submit(self._one, self.notices.run, row, token, NOTICES)
                             for row in claimed]
        return len(claimed)

    def _one(self, run: Any, row: Any, token: str, lane: outbox.Lane = EVENTS) -> str:
        try:
            return str(run(row, token))
        except Exception as exc:   # an attempt like any other: retried with backoff, given up at the limit
            log.exception("delivering outbox row #%s failed", row.pk)
            attempts = int(row.attempts) + 1   # the claim counted this attempt
            reason = f"{type(exc).__name__}: {exc} (attempt {attempts})"[:500]
            try:
                if attempts >= self.settings.notify_max_attempts:
                    outbox.settle(self.services.registry, lane, row.pk, token, "failed", reason)
                else:
                    outbox.retry(self.services.registry, lane, row.pk, token, time.time() + backoff(attempts), reason)
            except Exception:   # the database is away: left leased, taken again after the lease
                log.exception("outbox row #%s could not be marked", row.pk)
            return "error"


def _holders(row: Any) -> tuple[str, ...]:
    """Whom serving this outbox row holds a thread for: its subscriber, its destination."""
    return f"subscriber {row.subscriber}", f"destination {destination(str(row.endpoint or ''))}"
