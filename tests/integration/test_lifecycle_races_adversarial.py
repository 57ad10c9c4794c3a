"""Adversarial: races between different lifecycle transactions on one document, against real
`partage serve` processes, and SIGKILL in the middle of lifecycle transactions.

After each race: exactly one outcome applied, the lineage has one Approved head, `fsck`
reports nothing, every acknowledged change is present."""

# The races' lambdas and closures run within their loop's iteration (`_race` returns before the
# next one): binding the loop's variables late is what they mean.
# ruff: noqa: B023

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import urllib3
from lxml import etree
from sqlalchemy import func, select

from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.fsck import check
from partage.hl7.mllp import MllpClient
from partage.metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    SubmissionRequest,
)
from partage.registry import schema
from partage.services import Services
from tests import factories as F
from tests.conftest import require_postgres
from tests.integration.test_patient_feed import adt
from tests.support import LiveServer, postgres_database
from tests.xdsclient import XdsClient, objects_of

OBJ = schema.registry_objects
ROUNDS = int(os.environ.get("PARTAGE_RACE_ROUNDS", "25"))
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    require_postgres()
    with postgres_database("partage_races") as url:
        yield url


@pytest.fixture
def server(tmp_path, db_url):
    with LiveServer(tmp_path / "data", database_url=db_url, workers=2) as live:
        yield live


# ------------------------------------------------------------------ helpers
def _feed(server, *pids):
    with MllpClient("127.0.0.1", server.mllp_port) as mllp:
        for pid in pids:
            assert "MSA|AA" in mllp.send(adt("A01", str(pid)))


def _ok(reply) -> bool:
    return reply.http_status == 200 and reply.status == "Success"


def _contents(client, ss_unique_id):
    reply = client.stored_query("GetSubmissionSetAndContents",
                                {"$XDSSubmissionSetUniqueId": [f"'{ss_unique_id}'"]})
    assert reply.status == "Success", reply.error_codes
    objs = objects_of(reply)
    ss = next(o for o in objs if o.kind == "SubmissionSet")
    docs = [o for o in objs if o.kind == "DocumentEntry"]
    assocs = [o for o in objs if o.kind == "Association"]
    return ss, docs, assocs


def _submit_one(client, pid, extra=None, payload=None):
    doc = F.document(pid, "doc1")
    request = F.submission(pid, [doc], contents=False, extra_associations=extra)
    data = payload or f"<doc>{doc.unique_id}</doc>".encode()
    reply = client.provide_and_register(request, {"doc1": data})
    return reply, request


def _registered(client, pid):
    """A fresh document for `pid`: (SubmissionSet, DocumentEntry, its HasMember)."""
    reply, request = _submit_one(client, pid)
    assert _ok(reply), reply.error_codes
    ss, docs, assocs = _contents(client, request.submission_set.unique_id)
    hm = next(a for a in assocs if a.target_uuid == docs[0].entry_uuid)
    return ss, docs[0], hm


def _update_body(request: SubmissionRequest):
    submit = etree.Element(f"{{{C.LCM}}}SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), submit)
    return submit


def _status_change(client, pid, target_uuid, new="DEPRECATED"):
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=target_uuid,
                         original_status=str(AvailabilityStatus.APPROVED),
                         new_status=str(AvailabilityStatus[new]))
    request = SubmissionRequest(F.update_set(pid), [], [], [change])
    return client.call(client.registry, C.ACTION_UPDATE, _update_body(request))


def _new_version(client, doc, **changes):
    doc.lid = doc.lid or doc.entry_uuid
    request = F.new_version(doc, **changes)
    return client.call(client.registry, C.ACTION_UPDATE, _update_body(request))


def _remove_metadata(client, refs):
    body = etree.Element(f"{{{C.LCM}}}RemoveObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    refs_list = etree.SubElement(body, f"{{{C.RIM}}}ObjectRefList")
    for ref in refs:
        etree.SubElement(refs_list, f"{{{C.RIM}}}ObjectRef", id=ref)
    return client.call(client.registry, C.ACTION_REMOVE_METADATA, body)


def _remove_documents(client, repository_id, unique_id):
    body = etree.Element(f"{{{C.RMD}}}RemoveDocumentsRequest", nsmap={"rmd": C.RMD, "xdsb": C.XDSB})
    item = etree.SubElement(body, f"{{{C.XDSB}}}DocumentRequest")
    etree.SubElement(item, f"{{{C.XDSB}}}RepositoryUniqueId").text = repository_id
    etree.SubElement(item, f"{{{C.XDSB}}}DocumentUniqueId").text = unique_id
    return client.call(client.repository, C.ACTION_REMOVE_DOCUMENTS, body)


def _rplc(pid, target_uuid):
    return [Association(entry_uuid="rplc", association_type=AssociationType.RPLC,
                        source_uuid="doc1", target_uuid=target_uuid)]


def _race(*calls):
    """Run the calls at once (a barrier releases them together); their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _services(server, db_url) -> Services:
    return Services.open(Settings(data_dir=server.data_dir, database_url=db_url), migrate=False)


def _assert_store_consistent(server, db_url):
    services = _services(server, db_url)
    try:
        report = check(services, min_age_seconds=0)
        problems = {k: v for k, v in {
            "missing_blobs": report.missing_blobs, "orphans": report.orphans,
            "dangling": report.dangling_associations, "unsettled": report.unsettled,
            "unrecorded": report.unrecorded, "unclaimed": report.unclaimed_ids,
            "derived_orphans": report.derived_orphans}.items() if v}
        assert report.consistent and not problems, f"fsck after the races: {problems}"
        with services.registry.read() as conn:
            lineage = func.coalesce(OBJ.c.lineage, OBJ.c.lid)
            heads = conn.execute(select(lineage, func.count()).where(
                OBJ.c.kind == "D", OBJ.c.status == "Approved").group_by(lineage)
                .having(func.count() > 1)).all()
        assert heads == [], f"lineages with several Approved heads: {heads}"
    finally:
        services.close()


# ------------------------------------------------------------------ races on one document
def test_metadata_removal_racing_a_status_change(server, db_url):
    """ITI-62 removing a document (with its SubmissionSet and HasMember) while an ITI-57 changes
    its status: the status change registers an association to the document. Only one may win;
    both winning leaves an association whose target is gone (fsck: DANGLING)."""
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    both = []
    for _ in range(ROUNDS):
        ss, doc, hm = _registered(a, pid)
        removal, change = _race(lambda: _remove_metadata(a, [ss.entry_uuid, hm.entry_uuid, doc.entry_uuid]),
                                lambda: _status_change(b, pid, doc.entry_uuid))
        assert removal.http_status == 200 and change.http_status == 200
        if _ok(removal) and _ok(change):
            both.append(doc.entry_uuid)
    assert both == [], f"{len(both)}/{ROUNDS} rounds applied both the removal and the status change"
    _assert_store_consistent(server, db_url)


def test_metadata_removal_racing_a_replacement(server, db_url):
    """ITI-62 removing a document while an ITI-41 replaces it (RPLC): the replacement's RPLC
    association targets the removed document if both win."""
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    both = []
    for _ in range(ROUNDS):
        ss, doc, hm = _registered(a, pid)
        removal, (replacement, _req) = _race(
            lambda: _remove_metadata(a, [ss.entry_uuid, hm.entry_uuid, doc.entry_uuid]),
            lambda: _submit_one(b, pid, extra=_rplc(pid, doc.entry_uuid)))
        assert removal.http_status == 200 and replacement.http_status == 200
        if _ok(removal) and _ok(replacement):
            both.append(doc.entry_uuid)
    assert both == [], f"{len(both)}/{ROUNDS} rounds applied both the removal and the replacement"
    _assert_store_consistent(server, db_url)


def test_new_version_racing_metadata_removal(server, db_url):
    """ITI-57 new version of a document while an ITI-62 removes it."""
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    outcomes = []
    for _ in range(ROUNDS):
        ss, doc, hm = _registered(a, pid)
        removal, update = _race(lambda: _remove_metadata(a, [ss.entry_uuid, hm.entry_uuid, doc.entry_uuid]),
                                lambda: _new_version(b, doc, title="v2"))
        assert removal.http_status == 200 and update.http_status == 200
        outcomes.append((_ok(removal), _ok(update)))
        if _ok(update):   # an acknowledged new version is there, Approved
            found = objects_of(a.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{doc.unique_id}')"]}))
            assert [d.title for d in found if d.availability_status.short == "Approved"] == ["v2"]
    # both may apply in turn (the removal of a version the update has just deprecated)
    _assert_store_consistent(server, db_url)


def test_removal_of_bytes_racing_a_new_version(server, db_url):
    """ITI-86 removing a document's bytes while an ITI-57 registers its next version: once the
    removal is acknowledged, no version of the document may serve the bytes (ITI TF-2b 3.86)."""
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    repository_id = Settings(data_dir=server.data_dir).repository_unique_id
    still_served = []
    for _ in range(ROUNDS):
        ss, doc, hm = _registered(a, pid)
        removal, update = _race(lambda: _remove_documents(a, repository_id, doc.unique_id),
                                lambda: _new_version(b, doc, title="v2"))
        assert removal.http_status == 200 and update.http_status == 200, (removal.error_codes, update.error_codes)
        assert _ok(removal), removal.error_codes
        reply, docs = a.retrieve(repository_id, [doc.unique_id])
        if docs:
            still_served.append((doc.unique_id, _ok(update)))
    assert still_served == [], (f"{len(still_served)}/{ROUNDS} documents whose bytes were removed (ITI-86 "
                                f"acknowledged) are still retrieved: {still_served[:3]}")
    _assert_store_consistent(server, db_url)


def test_replacement_racing_a_status_change(server, db_url):
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    for _ in range(ROUNDS):
        ss, doc, hm = _registered(a, pid)
        (replacement, _req), change = _race(lambda: _submit_one(a, pid, extra=_rplc(pid, doc.entry_uuid)),
                                            lambda: _status_change(b, pid, doc.entry_uuid, "ARCHIVED"))
        assert replacement.http_status == 200 and change.http_status == 200
        assert not (_ok(replacement) and _ok(change)), "a replaced document was archived, or the reverse"
    _assert_store_consistent(server, db_url)


def test_removal_of_bytes_racing_retrieve(server, db_url):
    """ITI-86 while ITI-43 retrieves: the whole document or a clean error, never partial bytes or a 500."""
    pid = F.patient_id()
    _feed(server, pid)
    a = XdsClient(server.base_url)
    repository_id = Settings(data_dir=server.data_dir).repository_unique_id
    for _ in range(max(5, ROUNDS // 3)):
        payload = os.urandom(3_000_000)
        reply, request = _submit_one(a, pid, payload=payload)
        assert _ok(reply), reply.error_codes
        uid = request.documents[0].unique_id

        def retrieve():
            reply, docs = XdsClient(server.base_url).retrieve(repository_id, [uid])
            return reply, {k: (v.read() if v is not None else None) for k, v in docs.items()}

        results = _race(lambda: _remove_documents(XdsClient(server.base_url), repository_id, uid),
                        retrieve, retrieve, retrieve)
        assert _ok(results[0]), results[0].error_codes
        for reply, docs in results[1:]:
            assert reply.http_status == 200
            if docs:
                assert docs == {uid: payload}, "partial bytes"
            else:
                assert reply.status == "Failure" and reply.error_codes, reply.error_codes
    _assert_store_consistent(server, db_url)


@pytest.mark.postgres
def test_two_servers_replace_one_document(tmp_path):
    """Two servers on one PostgreSQL database, each replacing the same document at once."""
    require_postgres()
    with postgres_database("partage_races") as url, \
            LiveServer(tmp_path / "data1", database_url=url) as one, \
            LiveServer(tmp_path / "data2", database_url=url) as two:
        pid = F.patient_id()
        _feed(one, pid)
        a, b = XdsClient(one.base_url), XdsClient(two.base_url)
        for _ in range(ROUNDS):
            ss, doc, hm = _registered(a, pid)
            (r1, _), (r2, _) = _race(lambda: _submit_one(a, pid, extra=_rplc(pid, doc.entry_uuid)),
                                     lambda: _submit_one(b, pid, extra=_rplc(pid, doc.entry_uuid)))
            assert r1.http_status == 200 and r2.http_status == 200
            assert [_ok(r1), _ok(r2)].count(True) == 1, (r1.error_codes, r2.error_codes)
        services = Services.open(Settings(data_dir=one.data_dir, database_url=url), migrate=False)
        try:
            with services.registry.read() as conn:
                lineage = func.coalesce(OBJ.c.lineage, OBJ.c.lid)
                heads = conn.execute(select(lineage, func.count()).where(
                    OBJ.c.kind == "D", OBJ.c.status == "Approved").group_by(lineage)
                    .having(func.count() > 1)).all()
            assert heads == []
        finally:
            services.close()


def test_folder_removal_racing_a_submission_into_the_folder(server, db_url):
    """ITI-62 removing a Folder while an ITI-41 files a document into it (HasMember from the
    Folder): both winning leaves a membership of a Folder that is gone (fsck: DANGLING)."""
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    both = []
    for _ in range(ROUNDS):
        request = F.submission(pid, [], folders=[F.folder(pid)], contents=False)
        assert _ok(a.register(request))
        reply = a.stored_query("GetSubmissionSetAndContents",
                               {"$XDSSubmissionSetUniqueId": [f"'{request.submission_set.unique_id}'"]})
        objs = objects_of(reply)
        ss = next(o for o in objs if o.kind == "SubmissionSet")
        fol = next(o for o in objs if o.kind == "Folder")
        hm = next(o for o in objs if o.kind == "Association" and o.target_uuid == fol.entry_uuid)
        into = [Association(entry_uuid="inf", association_type=AssociationType.HAS_MEMBER,
                            source_uuid=fol.entry_uuid, target_uuid="doc1")]
        removal, (filed, _req) = _race(lambda: _remove_metadata(a, [ss.entry_uuid, hm.entry_uuid, fol.entry_uuid]),
                                       lambda: _submit_one(b, pid, extra=into))
        assert removal.http_status == 200 and filed.http_status == 200, (removal.error_codes, filed.error_codes)
        if _ok(removal) and _ok(filed):
            both.append(fol.entry_uuid)
    assert both == [], f"{len(both)}/{ROUNDS} rounds removed a Folder and filed a document into it"
    _assert_store_consistent(server, db_url)


def test_new_version_racing_a_replacement(server, db_url):
    pid = F.patient_id()
    _feed(server, pid)
    a, b = XdsClient(server.base_url), XdsClient(server.base_url)
    for _ in range(ROUNDS):
        ss, doc, hm = _registered(a, pid)
        update, (replacement, _req) = _race(lambda: _new_version(a, doc, title="v2"),
                                            lambda: _submit_one(b, pid, extra=_rplc(pid, doc.entry_uuid)))
        assert update.http_status == 200 and replacement.http_status == 200
        assert [_ok(update), _ok(replacement)].count(True) == 1, (update.error_codes, replacement.error_codes)
    _assert_store_consistent(server, db_url)


# ------------------------------------------------------------------ a merge during submissions
@pytest.mark.postgres
def test_merge_during_submissions_for_the_merged_patient_loses_nothing(tmp_path):
    """ITI-8 A40 merging patient M into K while ITI-41 submissions for M flow: every
    acknowledged document must end up findable under K (the merge follows M's identifier)."""
    require_postgres()
    with postgres_database("partage_races") as url, \
            LiveServer(tmp_path / "data", database_url=url, workers=2) as server:
        lost_total = []
        for _round in range(4):
            kept, merged = F.patient_id(), F.patient_id()
            _feed(server, kept, merged)
            stop = threading.Event()
            acked: list[str] = []
            lock = threading.Lock()

            def submitter():
                client = XdsClient(server.base_url)
                while not stop.is_set():
                    reply, request = _submit_one(client, merged)
                    if _ok(reply):
                        with lock:
                            acked.append(request.documents[0].unique_id)

            threads = [threading.Thread(target=submitter) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.8)
            with MllpClient("127.0.0.1", server.mllp_port) as mllp:
                assert "MSA|AA" in mllp.send(adt("A40", str(kept), mrg=str(merged)))
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(60)
            found = {d.unique_id for d in objects_of(XdsClient(server.base_url).stored_query(
                "FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{kept}'"],
                                  "$XDSDocumentEntryStatus": [
                                      "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]}))}
            lost_total += [uid for uid in acked if uid not in found]
        where = []
        if lost_total:
            services = Services.open(Settings(data_dir=server.data_dir, database_url=url), migrate=False)
            try:
                with services.registry.read() as conn:
                    p = schema.patients
                    where = conn.execute(select(OBJ.c.unique_id, p.c.pk, p.c.merged_into).join(
                        p, p.c.pk == OBJ.c.patient_pk).where(OBJ.c.unique_id.in_(lost_total[:3]))).all()
            finally:
                services.close()
        assert lost_total == [], (f"{len(lost_total)} acknowledged documents are not found under the "
                                  f"surviving patient after the merge; filed under (uid, patient, merged_into): "
                                  f"{where}")


@pytest.mark.postgres
def test_merge_racing_a_metadata_removal(tmp_path):
    """ITI-8 A40 moving the merged patient's documents while an ITI-62 removes one of them:
    an acknowledged removal must have removed the document."""
    require_postgres()
    with postgres_database("partage_races") as url, \
            LiveServer(tmp_path / "data", database_url=url, workers=2) as server:
        client = XdsClient(server.base_url)
        survived = []
        for n in range(ROUNDS):
            kept, merged = F.patient_id(), F.patient_id()
            _feed(server, kept, merged)
            docs = [_registered(client, merged) for _ in range(3)]
            ss, doc, hm = docs[0]

            def merge():
                with MllpClient("127.0.0.1", server.mllp_port) as mllp:
                    return mllp.send(adt("A40", str(kept), mrg=str(merged), control=f"m{n}"))

            removal, ack = _race(lambda: _remove_metadata(XdsClient(server.base_url),
                                                          [ss.entry_uuid, hm.entry_uuid, doc.entry_uuid]), merge)
            assert "MSA|AA" in ack and removal.http_status == 200
            if _ok(removal) and _uuid_of(client, doc.unique_id):
                survived.append(doc.unique_id)
        assert survived == [], f"{len(survived)}/{ROUNDS} acknowledged removals left the document in place"


# ------------------------------------------------------------------ SIGKILL during lifecycle transactions
def _lifecycle_until_killed(base_url, pid, stop, rng, ledger, lock, repository_id):
    client = XdsClient(base_url)
    while not stop.is_set():
        try:
            ss, doc, hm = _registered(client, pid)
            kind = rng.choice(["update", "status", "remove", "bytes"])
            if kind == "update":
                reply = _new_version(client, doc, title="v2")
            elif kind == "status":
                reply = _status_change(client, pid, doc.entry_uuid, "ARCHIVED")
            elif kind == "remove":
                reply = _remove_metadata(client, [ss.entry_uuid, hm.entry_uuid, doc.entry_uuid])
            else:
                reply = _remove_documents(client, repository_id, doc.unique_id)
            with lock:
                ledger.append((kind, doc, "acked" if _ok(reply) else f"refused {reply.error_codes}"))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError,
                AssertionError, StopIteration):
            return


@pytest.mark.slow
def test_sigkill_during_lifecycle_transactions(tmp_path, db_url):
    rng = random.Random(20261204)
    data_dir = tmp_path / "data"
    services = Services.open(Settings(data_dir=data_dir, database_url=db_url))
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    repository_id = services.settings.repository_unique_id
    ledger: list = []
    lock = threading.Lock()
    for _ in range(6):
        server = LiveServer(data_dir, database_url=db_url, mllp=False).start()
        stop = threading.Event()
        threads = [threading.Thread(target=_lifecycle_until_killed,
                                    args=(server.base_url, pid, stop, random.Random(rng.random()), ledger, lock,
                                          repository_id)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))
        server.send_signal(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(30)
        server.stop()
    acked = [(k, d) for k, d, o in ledger if o == "acked"]
    refused = [(k, o) for k, d, o in ledger if o != "acked"]
    assert acked, "no lifecycle transaction was acknowledged"
    assert refused == [], f"lifecycle transactions refused outside a race: {refused[:5]}"
    report = check(services, min_age_seconds=0)
    assert not (report.missing_blobs or report.orphans or report.dangling_associations or report.unsettled
                or report.unrecorded or report.unclaimed_ids), report
    with services.registry.read() as conn:
        for kind, doc in acked:
            rows = conn.execute(select(OBJ.c.version, OBJ.c.status, OBJ.c.blob_address).where(
                OBJ.c.unique_id == doc.unique_id, OBJ.c.kind == "D").order_by(OBJ.c.version)).all()
            if kind == "update":
                assert [(r.version, r.status) for r in rows] == [(1, "Deprecated"), (2, "Approved")], rows
            elif kind == "status":
                assert [r.status for r in rows] == ["Archived"], rows
            elif kind == "remove":
                assert rows == [], rows
            else:
                assert [r.blob_address for r in rows] == [None], rows
    services.close()


# ------------------------------------------------------------------ the HL7 document feed
def _feed_doc():
    from tests.conftest import corpus_path
    return corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes()


def _uuid_of(client, unique_id):
    found = objects_of(client.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{unique_id}')"]}))
    return [d for d in found if d.kind == "DocumentEntry"]


@pytest.mark.corpus
def test_hl7_replacement_racing_an_iti41_replacement(server, db_url):
    """MDM^T10 replacing a document while an ITI-41 RPLC replaces it too: one wins, the other is
    refused (HL7 AE / XDS Failure), the lineage keeps one Approved head."""
    from partage.metadata.datatypes import CX, HD
    from tests.integration.test_document_feed import adt_a28, header, message, msa, renamed

    source = _feed_doc()
    ins = header(source)["ins"]
    pid = CX(ins[1], HD.iso(ins[0]))
    client = XdsClient(server.base_url)
    with MllpClient("127.0.0.1", server.mllp_port, timeout=120) as mllp:
        assert msa(mllp.send(adt_a28(ins)))[1] == "AA"
    winners = []
    for n in range(max(5, ROUNDS // 2)):
        tag = f"9{n}{random.randrange(10**6)}"
        v1 = renamed(source, tag)
        v1_id = header(v1)["unique_id"]
        with MllpClient("127.0.0.1", server.mllp_port, timeout=120) as mllp:
            assert msa(mllp.send(message("MDM", v1)))[1] == "AA"
        target = _uuid_of(client, v1_id)[0].entry_uuid
        v2 = renamed(source, tag + ".2", replaces=v1_id)

        def hl7():
            with MllpClient("127.0.0.1", server.mllp_port, timeout=120) as mllp:
                return msa(mllp.send(message("MDM", v2, status="C", parent=v1_id)))[1]

        ack, (reply, _req) = _race(hl7, lambda: _submit_one(XdsClient(server.base_url), pid,
                                                            extra=_rplc(pid, target)))
        assert reply.http_status == 200 and ack in ("AA", "AE", "AR"), (ack, reply.error_codes)
        winners.append((ack == "AA") + _ok(reply))
        if ack == "AA":
            assert _uuid_of(client, header(v2)["unique_id"]), "an AA for a replacement not stored"
    assert winners == [1] * len(winners), winners
    _assert_store_consistent(server, db_url)


@pytest.mark.corpus
@pytest.mark.slow
def test_sigkill_during_hl7_document_messages(tmp_path, db_url):
    """The HL7 sender gets an AA only for what is stored, across SIGKILLs of the server."""
    from tests.integration.test_document_feed import adt_a28, header, message, msa, renamed

    source = _feed_doc()
    ins = header(source)["ins"]
    data_dir = tmp_path / "data"
    rng = random.Random(4242)
    acked: list[tuple[str, str]] = []   # (uniqueId, replaced uniqueId or "")
    unknown: list[str] = []
    current = ""
    for kill in range(5):
        server = LiveServer(data_dir, database_url=db_url).start()
        with MllpClient("127.0.0.1", server.mllp_port, timeout=120) as mllp:
            assert msa(mllp.send(adt_a28(ins)))[1] == "AA"
        stop = threading.Event()

        def sender():
            nonlocal current
            n = 0
            try:
                with MllpClient("127.0.0.1", server.mllp_port, timeout=30) as mllp:
                    while not stop.is_set():
                        n += 1
                        tag = f"8{kill}{n}{rng.randrange(10**6)}"
                        doc = renamed(source, tag, replaces=current) if current else renamed(source, tag)
                        uid = header(doc)["unique_id"]
                        unknown.append(uid)
                        ack = mllp.send(message("MDM", doc, status="C" if current else "F", parent=current))
                        unknown.remove(uid)
                        if msa(ack)[1] == "AA":
                            acked.append((uid, current))
                            current = uid
            except (OSError, ValueError, StopIteration, Exception):
                return

        thread = threading.Thread(target=sender)
        thread.start()
        time.sleep(rng.uniform(0.5, 2.0))
        server.send_signal(signal.SIGKILL)
        stop.set()
        thread.join(60)
        server.stop()
        # the next round replaces what the registry shows as current (an unacknowledged one may be)
        with LiveServer(data_dir, database_url=db_url, mllp=False) as check_server:
            client = XdsClient(check_server.base_url)
            for uid in unknown:
                if any(d.availability_status.short == "Approved" for d in _uuid_of(client, uid)):
                    current = uid
            unknown.clear()
    assert acked
    with LiveServer(data_dir, database_url=db_url, mllp=False) as server:
        client = XdsClient(server.base_url)
        for uid, replaced in acked:
            assert _uuid_of(client, uid), f"AA sent for {uid}, which is not stored"
            if replaced:
                assert [d.availability_status.short for d in _uuid_of(client, replaced)] == ["Deprecated"]
        _assert_store_consistent(server, db_url)


def test_fsck_names_documents_filed_under_a_merged_patient(tmp_path, db_url):
    """What the merge race leaves (a document filed under the merged patient after the merge
    moved the others): no query finds it, by either identifier. `partage fsck` must not call
    that store consistent, and --repair must give the document to the survivor."""
    from partage.access.actor import INSECURE_DEV_ACTOR
    from partage.fsck import remove_leftovers
    from partage.metadata.ids import assign_uuids
    from partage.metadata.query import DocumentFilter
    from partage.query import QueryService
    from partage.registry.register import register

    services = Services.open(Settings(data_dir=tmp_path / "data", database_url=db_url))
    try:
        kept, merged = F.patient_id(), F.patient_id()
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [kept])
            gone = services.registry.upsert_patient(conn, [merged])
        request = F.submission(merged, contents=False)
        assign_uuids(request)
        with services.registry.write() as conn:
            register(services.registry, conn, request)
        with services.registry.write() as conn:
            services.registry.merge_patients(conn, kept, merged)
            # what a submission that resolved `merged` before the merge committed, unlocked, left
            conn.execute(OBJ.update().where(OBJ.c.entry_uuid.in_([o.entry_uuid for o in request.objects()]))
                         .values(patient_pk=gone))
        report = check(services, min_age_seconds=0)
        assert not report.consistent, "fsck calls a store with a document no identifier reaches consistent"
        remove_leftovers(services, report)
        found = QueryService(services, INSECURE_DEV_ACTOR).find_documents(kept, DocumentFilter()).objects
        assert [d.unique_id for d in found] == [request.documents[0].unique_id]
        assert check(services, min_age_seconds=0).consistent
    finally:
        services.close()
