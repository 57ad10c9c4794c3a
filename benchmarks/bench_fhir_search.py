"""FHIR search (ITI-67) on a heavy patient: the first page, server-side, SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.bench_fhir_search                       # both backends, 10k documents
    .venv/bin/python -m benchmarks.bench_fhir_search --backends sqlite --documents 20000

A registry is bulk-loaded (`benchmarks.load`: 20 probe patients with 10 documents, 2 heavy
patients with 2000, the rest Pareto-distributed), then `GET /fhir/DocumentReference?
patient.identifier=...&status=current` is answered in-process by the Flask application
(`app.test_client()`: routing, the actor, SQL, the gate, the mapping, the JSON; no socket),
which is what the server spends on a request. For the heavy patients:

- first page at `_count` 20 (the default) and 100, newest registration first;
- the next page (its `_cursor`), a filtered first page (category), the first page sorted on
  `-creation`, and `_total=accurate` (every match through the gate);
- the search alone (`partage.query.search.SearchService.objects`: SQL + gate, no rendering).

The measures run in turn, round after round, so that the machine's load weighs on all alike;
each gives wall-clock and CPU time (of this process: Flask, the mapping and SQLite's work, not
the PostgreSQL server's). Planner statistics are refreshed after the bulk load (ANALYZE), as
autovacuum does. Results go to benchmarks/results/fhir-search.json, with the load average.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.config import Settings
from partage.fhir import search as fhir_search
from partage.query.search import SearchService
from partage.server.app import create_app
from partage.services import Services

from .common import fmt, load_average, machine, percentiles, postgres_database, save, timed
from .load import load
from .synth import CLASS_SYSTEM, INS_NIR_TEST, Corpus, Generator, patient_cx

NIR = f"urn:oid:{INS_NIR_TEST}"


def _params(pid: Any, **extra: str) -> dict[str, str]:
    return {"patient.identifier": f"{NIR}|{pid.id}", "status": "current", **extra}


def _requests(client: Any, heavy: list[Any]) -> dict[str, list[tuple[str, dict[str, str] | None]]]:
    """Each measure's requests, one per heavy patient: (path, query)."""
    def first(**extra: str) -> list[tuple[str, dict[str, str] | None]]:
        return [("/fhir/DocumentReference", _params(pid, **extra)) for pid in heavy]

    nexts: list[tuple[str, dict[str, str] | None]] = []
    for pid in heavy:
        bundle = client.get("/fhir/DocumentReference", query_string=_params(pid)).get_json()
        url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
        nexts.append((url[url.index("/fhir/"):], None))
    return {
        "first page, _count=20 (default)": first(),
        "first page, _count=100": first(_count="100"),
        "next page, _count=20": nexts,
        "first page, category filter": first(category=f"urn:oid:{CLASS_SYSTEM}|11"),
        "first page, _sort=-creation": first(_sort="-creation"),
        "_total=accurate, _count=20": first(_total="accurate"),
    }


def measure(client: Any, heavy: list[Any], n: int) -> dict[str, dict]:
    """Every measure in turn, round after round (so that the machine's load weighs on all alike):
    wall-clock and CPU time of this process (the Flask app, SQLite's work; not PostgreSQL's)."""
    plan = _requests(client, heavy)
    wall: dict[str, list[float]] = {k: [] for k in plan}
    cpu: dict[str, list[float]] = {k: [] for k in plan}
    entries: dict[str, int] = {}
    before = load_average()
    for i in range(n):
        for name, requests in plan.items():
            if name.startswith("_total") and i % 5:
                continue   # the whole record each time: a fifth as many
            path, query = requests[i % len(requests)]
            c = time.process_time()
            ms, response = timed(client.get, path, query_string=query)
            cpu[name].append((time.process_time() - c) * 1000)
            wall[name].append(ms)
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code} {response.get_data(as_text=True)[:300]}")
            entries[name] = len(response.get_json().get("entry", []))
    after = load_average()
    return {name: {**percentiles(wall[name]), "cpu_p50": percentiles(cpu[name])["p50"],
                   "cpu_p95": percentiles(cpu[name])["p95"], "entries": entries[name],
                   "load_before": before, "load_after": after} for name in plan}


def search_only(services: Services, heavy: list[Any], n: int) -> dict:
    searches = SearchService(services, INSECURE_DEV_ACTOR)
    parsed, spec = fhir_search.document_search({k: [v] for k, v in _params(heavy[0]).items()})
    for pid in heavy:
        searches.objects(pid, spec, parsed.page)
    times, cpu = [], []
    for i in range(n):
        c = time.process_time()
        times.append(timed(searches.objects, heavy[i % len(heavy)], spec, parsed.page)[0])
        cpu.append((time.process_time() - c) * 1000)
    return {**percentiles(times), "cpu_p50": percentiles(cpu)["p50"], "load": load_average()}


def analyze(services: Services) -> None:
    """Fresh planner statistics, as autovacuum (or a DBA after a bulk load) gives them."""
    with services.registry.engine.connect() as conn:
        if services.registry.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


def run_backend(backend: str, args: argparse.Namespace, corpus: Corpus) -> dict:
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-fhir-{backend}-"))
        stack.callback(shutil.rmtree, tmp, True)
        url = stack.enter_context(postgres_database("bench_fhir")) if backend == "postgresql" else None
        settings = Settings(data_dir=tmp / "data", database_url=url or "", insecure_dev=True)
        services = Services.open(settings)
        stack.callback(services.close)
        generator = Generator(corpus)
        print(f"{backend}: loading {args.documents} documents", file=sys.stderr, flush=True)
        summary = load(services.registry, generator, args.documents, quiet=True)
        # the heavy patients generated (all of them from probes x probe_docs + heavy x heavy_docs)
        heavy = [patient_cx(i) for i in range(generator.probes, min(generator.next_patient,
                                                                    generator.probes + generator.heavy))]
        if not heavy:
            raise SystemExit(f"--documents {args.documents}: no heavy patient (the first "
                             f"{generator.probes * generator.probe_docs} documents are the probe patients')")
        analyze(services)
        client = create_app(services=services).test_client()
        out: dict[str, Any] = {"backend": backend, "documents": summary.get("documents", args.documents),
                               "heavy_patients": len(heavy), "heavy_documents": generator.heavy_docs}
        print(f"{backend}: measuring", file=sys.stderr, flush=True)
        out.update(measure(client, heavy, args.n))
        out["search only (SQL + gate), _count=20"] = search_only(services, heavy, args.n)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--documents", type=int, default=10000)
    parser.add_argument("-n", type=int, default=200, help="requests per measure")
    parser.add_argument("--out", default="fhir-search", help="results name (benchmarks/results/<out>.json)")
    args = parser.parse_args(argv)
    corpus = Corpus.load()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results = [run_backend(b.strip(), args, corpus) for b in args.backends.split(",") if b.strip()]
    path = save(args.out, {"date": started, "machine": machine(), "runs": results,
                           "command": " ".join(["python -m benchmarks.bench_fhir_search",
                                                *(sys.argv[1:] if argv is None else argv)])})
    for run in results:
        for key, value in run.items():
            if isinstance(value, dict):
                print(f"{run['backend']:10} {key:40} p50 {value.get('p50')} ms  p95 {fmt(value.get('p95'))} ms  "
                      f"cpu p50 {value.get('cpu_p50')} ms", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
