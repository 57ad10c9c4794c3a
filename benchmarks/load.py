"""Build a big registry without HTTP: synthetic submissions through the store's bulk path.

    .venv/bin/python -m benchmarks.load --database sqlite:////tmp/r.sqlite3 --documents 100000
    .venv/bin/python -m benchmarks.load --database postgresql+psycopg://postgres@127.0.0.1/bench_1m \\
        --documents 1000000
    .venv/bin/python -m benchmarks.load --data /tmp/d --documents 2000 --with-bytes   # + blobs

The schema is migrated first (alembic, as `partage serve` does). Progress goes to stderr
every few seconds; the last line is a JSON summary. With --with-bytes every document is
a real CDA (fresh ids, 10 KB - 10 MB) stored in the data directory's blob store; without
it only the registry rows are written (sizes recorded, no blobs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from partage.registry.bulk import BulkLoader
from partage.registry.store import Registry
from partage.repository.store import BlobStore, FilesystemBlobStore

from .synth import Corpus, Generator


class Progress:
    def __init__(self, total: int, label: str, every: float = 5.0, stream=sys.stderr) -> None:
        self.total, self.label, self.every, self.stream = total, label, every, stream
        self.started = self.last = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed else 0.0
        eta = max(0, self.total - done) / rate if rate else 0.0   # whole patients: done may pass total
        print(f"{self.label}: {done}/{self.total} ({100 * done / max(1, self.total):.0f} %), "
              f"{rate:,.0f}/s, {elapsed:.0f} s elapsed, ~{eta:.0f} s left", file=self.stream, flush=True)


def load(registry: Registry, generator: Generator, documents: int, *, blobs: BlobStore | None = None,
         batch_size: int = 5000, label: str = "load", quiet: bool = False) -> dict:
    """Add `documents` more documents (whole patients) to the registry; returns a summary."""
    loader = BulkLoader(registry, batch_size=batch_size)
    progress = Progress(documents, label)
    start_docs, started = generator.documents, time.perf_counter()
    for request, payloads in generator.submissions(documents, with_bytes=blobs is not None):
        addresses = {}
        if blobs is not None:
            for entry_uuid, content in request.contents.items():
                content.file.seek(0)
                addresses[entry_uuid] = blobs.put(content.file).address
            del payloads
        loader.add(request, addresses)
        if not quiet:
            progress.update(generator.documents - start_docs)
    loader.close()
    elapsed = time.perf_counter() - started
    done = generator.documents - start_docs
    if not quiet:
        progress.update(done, force=True)
    s = loader.stats
    return {"documents": done, "objects": s.objects, "patients": s.patients, "codes": s.codes,
            "authors": s.authors, "seconds": round(elapsed, 1),
            "documents_per_s": round(done / elapsed) if elapsed else None}


# Patient numbers of the parallel loaders' patients: worker k of growth step s numbers its
# patients from FIRST_PARALLEL_PATIENT + (s * jobs + k) * PATIENTS_PER_WORKER (synth.nir is
# unique below 95 million), leaving the first numbers to the probes and heavy patients.
FIRST_PARALLEL_PATIENT = 1_000_000
PATIENTS_PER_WORKER = 4_000_000


def load_parallel(url: str, documents: int, *, jobs: int, step: int, seed: int, batch_size: int = 5000,
                  label: str = "load") -> dict:
    """Add `documents` more documents with `jobs` loader processes, each with its own patients
    (`step` numbers the calls, so that each grows with new ones); returns a summary like `load`'s.

    A loader is one Python process turning models into rows, which is what bounds a bulk load
    (the database waits for it): two cores, two loaders."""
    if jobs <= 1:
        return {**_load_worker((url, documents, step, seed, batch_size, label)), "jobs": 1}
    shares = [documents // jobs + (1 if k < documents % jobs else 0) for k in range(jobs)]
    started = time.perf_counter()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_load_worker, [(url, share, step * jobs + k, seed, batch_size, f"{label} [{k}]")
                                             for k, share in enumerate(shares)]))
    elapsed = time.perf_counter() - started
    done = sum(p["documents"] for p in parts)
    return {**{key: sum(p[key] for p in parts) for key in ("documents", "objects", "patients", "codes", "authors")},
            "jobs": jobs, "seconds": round(elapsed, 1), "documents_per_s": round(done / elapsed) if elapsed else None}


def _load_worker(task: tuple[str, int, int, int, int, str]) -> dict:
    url, documents, worker, seed, batch_size, label = task
    registry = Registry(url)
    try:
        generator = Generator(Corpus.load(), seed=seed * 1000 + worker, probes=0, heavy=0,
                              next_patient=FIRST_PARALLEL_PATIENT + worker * PATIENTS_PER_WORKER)
        return load(registry, generator, documents, batch_size=batch_size, label=label)
    finally:
        registry.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite in --data)")
    parser.add_argument("--data", default="bench-data", help="data directory (SQLite file, blobs)")
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--with-bytes", action="store_true", help="store real CDA bytes in the blob store")
    args = parser.parse_args(argv)
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    url = args.database or f"sqlite:///{(data / 'registry.sqlite3').resolve()}"
    registry = Registry(url)
    registry.migrate()
    generator = Generator(Corpus.load(), seed=args.seed)
    blobs = FilesystemBlobStore(data / "blobs") if args.with_bytes else None
    summary = load(registry, generator, args.documents, blobs=blobs, batch_size=args.batch_size)
    registry.dispose()
    print(json.dumps({"database": registry.engine.dialect.name, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
