"""A request's statements have a deadline on PostgreSQL (PARTAGE_STATEMENT_TIMEOUT,
PARTAGE_LOCK_TIMEOUT): a lock held by a stuck session (an idle-in-transaction client's row
lock, an operator's ACCESS EXCLUSIVE lock) or a frozen shard (SIGSTOP: its kernel still
acknowledges TCP) ends the request with the outage answer of each door (503 + Retry-After:
SOAP Fault XDSRegistryBusy, OperationOutcome transient, HL7 AE "send again later") within a
bound, and rolls its transaction back (nothing half-registered). Migrations and bulk loads
have no such deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest
import requests

from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.mtom import build_multipart
from partage.ebxml.soap import build_envelope
from partage.hl7.mllp import MllpClient
from partage.registry.bulk import BulkLoader
from partage.registry.store import MIGRATION_LOCK
from partage.services import Services
from tests import factories as F
from tests.conftest import require_postgres
from tests.integration.test_doors_failures import NIR, _find, _record
from tests.integration.test_patient_feed import adt
from tests.pg_shards import ShardCluster, shard_clusters, sharded_database
from tests.support import LiveServer, postgres_database
from tests.xdsclient import provide_and_register_body

pytestmark = pytest.mark.postgres

DEADLINE = 2.0     # PARTAGE_STATEMENT_TIMEOUT in these tests
LOCK_WAIT = 1.0    # PARTAGE_LOCK_TIMEOUT
ENV = {"PARTAGE_TEXT_INDEXER": "0", "PARTAGE_NOTIFIER": "0",
       "PARTAGE_STATEMENT_TIMEOUT": str(DEADLINE), "PARTAGE_LOCK_TIMEOUT": str(LOCK_WAIT)}
# What the client waits at most: the unfixed server never answers, and the test must fail, not hang.
CLIENT_WAIT = 40


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _timed(call):
    start = time.monotonic()
    try:
        result = call()
    except requests.Timeout:
        pytest.fail(f"no answer within {CLIENT_WAIT} s: the request waits without bound")
    return result, time.monotonic() - start


def _busy_soap(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[-1500:])
    assert int(response.headers["Retry-After"]) > 0
    assert b"soap:Fault" in response.content and b"XDSRegistryBusy" in response.content, response.text[:400]


def _busy_fhir(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:400])
    assert int(response.headers["Retry-After"]) > 0
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "transient", outcome


def _iti18(server, pid) -> requests.Response:
    body = open("examples/iti18-find-documents.xml", "rb").read().replace(
        b"270017512345615^^^&amp;1.2.250.1.213.1.4.10&amp;ISO", str(pid).replace("&", "&amp;").encode())
    return requests.post(f"{server.base_url}/xds/registry", data=body, timeout=CLIENT_WAIT,
                         headers={"Content-Type": "application/soap+xml"})


def _iti41(server, request) -> requests.Response:
    """ITI-41 of `request` (MTOM, one document), waiting CLIENT_WAIT at most for the answer."""
    url = f"{server.base_url}/xds/repository"
    body, attachments = provide_and_register_body(request, {"doc1": b"hello"})
    content_type, chunks, _length = build_multipart(build_envelope(C.ACTION_PNR, body, to=url), attachments,
                                                    action=C.ACTION_PNR)
    return requests.post(url, data=b"".join(chunks), headers={"Content-Type": content_type}, timeout=CLIENT_WAIT)


# ------------------------------------------------------------------ flat PostgreSQL
def test_a_lock_held_by_a_stuck_session_ends_each_door_with_busy_and_writes_nothing(tmp_path):
    require_postgres()
    with postgres_database("partage_deadline") as url, \
            LiveServer(tmp_path / "data", database_url=url, env=ENV) as server:
        pid, ref, _binary = _record(server)
        ahead = F.patient_id()
        submission = F.submission(ahead, contents=False)   # refused twice, then accepted once
        with MllpClient("127.0.0.1", server.mllp_port) as mllp:
            assert "MSA|AA" in mllp.send(adt("A01", ahead))

        # An operator's ALTER (ACCESS EXCLUSIVE on registry_objects), its session left open.
        operator = psycopg.connect(_dsn(url))
        try:
            operator.execute("LOCK TABLE registry_objects IN ACCESS EXCLUSIVE MODE")
            response, took = _timed(lambda: _iti41(server, submission))
            _busy_soap(response)
            assert took < DEADLINE + 8, took
            response, took = _timed(lambda: _iti18(server, pid))
            _busy_soap(response)
            assert took < DEADLINE + 8, took
            response, took = _timed(lambda: requests.get(f"{server.base_url}/fhir/DocumentReference/{ref}",
                                                         timeout=CLIENT_WAIT))
            _busy_fhir(response)
            assert took < DEADLINE + 8, took
        finally:
            operator.rollback()
            operator.close()

        # An idle-in-transaction client holding the patient's row lock.
        client = psycopg.connect(_dsn(url))
        try:
            client.execute("SELECT p.pk FROM patients p JOIN patient_identifiers i ON i.patient_pk = p.pk "
                           "WHERE i.value = %s FOR UPDATE OF p", (ahead.id,))
            response, took = _timed(lambda: _iti41(server, submission))
            _busy_soap(response)
            assert took < DEADLINE + 8, took
            start = time.monotonic()
            with MllpClient("127.0.0.1", server.mllp_port, timeout=CLIENT_WAIT) as mllp:
                reply = mllp.send(adt("A08", ahead))
            assert time.monotonic() - start < DEADLINE + 8
            assert "MSA|AE" in reply and "try again later" in reply, reply
        finally:
            client.rollback()
            client.close()

        # Nothing of the refused submissions was kept: the same one is accepted now, once.
        assert not _find(server, ahead)
        response = _iti41(server, submission)
        assert response.status_code == 200 and b"ResponseStatusType:Success" in response.content, response.text[:400]
        assert len(_find(server, ahead)) == 1
        assert _find(server, pid)
        assert "Traceback" not in server.log()


# ------------------------------------------------------------------ sharded, a frozen shard
def _processes(cluster: ShardCluster) -> list[int]:
    """The cluster's postmaster and every one of its backends and auxiliary processes."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster, *map(int, children)]


def test_a_frozen_shard_ends_the_request_within_the_bound(tmp_path):
    require_postgres()
    env = {**ENV, "PARTAGE_DB_POOL_SIZE": "2", "PARTAGE_DB_MAX_OVERFLOW": "2"}
    with shard_clusters(2) as clusters, sharded_database(clusters) as url, \
            LiveServer(tmp_path / "data", database_url=url, env=env) as server:
        pid, _ref, _binary = _record(server)
        for _ in range(4):   # the pooled coordinator backends open their connections to the shards
            assert _iti18(server, pid).status_code == 200
            assert requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=10, params={
                "patient.identifier": f"{NIR}|{pid.id}", "status": "current"}).status_code == 200
        frozen = [p for cluster in clusters for p in _processes(cluster)]
        try:
            for p in frozen:
                os.kill(p, signal.SIGSTOP)
            # The bound: the statement deadline, then postgres_fdw's cancel of the shard's query
            # (it gives the connection up), or, on a coordinator backend with no connection to the
            # shard yet, the foreign server's connect_timeout (5 s, sharding.CONNECTION_OPTIONS).
            for _ in range(3):
                response, took = _timed(lambda: _iti18(server, pid))
                _busy_soap(response)
                assert took < 5 + DEADLINE + 5, took
            response, took = _timed(lambda: requests.get(
                f"{server.base_url}/fhir/DocumentReference", timeout=CLIENT_WAIT,
                params={"patient.identifier": f"{NIR}|{pid.id}", "status": "current"}))
            _busy_fhir(response)
            assert took < 5 + DEADLINE + 5, took
        finally:
            for p in frozen:
                os.kill(p, signal.SIGCONT)
        # Nothing lost: once the shards run again the document is found.
        deadline = time.monotonic() + 30
        while True:
            response = _iti18(server, pid)
            if response.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert response.status_code == 200 and response.content.count(b"<rim:ExtrinsicObject") == 1
        assert "Traceback" not in server.log()


# ------------------------------------------------------------------ not on the command line's work
def _hold(url: str, statement: str, seconds: float) -> threading.Thread:
    """Another session takes a lock with `statement`, keeps it `seconds`, then lets it go."""
    taken = threading.Event()

    def run() -> None:
        with psycopg.connect(_dsn(url)) as conn:
            conn.execute(statement)
            taken.set()
            time.sleep(seconds)
            conn.rollback()

    holder = threading.Thread(target=run, daemon=True)
    holder.start()
    assert taken.wait(10)
    return holder


def test_migrations_and_bulk_loads_are_not_cut_by_the_request_deadline(tmp_path):
    require_postgres()
    with postgres_database("partage_deadline") as url:
        settings = Settings.from_env({}, data_dir=tmp_path / "data", database_url=url)
        settings.statement_timeout, settings.lock_timeout = 0.5, 0.5
        # A migration waiting 2 s for another host's migration lock, on the server's own registry.
        holder = _hold(url, f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})", 2.0)
        start = time.monotonic()
        services = Services.open(settings, migrate=True, bounded=True)
        holder.join()
        try:
            assert time.monotonic() - start > 1.5
            registry = services.registry
            # The deadline holds on the request path of this registry...
            holder = _hold(url, "LOCK TABLE registry_objects IN ACCESS EXCLUSIVE MODE", 2.0)
            with pytest.raises(Exception) as refused:
                with registry.read() as conn:
                    conn.exec_driver_sql("SELECT count(*) FROM registry_objects")
            assert "lock timeout" in str(refused.value) or "statement timeout" in str(refused.value)
            holder.join()
            # ... not on a bulk load waiting 2 s for the same lock.
            holder = _hold(url, "LOCK TABLE registry_objects IN ACCESS EXCLUSIVE MODE", 2.0)
            start = time.monotonic()
            pids = [F.patient_id() for _ in range(3)]
            stats = BulkLoader(registry).add_all(
                F.registered_ids(F.submission(p, contents=False)) for p in pids)
            holder.join()
            assert time.monotonic() - start > 1.5 and stats.documents == 3
        finally:
            services.close()
