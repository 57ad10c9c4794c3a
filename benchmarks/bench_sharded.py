"""The sharded registry (partage.registry.sharding) against the unsharded one: bulk ingest rate
and ITI-18 FindDocuments latency, at modest sizes on one machine.

    .venv/bin/python -m benchmarks.bench_sharded                       # 10k, 100k documents
    .venv/bin/python -m benchmarks.bench_sharded --sizes 10000,100000 --layouts flat,1,2

Layouts: `flat` (one PostgreSQL database, tables not partitioned), `1` (the coordinator and
one shard), `2` (the coordinator and two shards; two hash partitions per shard). The shards
are throw-away clusters on free ports (tests/pg_shards.py) on the same machine as the
coordinator, so the figures measure what sharding costs (a foreign scan, a round trip to
the shard), not what more machines give. Each layout grows through the bulk path
(`benchmarks.load`, COPY through the partitioned tables) to each size; at each size,
server-side `QueryService.find_documents` (the ITI-18 flow, policy included) for 20 probe
patients of 10 documents and 2 heavy patients of 2000 (status only, and classCode +
creationTime), and the plans. Statistics: `ANALYZE` on the shards and the coordinator, and
`sharding.analyze` for the foreign partitions (which a plain ANALYZE skips).

Results: benchmarks/results/sharded-<largest>.json; docs/performance.md has the table.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import create_engine, select

from partage.config import Settings
from partage.registry import queries as Q
from partage.registry import sharding
from partage.registry.store import Registry
from partage.services import Services

from .bench_query import APPROVED, FILTERED, server_side
from .common import load_average, machine, percentiles, postgres_database, save, save_figure, timed
from .load import load, load_parallel
from .synth import Corpus, Generator, patient_cx


def analyze(registry: Registry, shards: list[sharding.Shard]) -> None:
    """Planner statistics on the shards (where the rows are) and on the coordinator."""
    for target in shards:
        engine = create_engine(target.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
        engine.dispose()
    with registry.engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        auto.exec_driver_sql("ANALYZE")
        if shards:   # foreign partitions: only when named (sharding.analyze)
            sharding.analyze(auto)


def explain(registry: Registry, pid, f) -> str:
    with registry.read() as conn:
        pk = registry.patient_pk(conn, pid)
        assert pk is not None
        statement = select(*Q.COLUMNS).where(Q.OBJ.c.patient_pk == pk,
                                             *Q.document_clauses(f, Q._sharded_pk(conn, pk)))
        sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, VERBOSE) " + sql.replace("%", "%%")))


def statement_side(registry: Registry, patients: list, f, n: int, rnd) -> dict:
    """The registry's FindDocuments statement alone, rows fetched, the patient's key known: the
    part of the query that grows with the registry (the policy and the decoding of a patient's
    documents in `server_side` do not)."""
    with registry.read() as conn:
        statements = {}
        for pid in patients:
            pk = registry.patient_pk(conn, pid)
            statements[pid] = select(*Q.COLUMNS).where(Q.OBJ.c.patient_pk == pk,
                                                       *Q.document_clauses(f, Q._sharded_pk(conn, pk)))
        for pid in patients[:10]:   # warm-up
            conn.execute(statements[pid]).all()
        times = []
        for _ in range(n):
            statement = statements[rnd.choice(patients)]
            ms, _rows = timed(lambda: conn.execute(statement).all())   # noqa: B023 (called at once)
            times.append(ms)
    return percentiles(times)


def run_layout(layout: str, sizes: list[int], args, corpus: Corpus, clusters) -> list[dict]:
    out = []
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-sharded-{layout}-"))
        stack.callback(shutil.rmtree, tmp, True)
        url = stack.enter_context(postgres_database("bench_sharded"))
        services = Services.open(Settings(data_dir=tmp / "data", database_url=url, insecure_dev=True))
        stack.callback(services.close)
        shards: list[sharding.Shard] = []
        if layout != "flat":
            count = int(layout)
            shards = sharding.shard(services.registry, [c.database("bench_shard") for c in clusters[:count]],
                                    partitions=2 * count)
        generator = Generator(corpus, seed=args.seed)
        # the probe and heavy patients (the first ones) here, the rest by the parallel loaders
        load(services.registry, generator, generator.probes * generator.probe_docs +
             generator.heavy * generator.heavy_docs, batch_size=args.batch_size, label=f"{layout} probes")
        documents = generator.documents
        rnd = random.Random(args.seed)
        for step, size in enumerate(sizes):
            loaded = load_parallel(url, size - documents, jobs=args.jobs, step=step, seed=args.seed,
                                   batch_size=args.batch_size, label=f"{layout} load to {size}")
            documents += loaded["documents"]
            analyze(services.registry, shards)
            probes = [patient_cx(i) for i in range(generator.probes)]
            heavy = [patient_cx(i) for i in range(generator.probes, generator.probes + generator.heavy)]
            with services.registry.read() as conn:
                patients = conn.exec_driver_sql("SELECT count(*) FROM patients").scalar()
            row = {"layout": layout, "shards": len(shards), "documents": documents, "patients": patients,
                   "load": loaded, "load_average_before": load_average()}
            print(f"{layout} {size}: server-side queries", file=sys.stderr, flush=True)
            row["server"] = {"probe": server_side(services, probes, APPROVED, args.queries, rnd)[0],
                             "filtered": server_side(services, probes, FILTERED, args.queries, rnd)[0],
                             "heavy": server_side(services, heavy, APPROVED, max(10, args.queries // 25), rnd)[0],
                             "heavy filtered": server_side(services, heavy, FILTERED, max(10, args.queries // 25),
                                                           rnd)[0]}
            row["statement"] = {"probe": statement_side(services.registry, probes, APPROVED, args.queries, rnd),
                                "filtered": statement_side(services.registry, probes, FILTERED, args.queries, rnd)}
            row["explain"] = {"filtered": explain(services.registry, probes[0], FILTERED),
                              "heavy filtered": explain(services.registry, heavy[0], FILTERED)}
            row["load_average_after"] = load_average()
            print(f"{layout} {size}: load {loaded['documents_per_s']}/s, probe {row['server']['probe']}, "
                  f"filtered {row['server']['filtered']}, statement {row['statement']['probe']}",
                  file=sys.stderr, flush=True)
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg_shards import shard_clusters

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layouts", default="flat,1,2")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300, help="server-side queries per shape and size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=2, help="loader processes (benchmarks.load.load_parallel)")
    parser.add_argument("--out", default="")
    parser.add_argument("--plot", default="", help="draw FindDocuments latency and the load rate "
                        "per layout into this PNG (matplotlib, the bench extra)")
    parser.add_argument("--from-results", default="", help="draw --plot from this results file "
                        "instead of running")
    args = parser.parse_args(argv)
    if args.from_results:
        saved = json.loads(Path(args.from_results).read_text(encoding="utf-8"))
        plot(saved["runs"], Path(args.plot or "docs/img/sharded.png"), saved["date"])
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    corpus = Corpus.load()
    started = time.monotonic()
    runs = []
    shape = Generator(corpus)
    first = shape.probes * shape.probe_docs + shape.heavy * shape.heavy_docs
    if sizes[0] <= first:
        parser.error(f"--sizes: each above {first} (the probe and heavy patients' documents, loaded first)")
    needed = max((int(x) for x in layouts if x != "flat"), default=0)   # the clusters the layouts use
    with ExitStack() as stack:
        clusters = stack.enter_context(shard_clusters(needed)) if needed else []
        for layout in layouts:
            runs += run_layout(layout, sizes, args, corpus, clusters)
    payload = {"benchmark": "sharded", "command": " ".join(["python -m benchmarks.bench_sharded",
                                                            *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
               "seconds": round(time.monotonic() - started), "runs": runs}
    path = save(args.out or f"sharded-{sizes[-1]}", payload)
    print(path)
    if args.plot:
        plot(runs, Path(args.plot), payload["date"])
    return 0


def plot(runs: list[dict], out: Path, date: str) -> None:
    """FindDocuments p50 / p99 server-side (probe patients) against registry size, and the bulk
    load rate, one line per layout (flat, 1 shard, 2 shards)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"flat": "one database", "1": "1 shard", "2": "2 shards"}
    fig, (lat_ax, rate_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    layouts: dict[str, list[dict]] = {}
    for r in runs:
        layouts.setdefault(str(r["layout"]), []).append(r)
    for layout, points in layouts.items():
        points.sort(key=lambda r: r["documents"])
        sizes = [r["documents"] for r in points]
        label = names.get(layout, layout)
        line, = lat_ax.plot(sizes, [r["server"]["probe"]["p99"] for r in points], marker="o", label=f"{label}, p99")
        lat_ax.plot(sizes, [r["server"]["probe"]["p50"] for r in points], marker=".", linestyle="--",
                    color=line.get_color(), label=f"{label}, p50")
        if all("statement" in r for r in points):
            lat_ax.plot(sizes, [r["statement"]["probe"]["p99"] for r in points], marker="x", linestyle=":",
                        color=line.get_color(), label=f"{label}, statement alone, p99")
        rate_ax.plot(sizes, [r["load"]["documents_per_s"] for r in points], marker="o", label=label)
    lat_ax.axhline(5.0, color="grey", linewidth=1, linestyle="-.", label="goal: p99 <= 5 ms (issue 23)")
    lat_ax.set(xlabel="documents in the registry", ylabel="ms, server-side",
               title="FindDocuments, a patient of 10 documents")
    rate_ax.set(xlabel="documents in the registry", ylabel="documents/s",
                title="Bulk load rate")
    for ax in (lat_ax, rate_ax):
        ax.set_ylim(bottom=0)   # rates and latencies compared from zero, not from their minimum
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out, f"benchmarks.bench_sharded, {date}, shards on the same 2-core machine")


if __name__ == "__main__":
    raise SystemExit(main())
