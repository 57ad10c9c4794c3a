"""SIGTERM in the middle of a write: the registry and the blob store stay consistent.

The upload is streamed slowly so that the signal arrives while the worker is reading
the request; afterwards `fsck` must find every registered document's bytes, and the
document is registered exactly when the client was told Success.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.mtom import Attachment, build_multipart
from partage.ebxml.soap import build_envelope
from partage.fsck import check
from partage.services import Services
from tests import factories as F
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of


def _slow_pnr_body(request, payload: bytes, pause: float):
    """The ITI-41 MTOM body, yielded in pieces with pauses (a slow client)."""
    from lxml import etree

    from partage.ebxml import ebrim
    body = etree.Element(f"{{{C.XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    submit = etree.SubElement(body, f"{{{C.LCM}}}SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), submit)
    document = etree.SubElement(body, f"{{{C.XDSB}}}Document", id="doc1")
    etree.SubElement(document, f"{{{C.XOP}}}Include", href="cid:doc1@test")
    envelope = build_envelope(C.ACTION_PNR, body)
    content_type, chunks, _ = build_multipart(envelope, [Attachment("doc1@test", "text/plain", payload)],
                                              action=C.ACTION_PNR)
    data = b"".join(chunks)
    step = len(data) // 20 + 1

    def pieces():
        for start in range(0, len(data), step):
            yield data[start:start + step]
            time.sleep(pause)
    return content_type, pieces()


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_sigterm_during_ingest_leaves_a_consistent_store(tmp_path, delay):
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir, mllp=False).start()
    services = Services.open(Settings(data_dir=data_dir), migrate=False)
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    request = F.submission(pid, contents=False)
    payload = b"%PDF-1.4 " + bytes(range(256)) * 40_000     # about 10 MB
    content_type, pieces = _slow_pnr_body(request, payload, pause=0.05)
    outcome: dict = {}

    def send():
        try:
            r = requests.post(f"{server.base_url}/xds/repository", data=pieces,
                              headers={"Content-Type": content_type}, timeout=60)
            outcome["success"] = r.status_code == 200 and b"ResponseStatusType:Success" in r.content
        except requests.RequestException as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(delay)
    server.send_signal(signal.SIGTERM)
    sender.join(60)
    code = server.stop()
    assert code == 0, server.log()

    report = check(services, min_age_seconds=0)
    assert report.missing_blobs == []
    with LiveServer(data_dir, mllp=False) as again:
        found = objects_of(XdsClient(again.base_url).stored_query(
            "GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{request.documents[0].unique_id}')"]}))
    assert bool(found) == bool(outcome.get("success")), outcome
    services.close()
