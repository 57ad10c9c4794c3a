"""Notifications, round 6: the sender's threads are shared fairly (docs/notifications.md,
"Subscriptions are served in parallel ... so a slow endpoint delays only its own subscribers").

One credential may hold 20 live multi-patient subscriptions (`MAX_LIVE_PER_SCOPE`), each its
own lane, each pointing at an endpoint that does not answer until the transport timeout.
Before, every registration handed all of them to the sender's threads: the `WORKERS` threads
were all held by that one subscriber (and that one dead destination) for the whole timeout,
and every other subscriber's notification waited behind them. Deterministic: the endpoints
block on a threading.Event the test sets; nothing is timed but the guards against a hang.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.fhir.subscriptions import FhirRenderer
from partage.metadata.ids import assign_uuids
from partage.notify.model import DOCUMENT, DSUB, FULL, Subscription
from partage.notify.sender import WORKERS, Sender
from partage.notify.subscriptions import MAX_LIVE_PER_SCOPE, Subscriptions
from partage.registry import outbox
from partage.registry.access_state import Records
from partage.registry.register import register
from partage.services import Services
from partage.xds.dsub import NotifyRenderer
from tests import factories as F
from tests.support import free_port

RENDERERS = {"dsub": NotifyRenderer(), "fhir": FhirRenderer()}
GUARD_S = 10.0   # only against a hang: nothing waits this long when the code is right


class Endpoint:
    """A subscriber's endpoint on a free port. `held`: each POST waits for `release` before it
    answers 200 (an endpoint that does not answer until the sender's timeout). Keeps the
    (path, body) of each POST in the order they arrived."""

    def __init__(self, *, held: bool) -> None:
        self.port = free_port()
        self.release = threading.Event()
        self.received: list[tuple[str, bytes]] = []
        self.arrived = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner.arrived:
                    owner.received.append((self.path, body))
                    owner.arrived.notify_all()
                if held:
                    owner.release.wait(GUARD_S)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, count: int) -> int:
        """Until `count` POSTs arrived (or the guard); returns how many did."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, GUARD_S)
            return len(self.received)

    def __enter__(self) -> Endpoint:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _subscribe(svc, actor, url, pid):
    subs = Subscriptions(svc, actor)
    return subs.create(Subscription(door=DSUB, topic=DOCUMENT, payload=FULL, endpoint=url, actor=actor,
                                    ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                                    mime_type="application/soap+xml"), handshake=False)


def _register(svc, pid, name):
    request = F.submission(pid, [F.document(pid, name)], contents=False)
    assign_uuids(request)
    with svc.registry.write() as conn:
        outbox.enqueue_registration(conn, request)
        register(svc.registry, conn, request, {})
    return request.documents[0].entry_uuid.removeprefix("urn:uuid:").encode()


def test_one_subscriber_with_stalled_endpoints_does_not_starve_the_others(tmp_path, database_url):
    """20 multi-patient subscriptions of one credential, all to an endpoint that holds every
    POST; one other subscriber with a working endpoint. Its notification must arrive while
    the 20 are held. Before: the 20 lanes took all WORKERS threads and it waited for their
    timeout (here: never, until the test releases them). Then, released, all 2 x 20 held
    notifications arrive, in order per subscription, nothing lost."""
    svc = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url,
                                 notify_timeout=60.0, notify_poll=0.05))
    sender = None
    try:
        pid = F.patient_id()
        with svc.registry.write() as conn:
            svc.registry.upsert_patient(conn, [pid], None)
        actors = sample_actors(pid)
        Records(svc.registry).open(pid, medecin_traitant=actors["gp"].id)
        with Endpoint(held=True) as stalled, Endpoint(held=False) as working:
            flood = [_subscribe(svc, actors["doctor"], stalled.url(f"/hook/{i}"), None)
                     for i in range(MAX_LIVE_PER_SCOPE)]
            _subscribe(svc, actors["gp"], working.url("/gp"), pid)
            first = _register(svc, pid, "first")
            second = _register(svc, pid, "second")
            sender = Sender(svc, RENDERERS).start()

            assert working.wait(2) == 2, (
                f"the other subscriber starved: {stalled.wait(WORKERS)} of the {WORKERS} sender threads "
                "held by one subscriber's stalled endpoints")
            assert stalled.wait(1) >= 1                          # the stalled ones are served too,
            assert len(stalled.received) < WORKERS               # on a share of the threads only
            assert [first in body for _, body in working.received] == [True, False]

            stalled.release.set()
            assert stalled.wait(2 * len(flood)) == 2 * len(flood)
        sender.stop()
        sender = None
        by_path: dict[str, list[bytes]] = {}
        for path, body in stalled.received:
            by_path.setdefault(path, []).append(body)
        assert sorted(by_path) == sorted(f"/hook/{i}" for i in range(len(flood)))
        for path, bodies in by_path.items():                     # in order per subscription
            assert [(first in b, second in b) for b in bodies] == [(True, False), (False, True)], path
        states = [row.state for row in outbox.rows(svc.registry, outbox.EVENTS)]
        assert states == ["delivered"] * (2 * len(flood) + 2)
        attempts = [row.attempts for row in outbox.rows(svc.registry, outbox.EVENTS)]
        assert attempts == [1] * len(attempts)                   # nothing left for later was counted
    finally:
        if sender is not None:
            sender.stop()
        svc.close()
