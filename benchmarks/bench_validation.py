"""CDA validation speed on the shared corpus: median / p95 per document and per layer, warm.

    .venv/bin/python benchmarks/bench_validation.py                        # own profile, all layers
    .venv/bin/python benchmarks/bench_validation.py --schematron FILE.sch  # + an ISO schematron
    .venv/bin/python benchmarks/bench_validation.py --schematron FILE.sch --json out.json --plot docs/x.png

The own profile runs parse + XSD (../shared/corpus/xsd/cda) + CI-SIS rules + terminology
(../shared/corpus/valuesets) + metadata cross-check (with metadata built from each header,
so the layer does its full work). Each document is validated once to warm up, then
--repeat times; figures are per document.

Two clocks: wall time (perf_counter) and CPU time of the process (process_time: the validating thread plus any helper thread, e.g. Saxon's).
On a shared machine wall time includes the time other processes hold the cores; the CPU
time is what the validation itself costs. Both are printed, and `best_cpu`: per document
the least CPU time of its --repeat runs (the median of those is the noise-filtered figure).

With --schematron, the schematron is measured in a child process of its own (so that its
load time and peak RSS are its own): time to ready (generate the XSLT, compile it with
Saxon, preload the value-set files its doc() calls name), per-document time of the
schematron layer alone and of the whole 'ans' profile (parse + XSD + schematron), peak RSS.
The reference is the ANS Java pipeline on this machine: 67 ms per document warm (XSD 2.8 +
structuration minimale 58 + document model 7.9), 18 s to load, 3 GB (DESIGN.md).
No timing is asserted anywhere: this prints, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import fmt, load_average, machine, quantile  # noqa: E402
from partage.cda.crosscheck import cda_unique_id  # noqa: E402
from partage.cda.header import read_header  # noqa: E402
from partage.cda.profile import Profile, Validator, get_profile  # noqa: E402

ANS_MS = {"total": 67.0, "strucmin": 58.0, "xsd": 2.8, "ready_s": 18.0, "rss_mb": 3000}


def metadata_for(data: bytes) -> dict:
    """XDS metadata consistent with the header (what a well-behaved source would send)."""
    h = read_header(data)
    root, ext = h.patient.ids[0] if h.patient and h.patient.ids else ("", "")
    out = {"patient_id": f"{ext}^^^&{root}&ISO", "unique_id": cda_unique_id(h.id),
           "type_code": (h.code.code, h.code.code_system) if h.code else None,
           "language_code": h.language_code, "title": h.title, "mime_type": "text/xml"}
    if h.confidentiality:
        out["confidentiality_codes"] = [(h.confidentiality.code, h.confidentiality.code_system)]
    return out


def pct(values: list[float], q: float) -> str:
    return fmt(quantile(values, q), 3)   # "n/a" below benchmarks.common.MIN_SAMPLES


def measure(validator: Validator, docs: list[tuple[str, bytes, dict | None]], repeat: int) -> dict[str, list[float]]:
    for _name, data, meta in docs:   # warm-up
        validator.validate(data, xds_metadata=meta)
    times: dict[str, list[float]] = {"total": [], "total_cpu": [], "best_cpu": []}
    best = [float("inf")] * len(docs)
    for _ in range(repeat):
        for n, (_name, data, meta) in enumerate(docs):
            started, cpu = time.perf_counter(), time.process_time()
            report = validator.validate(data, xds_metadata=meta)
            times["total_cpu"].append((time.process_time() - cpu) * 1000)
            best[n] = min(best[n], times["total_cpu"][-1])
            times["total"].append((time.perf_counter() - started) * 1000)
            for layer, result in report.layers.items():
                if result.status != "not run":
                    times.setdefault(layer, []).append(result.duration_ms)
    times["best_cpu"] = best    # per document, the least CPU time of its runs (scheduling noise removed)
    return times


def table(title: str, times: dict[str, list[float]]) -> list[str]:
    lines = [title, f"  {'layer':<12} {'median ms':>10} {'p95 ms':>9} {'n':>6}"]
    for layer, values in times.items():
        lines.append(f"  {layer:<12} {statistics.median(values):>10.3f} {pct(values, 0.95):>9} {len(values):>6}")
    return lines


def load_docs(corpus: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((corpus / "cda" / "valid").glob("*.xml"))]


def run_schematron(corpus: Path, sch: str, repeat: int) -> dict:
    """In this (child) process: load the schematron, time it on the corpus, report peak RSS."""
    raw = load_docs(corpus)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.perf_counter(), time.process_time()
    validator = Validator(get_profile("ans", schema=str(corpus / "xsd" / "cda"), schematron=sch))
    ready_s, ready_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    times = measure(validator, [(n, d, None) for n, d in raw], repeat)
    return {"ready_s": ready_s, "ready_cpu_s": ready_cpu_s, "times": times, "stats": validator.schematron.stats,
            "rss_start_mb": rss_start / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_models(corpus: Path, models: str, repeat: int, cache_dir: str) -> dict:
    """In this (child) process: the `cisis` profile with the ANS model schematrons, every layer.

    ready = build the Validator (XSD compile, value sets, the catalogue of the 59 schematrons
    read through the on-disk cache at `cache_dir`); first = each document validated once
    (the first document of a model pays its Saxon compilation); then `repeat` warm runs.
    """
    raw = load_docs(corpus)
    docs = [(name, data, metadata_for(data)) for name, data in raw]
    started, cpu = time.perf_counter(), time.process_time()
    validator = Validator(get_profile("cisis", schema=str(corpus / "xsd" / "cda"), valuesets=str(corpus / "valuesets"),
                                      model_schematrons=models, cache_dir=cache_dir))
    ready_s, ready_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    first: dict[str, float] = {}
    for _name, data, meta in docs:
        started = time.perf_counter()
        report = validator.validate(data, xds_metadata=meta)
        if report.model_schematron and report.model_schematron not in first:
            first[report.model_schematron] = time.perf_counter() - started
    times = measure(validator, docs, repeat)
    catalog = validator.catalog
    return {"ready_s": ready_s, "ready_cpu_s": ready_cpu_s, "first_doc_of_model_s": first, "times": times,
            "cache_hits": catalog.cache.hits if catalog else 0, "cache_misses": catalog.cache.misses if catalog else 0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def plot(path: Path, own: dict, sch: dict | None) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"
    labels = ["ANS pipeline, Java\n(XSD + StrucMin; DESIGN.md)", "Partage own profile\n(all layers)"]
    cpu = [None, statistics.median(own["total_cpu"])]
    wall = [ANS_MS["xsd"] + ANS_MS["strucmin"], statistics.median(own["total"])]
    if sch:
        labels.append("ANS StrucMin schematron\nrun by Partage (+ XSD)")
        cpu.append(statistics.median(sch["times"]["total_cpu"]))
        wall.append(statistics.median(sch["times"]["total"]))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ys = list(range(len(labels)))
    ax.barh([y - 0.18 for y in ys], [c or 0 for c in cpu], height=0.36, color="#2b7bba", label="CPU time")
    ax.barh([y + 0.18 for y in ys], wall, height=0.36, color="#bbbbbb", label="wall time (shared, loaded machine)")
    for y, c, w in zip(ys, cpu, wall, strict=True):
        if c is not None:
            ax.text(c + 0.8, y - 0.18, f"{c:.1f} ms", va="center", fontsize=8)
        ax.text(w + 0.8, y + 0.18, f"{w:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(ys, labels)
    ax.axvline(ANS_MS["total"] / 2, color="#e08a1e", linestyle="--", linewidth=1)
    ax.text(ANS_MS["total"] / 2 + 0.5, -0.42, "target: half of 67 ms", color="#e08a1e", fontsize=8)
    ax.set_xlabel("median ms per document, warm")
    ax.set_xlim(0, max(wall) * 1.3)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="center right")
    ax.set_title("CDA validation, ANS example corpus (62 documents)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return f"plot written to {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--schematron", help="also measure this ISO schematron (profile 'ans': XSD + schematron)")
    parser.add_argument("--schematron-only", action="store_true", help=argparse.SUPPRESS)   # the child process
    parser.add_argument("--cda-schematrons", metavar="DIR",
                        help="also measure the 'cisis' profile with the ANS model schematrons of DIR (all layers)")
    parser.add_argument("--models-only", action="store_true", help=argparse.SUPPRESS)   # the child process
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the raw figures there")
    parser.add_argument("--plot", help="draw a bar chart there (PNG, needs matplotlib)")
    args = parser.parse_args(argv)
    corpus = Path(args.corpus)

    if args.schematron_only:
        print(json.dumps(run_schematron(corpus, args.schematron, args.repeat)))
        return 0
    if args.models_only:
        print(json.dumps(run_models(corpus, args.cda_schematrons, args.repeat, args.cache_dir)))
        return 0

    raw = load_docs(corpus)
    if not raw:
        print(f"no corpus at {corpus}", file=sys.stderr)
        return 2
    docs = [(name, data, metadata_for(data)) for name, data in raw]
    date, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_average()
    own: Profile = get_profile("cisis", schema=str(corpus / "xsd" / "cda"), valuesets=str(corpus / "valuesets"))
    started = time.perf_counter()
    validator = Validator(own)
    ready_s = time.perf_counter() - started
    own_times = measure(validator, docs, args.repeat)

    # The floor: libxml2 alone (lxml parse + XSD validation), no Partage code, same documents.
    from lxml import etree

    from partage.cda.schema import load_schema
    schema = load_schema(validator.schema_path)
    plain = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    floor_times = []
    for _ in range(args.repeat):
        for _name, data, _meta in docs:
            t = time.process_time()
            schema.validate(etree.fromstring(data, plain))
            floor_times.append((time.process_time() - t) * 1000)

    out = [f"{len(docs)} documents x {args.repeat} runs (warm); Python {sys.version.split()[0]}",
           f"own profile ready in {ready_s:.2f} s (XSD compile + {len(validator.terminology.value_sets)} value sets)"]
    out += table("own profile 'cisis', all layers (parse, schema, rules, terminology, metadata); "
                 "total = wall, total_cpu = process CPU time, layers = wall:", own_times)
    out.append(f"  {'libxml2 cpu':<12} {statistics.median(floor_times):>10.3f} {pct(floor_times, 0.95):>9}"
               "   (floor: bare lxml parse + XSD validate, no Partage code)")
    result: dict = {"benchmark": "validation", "date": date, "machine": machine(),
                    "command": " ".join(["python -m benchmarks.bench_validation",
                                         *(sys.argv[1:] if argv is None else argv)]),
                    "documents": len(docs), "repeat": args.repeat, "load_average_before": load_before,
                    "own": own_times, "own_ready_s": ready_s, "libxml2_floor_cpu": floor_times}

    sch_result = None
    if args.schematron:
        child = subprocess.run([sys.executable, __file__, "--schematron-only", "--schematron", args.schematron,
                                "--corpus", str(corpus), "--repeat", str(max(1, args.repeat // 2))],
                               capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        sch_result = json.loads(child.stdout.strip().splitlines()[-1])
        out.append(f"schematron {args.schematron}:")
        out.append(f"  ready in {sch_result['ready_s']:.2f} s wall ({sch_result['ready_cpu_s']:.2f} s CPU): "
                   f"generate XSLT + Saxon compile + preload value sets; {sch_result['stats']}")
        out.append(f"  peak RSS {sch_result['peak_rss_mb']:.0f} MB (process, Python + lxml + saxonche)")
        out += table("  profile 'ans' (parse, schema, schematron):", sch_result["times"])
        result["schematron"] = sch_result

    if args.cda_schematrons:
        with tempfile.TemporaryDirectory() as cache:
            for start in ("empty cache", "warm cache"):   # a first start, then a restart
                child = subprocess.run([sys.executable, __file__, "--models-only", "--cda-schematrons",
                                        args.cda_schematrons, "--cache-dir", cache, "--corpus", str(corpus),
                                        "--repeat", str(args.repeat)], capture_output=True, text=True, check=False)
                if child.returncode != 0:
                    print(child.stderr, file=sys.stderr)
                    return 1
                models = json.loads(child.stdout.strip().splitlines()[-1])
                first = sorted(models["first_doc_of_model_s"].values())
                out.append(f"profile 'cisis' with the model schematrons ({start}: {models['cache_hits']} cache hits, "
                           f"{models['cache_misses']} compiled):")
                out.append(f"  ready in {models['ready_s']:.2f} s wall ({models['ready_cpu_s']:.2f} s CPU); "
                           f"first document of a model: median {statistics.median(first):.2f} s, "
                           f"max {max(first):.2f} s ({len(first)} models); peak RSS {models['peak_rss_mb']:.0f} MB")
                out += table("  all layers, warm (parse, schema, rules, model, terminology, metadata):",
                             models["times"])
                result[f"models_{start.replace(' ', '_')}"] = models

    result["load_average_after"] = load_average()
    out.insert(0, f"{date}; {result['machine']['cpu']}, {result['machine']['cores']} cores; load average "
                  f"{load_before} before, {result['load_average_after']} after")
    print("\n".join(out))
    print(f"reference: ANS Java pipeline {ANS_MS['total']:.0f} ms/document warm (XSD {ANS_MS['xsd']} + StrucMin "
          f"{ANS_MS['strucmin']:.0f} + model 7.9), ready in ~{ANS_MS['ready_s']:.0f} s, {ANS_MS['rss_mb']} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result), encoding="utf-8")
    if args.plot:
        print(plot(Path(args.plot), own_times, sch_result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
