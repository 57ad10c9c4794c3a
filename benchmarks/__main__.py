"""The benchmark suite at the 100 thousand size, in one command (docs/performance.md).

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python -m benchmarks                    # query 10k/100k x SQLite/PostgreSQL, ingest, retrieve, plot
    .venv/bin/python -m benchmarks --skip postgresql  # without PostgreSQL

Each step writes its JSON to benchmarks/results/ (or to $PARTAGE_BENCH_RESULTS) and the plot to
docs/query-latency.png.
The 1 million figure is a separate, longer command (docs/performance.md).
"""

from __future__ import annotations

import argparse
import sys
import time

from . import bench_ingest, bench_query, bench_retrieve, plot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip", default="", help="comma-separated: postgresql, query, ingest, retrieve")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    backends = "sqlite" if "postgresql" in skip else "sqlite,postgresql"
    started = time.monotonic()
    steps = []
    if "query" not in skip:
        for backend in backends.split(","):
            steps.append(("query " + backend, bench_query.main,
                          ["--backends", backend, "--sizes", "10000,100000", "--queries", "300",
                           "--http-queries", "200"]))
    if "ingest" not in skip:
        steps.append(("ingest", bench_ingest.main, ["--backends", backends, "--documents", "120"]))
    if "retrieve" not in skip:
        steps.append(("retrieve", bench_retrieve.main, ["--sizes-mb", "1,10,100"]))
    for name, fn, step_args in steps:
        t = time.monotonic()
        print(f"== {name}: {' '.join(step_args)}", file=sys.stderr, flush=True)
        code = fn(step_args)
        print(f"== {name}: {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
        if code:   # a step that failed fails the suite (its figures are not there to plot)
            print(f"suite: step {name} failed (exit {code})", file=sys.stderr)
            return code
    if "query" not in skip:
        code = plot.main([])
    print(f"suite: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return code if "query" not in skip else 0


if __name__ == "__main__":
    raise SystemExit(main())
