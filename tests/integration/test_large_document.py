"""A 100 MB document in by ITI-41 (MTOM) and out by ITI-43, byte-identical, with the
server's memory growing by less than twice the document size (the issue's bound; the
measured figure is in docs/performance.md, from benchmarks/large_document.py)."""

from __future__ import annotations

import pytest

from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID
from tests import factories as F
from tests.integration.test_patient_feed import adt
from tests.memory import is_linux, peak_rss_bytes, rss_bytes
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

SIZE = 100 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.skipif(not is_linux(), reason="reads peak memory from /proc")
def test_100_mb_round_trip_with_bounded_memory(tmp_path):
    from partage.hl7.mllp import MllpClient

    with LiveServer(tmp_path / "data") as server:
        pid = F.patient_id()
        with MllpClient("127.0.0.1", server.mllp_port) as mllp:
            assert "MSA|AA" in mllp.send(adt("A01", pid))
        before = sum(rss_bytes(server.process.pid).values())
        client = XdsClient(server.base_url)
        request = F.submission(pid, contents=False)
        source = F.PatternStream(SIZE)
        reply = client.provide_and_register(request, {"doc1": source})
        assert reply.status == "Success", reply.error_codes
        doc = objects_of(client.stored_query("GetDocuments", {
            "$XDSDocumentEntryUniqueId": [f"('{request.documents[0].unique_id}')"]}))[0]
        assert doc.size == SIZE and doc.hash == source.sha1.hexdigest()
        _, documents = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [doc.unique_id])
        part = documents[doc.unique_id]
        assert part.size == SIZE and part.sha1_hex == source.sha1.hexdigest()
        peak = sum(peak_rss_bytes(server.process.pid).values())
    assert peak - before < 2 * SIZE, f"server memory grew by {(peak - before) / 2**20:.0f} MiB"
