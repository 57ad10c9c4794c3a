"""SIGKILL at random moments during ingest, many times: nothing acknowledged is lost,
nothing unacknowledged is half-visible, no registered entry lacks its bytes.

Short form here (PARTAGE_CRASH_KILLS, default 20 kills); the long form is the same test
with a larger count, documented with its result in docs/robustness.md.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests
import urllib3

from partage.config import Settings
from partage.fsck import check, remove_leftovers
from partage.registry import schema
from partage.services import Services
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

KILLS = int(os.environ.get("PARTAGE_CRASH_KILLS", "20"))
SUBMITTERS = 3


@dataclass
class Sent:
    """One submission and what its client was told."""
    ss_unique_id: str
    documents: dict[str, bytes]           # document uniqueId -> bytes
    outcome: str = "unknown"              # acked | refused | unknown (connection died)


@dataclass
class Ledger:
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Sent) -> None:
        with self.lock:
            self.sent.append(item)


def _submit_until_killed(base_url: str, pid: str, ledger: Ledger, stop: threading.Event, seed: int):
    rng = random.Random(seed)
    client = XdsClient(base_url)
    while not stop.is_set():
        docs = [F.document(pid, f"doc{i}") for i in range(rng.randint(1, 3))]
        payloads = {d.entry_uuid: os.urandom(rng.choice([200, 5_000, 200_000])) for d in docs}
        request = F.submission(pid, docs, contents=False)
        item = Sent(request.submission_set.unique_id,
                    {d.unique_id: payloads[d.entry_uuid] for d in docs})
        ledger.add(item)
        try:
            reply = client.provide_and_register(request, payloads)
            item.outcome = "acked" if reply.status == "Success" else "refused"
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError):
            item.outcome = "unknown"
            return


def _one_crash(server: LiveServer, pid: str, ledger: Ledger, rng: random.Random) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=_submit_until_killed,
                                args=(server.base_url, pid, ledger, stop, rng.random()))
               for _ in range(SUBMITTERS)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.05, 1.2))
    server.send_signal(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    server.stop()


def _visible_documents(client: XdsClient, sent: Sent) -> tuple[int, bool]:
    """How many of this submission's documents the registry shows, and whether its SS shows."""
    reply = client.stored_query("GetSubmissionSetAndContents",
                                {"$XDSSubmissionSetUniqueId": [f"'{sent.ss_unique_id}'"]})
    assert reply.status == "Success", reply.error_codes
    objects = objects_of(reply)
    docs = [o for o in objects if o.kind == "DocumentEntry"]
    return len(docs), any(o.kind == "SubmissionSet" for o in objects)


@pytest.mark.slow
def test_sigkill_during_ingest_loses_nothing_and_shows_nothing_half_done(tmp_path, database_url):
    rng = random.Random(int(os.environ.get("PARTAGE_CRASH_SEED", "20261123")))
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=database_url)
    services = Services.open(settings)
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    ledger = Ledger()
    for _ in range(KILLS):
        server = LiveServer(data_dir, database_url=database_url, mllp=False).start()
        _one_crash(server, pid, ledger, rng)

    acked = [s for s in ledger.sent if s.outcome == "acked"]
    unknown = [s for s in ledger.sent if s.outcome == "unknown"]
    assert acked and unknown, "the kills must land both between and during submissions"
    print(f"\ncrash test: {KILLS} kills, {len(acked)} submissions acknowledged, "
          f"{len(unknown)} connections cut, {len(ledger.sent) - len(acked) - len(unknown)} refused")

    report = check(services, min_age_seconds=0)
    assert report.missing_blobs == [], "a registered entry lacks its bytes"
    assert report.orphans == [] and report.dangling_associations == [], "a submission is half-registered"

    with LiveServer(data_dir, database_url=database_url, mllp=False) as server:
        client = XdsClient(server.base_url)
        for sent in acked:
            count, has_ss = _visible_documents(client, sent)
            assert has_ss and count == len(sent.documents), f"acknowledged {sent.ss_unique_id} is incomplete"
        for sent in unknown:
            count, has_ss = _visible_documents(client, sent)
            assert count in (0, len(sent.documents)) and has_ss == (count > 0), \
                f"unacknowledged {sent.ss_unique_id} is half-visible: {count}/{len(sent.documents)}"
        sample = rng.sample(acked, min(10, len(acked)))
        repository_id = services.settings.repository_unique_id
        for sent in sample:
            reply, documents = client.retrieve(repository_id, list(sent.documents))
            assert reply.status == "Success"
            assert {uid: part.read() for uid, part in documents.items()} == sent.documents

    remove_leftovers(services, report)
    after = check(services, min_age_seconds=0)
    assert after.unreferenced_blobs == [] and after.temp_files == [] and after.missing_blobs == []
    with services.registry.read() as conn:
        registered = conn.execute(schema.registry_objects.select()
                                  .where(schema.registry_objects.c.blob_address.is_not(None))).all()
    assert len(registered) == after.registered_documents == after.blobs
    services.close()
