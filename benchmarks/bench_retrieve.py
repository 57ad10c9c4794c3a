"""ITI-43 and ITI-68 retrieve: throughput and peak server memory for 1, 10 and 100 MB documents.

    .venv/bin/python -m benchmarks.bench_retrieve
    .venv/bin/python -m benchmarks.bench_retrieve --sizes-mb 1,10,100 --backend postgresql

For each size, a fresh `partage serve` (1 gunicorn worker, SQLite or PostgreSQL) receives
one document of that size by ITI-41 (MTOM, streamed by the client: never held whole),
then answers --repeat ITI-43 Retrieve Document Set requests for it from one client, then
--repeat ITI-68 GET /fhir/Binary/<id> (raw bytes, streamed) for it.
Recorded: MB/s of the retrieves (the client reads the whole MTOM answer or body), the peak
resident memory (VmHWM) of every server process before the upload, after it and after
the retrieves, and the disk's read speed for the same blob file (dd with O_DIRECT,
the page cache bypassed) as the reference the issue compares with.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID
from partage.mhd.mapping import resource_id
from partage.registry.store import Registry

from .common import ROOT, load_average, machine, postgres_database, save
from .synth import Corpus, Generator, patient_cx

sys.path.insert(0, str(ROOT))
from tests.factories import PatternStream
from tests.memory import peak_rss_bytes
from tests.support import LiveServer
from tests.xdsclient import XdsClient

MB = 1024 * 1024


def disk_read_mb_s(path: Path) -> float | None:
    """dd with O_DIRECT: what the disk gives without the page cache."""
    try:
        out = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M", "iflag=direct"],
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out.stderr)
    return round(int(m.group(1)) / float(m.group(2)) / 1e6, 1) if m else None


def mb(values: dict[int, int]) -> dict[str, float]:
    return {str(pid): round(v / MB, 1) for pid, v in values.items()}


def run(size_mb: int, args, corpus: Corpus) -> dict:
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-retrieve-"))
        stack.callback(shutil.rmtree, tmp, True)
        data_dir = tmp / "data"
        data_dir.mkdir()
        url = (f"sqlite:///{data_dir / 'registry.sqlite3'}" if args.backend == "sqlite"
               else stack.enter_context(postgres_database("bench_retrieve")))
        registry = Registry(url)
        registry.migrate()
        with registry.write() as conn:
            registry.upsert_patient(conn, [patient_cx(0)])
        registry.dispose()
        generator = Generator(corpus, seed=3)
        request, _ = generator.submission(0, 1)
        entry = request.documents[0]
        # Opaque bytes: the transport and the blob store are measured, not the clinical text
        # reader (which parses application/pdf documents up to 20 MB at ingest).
        entry.mime_type, entry.hash, entry.size = "application/octet-stream", "", None
        server = stack.enter_context(LiveServer(data_dir, database_url=url, workers=1, mllp=False))
        client = XdsClient(server.base_url)
        pid = server.process.pid
        at_start = peak_rss_bytes(pid)
        source = PatternStream(size_mb * MB)
        started = time.perf_counter()
        reply = client.provide_and_register(request, {entry.entry_uuid: source})
        upload_s = time.perf_counter() - started
        if reply.status != "Success":
            raise SystemExit(f"upload refused: {reply.error_codes}\n{server.log()[-2000:]}")
        after_upload = peak_rss_bytes(pid)
        repeat = args.repeat or max(2, min(20, 200 // size_mb))
        load_before = load_average()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            reply, docs = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [entry.unique_id])
            times.append(time.perf_counter() - started)
            part = docs[entry.unique_id]     # spooled to a temporary file by the client
            if reply.status != "Success" or part.size != size_mb * MB:
                raise SystemExit(f"retrieve failed: {reply.status} {reply.error_codes}")
            if part.sha1_hex != source.sha1.hexdigest():
                raise SystemExit("retrieved bytes differ from the uploaded ones")
            part.file.close()
        after_retrieve = peak_rss_bytes(pid)
        # ITI-68: the same bytes as a raw Binary (Accept: the document's type), streamed.
        binary = f"{server.base_url}/fhir/Binary/{resource_id(entry.entry_uuid)}"
        fhir_times = []
        for _ in range(repeat):
            started = time.perf_counter()
            digest, n = hashlib.sha1(), 0
            with client.session.get(binary, headers={"Accept": "application/octet-stream"}, stream=True,
                                    timeout=300) as response:
                if response.status_code != 200:
                    raise SystemExit(f"ITI-68 failed: {response.status_code} {response.text[:300]}")
                for chunk in response.iter_content(MB):
                    digest.update(chunk)
                    n += len(chunk)
            fhir_times.append(time.perf_counter() - started)
            if n != size_mb * MB or digest.hexdigest() != source.sha1.hexdigest():
                raise SystemExit("ITI-68 bytes differ from the uploaded ones")
        after_fhir = peak_rss_bytes(pid)
        blob = next((data_dir / "blobs").glob("??/??/*"))
        total = sum(times)
        return {"backend": args.backend, "size_mb": size_mb, "retrieves": repeat,
                "upload_s": round(upload_s, 2), "upload_mb_s": round(size_mb * MB / upload_s / 1e6, 1),
                "retrieve_mb_s": round(size_mb * MB * repeat / total / 1e6, 1),
                "retrieve_s_median": round(sorted(times)[len(times) // 2], 3),
                "iti68_mb_s": round(size_mb * MB * repeat / sum(fhir_times) / 1e6, 1),
                "peak_rss_mb": {"start": mb(at_start), "after_upload": mb(after_upload),
                                "after_retrieves": mb(after_retrieve), "after_iti68": mb(after_fhir)},
                # per process (the master's own peak, often the largest, would hide a worker's growth)
                "worker_peak_growth_mb": round(
                    max(after_fhir[p] - at_start.get(p, 0) for p in after_fhir) / MB, 1),
                "disk_read_mb_s_direct": disk_read_mb_s(blob),
                "load_average_before": load_before, "load_average_after": load_average()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", default="1,10,100")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--repeat", type=int, default=0, help="retrieves per size (default 200 MB worth, 2..20)")
    parser.add_argument("--out", default="retrieve")
    args = parser.parse_args(argv)
    corpus = Corpus.load()
    runs = []
    for size in [int(s) for s in args.sizes_mb.split(",")]:
        result = run(size, args, corpus)
        print(result, file=sys.stderr, flush=True)
        runs.append(result)
    payload = {"benchmark": "retrieve", "command": " ".join(["python -m benchmarks.bench_retrieve", *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "runs": runs}
    print(save(args.out, payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
