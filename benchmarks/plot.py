"""Draw FindDocuments latency against registry size from benchmarks/results/query-*.json.

The results directory is $PARTAGE_BENCH_RESULTS when set (benchmarks.common.results_dir).

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python -m benchmarks.plot   # -> docs/query-latency.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import ROOT, results_dir


def collect(paths: list[Path]) -> dict[tuple[str, str], list[tuple[int, dict]]]:
    """(backend, series) -> [(documents, percentiles)], newest file wins for a size."""
    series: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(paths, key=lambda p: p.stat().st_mtime):
        for run in json.loads(path.read_text(encoding="utf-8"))["runs"]:
            for name, stats in run.get("server", {}).items():
                series.setdefault((run["backend"], f"server {name}"), {})[run["documents"]] = stats
            for name, stats in run.get("http", {}).items():
                series.setdefault((run["backend"], f"HTTP {name}"), {})[run["documents"]] = stats
    return {k: sorted(v.items()) for k, v in series.items()}


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "query-latency.png"))
    parser.add_argument("results", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.results or sorted(results_dir().glob("query-*.json"))
    data = collect(paths)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    styles = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    for ax, quantile in zip(axes, ("p50", "p99"), strict=True):
        for (backend, name), points in sorted(data.items()):
            if name not in ("server probe", "server population", "HTTP probe", "HTTP iti67 probe"):
                continue
            # points without this quantile (too few samples, or not measured at that size) are left out
            points = [(n, s) for n, s in points if s.get(quantile) is not None]
            if not points:
                continue
            xs = [n for n, _ in points]
            ys = [s[quantile] for _, s in points]
            marker = {"server probe": "o-", "server population": "s--", "HTTP probe": "^:",
                      "HTTP iti67 probe": "v-."}[name]
            ax.plot(xs, ys, marker, color=styles.get(backend, "gray"), label=f"{backend}, {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("documents in the registry")
        ax.set_ylabel(f"FindDocuments {quantile} (ms)")
        ax.set_title(f"FindDocuments (ITI-18 / ITI-67) {quantile} vs registry size")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.text(0.01, 0.01, "probe = patients with 10 documents, the same at every size; population = random "
             "patients (skewed counts). Each point: newest run for that size; load and commands in docs/performance.md.",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
