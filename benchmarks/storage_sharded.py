"""Disk per document of the sharded registry, by relation: what decides whether a size fits.

    .venv/bin/python -m benchmarks.storage_sharded                    # 50 000 documents, 2 shards
    .venv/bin/python -m benchmarks.storage_sharded --documents 200000 --shards 2

Loads the synthetic registry (bulk path, `benchmarks.load`, two loader processes) into a
coordinator and `--shards` throw-away shard clusters (tests/pg_shards.py), then, after `VACUUM
ANALYZE`, measures each database and each relation with its indexes (`pg_total_relation_size`)
and divides by the documents loaded; the total per document is that of the tables with their
indexes (not the catalogs). WAL is not counted (it is recycled). The figure times 10
million says what issue 23's benchmark needs on disk. Results: benchmarks/results/storage-sharded-<n>.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import create_engine

from partage.config import Settings
from partage.registry import sharding
from partage.services import Services

from .common import load_average, machine, postgres_database, save
from .load import load_parallel

RELATIONS = """SELECT c.relname, c.relkind, pg_total_relation_size(c.oid), pg_relation_size(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 'm') ORDER BY 3 DESC"""


def measure(url: str, documents: int) -> dict:
    """The database's size and its relations' (bytes, and bytes per document)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
            total = int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar() or 0)
            relations = [{"relation": name, "kind": kind, "bytes": int(size), "heap_bytes": int(heap),
                          "bytes_per_document": round(size / documents, 1)}
                         for name, kind, size, heap in conn.exec_driver_sql(RELATIONS)]
    finally:
        engine.dispose()
    tables = sum(r["bytes"] for r in relations if r["kind"] == "r")   # a table's total holds its indexes
    return {"bytes": total, "bytes_per_document": round(total / documents, 1), "table_bytes": tables,
            "table_bytes_per_document": round(tables / documents, 1), "relations": relations}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg_shards import shard_clusters

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="loader processes")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    before, date = load_average(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with ExitStack() as stack:
        clusters = stack.enter_context(shard_clusters(args.shards))
        tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
        stack.callback(shutil.rmtree, tmp, True)
        url = stack.enter_context(postgres_database("bench_storage"))
        services = Services.open(Settings(data_dir=tmp / "data", database_url=url, insecure_dev=True))
        stack.callback(services.close)
        shards = sharding.shard(services.registry, [c.database("bench_shard") for c in clusters],
                                partitions=2 * args.shards)
        loaded = load_parallel(url, args.documents, jobs=args.jobs, step=0, seed=1,
                               label=f"storage {args.documents}")
        documents = loaded["documents"]
        databases = {"coordinator": measure(url, documents)}
        for n, shard in enumerate(shards):
            databases[f"shard {n}"] = measure(shard.url, documents)
    # The tables with their indexes (a database's own size adds its catalogs, about 7.5 MB each,
    # which weigh per document at small sizes only).
    per_document = sum(d["table_bytes_per_document"] for d in databases.values())
    result = {"benchmark": "storage_sharded", "date": date, "machine": machine(),
              "command": " ".join(["python -m benchmarks.storage_sharded", *(sys.argv[1:] if argv is None else argv)]),
              "load_average_before": before, "load_average_after": load_average(),
              "shards": args.shards, "load": loaded, "documents": documents, "databases": databases,
              "bytes_per_document": round(per_document, 1),
              "gigabytes_for_10_million": round(per_document * 10_000_000 / 1e9, 1)}
    for name, db in databases.items():
        print(f"{name}: {db['bytes'] / 1e6:.1f} MB (tables and indexes {db['table_bytes'] / 1e6:.1f} MB), "
              f"{db['table_bytes_per_document']:.0f} B per document")
        for rel in db["relations"][:6]:
            print(f"    {rel['relation']:<45} {rel['bytes_per_document']:>7.0f} B per document")
    print(f"in all: {per_document:.0f} B per document; 10 million: about "
          f"{result['gigabytes_for_10_million']} GB (WAL aside)")
    path = save(args.out or f"storage-sharded-{documents}", result)
    print(f"saved {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
