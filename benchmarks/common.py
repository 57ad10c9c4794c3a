"""What every benchmark records: the machine, its load, percentiles, scratch databases."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Where `save` writes: benchmarks/results/, or the directory PARTAGE_BENCH_RESULTS names (the
# smoke tests' scratch runs, a judge's own runs), so that a trial run never replaces a recorded one.
RESULTS_ENV = "PARTAGE_BENCH_RESULTS"


def results_dir() -> Path:
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else RESULTS


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(),
            "kernel": platform.release(), "python_loop_ms": python_loop_ms()}


def python_loop_ms() -> float:
    """Best of 5 timings of `sum(range(10**6))`, in ms: how fast this machine runs Python now.

    The benchmark machine is a virtual one whose speed varies (20 to 32 ms within one
    afternoon here); figures from two runs compare only with this number beside them."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(range(10**6))
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _process_stats() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, parent pid, CPU seconds user + system), from /proc (Linux)."""
    stats: dict[int, tuple[str, int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, rest = (entry / "stat").read_text().split("(", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue   # exited meanwhile
        fields = rest.split()
        stats[int(entry.name)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return stats


def database_backends_cpu(url: str) -> dict[int, float]:
    """pid -> CPU seconds of the PostgreSQL backends connected to this URL's database now: the
    benchmark's own share of a server other clients share (their backends, and the server's own
    processes, WAL writer and checkpointer, are not counted). Compare two readings with
    `cpu_since`; a backend that exited between them is lost (its CPU is not counted)."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain) as conn:
        pids = {row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")}
    return {pid: cpu for pid, (_name, _parent, cpu) in _process_stats().items() if pid in pids}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two `database_backends_cpu` readings (a new pid counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def process_tree_cpu(root_pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its living descendants (a
    server's master, workers and background process)."""
    stats = {pid: (parent, cpu) for pid, (_name, parent, cpu) in _process_stats().items()}
    tree, total = {root_pid}, 0.0
    for _ in range(8):   # a few generations deep
        tree |= {pid for pid, (parent, _cpu) in stats.items() if parent in tree}
    for pid in tree:
        total += stats.get(pid, (0, 0.0))[1]
    return total


# The fewest samples a quantile needs to be more than the largest of them: a p95 needs 20
# (one sample in 20 above it), a p99 needs 100. Below that it is not reported (None).
MIN_SAMPLES = {0.95: 20, 0.99: 100}


def quantile(values: list[float], p: float) -> float | None:
    """The p-quantile (nearest rank) of `values`, or None when there are too few of them for it
    to mean anything (MIN_SAMPLES): with 20 samples, a "p99" would only be their maximum."""
    if len(values) < MIN_SAMPLES.get(p, 1):
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]


def percentiles(values_ms: list[float]) -> dict:
    """n, p50, p95, p99, max, mean (ms, rounded); p95 / p99 are None below MIN_SAMPLES."""
    if not values_ms:
        return {"n": 0}

    def q(p: float) -> float | None:
        value = quantile(values_ms, p)
        return None if value is None else round(value, 2)

    return {"n": len(values_ms), "p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
            "max": round(max(values_ms), 2), "mean": round(sum(values_ms) / len(values_ms), 2)}


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for a printed table: "n/a" for a quantile not reported (too few samples)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


def postgres_database(prefix: str = "bench"):
    """A fresh PostgreSQL database (trust auth), dropped afterwards; yields a SQLAlchemy URL."""
    from tests.support import postgres_database as fresh_database

    return fresh_database(prefix)


def save(name: str, payload: dict) -> Path:
    """Write a run's JSON as <results_dir()>/<name>.json; returns its path."""
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def save_figure(fig: Any, out: Path, title: str) -> None:
    """A benchmark's figure: its title (command, date, machine), laid out, written as PNG."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
