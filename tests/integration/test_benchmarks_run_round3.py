"""The benchmarks of docs/performance.md run, at tiny sizes, as a judge runs them.

Each benchmark is started as `python -m benchmarks.<module>` (a subprocess, from the checkout's
root) with the smallest arguments that still exercise all of its work, and must exit 0 and write
well-formed result JSON carrying the keys docs/performance.md reads (the machine, the date, the
load average, the figures). Results go to a temporary directory (PARTAGE_BENCH_RESULTS, honoured
by `benchmarks.common.save`), never to benchmarks/results/. No timing is asserted: only that the
figures are there and are honest about what they are (a p99 of 20 samples is not reported).
The PostgreSQL ones run only when PostgreSQL is up (tests/conftest.py's require_postgres).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common
from tests.conftest import require_postgres

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["bench_clinical", "bench_fhir_search", "bench_ingest", "bench_page", "bench_query", "bench_retrieve",
           "bench_sharded", "bench_validation", "load", "load_mixed", "plot", "profile_ingest", "profile_query",
           "storage_sharded", "prepare_ans_schematron"]


def _strict_json(text: str) -> dict:
    """JSON as the standard has it: NaN and Infinity (which json.dumps writes) refused."""
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def _read(path: Path) -> dict:
    assert path.is_file(), f"{path} not written"
    return _strict_json(path.read_text(encoding="utf-8"))


def _run(tmp: Path, module: str, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    env = {**os.environ, common.RESULTS_ENV: str(tmp / "results"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{module}" if module else "benchmarks", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{module} {args}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def _honest(payload: dict) -> None:
    """What every run records beside its figures: the machine, the date, the load average."""
    assert payload["machine"]["cores"] and "python_loop_ms" in payload["machine"]
    assert payload.get("date")
    loads = [v for k, v in payload.items() if k.startswith("load_average")] + \
        [v for run in payload.get("runs", []) for k, v in run.items() if k.startswith("load_average")]
    assert loads and all(len(x) == 3 for x in loads), payload.keys()


def _parser_of(module: str) -> argparse.ArgumentParser:
    """The argparse parser a benchmark's main() builds (caught at parse_args, nothing run)."""
    caught: list[argparse.ArgumentParser] = []

    class Caught(Exception):
        pass

    def catch(self, *_args, **_kwargs):
        caught.append(self)
        raise Caught

    main = __import__(f"benchmarks.{module}" if module else "benchmarks.__main__", fromlist=["main"]).main
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        with contextlib.suppress(Caught):
            main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    assert caught, f"{module}: no argparse parser"
    return caught[0]


# --- without running anything -----------------------------------------------------------------

@pytest.mark.parametrize("module", [*MODULES, ""])
def test_help(module):
    """`--help` of every benchmark and of the suite prints its usage and exits 0."""
    main = __import__(f"benchmarks.{module}" if module else "benchmarks.__main__", fromlist=["main"]).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert out.getvalue().startswith("usage:")


def test_docs_commands_name_existing_modules_and_flags():
    """Every `python -m benchmarks.X ...` (or `python benchmarks/X.py ...`) of docs/performance.md
    names a module that exists and only flags its parser has (commands may span two lines)."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    spans = re.findall(r"`([^`]*)`", text.replace("```", "\n"))          # inline code, even over a line break
    spans += re.findall(r"^\.venv/bin/python [^\n]*(?:\\\n[^\n]*)*", text, re.M)   # code blocks
    commands = 0
    for span in spans:
        match = re.search(r"python (?:-m benchmarks(?:\.(\w+))?|benchmarks/(\w+)\.py)(.*)", span, re.S)
        if not match:
            continue
        module = match.group(1) or match.group(2) or ""
        assert module == "" or (ROOT / "benchmarks" / f"{module}.py").is_file(), span
        options = {o for action in _parser_of(module)._actions for o in action.option_strings}
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", match.group(3).split("#")[0]):
            assert flag in options, f"{flag} is not an option of {module or 'benchmarks'}: {span!r}"
        commands += 1
    assert commands >= 20


def test_save_writes_to_the_directory_the_environment_names(tmp_path, monkeypatch):
    monkeypatch.setenv(common.RESULTS_ENV, str(tmp_path / "r"))
    path = common.save("x", {"a": 1})
    assert path == tmp_path / "r" / "x.json" and _read(path) == {"a": 1}
    monkeypatch.delenv(common.RESULTS_ENV)
    assert common.results_dir() == ROOT / "benchmarks" / "results"


def test_a_quantile_needs_enough_samples():
    """A p99 of 20 samples is their maximum: not reported. p95 needs 20, p99 100."""
    few = common.percentiles([float(i) for i in range(19)])
    assert few["n"] == 19 and few["p50"] == 9.0 and few["p95"] is None and few["p99"] is None
    twenty = common.percentiles([float(i) for i in range(20)])
    assert twenty["p95"] == 18.0 and twenty["p99"] is None
    assert common.percentiles([float(i) for i in range(100)])["p99"] == 98.0
    assert common.percentiles([]) == {"n": 0}


def test_prepare_ans_schematron(tmp_path):
    """From a working copy: the .sch and its include folder copied, the missing J07 rebuilt."""
    source = tmp_path / "ans"
    sch = source / "schematrons/profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch"
    (sch.parent / "include").mkdir(parents=True)
    sch.write_text("<schema xmlns='http://purl.oclc.org/dsdl/schematron'/>", encoding="utf-8")
    (sch.parent / "include" / "a.sch").write_text("<pattern/>", encoding="utf-8")
    (source / "jeuxDeValeurs").mkdir()
    (source / "jeuxDeValeurs" / "JDV_J07_XdsTypeCode_CISIS.xml").write_text(
        "<RetrieveValueSetResponse xmlns='urn:ihe:iti:svs:2008'><ValueSet id='1.2.250.1.213.1.1.5.471'>"
        "<ConceptList><Concept code='11488-4' codeSystem='2.16.840.1.113883.6.1' displayName='CR'/>"
        "</ConceptList></ValueSet></RetrieveValueSetResponse>", encoding="utf-8")
    done = _run(tmp_path, "prepare_ans_schematron", str(source), str(tmp_path / "out"))
    out = tmp_path / "out" / "schematrons/profils/structurationMinimale"
    assert Path(done.stdout.strip()) == out / "ASIP-STRUCT-MIN-StrucMin.sch"
    assert (out / "include" / "a.sch").is_file()
    assert "11488-4" in (out / "include" / "voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml").read_text(encoding="utf-8")


# --- tiny runs, SQLite ------------------------------------------------------------------------

def test_bench_validation(tmp_path):
    _run(tmp_path, "bench_validation", "--repeat", "1", "--json", str(tmp_path / "v.json"),
         "--plot", str(tmp_path / "v.png"))
    payload = _read(tmp_path / "v.json")
    _honest(payload)
    assert payload["documents"] > 0 and len(payload["own"]["total_cpu"]) == payload["documents"]
    assert (tmp_path / "v.png").stat().st_size > 0


def test_bench_query_below_the_population_size_then_plot(tmp_path):
    """2000 documents hold the probe patients and one heavy one, no population patient: the
    shapes without patients are said not measured, the others measured."""
    _run(tmp_path, "bench_query", "--backends", "sqlite", "--sizes", "2000", "--queries", "20",
         "--http-queries", "2", "--out", "q")
    payload = _read(tmp_path / "results" / "q.json")
    _honest(payload)
    run = payload["runs"][0]
    assert run["backend"] == "sqlite" and run["documents"] >= 2000
    assert run["server"]["probe"]["n"] == 20 and run["server"]["probe"]["p50"] > 0
    assert run["server"]["probe"]["p99"] is None and run["server"]["probe"]["cpu_p99"] is None
    assert run["server"]["population"] == {"n": 0, "not_measured": "no patient of this shape at this size"}
    assert run["http"]["probe"]["n"] == 2 and run["http"]["iti67 probe"]["n"] == 2
    _run(tmp_path, "plot", "--out", str(tmp_path / "q.png"), str(tmp_path / "results" / "q.json"))
    assert (tmp_path / "q.png").stat().st_size > 0


def test_bench_fhir_search(tmp_path):
    _run(tmp_path, "bench_fhir_search", "--backends", "sqlite", "--documents", "2300", "-n", "3", "--out", "f")
    payload = _read(tmp_path / "results" / "f.json")
    _honest({**payload, "load_average": [0, 0, 0]})   # the load is recorded per measure (below)
    run = payload["runs"][0]
    assert run["heavy_patients"] >= 1
    first = run["first page, _count=20 (default)"]
    assert first["n"] == 3 and first["p50"] > 0 and first["p95"] is None and len(first["load_before"]) == 3


def test_bench_ingest_with_its_plot(tmp_path):
    _run(tmp_path, "bench_ingest", "--backends", "sqlite", "--workers", "1", "--clients", "1",
         "--documents", "3", "--out", "i", "--plot", str(tmp_path / "i.png"))
    payload = _read(tmp_path / "results" / "i.json")
    _honest(payload)
    run = payload["runs"][0]
    assert run["documents"] == 3 and run["documents_per_s"] > 0 and run["latency_ms"]["p99"] is None
    assert run["server_cpu_ms_per_document"] > 0
    assert run["postgresql_cpu_ms_per_document"] is None   # SQLite: no database server measured
    assert run["text_indexed_s"] >= run["seconds"]
    assert (tmp_path / "i.png").stat().st_size > 0


def test_bench_retrieve(tmp_path):
    _run(tmp_path, "bench_retrieve", "--sizes-mb", "1", "--repeat", "2", "--out", "r")
    payload = _read(tmp_path / "results" / "r.json")
    _honest(payload)
    run = payload["runs"][0]
    assert run["retrieves"] == 2 and run["retrieve_mb_s"] > 0 and run["iti68_mb_s"] > 0
    peaks = run["peak_rss_mb"]
    # the growth is that of the process that grew most, not the difference of two maxima
    grown = max(peaks["after_iti68"][p] - peaks["start"].get(p, 0) for p in peaks["after_iti68"])
    assert abs(run["worker_peak_growth_mb"] - grown) <= 0.2   # (each figure rounded to 0.1 MB)


def test_load(tmp_path):
    done = _run(tmp_path, "load", "--data", str(tmp_path / "data"), "--documents", "50")
    summary = _strict_json(done.stdout.strip().splitlines()[-1])
    assert summary["documents"] >= 50 and summary["documents_per_s"] > 0
    assert "load:" in done.stderr   # the progress line


def test_load_mixed(tmp_path):
    _run(tmp_path, "load_mixed", "--minutes", "0.05", "--clients", "1", "--patients", "2",
         "--seed-documents", "2", "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png"))
    payload = _read(tmp_path / "m.json")   # strict: an operation without requests is null, not NaN
    _honest(payload)
    assert payload["errors"] == 0 and set(payload["total"]) == {"find", "retrieve", "submit"}
    for r in payload["total"].values():   # a p99 only from 100 requests (benchmarks.common.quantile)
        assert (r["p99_ms"] is None) == (r["n"] < 100), r
    assert (tmp_path / "m.png").stat().st_size > 0


def test_profile_ingest(tmp_path):
    _run(tmp_path, "profile_ingest", "--documents", "2", "--top", "2", "--out", "pi")
    payload = _read(tmp_path / "results" / "pi.json")
    _honest(payload)
    assert payload["submissions"] == 2 and payload["parts_ms_per_submission"]
    assert payload["clock"].startswith("wall")


def test_bench_clinical(tmp_path):
    _run(tmp_path, "bench_clinical", "--repeat", "2", "--json", str(tmp_path / "c.json"))
    payload = _read(tmp_path / "c.json")
    _honest(payload)
    page = payload["requests_ms"]["professional's page"]
    assert page["n"] == 2 and page["p50"] > 0 and page["p95"] is None


# --- tiny runs, PostgreSQL --------------------------------------------------------------------

@pytest.mark.postgres
def test_profile_query_flat(tmp_path):
    require_postgres()
    _run(tmp_path, "profile_query", "--layout", "flat", "--documents", "100", "--queries", "20", "--top", "2",
         "--out", "pq")
    payload = _read(tmp_path / "results" / "pq.json")
    _honest(payload)
    assert payload["shapes"]["probe"]["statements"] and payload["shapes"]["probe"]["p99"] is None


@pytest.mark.postgres
def test_storage_sharded_one_shard(tmp_path):
    require_postgres()
    _run(tmp_path, "storage_sharded", "--documents", "100", "--shards", "1", "--jobs", "1", "--out", "s")
    payload = _read(tmp_path / "results" / "s.json")
    _honest(payload)
    assert payload["documents"] >= 100 and payload["bytes_per_document"] > 0
    assert set(payload["databases"]) == {"coordinator", "shard 0"}
