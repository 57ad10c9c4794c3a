"""ITI-41 end to end, documents per second, against a real `partage serve`.

    .venv/bin/python -m benchmarks.bench_ingest                        # SQLite and PostgreSQL, 1 and 2 workers
    .venv/bin/python -m benchmarks.bench_ingest --backends postgresql --workers 2 --documents 400

Each run starts a fresh server (a scratch SQLite data directory, or a fresh PostgreSQL
database dropped afterwards) with full CDA validation: the CDA schema from
../shared/corpus/xsd/cda, the CI-SIS rules, the terminology layer on the corpus value
sets and the metadata cross-check, all blocking by the profile's default. The patients
are created in the registry beforehand (as the ITI-8 feed would have). The documents
are CDAs from the corpus models with fresh ids (benchmarks.synth; sizes 10 KB - 10 MB,
median 60 KB, or --size), generated before the clock starts, one document per ITI-41
Provide and Register (MTOM), sent by 2 x workers concurrent clients. Every answer must
be Success: a refusal stops the benchmark and prints the XDS errors.

Authentication is on, as in production: the server trusts a development CA and each
submission carries a fresh signed SAML assertion of its document's author (a doctor whose
RPPS is the CDA's author), verified and recorded in the replay cache by the server. The
assertions are signed and the MTOM messages built before the clock starts, as a load
generator prepares its requests: the clients only send the bytes (HTTP/1.1 keep-alive) and
read the answer's status, so that their share of the two cores is the sending.
`--no-auth` runs the server with `--insecure-dev` instead, for comparison.

The text of PDFs (embedded in most corpus models) is indexed after the response by the
server's background process (partage.server.background, partage.clinical.queue): `documents_per_s` is what clients
see; `text_indexed_s` is the time from the start until the queue was empty (every PDF
read), polled every 0.2 s, and `documents_per_s_text_indexed` the rate that makes.
`--no-text-indexer` runs the servers without the indexer (PARTAGE_TEXT_INDEXER=0): the
request path alone, the jobs left queued.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from partage.access import saml
from partage.access.credentials import DevAuthority, sample_actors
from partage.clinical.queue import backlog
from partage.ebxml import constants as C
from partage.ebxml.mtom import build_multipart
from partage.ebxml.soap import build_envelope
from partage.registry.access_state import Records
from partage.registry.store import Registry

from .common import (
    ROOT,
    cpu_since,
    database_backends_cpu,
    load_average,
    machine,
    percentiles,
    postgres_database,
    process_tree_cpu,
    save,
    save_figure,
)
from .synth import Corpus, Generator, corpus_dir, patient_cx

sys.path.insert(0, str(ROOT))
from tests.support import LiveServer
from tests.xdsclient import XdsClient, provide_and_register_body

SUCCESS = b"urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"


def validation_args() -> list[str]:
    """Every layer of the cisis profile: schema, CI-SIS rules, the document's model schematron
    (the corpus' ANS schematrons), terminology, the metadata cross-check."""
    corpus = corpus_dir()
    return ["--cda-schema-dir", str(corpus / "xsd" / "cda"), "--cda-valuesets", str(corpus / "valuesets"),
            "--cda-schematrons", str(corpus / "cda" / "schematrons")]


def request_body(request, payloads: dict[str, bytes], security) -> tuple[str, bytes]:
    """The ITI-41 MTOM message a DMP client sends (its WS-Security header when `security`)."""
    body, attachments = provide_and_register_body(request, payloads)
    envelope = build_envelope(C.ACTION_PNR, body, to="http://localhost/xds/repository",
                              extra_headers=[security] if security is not None else ())
    content_type, chunks, _length = build_multipart(envelope, attachments, action=C.ACTION_PNR)
    return content_type, b"".join(chunks)


def run(backend: str, workers: int, clients: int, args, corpus: Corpus) -> dict:
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{backend}-"))
        stack.callback(shutil.rmtree, tmp, True)
        data_dir = tmp / "data"
        data_dir.mkdir()
        url = (f"sqlite:///{data_dir / 'registry.sqlite3'}" if backend == "sqlite"
               else stack.enter_context(postgres_database("bench_ingest")))
        generator = Generator(corpus, seed=args.seed)
        patients = 50
        registry = Registry(url)
        registry.migrate()
        with registry.write() as conn:
            for i in range(patients):
                registry.upsert_patient(conn, [patient_cx(i)])
        for i in range(patients):
            Records(registry).open(patient_cx(i))   # a professional files into an open record
        registry.dispose()
        authority = None if args.no_auth else DevAuthority.create()
        jobs = []
        n = 0
        while len(jobs) < args.documents + 1:   # the first one warms the server up
            n += 1
            request, payloads = generator.submission(n % patients, 1, with_bytes=True, size=args.size)
            if args.size and max(len(b) for b in payloads.values()) > args.size * 1.1:
                continue   # a model larger than --size by itself (embedded PDFs): not a document of this size
            security = None
            if authority is not None:
                author = request.documents[0].authors[0].person if request.documents[0].authors else None
                if author is None:
                    continue   # a model whose header names no RPPS author: no professional may file it
                doctor = dataclasses.replace(sample_actors(patient_cx(n % patients))["doctor"], id=author.id_number)
                security = saml.security_header(authority.saml_assertion(doctor))
            jobs.append((request, payloads, security))
        warm_job, jobs = jobs[0], jobs[1:]
        total_bytes = sum(len(b) for _r, p, _s in jobs for b in p.values())
        messages = iter([request_body(*job) for job in jobs])
        extra = validation_args()
        if authority is not None:
            authority.save(tmp / "ca")
            extra += ["--trust", str(tmp / "ca" / "ca.pem")]
        server = LiveServer(data_dir, database_url=url, workers=workers, mllp=False,
                            extra_args=extra, insecure_dev=authority is None)
        stack.enter_context(server)
        clients = clients or 2 * workers
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            try:
                while True:
                    with lock:
                        message = next(messages, None)
                    if message is None or failures:
                        return
                    content_type, body = message
                    started = time.perf_counter()
                    connection.request("POST", "/xds/repository", body=body, headers={"Content-Type": content_type})
                    answer = connection.getresponse()
                    reply = answer.read()
                    ms = (time.perf_counter() - started) * 1000
                    with lock:
                        latencies.append(ms)
                        if answer.status != 200 or SUCCESS not in reply:
                            failures.append(f"HTTP {answer.status}: {reply[-1500:]!r}")
            finally:
                connection.close()

        request, payloads, security = warm_job   # the first request loads the validation profile
        reply = XdsClient(server.base_url, security=security).provide_and_register(request, payloads)
        if reply.status != "Success":
            raise SystemExit(f"warm-up submission refused: {reply.error_codes}\n{server.log()[-3000:]}")
        load_before = load_average()
        assert server.process is not None
        server_cpu, client_cpu = process_tree_cpu(server.process.pid), time.process_time()
        postgresql = backend != "sqlite"
        database_cpu = database_backends_cpu(url) if postgresql else {}
        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        server_cpu = process_tree_cpu(server.process.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        # the backends of this run's database only, not every postgres process of a shared server
        database_s = cpu_since(database_cpu, database_backends_cpu(url)) if postgresql else None
        if failures:
            raise SystemExit(f"{len(failures)} submissions refused, first: {failures[0]}")
        load_after = load_average()

        registry = Registry(url)
        backlog_at_end = backlog(registry)["waiting"]
        while backlog(registry)["waiting"] and not args.no_text_indexer:
            if time.perf_counter() - started > elapsed + 600:
                raise SystemExit(f"text index queue not drained after 600 s: {backlog(registry)}")
            time.sleep(0.2)
        indexed = time.perf_counter() - started
        registry.dispose()
        return {"backend": backend, "workers": workers, "text_indexer": not args.no_text_indexer,
                "authentication": "none (--insecure-dev)" if authority is None else "SAML per request, single use",
                "clients": clients, "documents": len(jobs),
                "mean_document_bytes": round(total_bytes / len(jobs)), "seconds": round(elapsed, 2),
                "documents_per_s": round(len(jobs) / elapsed, 1),
                "megabytes_per_s": round(total_bytes / elapsed / 1e6, 2),
                "latency_ms": percentiles(latencies),
                "server_cpu_ms_per_document": round(server_cpu * 1000 / len(jobs), 1),
                "client_cpu_ms_per_document": round(client_cpu * 1000 / len(jobs), 1),
                "postgresql_cpu_ms_per_document": None if database_s is None
                else round(database_s * 1000 / len(jobs), 1),
                "load_average_before": load_before,
                "load_average_after": load_after, "text_jobs_left_at_end": backlog_at_end,
                "text_indexed_s": None if args.no_text_indexer else round(indexed, 2),
                "documents_per_s_text_indexed": None if args.no_text_indexer else round(len(jobs) / indexed, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--clients", default="0", help="concurrent clients, a comma-separated list for a "
                        "sweep (default 2 x workers)")
    parser.add_argument("--plot", default="", help="draw documents/s and p99 against concurrent clients "
                        "into this PNG (matplotlib, the bench extra)")
    parser.add_argument("--size", type=int, default=None, help="every document this many bytes (the models "
                        "larger than that by themselves, those with embedded PDFs, are left out)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="ingest")
    parser.add_argument("--no-auth", action="store_true",
                        help="servers in --insecure-dev (no credentials) instead of SAML per request")
    parser.add_argument("--no-text-indexer", action="store_true",
                        help="servers without the background PDF text indexer (the request path alone)")
    args = parser.parse_args(argv)
    if args.no_text_indexer:
        os.environ["PARTAGE_TEXT_INDEXER"] = "0"   # inherited by the servers (LiveServer)
    corpus = Corpus.load()
    runs = []
    for backend in [b for b in args.backends.split(",") if b]:
        for workers in [int(w) for w in args.workers.split(",")]:
            for clients in [int(c) for c in args.clients.split(",")]:
                result = run(backend, workers, clients, args, corpus)
                print(result, file=sys.stderr, flush=True)
                runs.append(result)
    payload = {"benchmark": "ingest", "command": " ".join(["python -m benchmarks.bench_ingest", *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "runs": runs}
    print(save(args.out, payload))
    if args.plot:
        plot(runs, Path(args.plot), payload["date"])
    return 0


GOAL_DOCUMENTS_PER_S, GOAL_P99_MS = 200, 100   # issue 21's acceptance, drawn on the plot


def plot(runs: list[dict], out: Path, date: str) -> None:
    """Documents/s (left) and p99 latency (right) against concurrent clients, one line per
    backend and worker count: where adding clients stops adding throughput."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    series: dict[str, list[dict]] = {}
    for r in runs:
        series.setdefault(f"{r['backend']}, {r['workers']} worker(s)", []).append(r)
    for label, points in series.items():
        points.sort(key=lambda r: r["clients"])
        clients = [r["clients"] for r in points]
        rate_ax.plot(clients, [r["documents_per_s"] for r in points], marker="o", label=label)
        tail = [r for r in points if r["latency_ms"].get("p99") is not None]   # >= 100 requests
        p99_ax.plot([r["clients"] for r in tail], [r["latency_ms"]["p99"] for r in tail], marker="o", label=label)
    if not any(r["latency_ms"].get("p99") is not None for r in runs):
        p99_ax.text(0.5, 0.5, "no p99: fewer than 100 requests per run", ha="center", transform=p99_ax.transAxes)
        p99_ax.set_xlim(1, 2 * max(r["clients"] for r in runs))
    rate_ax.axhline(GOAL_DOCUMENTS_PER_S, linestyle=":", color="grey", label=f"goal: {GOAL_DOCUMENTS_PER_S}/s")
    p99_ax.axhline(GOAL_P99_MS, linestyle=":", color="grey", label=f"goal: p99 < {GOAL_P99_MS} ms")
    rate_ax.set(xlabel="concurrent clients", ylabel="documents/s (ITI-41, full validation, SAML)",
                title="Ingest rate against concurrency")
    p99_ax.set(xlabel="concurrent clients", ylabel="p99 latency, ms", title="p99 against concurrency")
    for ax in (rate_ax, p99_ax):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)   # compared from zero, not from their minimum
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
        ax.legend()
    save_figure(fig, out, f"benchmarks.bench_ingest, {date}, 2 cores (clients on the same machine)")


if __name__ == "__main__":
    raise SystemExit(main())
