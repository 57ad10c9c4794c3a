"""The model layer on the shared corpus: the 59 ANS volet schematrons compile (one reports its
upstream defect), each valid example gets the schematron the reference picks and passes it,
the negative cases of `model-invalid/` are refused naming the element ANS names, through the
`partage validate` command; and Partage's own mutation kinds (tests/integration/model_mutations.py)
are refused at the same rate, to check the mechanism is general."""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from pathlib import Path

import pytest

from partage.cda import cli
from partage.cda.models import ModelCatalog, load_catalog
from partage.cda.parser import parse_cda
from partage.cda.profile import Validator, get_profile
from partage.cda.schematron import load_schematron
from partage.cda.schematron_cache import SchematronCache, source_key
from tests.conftest import corpus_path
from tests.integration.model_mutations import KINDS, mutations

pytestmark = pytest.mark.corpus

REFUSAL_TARGET = 0.95


def _loc(location: str) -> str:
    """A location as the ANS SVRL writes it: no prefixes, [1] omitted, "/" for the document node."""
    location = location.replace("hl7:", "").replace("cda:", "").replace("[1]", "")
    return "/ClinicalDocument" if location == "/" else location


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("schematron-cache")


@pytest.fixture(scope="module")
def catalog(cache_dir) -> ModelCatalog:
    return load_catalog(corpus_path("cda", "schematrons"), cache_dir)


@pytest.fixture(scope="module")
def validator(cache_dir) -> Validator:
    return Validator(get_profile("cisis", schema=str(corpus_path("xsd", "cda")),
                                 valuesets=str(corpus_path("valuesets")),
                                 model_schematrons=str(corpus_path("cda", "schematrons")),
                                 cache_dir=str(cache_dir)))


def test_all_59_model_schematrons_compile_and_bio_2023_reports_its_missing_includes(catalog):
    assert len(catalog) == 59 and not catalog.unreadable
    for entry in catalog.entries:
        compiled = catalog.compiled(entry)   # Saxon compiles every one
        if entry.name == "CI-SIS_BIO-CR-BIO_2023.01.sch":
            assert len(compiled.missing_includes) == 9
        else:
            assert not compiled.missing_includes, entry.name
    # Value-set files named and absent: JDV_BilanDiagnostic_CISIS (known upstream), and a path
    # written without its ".xml" in BIO-TROD (the file does not exist under either name).
    defects = catalog.defects()
    assert set(defects) == {"CI-SIS_BIO-CR-BIO_2023.01.sch", "CI-SIS_CANCER-D2LM-FIN_2022.01.sch",
                            "CI-SIS_BIO-TROD_2024.01.sch"}
    assert defects["CI-SIS_BIO-TROD_2024.01.sch"] == ["document: ../jeuxDeValeurs/JDV_ResultatDepistageHematurie_CISIS"]


def test_the_schematron_chosen_is_the_reference_pick(catalog):
    """model-map.json gives the reference's pick for every example of valid/ (documented rule)."""
    picks = json.loads(corpus_path("cda", "schematrons", "model-map.json").read_text(encoding="utf-8"))
    disagreements = []
    for name, pick in sorted(picks["ans_examples"].items()):
        parsed = parse_cda(corpus_path("cda", "valid", name).read_bytes())
        assert parsed.clinical_document is not None
        choice = catalog.select(parsed.clinical_document, parsed.root)
        wanted = Path(pick["model_schematron"]).name if pick["model_schematron"] else None
        got = [e.name for e in choice.entries]
        if (wanted is None and got) or (wanted is not None and wanted not in got):
            disagreements.append((name, wanted, got, choice.how, choice.reason))
    assert not disagreements


def test_valid_examples_agree_with_ans_and_pass_their_model(validator):
    verdicts = json.loads(corpus_path("cda", "ans-verdicts.json").read_text(encoding="utf-8"))
    files = sorted(corpus_path("cda", "valid").glob("*.xml"))
    assert len(files) == 62
    disagreements, models = [], Counter()
    for path in files:
        report = validator.validate(path.read_bytes(), filename=path.name)
        if report.valid != (verdicts[path.name]["verdict"] == "pass"):
            disagreements.append((path.name, sorted(f.rule for f in report.errors)))
        assert not [f for f in report.findings if f.layer == "model" and f.severity != "info"], path.name
        models[report.layers["model"].status] += 1
        if verdicts[path.name]["model_sch"]:
            assert report.model_schematron == verdicts[path.name]["model_sch"], path.name
    assert not disagreements
    assert models == Counter({"passed": 58, "not applicable": 3, "not run": 1})   # 01_Modeles: no model


def _expected() -> list[tuple[str, dict]]:
    try:
        return sorted(json.loads(corpus_path("cda", "model-invalid", "expected.json").read_text("utf-8")).items())
    except pytest.skip.Exception:
        return []


def test_partage_validate_refuses_model_invalid_naming_the_element(cache_dir, monkeypatch):
    """The acceptance command, `partage validate --cda-schematrons ... --schema-dir ... --valuesets ...`."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([str(corpus_path("cda", "model-invalid")), "--quiet",
                              "--cda-schematrons", str(corpus_path("cda", "schematrons")),
                              "--schema-dir", str(corpus_path("xsd", "cda")),
                              "--valuesets", str(corpus_path("valuesets"))])
    out, err = io.StringIO(), io.StringIO()
    assert cli.run(args, stdout=out, stderr=err) == 1
    assert "incomplet" not in err.getvalue()   # nothing of the profile is missing
    reports = {Path(r["file"]).name: r for r in json.loads(out.getvalue())}
    expected = dict(_expected())
    assert set(reports) == set(expected)
    named = []
    for name, case in expected.items():
        report = reports[name]
        ours = {_loc(f["location"]) for f in report["findings"] if f["layer"] == "model" and f["severity"] == "error"}
        theirs = {_loc(a["location"]) for a in case["ans"]["failed_asserts"]}
        assert report["model_schematron"] == case["model_schematron"], name
        if not report["valid"] and ours & theirs:
            named.append(name)
    assert len(named) / len(expected) >= REFUSAL_TARGET, sorted(set(expected) - set(named))


@pytest.mark.parametrize(("name", "case"), _expected(), ids=[c[0] for c in _expected()])
def test_failed_asserts_equal_the_ans_pipeline_on_model_invalid(validator, name, case):
    """The model layer's failed asserts are the ANS pipeline's (as far as expected.json lists them)."""
    report = validator.validate(corpus_path("cda", "model-invalid", name).read_bytes(), filename=name)
    ours = Counter((_loc(f.location), " ".join(f.message.split())[:200].rstrip())
                   for f in report.findings if f.layer == "model" and f.severity != "info")
    theirs = Counter((_loc(a["location"]), a["message"].rstrip()) for a in case["ans"]["failed_asserts"])
    assert not theirs - ours
    if len(case["ans"]["failed_asserts"]) < 10:   # the list is complete below 10 entries
        assert ours == theirs


def test_own_mutation_kinds_are_refused_at_the_same_rate(validator, catalog):
    """Kinds the corpus does not have, built from each model's own demands (model_mutations.py)."""
    picks = json.loads(corpus_path("cda", "schematrons", "model-map.json").read_text(encoding="utf-8"))
    per_kind: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    misses = []
    for name, pick in sorted(picks["ans_examples"].items()):
        if not pick["model_schematron"] or "BIO-CR-BIO_2023" in pick["model_schematron"]:
            continue
        sch = corpus_path("cda", "schematrons", pick["model_schematron"])
        for mutation in mutations(corpus_path("cda", "valid", name), sch):
            report = validator.validate(mutation.data, filename=name)
            named = {f.location for f in report.findings if f.layer == "model" and f.severity == "error"}
            ok = not report.valid and mutation.location in named
            per_kind[mutation.kind].append(ok)
            if not ok:
                misses.append((mutation.kind, name, mutation.what, report.model_schematron, sorted(named)[:3]))
    for kind, results in per_kind.items():
        assert len(results) >= 10, (kind, len(results))   # each kind applies to many models
        assert sum(results) / len(results) >= REFUSAL_TARGET, (kind, misses)


def test_compiled_schematrons_are_cached_by_source_hash(tmp_path):
    """A second catalogue reads the cache; editing an included file makes a new entry."""
    source = corpus_path("cda", "schematrons", "schematrons")
    root = tmp_path / "ans" / "schematrons"
    for sch in ("CI-SIS_VAC_2023.01.sch", "CI-SIS_VSM_2023.01.sch"):
        (root / sch).parent.mkdir(parents=True, exist_ok=True)
        (root / sch).write_bytes((source / sch).read_bytes())
    for include in ("abstract/dansJeuDeValeurs.sch", "abstract/IVL_TS.sch",
                    "include/specificationsVolets/VAC_2023.01/Entete/Entete_VAC_2023.01.sch",
                    "include/specificationsVolets/VSM_2023.01/Entete/Entete_VSM_2023.01.sch"):
        target = root / include
        target.parent.mkdir(parents=True, exist_ok=True)
        if (source / include).is_file():
            target.write_bytes((source / include).read_bytes())
    cache = tmp_path / "cache"
    first = ModelCatalog(tmp_path / "ans", cache)
    assert first.cache.misses == 2 and first.cache.hits == 0
    second = ModelCatalog(tmp_path / "ans", cache)
    assert second.cache.hits == 2 and second.cache.misses == 0
    entete = root / "include/specificationsVolets/VAC_2023.01/Entete/Entete_VAC_2023.01.sch"
    key = source_key(root / "CI-SIS_VAC_2023.01.sch")
    entete.write_text(entete.read_text(encoding="utf-8").replace("11369-6", "11369-7"), encoding="utf-8")
    assert source_key(root / "CI-SIS_VAC_2023.01.sch") != key
    third = ModelCatalog(tmp_path / "ans", cache)
    assert third.cache.misses == 1 and third.cache.hits == 1
    [vac] = [e for e in third.entries if e.model == "VAC"]
    assert vac.codes == {"11369-7"}


def test_an_unwritable_cache_is_not_an_error(tmp_path, caplog):
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache directory should be")
    generated = SchematronCache(cache).load(corpus_path("cda", "schematrons", "schematrons", "CI-SIS_VAC_2023.01.sch"))
    assert generated.asserts and "not writable" in caplog.text
    assert load_schematron(corpus_path("cda", "schematrons", "schematrons", "CI-SIS_VAC_2023.01.sch")).asserts
