"""Sustained mixed load against a real `partage serve`, from this (second) process.

    .venv/bin/python benchmarks/load_mixed.py --minutes 10 [--database URL] [--clients 8]

Starts the server (2 gunicorn workers) on a fresh data directory, feeds patients,
seeds documents, then for --minutes runs --clients threads, each looping over a mix
of ITI-18 FindDocuments (60 %), ITI-43 retrieve (25 %) and ITI-41 submission (15 %).
Every minute it prints the requests, errors, p50 / p99 per operation and the
server's resident memory (master + workers). It ends with the whole-run figures,
writes them as JSON (--json) and, when matplotlib is installed, draws p99 and RSS
against time (--plot). "Zero errors, stable p99, flat memory" is read off that
output; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import load_average, machine, quantile  # noqa: E402
from partage.config import Settings  # noqa: E402
from partage.services import Services  # noqa: E402
from tests import factories as F  # noqa: E402
from tests.memory import rss_bytes  # noqa: E402
from tests.support import LiveServer  # noqa: E402
from tests.xdsclient import XdsClient, objects_of  # noqa: E402

MIX = [("find", 60), ("retrieve", 25), ("submit", 15)]


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: list[tuple[float, str, float, bool]] = []   # (t, op, seconds, ok)

    def add(self, op: str, seconds: float, ok: bool) -> None:
        with self.lock:
            self.samples.append((time.monotonic(), op, seconds, ok))

    def window(self, start: float, end: float):
        with self.lock:
            return [s for s in self.samples if start <= s[0] < end]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def summarize(samples) -> dict:
    """Per operation: requests, errors, p50 and p99 in ms (None when there are too few requests
    for the quantile: benchmarks.common.quantile; never NaN, which JSON cannot carry)."""
    out = {}
    for op, _ in MIX:
        times = [s[2] for s in samples if s[1] == op]
        out[op] = {"n": len(times), "errors": sum(1 for s in samples if s[1] == op and not s[3]),
                   "p50_ms": ms(quantile(times, 0.5)) if times else None, "p99_ms": ms(quantile(times, 0.99))}
    return out


def client_loop(base_url: str, patients: list[str], known: list[tuple[str, str]], repository_id: str,
                recorder: Recorder, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    client = XdsClient(base_url)
    ops, weights = zip(*MIX, strict=True)
    while not stop.is_set():
        op = rng.choices(ops, weights)[0]
        started = time.perf_counter()
        ok = False
        try:
            if op == "find":
                pid = rng.choice(patients)
                reply = client.stored_query("FindDocuments", {
                    "$XDSDocumentEntryPatientId": [f"'{pid}'"],
                    "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
                ok = reply.status == "Success"
            elif op == "retrieve":
                uid, expected = rng.choice(known)
                reply, docs = client.retrieve(repository_id, [uid])
                ok = reply.status == "Success" and docs[uid].read() == expected.encode()
            else:
                pid = rng.choice(patients)
                request = F.submission(pid, contents=False)
                payload = os.urandom(rng.choice([2_000, 20_000, 200_000]))
                ok = client.provide_and_register(request, {"doc1": payload}).status == "Success"
        except Exception as exc:   # an error is a finding of the run, recorded and counted
            print(f"  error in {op}: {exc!r}", file=sys.stderr)
        recorder.add(op, time.perf_counter() - started, ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--seed-documents", type=int, default=2000)
    parser.add_argument("--database", default="", help="SQLAlchemy URL (default: SQLite in the data dir)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    date, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_average()
    with tempfile.TemporaryDirectory(prefix="partage-load-") as tmp:
        data_dir = Path(tmp) / "data"
        services = Services.open(Settings(data_dir=data_dir, database_url=args.database))
        patients = [F.patient_id() for _ in range(args.patients)]
        with services.registry.write() as conn:
            for pid in patients:
                services.registry.upsert_patient(conn, [pid])
        repository_id = services.settings.repository_unique_id
        server = LiveServer(data_dir, database_url=args.database, workers=2, mllp=False).start()
        try:
            client = XdsClient(server.base_url)
            known: list[tuple[str, str]] = []
            for n in range(args.seed_documents):
                pid = patients[n % len(patients)]
                request = F.submission(pid, contents=False)
                body = f"seed document {n}"
                assert client.provide_and_register(request, {"doc1": body.encode()}).status == "Success"
                known.append((request.documents[0].unique_id, body))
                if n % 200 == 0:
                    print(f"\rseeding {n}/{args.seed_documents}", end="", file=sys.stderr)
            print(file=sys.stderr)
            found = objects_of(client.stored_query("FindDocuments", {
                "$XDSDocumentEntryPatientId": [f"'{patients[0]}'"],
                "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]}))
            assert found, "seeded documents are not found"

            recorder, stop = Recorder(), threading.Event()
            threads = [threading.Thread(target=client_loop, daemon=True,
                                        args=(server.base_url, patients, known, repository_id,
                                              recorder, stop, i)) for i in range(args.clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            minutes = []
            end = started + args.minutes * 60
            while time.monotonic() < end:
                window_start = time.monotonic()
                time.sleep(min(60.0, max(0.0, end - window_start)))
                rows = summarize(recorder.window(window_start, time.monotonic()))
                rss = sum(rss_bytes(server.process.pid).values())
                minutes.append({"minute": len(minutes) + 1, "rss_mb": round(rss / 2**20, 1), **rows})
                print(f"min {len(minutes):>3}  rss {rss / 2**20:7.1f} MB  " + "  ".join(
                    f"{op} n={r['n']} err={r['errors']} p50={r['p50_ms']}ms p99={r['p99_ms']}ms"
                    for op, r in rows.items()), flush=True)
            stop.set()
            for t in threads:
                t.join(60)
        finally:
            server.stop()
            services.close()
    total = summarize(recorder.samples)
    result = {"benchmark": "load_mixed", "date": date, "machine": machine(),
              "command": " ".join(["python -m benchmarks.load_mixed", *(sys.argv[1:] if argv is None else argv)]),
              "load_average_before": load_before, "load_average_after": load_average(), "minutes": args.minutes, "clients": args.clients, "database": args.database or "sqlite",
              "per_minute": minutes, "total": total,
              "errors": sum(r["errors"] for r in total.values())}
    print(json.dumps(result["total"], indent=1))
    print(f"{sum(r['n'] for r in total.values())} requests, {result['errors']} errors; {date}, "
          f"{result['machine']['cores']} cores, load average {load_before} before, {result['load_average_after']} after")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.plot:
        plot(minutes, args.plot)
    return 1 if result["errors"] else 0


def plot(minutes: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    xs = [m["minute"] for m in minutes]
    for op, _ in MIX:
        points = [(m["minute"], m[op]["p99_ms"]) for m in minutes if m[op]["p99_ms"] is not None]
        top.plot([x for x, _ in points], [y for _, y in points], marker="o", label=f"{op} p99 (minutes of >= 100)")
    top.set_ylabel("ms")
    top.legend()
    bottom.plot(xs, [m["rss_mb"] for m in minutes], marker="o", color="black")
    bottom.set_ylabel("server RSS (MB)")
    bottom.set_xlabel("minute")
    fig.suptitle("Sustained mixed load: p99 and memory over time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
