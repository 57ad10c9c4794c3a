"""Adversarial tests of the notifications (DSUB / DSUBm / patients' e-mails) and of the clinical
reading's keyword search (docs/notifications.md, docs/clinical-reading.md)."""

from __future__ import annotations

import unicodedata

import pytest

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.query.clinical import ClinicalReader
from tests import clinical_support as C
from tests.conftest import corpus_path

NIR = "279035121517777"
PID = C.patient_cx(NIR)


def _with_title(title: str) -> bytes:
    data = corpus_path("cda", "valid", "VAC_2023.01.xml").read_bytes()
    data = data.replace(b"<title>Historique de vaccinations</title>",
                        b"<title>" + title.encode("utf-8") + b"</title>", 1)
    return C.for_patient(data, NIR)


@pytest.fixture
def titled(services):
    """Documents whose titles carry the words under test (titles are searchable at once)."""
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    titles = {
        "oedeme": "Œdème pulmonaire aigu",                                  # the ligature œ
        "nfd": unicodedata.normalize("NFD", "Thyroïdite chronique"),       # decomposed accents in the text
        "coeur": "Échographie du cœur",
        "fibr": "Fibrillation auriculaire paroxystique",
    }
    names = {}
    for key, title in titles.items():
        request = C.submission(_with_title(title), key)
        ingest.provide_and_register(request)
        names[request.documents[0].unique_id] = key
    reader = ClinicalReader(services, INSECURE_DEV_ACTOR)
    docs = reader.documents(PID)
    return reader, {lid: names[d.unique_id] for lid, d in docs.items() if d.unique_id in names}


def _plain_text(body: str, entry: str, title: str = "Note"):
    import hashlib
    import io

    from partage.metadata.model import Code, DocumentContent
    from tests import factories as F

    data = body.encode("utf-8")
    fields = dict(mime_type="text/plain", title=title,
                  format_code=Code("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3"))
    request = F.submission(PID, [F.document(PID, entry, **fields)], contents=False)
    request.contents[entry] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                              sha1=hashlib.sha1(data).hexdigest())
    return request


@pytest.fixture
def notes(services):
    """Plain-text documents: exactly the words under test, nothing else to match by chance."""
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    bodies = {"femur": "Fracture col fémur droit", "rein": "Insuffisance rénale chronique",
              "plural": "Fractures multiples côtes"}
    names = {}
    for key, body in bodies.items():
        request = _plain_text(body, key, title="Note")
        ingest.provide_and_register(request)
        names[request.documents[0].unique_id] = key
    reader = ClinicalReader(services, INSECURE_DEV_ACTOR)
    docs = reader.documents(PID)
    return reader, {lid: names[d.unique_id] for lid, d in docs.items() if d.unique_id in names}


@pytest.mark.parametrize("query, expected", [
    ("fracture", {"femur", "plural"}),
    ("fractures", {"femur", "plural"}),
    # French function words are not words the text must hold (PostgreSQL's french configuration
    # drops them as stop words; the same question must get the same answer on SQLite)
    ("fracture du col", {"femur"}),
    ("fracture du col de la hanche droite", set()),
    ("insuffisance rénale et chronique", {"rein"}),
    ("une fracture", {"femur", "plural"}),
])
def test_french_queries_with_function_words(notes, query, expected):
    assert _found(notes, query) == expected


def _found(titled, query: str) -> set[str]:
    reader, names = titled
    return {names[h.doc_lid] for h in reader.search(PID, query) if h.doc_lid in names}


@pytest.mark.parametrize("query, expected", [
    ("œdème", {"oedeme"}),
    # a French keyboard without œ: "oedème" is how "œdème" is typed; PostgreSQL's unaccent folds œ
    # to oe, so both engines must (docs/clinical-reading.md: "the same question the same way")
    ("oedeme", {"oedeme"}),
    ("coeur", {"coeur"}),
    # decomposed accents (NFD, as macOS and many input methods send them) are the same word
    (unicodedata.normalize("NFD", "œdème"), {"oedeme"}),
    (unicodedata.normalize("NFD", "échographie"), {"coeur"}),
    # a document whose text came decomposed is found by the composed word
    ("thyroïdite", {"nfd"}),
    ("thyroidite", {"nfd"}),
    # the typographic ligature ﬁ (U+FB01, frequent in text pulled from PDFs) is "fi"
    ("\ufb01brillation", {"fibr"}),
])
def test_unicode_forms_of_a_word_find_the_same_documents(titled, query, expected):
    assert _found(titled, query) == expected


@pytest.mark.parametrize("query", ["   ", "\u0301\u0300", "\u200b", "-", "*", '""', "NEAR", "^x", "x:y",
                                   "title:oedeme", "(oedeme", "a" * 3000, "\ufb01" * 400])
def test_hostile_queries_answer_without_error(titled, query):
    reader, _ = titled
    reader.search(PID, query)
    assert _found(titled, "œdème") == {"oedeme"}


# =========================================================================== notifications
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from partage.access.credentials import sample_actors  # noqa: E402
from partage.config import Settings  # noqa: E402
from partage.fhir.subscriptions import FhirRenderer  # noqa: E402
from partage.metadata.ids import assign_uuids  # noqa: E402
from partage.notify.model import DOCUMENT, DSUB, FULL, Subscription  # noqa: E402
from partage.notify.sender import Sender  # noqa: E402
from partage.notify.subscriptions import Subscriptions  # noqa: E402
from partage.registry import outbox  # noqa: E402
from partage.registry.access_state import Records  # noqa: E402
from partage.registry.register import register  # noqa: E402
from partage.services import Services  # noqa: E402
from partage.xds.dsub import NotifyRenderer  # noqa: E402
from tests import factories as F  # noqa: E402
from tests.notify_support import Endpoint  # noqa: E402
from tests.support import free_port  # noqa: E402

RENDERERS = {"dsub": NotifyRenderer(), "fhir": FhirRenderer()}


@pytest.fixture
def nsvc(tmp_path, database_url):
    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url,
                                      notify_timeout=8.0, notify_max_attempts=3, notify_poll=0.1))
    yield services
    services.close()


def _npatient(svc):
    pid = F.patient_id()
    with svc.registry.write() as conn:
        svc.registry.upsert_patient(conn, [pid])
    Records(svc.registry).open(pid, medecin_traitant=sample_actors(pid)["gp"].id)
    return pid


def _nsubscribe(svc, actor, url, pid) -> Subscription:
    subs = Subscriptions(svc, actor)
    wanted = Subscription(door=DSUB, topic=DOCUMENT, payload=FULL, endpoint=url, actor=actor,
                          ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                          mime_type="application/soap+xml")
    return subs.create(wanted, handshake=False)


def _nregister(svc, pid, entry="d1"):
    request = F.submission(pid, [F.document(pid, entry)], contents=False)
    assign_uuids(request)
    with svc.registry.write() as conn:
        outbox.enqueue_registration(conn, request)
        register(svc.registry, conn, request, {})
    return request


class _Slow:
    """An endpoint that answers 200 after `delay` seconds (within the sender's timeout)."""

    def __init__(self, delay: float) -> None:
        self.port, self.delay, self.hits = free_port(), delay, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.hits += 1
                time.sleep(owner.delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slow"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_endpoint_delays_only_its_own_subscribers(nsvc):
    """docs/notifications.md: "subscriptions are served in parallel (4 threads), so a slow
    endpoint delays only its own subscribers". A recipient that takes 6 s (under the 8 s timeout)
    to answer must not hold back another subscriber's next notification."""
    pid = _npatient(nsvc)
    gp = sample_actors(pid)["gp"]
    slow = _Slow(6.0)
    fast = Endpoint().start()
    sender = Sender(nsvc, RENDERERS).start()
    try:
        _nsubscribe(nsvc, gp, slow.url, pid)
        _nsubscribe(nsvc, gp, fast.url, pid)
        _nregister(nsvc, pid, "first")
        fast.wait(1, 5)
        deadline = time.monotonic() + 5
        while slow.hits == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert slow.hits == 1                       # the slow recipient is busy with the first one
        _nregister(nsvc, pid, "second")
        started = time.monotonic()
        fast.wait(2, 15)
        took = time.monotonic() - started
        assert took < 2.5, f"the fast subscriber waited {took:.1f} s behind the slow one"
    finally:
        sender.stop(timeout=15)
        fast.stop()
        slow.close()


class _Trickle:
    """An endpoint that accepts the POST and then sends its status line one byte every 0.5 s:
    each read completes within the per-read timeout, so only a total deadline ends it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            line = b"HTTP/1.1 200 OK" + b" " * 2000
            for byte in line:
                if self.stopped.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/trickle"

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def test_a_trickling_endpoint_cannot_hold_a_sender_thread(tmp_path, database_url):
    """PARTAGE_NOTIFY_TIMEOUT is "10 s per POST"; a recipient that keeps the answer coming one
    byte at a time must be cut at a bounded time, not after its whole (arbitrary long) answer."""
    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url,
                                      notify_timeout=1.0, notify_max_attempts=3))
    trickle = _Trickle()
    try:
        pid = _npatient(services)
        _nsubscribe(services, sample_actors(pid)["gp"], trickle.url, pid)
        _nregister(services, pid)
        sender = Sender(services, RENDERERS)
        result: list[float] = []

        def once() -> None:
            started = time.monotonic()
            sender.drain_once()
            result.append(time.monotonic() - started)

        worker = threading.Thread(target=once, daemon=True)
        worker.start()
        worker.join(12)
        assert result, "one POST to a trickling endpoint held the sender for more than 12 s (timeout 1 s)"
        row = outbox.rows(services.registry, outbox.EVENTS)[0]
        assert row.state == "pending" and row.attempts == 1   # a failed attempt, retried later
    finally:
        trickle.close()
        services.close()


def _nsubscribe_sets(svc, actor, url, pid) -> Subscription:
    from partage.notify.model import SUBMISSION_SET
    subs = Subscriptions(svc, actor)
    wanted = Subscription(door=DSUB, topic=SUBMISSION_SET, payload=FULL, endpoint=url, actor=actor,
                          ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                          mime_type="application/soap+xml")
    return subs.create(wanted, handshake=False)


def _nregister_docs(svc, pid, docs):
    request = F.submission(pid, docs, contents=False)
    assign_uuids(request)
    with svc.registry.write() as conn:
        outbox.enqueue_registration(conn, request)
        register(svc.registry, conn, request, {})
    return request


def test_submission_set_subscribers_learn_nothing_of_masked_documents(nsvc):
    pid = _npatient(nsvc)
    doctor = sample_actors(pid)["doctor"]          # may open the record, not the documents masked to PS
    masked = F.document(pid, "masked", title="Consultation masquée")
    masked.confidentiality_codes = [*masked.confidentiality_codes, C.MASQUE_PS]
    masked2 = F.document(pid, "masked2", title="Autre masqué")
    masked2.confidentiality_codes = [*masked2.confidentiality_codes, C.MASQUE_PS]
    with Endpoint() as endpoint:
        _nsubscribe_sets(nsvc, doctor, endpoint.url, pid)
        only_masked = _nregister_docs(nsvc, pid, [masked])
        mixed = _nregister_docs(nsvc, pid, [masked2, F.document(pid, "plain", title="Bilan")])
        Sender(nsvc, RENDERERS).drain()
        time.sleep(0.5)
        bodies = [r.body for r in endpoint.received]
    hidden = [masked.entry_uuid, masked.unique_id, masked2.entry_uuid, masked2.unique_id,
              only_masked.submission_set.entry_uuid, only_masked.submission_set.unique_id]
    assert len(bodies) == 1, f"{len(bodies)} notifications: a submission of masked documents only was announced"
    assert mixed.submission_set.entry_uuid.encode() in bodies[0]
    assert [h for h in hidden if h.encode() in bodies[0]] == []


@pytest.mark.parametrize("who", ["patient", "guardian"])
def test_a_patient_may_subscribe_to_their_own_record_only(nsvc, who):
    """docs/notifications.md: "Patients and legal representatives may subscribe to their own
    record too". A multi-patient subscription is everyone's registrations: each one writes an
    outbox row for it and runs a query as the patient, for records that can never be theirs."""
    from partage.notify.subscriptions import SubscriptionError
    pid = _npatient(nsvc)
    actor = sample_actors(pid)[who]
    with Endpoint() as endpoint:
        assert _nsubscribe(nsvc, actor, endpoint.url, pid).status == "active"   # their own record: fine
        with pytest.raises(SubscriptionError):
            _nsubscribe(nsvc, actor, endpoint.url, None)


def test_one_subscriber_cannot_multiply_the_cost_of_every_registration(nsvc):
    """Each live subscription of a patient, and every multi-patient one, costs an outbox row
    written inside every registration's transaction and a query at delivery. Without a bound on
    how many one subscriber holds, one credential makes every ITI-41 of the exchange write
    thousands of rows."""
    from partage.notify.subscriptions import SubscriptionError
    pid = _npatient(nsvc)
    gp = sample_actors(pid)["gp"]
    made = 0
    with Endpoint() as endpoint:
        try:
            for _ in range(2000):
                _nsubscribe(nsvc, gp, endpoint.url, None)
                made += 1
        except SubscriptionError:
            pass
        other = _npatient(nsvc)
        started = time.monotonic()
        _nregister(nsvc, other)
        took = time.monotonic() - started
        written = len(outbox.rows(nsvc.registry, outbox.EVENTS))
    assert made < 2000, (f"one subscriber holds {made} live multi-patient subscriptions; one registration "
                         f"of another patient wrote {written} outbox rows in {took:.2f} s")


def test_the_bound_is_per_scope_so_a_practice_follows_each_of_its_patients(nsvc):
    """The bound is per scope (one patient's record, or every patient's): a practice subscribing
    to each of its patients' records is not stopped by it; the same record twenty-one times is."""
    from partage.notify.subscriptions import MAX_LIVE_PER_SCOPE, SubscriptionError
    gp = sample_actors(F.patient_id())["gp"]
    with Endpoint() as endpoint:
        for _ in range(MAX_LIVE_PER_SCOPE + 5):
            _nsubscribe(nsvc, gp, endpoint.url, _npatient(nsvc))
        pid = _npatient(nsvc)
        for _ in range(MAX_LIVE_PER_SCOPE):
            _nsubscribe(nsvc, gp, endpoint.url, pid)
        with pytest.raises(SubscriptionError):
            _nsubscribe(nsvc, gp, endpoint.url, pid)


@pytest.mark.parametrize("address", ["a:b@c.de", "a(b@c.de", "(x)a@b.cd", "a@b.c(", "a@[127.0.0.1].fr",
                                     "a\x00b@c.de", "a@b.c\x7f", "=?utf-8?q?x?=@b.cd"])
def test_the_patients_address_is_the_one_written_to_or_none(tmp_path, database_url, address):
    """The patient's e-mail (PID-13, FHIR telecom) must be the address the notice goes to, or be
    refused as unusable ("one address, no spaces or line breaks"): RFC 5322 specials and controls
    make another recipient of it (a group "a:" sends to b@c.de, a comment "(" to the local user "a")."""
    import email.utils

    from partage.notify.mail import Mail, message
    from partage.registry import patients as P

    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url))
    try:
        pid = F.patient_id()
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid], {"telecom": [f"^NET^Internet^{address}"]})
        with services.registry.read() as conn:
            record = P.record(conn, services.registry.patient_pk(conn, pid))
        if not record.email:
            return   # refused: the notice is skipped, as for a patient without an address
        msg = message(services.settings, record.email, Mail("s", "b", []), "n1")
        parsed = email.utils.getaddresses([str(v) for v in msg.get_all("to", [])])
        assert [a for _, a in parsed] == [record.email], (record.email, msg.as_bytes()[:120])
        assert all(ord(c) > 0x1f and c != "\x7f" for c in record.email)
    finally:
        services.close()


def test_keyword_search_reaches_every_document_of_a_long_record(tmp_path):
    """docs/clinical-reading.md: `_content` is the ITI-67 search with every filter applying
    unchanged, ranked. The door searches only the first 1000 documents the ITI-67 search
    returns (newest first): in a record of more, the older ones are never found, and the total
    is false."""
    from partage.metadata.datatypes import DTM
    from partage.server.app import create_app

    services = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True))
    try:
        pid = F.patient_id()
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid])
        global PID
        saved, PID = PID, pid
        try:
            old = _plain_text("Phéochromocytome surrénalien droit", "old", title="Compte rendu ancien")
        finally:
            PID = saved
        old.documents[0].creation_time = DTM("20010101000000")
        IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(old)
        newer = [F.document(pid, f"n{i}", creation_time=DTM("20240101000000")) for i in range(1000)]
        request = F.submission(pid, newer, contents=False)
        assign_uuids(request)
        with services.registry.write() as conn:
            register(services.registry, conn, request, {})
        client = create_app(services=services).test_client()
        r = client.get("/fhir/DocumentReference", query_string={
            "patient.identifier": F.token(pid), "_content": "phéochromocytome"},
            headers={"Accept": "application/fhir+json"})
        assert r.status_code == 200, r.get_data(as_text=True)[:500]
        bundle = r.get_json()
        assert bundle.get("total") == 1 and len(bundle.get("entry", [])) == 1, \
            f"the matching (oldest) document of a 1001-document record was not found: total {bundle.get('total')}"
    finally:
        services.close()


def test_excerpts_are_cut_for_the_returned_page_only(tmp_path, monkeypatch):
    """docs/clinical-reading.md: the excerpt is "computed for the returned page only". The
    `_content` search asks the engine for up to 1000 ranked hits and cuts the page afterwards, so
    an excerpt is cut from the text (up to 400 kB each) of every hit: `_count=1` over 60 matching
    documents cuts 60 excerpts (PostgreSQL: 60 ts_headline in the query)."""
    from partage.registry import text_search
    from partage.server.app import create_app

    services = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True))
    try:
        global PID
        pid = F.patient_id()
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid])
        saved, PID = PID, pid
        try:
            ingest = IngestService(services, INSECURE_DEV_ACTOR)
            for i in range(60):
                ingest.provide_and_register(_plain_text(f"Bilan {i} : créatinine élevée", f"c{i}"))
        finally:
            PID = saved
        calls = []
        real = text_search.excerpt
        monkeypatch.setattr(text_search, "excerpt", lambda *a, **k: calls.append(1) or real(*a, **k))
        client = create_app(services=services).test_client()
        r = client.get("/fhir/DocumentReference", query_string={
            "patient.identifier": F.token(pid), "_content": "créatinine", "_count": "1"},
            headers={"Accept": "application/fhir+json"})
        assert r.status_code == 200 and r.get_json()["total"] == 60
        assert len(calls) <= 1, f"{len(calls)} excerpts cut for a page of one"
    finally:
        services.close()


def test_a_notification_that_cannot_be_made_is_given_up_not_retried_forever(nsvc):
    """Retries are bounded (PARTAGE_NOTIFY_MAX_ATTEMPTS, then `failed`). A row whose delivery
    raises (a message that cannot be rendered: lxml refuses a control character a stored value
    holds, a bug) is left leased and claimed again after every lease, each claim counting an
    attempt, without end."""
    class Broken:
        action = "ITI-53"

        def event(self, services, event):
            raise ValueError("All strings must be XML compatible")

    from sqlalchemy import update

    from partage.registry import schema
    pid = _npatient(nsvc)
    with Endpoint() as endpoint:
        _nsubscribe(nsvc, sample_actors(pid)["gp"], endpoint.url, pid)
        _nregister(nsvc, pid)
        sender = Sender(nsvc, {"dsub": Broken(), "fhir": FhirRenderer()})
        for _ in range(nsvc.settings.notify_max_attempts + 3):
            sender.drain_once()
            with nsvc.registry.write() as conn:   # as if the lease (and any backoff) had run out
                conn.execute(update(schema.notification_outbox).where(
                    schema.notification_outbox.c.state == "pending").values(claimed_until=0, next_attempt_at=0))
    row = outbox.rows(nsvc.registry, outbox.EVENTS)[0]
    assert row.state == "failed", f"still {row.state} after {row.attempts} attempts (max {nsvc.settings.notify_max_attempts})"
