"""Where one ITI-41 spends its time: a profile of the request path, authentication on.

    .venv/bin/python -m benchmarks.profile_ingest                     # 60 KB CDAs, SQLite
    .venv/bin/python -m benchmarks.profile_ingest --mix               # the corpus mix (PDFs too)
    .venv/bin/python -m benchmarks.profile_ingest --database postgresql+psycopg://...

The app runs in this process (Flask test client: no sockets, no client on the same cores),
with the full validation of bench_ingest (the corpus' CDA schema and value sets), a trusted
development CA and single-use credentials: every Provide and Register carries a fresh signed
SAML assertion of the document's author, so verifying it and recording it in the replay
cache are part of the cost, as on a real server. The documents (benchmarks.synth, fresh ids)
are built before the profile starts; cProfile then records --documents submissions, and the
time of each function (its own time, not its callees') is summed by the part of the code it
belongs to. A table goes to stdout, the JSON to benchmarks/results/. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Engine, event

from partage.access import saml
from partage.access.credentials import DevAuthority, sample_actors
from partage.config import Settings
from partage.registry.access_state import Records
from partage.server.app import create_app
from partage.services import Services

from .bench_ingest import request_body, validation_args
from .common import load_average, machine, save
from .synth import Corpus, Generator, patient_cx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Where a function's own time goes: the first prefix of its file that matches (most specific first).
PARTS = [
    ("partage/ebxml/mtom", "MTOM reading (partage)"), ("partage/ebxml/soap", "SOAP envelope (partage)"),
    ("partage/ebxml/ebrim", "ebRIM -> model (partage)"), ("partage/xds", "XDS door, other (partage)"),
    ("partage/access/saml", "SAML verification (partage)"), ("signxml", "SAML verification (signxml)"),
    ("cryptography", "SAML verification (cryptography)"), ("partage/access", "access rules and audit"),
    ("partage/cda", "CDA validation (partage)"), ("saxonche", "CDA validation (Saxon schematron)"),
    ("partage/metadata", "metadata model and rules"), ("partage/clinical", "clinical facts and text"),
    ("partage/repository", "blob store"), ("partage/registry", "registry (partage)"),
    ("sqlalchemy", "registry (SQLAlchemy)"), ("sqlite3", "registry (SQLite)"), ("psycopg", "registry (psycopg)"),
    ("partage/query", "visibility gate"), ("partage", "partage, other"), ("flask", "Flask / Werkzeug"),
    ("werkzeug", "Flask / Werkzeug"), ("lxml", "lxml (elsewhere)"),
]
BUILTIN_PARTS = [("lxml.etree", "lxml (XML parsing and XPath)"), ("posix.fsync", "fsync (blob store, SQLite)"),
                 ("_hashlib", "hashing (SHA-1, SHA-256)"), ("sqlite3", "registry (SQLite)"),
                 ("psycopg", "registry (psycopg)")]


class RoundTrips:
    """SQL statements and transactions the engine runs while counting (its cost in round trips)."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.statements, self.transactions = engine, 0, 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, *_args: object) -> None:
        self.statements += 1

    def _commit(self, *_args: object) -> None:
        self.transactions += 1

    def stop(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "commit", self._commit)


def part_of(filename: str, name: str) -> str:
    if filename == "~":   # a built-in: name it by what it is
        return next((label for key, label in BUILTIN_PARTS if key in name), "other built-ins")
    path = filename.replace("\\", "/")
    return next((label for key, label in PARTS if f"/{key}" in path or f"{key}/" in path), "other Python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=60)
    parser.add_argument("--mix", action="store_true", help="the corpus mix (sizes 10 KB - 10 MB, PDFs) "
                        "instead of 60 KB CDAs")
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite in a temp dir)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--top", type=int, default=15, help="functions listed by own time")
    parser.add_argument("--pstats", default="", help="also write the raw profile here (for snakeviz, "
                        "gprof2dot or `python -m pstats`: callers, call graph)")
    parser.add_argument("--out", default="", help="results name (default profile-ingest-<60k|mix>-<backend>)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="profile-ingest-"))
    try:
        return run(args, argv, work)
    finally:   # the data directory (registry, blobs) of the run
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, argv: list[str] | None, work: Path) -> int:
    authority = DevAuthority.create()
    authority.save(work / "ca")
    flags = validation_args()
    settings = Settings(data_dir=work / "data", database_url=args.database, trust=str(work / "ca" / "ca.pem"),
                        one_time_credentials="all", text_indexer=False, notifier=False,
                        cda_schema_dir=flags[1], cda_valuesets_dir=flags[3],
                        cda_model_schematrons=flags[5])
    services = Services.open(settings)
    client = create_app(services=services).test_client()
    generator = Generator(Corpus.load(), seed=args.seed)
    messages = []
    index = 0
    while len(messages) < args.documents + 3:   # 3 to warm up (the profile loads once per process)
        index += 1
        request, payloads = generator.submission(index, 1, with_bytes=True, size=None if args.mix else 60 * 1024)
        doc = request.documents[0]
        if not doc.authors or doc.authors[0].person is None:
            continue   # a model whose header names no RPPS author: no professional may file it
        if not args.mix and len(next(iter(payloads.values()))) > 64 * 1024:
            continue   # a model larger than 60 KB by itself (embedded PDFs): not this profile's document
        pid = patient_cx(index)
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid])
        Records(services.registry).open(pid)
        actor = dataclasses.replace(sample_actors(pid)["doctor"], id=doc.authors[0].person.id_number)
        messages.append((request, payloads, actor))
    bodies = [request_body(r, p, saml.security_header(authority.saml_assertion(a))) for r, p, a in messages]

    def submit(content_type: str, body: bytes) -> None:
        answer = client.post("/xds/repository", data=body, headers={"Content-Type": content_type})
        if b"ResponseStatusType:Success" not in answer.data:
            raise SystemExit(f"submission refused ({answer.status_code}): {answer.data[:1500]!r}")

    for content_type, body in bodies[:3]:
        submit(content_type, body)
    counts = RoundTrips(services.registry.engine)
    load_before = load_average()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for content_type, body in bodies[3:]:
        submit(content_type, body)
    profiler.disable()
    elapsed = time.perf_counter() - started
    counts.stop()
    n = len(bodies) - 3
    stats = pstats.Stats(profiler)
    if args.pstats:
        stats.dump_stats(args.pstats)
    parts: dict[str, float] = {}
    functions = []
    for (filename, line, name), (_cc, _nc, own, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        label = part_of(filename, name)
        parts[label] = parts.get(label, 0.0) + own
        functions.append((own, f"{Path(filename).name}:{line} {name}", label))
    total = sum(parts.values())
    mean_bytes = sum(len(b) for _c, b in bodies[3:]) // n
    print(f"ITI-41 in process, authentication on (SAML, single use), {n} submissions of one document "
          f"({'corpus mix' if args.mix else '60 KB CDA'}, mean message {mean_bytes // 1024} KB), "
          f"{'PostgreSQL' if args.database else 'SQLite'}; load average {load_before[0]}")
    # cProfile's clock is the wall clock: the parts include waits (fsync, the database), not only CPU
    print(f"wall {elapsed * 1000 / n:.1f} ms per submission under the profiler (of which {total * 1000 / n:.1f} ms "
          f"in profiled functions, wall clock: I/O waits included)")
    print(f"per submission: {counts.statements / n:.1f} SQL statements, {counts.transactions / n:.1f} "
          f"transactions (each a commit the database makes durable)")
    print(f"{'part of the code':45} {'ms/doc':>8} {'share':>6}")
    for label, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"{label:45} {seconds * 1000 / n:8.2f} {seconds / total:6.1%}")
    print(f"\ntop {args.top} functions by own time:")
    for own, where, label in sorted(functions, reverse=True)[:args.top]:
        print(f"  {own * 1000 / n:7.2f} ms/doc  {where}  [{label}]")
    payload = {"benchmark": "profile-ingest", "command": " ".join(["python -m benchmarks.profile_ingest",
                                                                    *(argv or sys.argv[1:])]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
               "load_average": load_before, "submissions": n, "mean_message_bytes": mean_bytes,
               "backend": "postgresql" if args.database else "sqlite",
               "wall_ms_per_submission_profiled": round(elapsed * 1000 / n, 2),
               "clock": "wall (cProfile's timer): the parts include I/O waits such as fsync",
               "sql_statements_per_submission": round(counts.statements / n, 2),
               "transactions_per_submission": round(counts.transactions / n, 2),
               "parts_ms_per_submission": {k: round(v * 1000 / n, 3) for k, v in
                                           sorted(parts.items(), key=lambda kv: -kv[1])},
               "top_functions": [{"ms_per_submission": round(o * 1000 / n, 3), "function": w, "part": p}
                                 for o, w, p in sorted(functions, reverse=True)[:args.top]]}
    print(save(args.out or f"profile-ingest-{'mix' if args.mix else '60k'}-{payload['backend']}", payload))
    services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
