"""The outbox survives a crash: a `partage serve` killed with SIGKILL between a registration
and its deliveries delivers them after a restart, exactly once per subscriber.

Three subscribers (two DSUB, one FHIR rest-hook) whose endpoints are down when the document
is registered: the sender tries, fails, backs off; the whole server (master, workers, sender)
is killed with SIGKILL; the endpoints come up; the server is restarted on the same data. Each
endpoint then receives the notification once, under one delivery id (wsa:MessageID,
Bundle.id): what a recipient deduplicates on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import pytest
import requests

from partage.access import saml
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.metadata.datatypes import XCN
from partage.registry import outbox
from partage.registry.access_state import Records
from partage.services import Services
from tests import factories as F
from tests.integration.test_notifications import wait_for_log
from tests.notify_support import Endpoint, fhir_subscription, subscribe
from tests.support import LiveServer
from tests.xdsclient import XdsClient

pytestmark = pytest.mark.slow


def _soap(base_url, authority, actor) -> XdsClient:
    return XdsClient(base_url, security=lambda: saml.security_header(authority.saml_assertion(actor)))


def _rows(services, pid) -> list:
    return [r for r in outbox.rows(services.registry, outbox.EVENTS) if r.patient_id == pid.format()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_between_registration_and_delivery_delivers_once_after_restart(
        tmp_path, authority, module_database_url):
    data = tmp_path / "data"
    args = ["--trust", str(authority.directory / "ca.pem")]
    url = module_database_url
    first = LiveServer(data, insecure_dev=False, mllp=False, database_url=url, extra_args=args).start()
    services = Services.open(Settings(data_dir=data, database_url=url), migrate=False)
    dsub_a, dsub_b, hook = Endpoint(), Endpoint(), Endpoint()
    try:
        wait_for_log(first, "notification sender started")
        pid = F.patient_id()
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid])
        actors = sample_actors(pid)
        gp, doctor, nurse = actors["gp"], actors["doctor"], actors["nurse"]
        Records(services.registry).open(pid, medecin_traitant=gp.id)
        for actor, endpoint in ((gp, dsub_a), (nurse, dsub_b)):
            reply = subscribe(_soap(first.base_url, authority, actor), first.base_url, endpoint.url,
                              patient=pid.format())
            assert reply.http_status == 200, reply.body
        with hook:   # the FHIR subscriber's handshake succeeds; its endpoint then goes down
            r = requests.post(f"{first.base_url}/fhir/Subscription", timeout=30,
                              json=fhir_subscription(hook.url, f"DocumentReference?patient.identifier={F.token(pid)}"),
                              headers={"Authorization": f"Bearer {authority.jwt(doctor)}"})
            assert r.status_code == 201, r.text
            assert len(hook.wait(1, 10)) == 1
            deadline = time.monotonic() + 10
            while requests.get(f"{first.base_url}/fhir/Subscription/{r.json()['id']}", timeout=30,
                               headers={"Authorization": f"Bearer {authority.jwt(doctor)}"}).json()["status"] != "active":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        hook.received.clear()

        doc = F.document(pid, "d1")
        doc.authors[0].person = XCN.parse(f"{doctor.id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
        reply = _soap(first.base_url, authority, doctor).provide_and_register(
            F.submission(pid, [doc], contents=False), {"d1": b"<doc>crash</doc>"})
        assert reply.status == "Success", reply.error_codes

        # every delivery has been tried and failed (endpoints down), none delivered; the server
        # is frozen (SIGSTOP) while no row is leased, so that the kill below leaves no lease
        # (a row killed leased waits for its lease to expire, minutes)
        deadline = time.monotonic() + 20
        while True:
            rows = _rows(services, pid)
            if len(rows) == 3 and all(r.last_error and r.claimed_by is None for r in rows):
                first.send_signal(signal.SIGSTOP)
                rows = _rows(services, pid)
                if all(r.claimed_by is None for r in rows):
                    break
                first.send_signal(signal.SIGCONT)   # a retry claimed one meanwhile: again
            assert time.monotonic() < deadline, [(r.state, r.attempts, r.last_error) for r in rows]
            time.sleep(0.1)
        assert {r.state for r in rows} == {"pending"}
        ids_before = {r.subscription_pk: r.delivery_id for r in rows}

        master = first.process.pid
        first.stop(signal.SIGKILL)                      # master, workers and sender: the whole group
        assert not _alive(master)

        with contextlib.ExitStack() as stack:
            for endpoint in (dsub_a, dsub_b, hook):
                stack.enter_context(endpoint)
            second = stack.enter_context(LiveServer(data, insecure_dev=False, mllp=False, database_url=url,
                                                    extra_args=args, port=first.port))
            for endpoint in (dsub_a, dsub_b, hook):
                assert len(endpoint.wait(1, 30)) >= 1, second.log()
            time.sleep(2.5)                             # anything more would come now
            a, b, h = dsub_a.received, dsub_b.received, hook.received
            assert (len(a), len(b), len(h)) == (1, 1, 1)
            # the delivery ids written with the registration, before the crash
            sent = {a[0].message_id, b[0].message_id, f"urn:uuid:{json.loads(h[0].body)['id']}"}
            assert sent == {f"urn:uuid:{i}" for i in ids_before.values()}
        rows = _rows(services, pid)
        assert {r.state for r in rows} == {"delivered"}
        assert {r.subscription_pk: r.delivery_id for r in rows} == ids_before   # the same ids, before and after
    finally:
        first.stop()
        for endpoint in (dsub_a, dsub_b, hook):
            endpoint.stop()
        services.close()
