"""ITI-18 FindDocuments latency against registry size, on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.bench_query                                  # 10k, 100k; both backends
    .venv/bin/python -m benchmarks.bench_query --backends postgresql --sizes 10000,100000,1000000

For each backend, one scratch registry (a SQLite file, or a fresh PostgreSQL database
dropped afterwards) grows through the bulk path (`benchmarks.load`) to each size in
turn; at each size:

- server-side: `partage.query.QueryService.find_documents` (the flow ITI-18 and ITI-67
  share, policy included), timed in-process, for
  - probe patients: 20 patients with exactly 10 documents each, the same at every size;
  - population patients: a random sample of the generated patients (skewed counts);
  - heavy patients: 2 patients with 2000 documents each (the "other patients");
  - filtered: probes with classCode + creationTime range (a GP's narrower query);
- over HTTP: a real `partage serve` (1 gunicorn worker) answering, from one sequential
  client, for the probe patients: ITI-18 FindDocuments over SOAP 1.2, and ITI-67
  (GET /fhir/DocumentReference?patient.identifier=...&status=current, JSON Bundle);
- the query plan (EXPLAIN ANALYZE / EXPLAIN QUERY PLAN) of a probe patient's query.

Results go to benchmarks/results/query-<backends>.json (with the machine and the load
average around each measure); `python -m benchmarks.plot` draws docs/query-latency.png.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import text

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.config import Settings
from partage.metadata.model import Code
from partage.metadata.query import DocumentFilter, TimeRange
from partage.query import QueryService
from partage.registry import queries as Q
from partage.registry.store import Registry
from partage.services import Services

from .common import load_average, machine, percentiles, postgres_database, save, timed
from .load import load
from .synth import CLASS_SYSTEM, INS_NIR_TEST, Corpus, Generator, patient_cx

APPROVED = DocumentFilter(statuses=["Approved"])
FILTERED = DocumentFilter(statuses=["Approved"], codes={"class": [[Code("10", CLASS_SYSTEM)]]},
                          creation_time=TimeRange("2018", "2024"))


def find_sql(f: DocumentFilter, patient_pk: int):
    """The statement partage.registry.queries.find_documents runs."""
    from sqlalchemy import select

    return (select(*Q.COLUMNS).where(Q.OBJ.c.patient_pk == patient_pk, *Q.document_clauses(f))
            .order_by(Q.OBJ.c.creation_time.desc(), Q.OBJ.c.pk.desc()))


def explain(registry: Registry, patient_cx_: str, f: DocumentFilter) -> str:
    with registry.read() as conn:
        pk = registry.patient_pk(conn, patient_cx_)
        sql = str(find_sql(f, pk).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if registry.is_sqlite:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
            return "\n".join(str(r[-1]) for r in rows)
        rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}").all()
        return "\n".join(r[0] for r in rows)


def analyze(registry: Registry) -> None:
    """Fresh planner statistics, as autovacuum / a DBA would have after a bulk load."""
    with registry.engine.connect() as conn:
        if registry.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
        else:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("ANALYZE"))


def server_side(services: Services, patients: list[str], f: DocumentFilter, n: int, rnd) -> tuple[dict, int]:
    if not patients:   # a registry too small to hold patients of this shape: said, not measured
        return {"n": 0, "not_measured": "no patient of this shape at this size"}, 0
    query = QueryService(services, INSECURE_DEV_ACTOR)
    for pid in patients[:10]:                     # warm-up
        query.find_documents(pid, f)
    times, cpu, found = [], [], 0
    for _ in range(n):
        pid = rnd.choice(patients)
        c = time.process_time()
        ms, result = timed(query.find_documents, pid, f)
        cpu.append((time.process_time() - c) * 1000)
        times.append(ms)
        found += len(result.objects)
    # CPU time of this process only (Python side; the database server's work is not in it):
    # what the call costs without the waits a loaded machine adds.
    return {**percentiles(times), "cpu_p50": percentiles(cpu)["p50"], "cpu_p99": percentiles(cpu)["p99"]}, found


def over_http(data_dir: Path, url: str, patients: list[str], n: int, rnd) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support import LiveServer
    from tests.xdsclient import XdsClient

    with LiveServer(data_dir, database_url=url, workers=1, mllp=False) as server:
        client = XdsClient(server.base_url, mtom=False)

        def one(pid):
            reply = client.stored_query("FindDocuments", {
                "$XDSDocumentEntryPatientId": [f"'{pid}'"],
                "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
            if reply.status != "Success":
                raise RuntimeError(f"FindDocuments failed: {reply.error_codes}")
            return reply

        def mhd(pid):   # ITI-67: the same query through the FHIR door
            value = pid.id   # the patients are CX (the typed model)
            response = client.session.get(f"{server.base_url}/fhir/DocumentReference", timeout=60, params={
                "patient.identifier": f"urn:oid:{INS_NIR_TEST}|{value}", "status": "current"},
                headers={"Accept": "application/fhir+json"})
            if response.status_code != 200 or response.json().get("resourceType") != "Bundle":
                raise RuntimeError(f"ITI-67 failed: {response.status_code} {response.text[:300]}")
            return response

        for pid in patients[:10]:
            one(pid)
            mhd(pid)
        times = [timed(one, rnd.choice(patients))[0] for _ in range(n)]
        fhir = [timed(mhd, rnd.choice(patients))[0] for _ in range(n)]
    return {"probe": percentiles(times), "iti67 probe": percentiles(fhir)}


def run_backend(backend: str, sizes: list[int], args, corpus: Corpus) -> list[dict]:
    out = []
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-query-{backend}-"))
        stack.callback(shutil.rmtree, tmp, True)
        data_dir = tmp / "data"
        data_dir.mkdir()
        if backend == "sqlite":
            url = f"sqlite:///{data_dir / 'registry.sqlite3'}"
        else:
            url = stack.enter_context(postgres_database("bench_query"))
        services = Services.open(Settings(data_dir=data_dir, database_url=url, insecure_dev=True))
        stack.callback(services.close)
        generator = Generator(corpus, seed=args.seed)
        rnd = random.Random(args.seed)
        for size in sizes:
            loaded = load(services.registry, generator, size - generator.documents,
                          batch_size=args.batch_size, label=f"{backend} load to {size}")
            analyze(services.registry)
            gen = generator
            probes = [patient_cx(i) for i in range(gen.probes)]
            # Only the patients generated so far: below probes x probe_docs + heavy x heavy_docs
            # documents (4200 by default) some heavy patients, and every population one, do not exist.
            heavy = [patient_cx(i) for i in range(gen.probes, min(gen.next_patient, gen.probes + gen.heavy))]
            others = list(range(gen.probes + gen.heavy, gen.next_patient))
            population = [patient_cx(i) for i in rnd.sample(others, min(len(others), 500))]
            row = {"backend": backend, "documents": generator.documents, "patients": generator.next_patient,
                   "load": loaded, "load_average_before": load_average()}
            started = time.monotonic()
            print(f"{backend} {size}: server-side queries", file=sys.stderr, flush=True)
            row["server"] = {}
            row["server"]["probe"], _ = server_side(services, probes, APPROVED, args.queries, rnd)
            row["server"]["population"], found = server_side(services, population, APPROVED, args.queries, rnd)
            if population:
                row["server"]["population"]["mean_documents_returned"] = round(found / args.queries, 1)
            row["server"]["heavy"], _ = server_side(services, heavy, APPROVED, max(10, args.queries // 25), rnd)
            row["server"]["filtered"], _ = server_side(services, probes, FILTERED, args.queries, rnd)
            if args.http_queries:
                print(f"{backend} {size}: HTTP queries", file=sys.stderr, flush=True)
                row["http"] = over_http(data_dir, url, probes, args.http_queries, rnd)
            row["explain"] = {"probe": explain(services.registry, probes[0], APPROVED),
                              "filtered": explain(services.registry, probes[0], FILTERED)}
            row["seconds"] = round(time.monotonic() - started, 1)
            row["load_average_after"] = load_average()
            print(f"{backend} {size}: server probe {row['server']['probe']}, "
                  f"http {row.get('http', {}).get('probe')}", file=sys.stderr, flush=True)
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=500, help="server-side queries per shape and size")
    parser.add_argument("--http-queries", type=int, default=300, help="HTTP queries per size (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--out", default="", help="results name (default query-<backends>-<largest>)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    corpus = Corpus.load()
    started = time.monotonic()
    runs = []
    for backend in backends:
        runs += run_backend(backend, sizes, args, corpus)
    payload = {"benchmark": "query", "command": " ".join(["python -m benchmarks.bench_query", *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
               "seconds": round(time.monotonic() - started), "runs": runs}
    path = save(args.out or f"query-{'-'.join(backends)}-{sizes[-1]}", payload)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
