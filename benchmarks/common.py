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


def named_processes_cpu(name: str) -> float:
    """CPU seconds used so far by the living processes of this command name (`postgres`: the
    database server's backends, which are not the benchmark's children)."""
    return sum(cpu for comm, _parent, cpu in _process_stats().values() if comm == name)


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


def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"n": 0}
    ordered = sorted(values_ms)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))], 2)

    return {"n": len(ordered), "p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
            "max": round(ordered[-1], 2), "mean": round(sum(ordered) / len(ordered), 2)}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


def postgres_database(prefix: str = "bench"):
    """A fresh PostgreSQL database (trust auth), dropped afterwards; yields a SQLAlchemy URL."""
    from tests.support import postgres_database as fresh_database

    return fresh_database(prefix)


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def save_figure(fig: Any, out: Path, title: str) -> None:
    """A benchmark's figure: its title (command, date, machine), laid out, written as PNG."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
