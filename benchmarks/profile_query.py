"""What one ITI-18 FindDocuments costs server-side: its statements, its latency, its CPU, and
where the CPU goes.

    .venv/bin/python -m benchmarks.profile_query                   # 2 shards (throw-away clusters)
    .venv/bin/python -m benchmarks.profile_query --layout flat     # one PostgreSQL database

`QueryService.find_documents` (the ITI-18 flow: the patient, the documents, the policy's
look-ups, the decision), in this process, on a small synthetic registry (benchmarks.synth,
bulk path) in the layout asked: the statements of one query as PostgreSQL receives them
(an SQLAlchemy event), then --queries timed queries of the probe patients (10 documents each;
status only, and classCode + creationTime), then cProfile over as many, by own time. The
figures describe the cost of a query, not the registry's size (benchmarks.bench_sharded does
that). Results: benchmarks/results/profile-query-<layout>.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import event

from partage.config import Settings
from partage.query.service import QueryService
from partage.registry import sharding
from partage.services import Services

from .bench_query import APPROVED, FILTERED, INSECURE_DEV_ACTOR, server_side
from .bench_sharded import analyze
from .common import fmt, load_average, machine, postgres_database, save
from .load import load
from .synth import Corpus, Generator, patient_cx


def statements_of(services: Services, query: QueryService, pid, f) -> list[str]:
    """The statements one query sends, each on one line."""
    seen: list[str] = []

    def on_execute(_conn, _cursor, statement, *_rest) -> None:
        seen.append(" ".join(statement.split()))
    event.listen(services.registry.engine, "before_cursor_execute", on_execute)
    try:
        query.find_documents(pid, f)
    finally:
        event.remove(services.registry.engine, "before_cursor_execute", on_execute)
    return seen


def profile(query: QueryService, patients: list, f, n: int, rnd: random.Random, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        query.find_documents(rnd.choice(patients), f)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg_shards import shard_clusters

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layout", default="2", help="flat, 1 or 2 (shards)")
    parser.add_argument("--documents", type=int, default=5000, help="besides the probe patients'")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--top", type=int, default=30, help="functions shown by own time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="", help="results name (default profile-query-<layout>)")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        count = 0 if args.layout == "flat" else int(args.layout)
        clusters = stack.enter_context(shard_clusters(count)) if count else []
        tmp = Path(tempfile.mkdtemp(prefix="profile-query-"))
        stack.callback(shutil.rmtree, tmp, True)
        url = stack.enter_context(postgres_database("profile_query"))
        services = Services.open(Settings(data_dir=tmp / "data", database_url=url, insecure_dev=True))
        stack.callback(services.close)
        shards = sharding.shard(services.registry, [c.database("profile_shard") for c in clusters],
                                partitions=2 * count) if count else []
        generator = Generator(Corpus.load(), seed=args.seed)
        load(services.registry, generator, generator.probes * generator.probe_docs + args.documents,
             batch_size=5000, label=f"{args.layout} load")
        analyze(services.registry, shards)
        probes = [patient_cx(i) for i in range(generator.probes)]
        query = QueryService(services, INSECURE_DEV_ACTOR)
        rnd = random.Random(args.seed)
        for pid in probes:   # warm-up
            query.find_documents(pid, APPROVED)
        payload: dict = {"benchmark": "profile_query", "layout": args.layout,
                         "command": " ".join(["python -m benchmarks.profile_query", *(argv or sys.argv[1:])]),
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                         "load_average_before": load_average(), "shapes": {}}
        for name, f in (("probe", APPROVED), ("filtered", FILTERED)):
            statements = statements_of(services, query, probes[0], f)
            shape = {"statements": statements, **server_side(services, probes, f, args.queries, rnd)[0]}
            payload["shapes"][name] = shape
            print(f"{name}: {len(statements)} statements, p50 {shape['p50']} / p95 {fmt(shape['p95'])} / "
                  f"p99 {fmt(shape['p99'])} ms, CPU p50 {shape['cpu_p50']} ms", flush=True)
            for statement in statements:
                print(f"    {statement[:150]}")
        payload["load_average_after"] = load_average()
        table = profile(query, probes, APPROVED, args.queries, rnd, args.top)
        payload["profile"] = table
        print(table)
    print(save(args.out or f"profile-query-{args.layout}", payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
