"""CDA validation speed on the shared corpus: median / p95 per layer, warm.

    .venv/bin/python benchmarks/bench_validation.py                       # own profile, all layers
    .venv/bin/python benchmarks/bench_validation.py --schematron FILE.sch # + an ISO schematron (layer 3)

The own profile runs parse + XSD (../shared/corpus/xsd/cda) + CI-SIS rules + terminology
(../shared/corpus/valuesets) + metadata cross-check (with metadata built from each
header, so the layer does its full work). Each document is validated once to warm up,
then --repeat times; figures are per document. The reference is the ANS Java pipeline on
this machine: 67 ms per document warm (DESIGN.md, "Measured here").

With --schematron, the schematron layer is measured on its own profile (load time, per
document time, peak RSS). No timing is asserted anywhere: this prints, it does not judge.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partage.cda.crosscheck import cda_unique_id  # noqa: E402
from partage.cda.header import read_header  # noqa: E402
from partage.cda.profile import Profile, Validator, get_profile  # noqa: E402


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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(validator: Validator, docs: list[tuple[str, bytes, dict | None]], repeat: int) -> dict[str, list[float]]:
    for _name, data, meta in docs:   # warm-up
        validator.validate(data, xds_metadata=meta)
    times: dict[str, list[float]] = {"total": []}
    for _ in range(repeat):
        for _name, data, meta in docs:
            started = time.perf_counter()
            report = validator.validate(data, xds_metadata=meta)
            times["total"].append((time.perf_counter() - started) * 1000)
            for layer, result in report.layers.items():
                if result.status != "not run":
                    times.setdefault(layer, []).append(result.duration_ms)
    return times


def table(title: str, times: dict[str, list[float]]) -> list[str]:
    lines = [title, f"  {'layer':<12} {'median ms':>10} {'p95 ms':>9} {'n':>6}"]
    for layer, values in times.items():
        lines.append(f"  {layer:<12} {statistics.median(values):>10.3f} {pct(values, 0.95):>9.3f} {len(values):>6}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--schematron", help="also measure this ISO schematron as layer 3")
    parser.add_argument("--json", help="write the raw figures there")
    args = parser.parse_args(argv)

    corpus = Path(args.corpus)
    files = sorted((corpus / "cda" / "valid").glob("*.xml"))
    if not files:
        print(f"no corpus at {corpus}", file=sys.stderr)
        return 2
    raw = [(p.name, p.read_bytes()) for p in files]
    docs = [(name, data, metadata_for(data)) for name, data in raw]

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
            t = time.perf_counter()
            schema.validate(etree.fromstring(data, plain))
            floor_times.append((time.perf_counter() - t) * 1000)

    header_times = []
    for _ in range(args.repeat):
        for _name, data, _meta in docs:
            t = time.perf_counter()
            read_header(data)
            header_times.append((time.perf_counter() - t) * 1000)

    out = [f"{len(docs)} documents x {args.repeat} runs (warm); Python {sys.version.split()[0]}",
           f"own profile ready in {ready_s:.2f} s (XSD compile + {len(validator.terminology.value_sets)} value sets)"]
    out += table("own profile 'cisis', all layers (parse, schema, rules, terminology, metadata):", own_times)
    out.append(f"  {'read_header':<12} {statistics.median(header_times):>10.3f} {pct(header_times, 0.95):>9.3f}"
               "   (parse + header dataclasses, for ingest)")
    out.append(f"  {'libxml2':<12} {statistics.median(floor_times):>10.3f} {pct(floor_times, 0.95):>9.3f}"
               "   (floor: bare lxml parse + XSD validate, no Partage code)")
    result = {"own": own_times, "read_header": header_times, "own_ready_s": ready_s, "libxml2_floor": floor_times}

    if args.schematron:
        sch = get_profile("ans", schema=str(corpus / "xsd" / "cda"), schematron=args.schematron)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        sch_validator = Validator(sch)
        sch_ready = time.perf_counter() - started
        sch_times = measure(sch_validator, [(n, d, None) for n, d in raw], max(1, args.repeat // 2))
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out.append(f"schematron {args.schematron}: ready in {sch_ready:.2f} s; peak RSS {rss_after / 1024:.0f} MB "
                   f"(was {rss_before / 1024:.0f} MB before loading it)")
        out += table("profile 'ans' (parse, schema, schematron):", sch_times)
        result.update({"schematron": sch_times, "schematron_ready_s": sch_ready, "peak_rss_kb": rss_after})

    print("\n".join(out))
    print("reference: ANS Java pipeline 67 ms/document warm (XSD 2.8 + StrucMin 58 + model 7.9)")
    if args.json:
        Path(args.json).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
