"""CDA validation, round 5 (issues 4 and 17): a volet schematron the catalogue cannot use, the
profile the command line judges by, and what an SVRL consumer reads of an incomplete report.

The judges: house rule 6 ("a layer that did not run says 'not run' and why; a verdict is only
'conforme' when every layer of the profile ran"), rule 5 (one rule in one place: the same document
and settings give the same verdict at `partage validate` as at `/validate`), docs/cda-rules.md
(model schematron 2: "A templateId is a claim of conformance"; 6: a chosen schematron that cannot
be compiled leaves the layer "not run", note `model-schematron-unusable`; the configuration table:
`PARTAGE_VALIDATION_PROFILE`) and ISO/IEC 19757-3:2016 Annex D (SVRL: a failed-assert is what a
consumer counts; its `test` attribute is "the test attribute of the assert").

Each test builds its own tiny model-schematron catalogue (the layout of ANS's TestContenuCDA),
as round 4 did, so that none needs the corpus.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from lxml import etree

from partage.cda import cli
from partage.cda.findings import MODEL, SVRL, to_svrl
from partage.cda.gate import CdaGate
from partage.cda.profile import Validator
from partage.config import Settings
from partage.metadata.model import DocumentContent
from partage.server.app import create_app
from partage.services import Services
from tests.integration.test_validation_round4 import (
    NEEDS_SECTION,
    VOLET_A,
    VOLET_B,
    _catalogue,
    _example,
    _profile,
    _sch,
)

VOLA = "CI-SIS_VOLA_2024.01.sch"
VOLB = "CI-SIS_VOLB_2024.01.sch"


def _unsupported(root: str) -> str:
    """Volet B's schematron as the catalogue finds it: well-formed, asserting its templateId, but in
    a query binding Partage does not run (XSLT 1.0): it cannot be compiled when the catalogue loads."""
    return _sch(root).replace('queryBinding="xslt2"', 'queryBinding="xslt"')


NOT_XML = "<schema xmlns='http://purl.oclc.org/dsdl/schematron'><pattern>"   # truncated: not well-formed


def _broken_b(tmp_path: Path, text: str | None = None) -> Path:
    return _catalogue(tmp_path, {VOLA: _sch(VOLET_A), VOLB: text if text is not None else _unsupported(VOLET_B)})


def _cli(argv: list[str]) -> tuple[int, list[dict], str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(parser.parse_args([*argv, "-q"]), stdout=out, stderr=err)
    return code, json.loads(out.getvalue()), err.getvalue()


@pytest.fixture()
def clean_env(monkeypatch):
    """No PARTAGE_* setting from the environment of the test run."""
    for name in ("PARTAGE_VALIDATION_PROFILE", "PARTAGE_CDA_MODEL_SCHEMATRONS", "PARTAGE_CDA_SCHEMA_DIR",
                 "PARTAGE_CDA_VALUESETS_DIR", "PARTAGE_CDA_SCHEMATRON", "PARTAGE_VALIDATION_BLOCKING"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- 1. a volet schematron the catalogue cannot use ------------------------------------------------

def test_a_document_claiming_an_unusable_volet_is_told_its_schematron_cannot_be_used(tmp_path):
    """Volet B's schematron is in the directory but cannot be compiled when the catalogue loads.
    Before: it was dropped from the catalogue (`catalog.unreadable`, a log line at start), and a
    document claiming B was told "aucun schematron de modèle pour les templateIds …" (rule
    `model-schematron-unknown`): the volet does have a schematron; it cannot be used
    (docs/cda-rules.md, model schematron 6: note `model-schematron-unusable`)."""
    report = Validator(_profile(tmp_path, _broken_b(tmp_path))).validate(_example(VOLET_B))
    model = report.layers[MODEL]
    assert model.status == "not run", model
    assert "model-schematron-unusable" in report.rules(), report.findings
    assert "model-schematron-unknown" not in report.rules()
    assert VOLB in model.reason and not model.reason.startswith("aucun schematron de modèle"), model.reason
    assert report.verdict == "incomplet"


@pytest.mark.parametrize("broken", ["unsupported-binding", "not-well-formed"])
def test_a_document_claiming_two_volets_one_unusable_is_not_conforme(tmp_path, broken):
    """The document claims volets A and B; B's schematron cannot be compiled. Before: B was not in
    the catalogue, the document was checked against A alone, the layer "passed" and the verdict was
    "conforme" for a document never checked against a volet it claims (rule 6). The layer is
    "partial" (B not run, named), the verdict is not "conforme". When B's file cannot even be read,
    which documents it is for is unknown: a templateId no usable schematron names may be a claim
    on it, and the check cannot be said complete either."""
    catalogue = _broken_b(tmp_path, _unsupported(VOLET_B) if broken == "unsupported-binding" else NOT_XML)
    validator = Validator(_profile(tmp_path, catalogue))
    if broken == "unsupported-binding":   # B's volet known: a document claiming A alone is complete
        assert validator.validate(_example(VOLET_A)).verdict == "conforme"

    report = validator.validate(_example(VOLET_A, VOLET_B))
    model = report.layers[MODEL]
    assert model.status == "partial", (model, report.model_schematron)
    assert VOLB in model.reason, model.reason
    assert report.verdict == "incomplet"


def test_partage_validate_and_post_validate_say_the_same_of_an_unusable_volet(tmp_path, clean_env):
    """The two doors of the validation service, on the document claiming A and B (B unusable):
    before, both answered a model layer "passed" on A alone (the CLI exit code tells "conforme"
    apart from "incomplet" only through the other layers of `cisis`)."""
    catalogue = _broken_b(tmp_path)
    document = tmp_path / "doc.xml"
    document.write_bytes(_example(VOLET_A, VOLET_B))
    cache = str(tmp_path / "cache")
    clean_env.setenv("PARTAGE_CACHE_DIR", cache)
    code, [report], _err = _cli([str(document), "--cda-schematrons", str(catalogue)])
    assert report["layers"]["model"]["status"] == "partial", report["layers"]["model"]
    assert code == cli.EXIT_INCOMPLETE

    settings = Settings(data_dir=tmp_path / "data", insecure_dev=True, text_indexer=False,
                        cda_model_schematrons=str(catalogue), cache_dir=cache)
    services = Services.open(settings)
    try:
        answer = create_app(services=services).test_client().post("/validate", data=document.read_bytes())
        [served] = answer.get_json()
    finally:
        services.close()
    assert served["layers"]["model"]["status"] == "partial", served["layers"]["model"]
    assert VOLB in served["layers"]["model"]["reason"]
    assert served["verdict"] == report["verdict"] == "incomplet"


def test_ingest_with_a_required_model_refuses_an_unusable_volet_saying_so(tmp_path):
    """At ingest (the gate ITI-41, ITI-65 and the HL7 feed share) with a profile requiring a model
    (`--require-model`: a structured document not checked against a model schematron is an error),
    a document claiming only the unusable volet B is refused: before, with the misleading rule
    `model-schematron-unknown` ("aucun schematron de modèle pour les templateIds"); now with
    `model-schematron-unusable`, naming B's schematron."""
    profile = _profile(tmp_path, _broken_b(tmp_path)).with_options(model_required=True)
    data = _example(VOLET_B)
    content = DocumentContent(file=io.BytesIO(data), size=len(data), sha1="")
    entry = argparse.Namespace(entry_uuid="Document01")
    errors = CdaGate(Validator(profile))(entry, content)
    refusing = [e for e in errors if not e.warning]
    assert refusing and all("model-schematron-unusable" in e.context for e in refusing), \
        [e.context for e in errors]
    assert any(VOLB in e.context for e in refusing)


# --- 2. one profile rule for the two doors --------------------------------------------------------

def test_partage_validate_judges_by_the_servers_validation_profile(tmp_path, clean_env):
    """PARTAGE_VALIDATION_PROFILE=structure: `/validate` judges a document by `structure` (its
    default profile is the server's, docs/cda-rules.md), `partage validate` by `cisis` (its own
    default, built by its own copy of the profile rule): the same document and settings got
    "conforme" at one door and "incomplet" (exit 3) at the other. One rule, in `gate`."""
    clean_env.setenv("PARTAGE_VALIDATION_PROFILE", "structure")
    document = tmp_path / "doc.xml"
    document.write_bytes(_example())
    code, [report], _err = _cli([str(document)])

    services = Services.open(Settings.from_env(data_dir=str(tmp_path / "data"), insecure_dev=True,
                                               text_indexer=False))
    try:
        [served] = create_app(services=services).test_client().post("/validate", data=document.read_bytes()).get_json()
    finally:
        services.close()
    assert served["profile"] == "structure" and served["verdict"] == "conforme"   # what the server says
    assert (report["profile"], report["verdict"]) == (served["profile"], served["verdict"])
    assert code == cli.EXIT_CONFORME


# --- 3. SVRL -----------------------------------------------------------------------------------------

def test_an_incomplete_report_never_reads_as_valid_in_svrl(tmp_path):
    """The document claims no volet of the catalogue: the model layer did not run (a note, not an
    error), the verdict is "incomplet". Its SVRL held no failed-assert at all: a tool counting
    failed-asserts (the usual SVRL reading of "valid", ISO/IEC 19757-3 Annex D) read it as valid.
    An incomplete report now carries a failed-assert per reason, role "incomplet"."""
    catalogue = _catalogue(tmp_path, {VOLA: _sch(VOLET_A)})
    report = Validator(_profile(tmp_path, catalogue)).validate(_example())
    assert report.verdict == "incomplet" and report.valid, report.layers

    svrl = etree.fromstring(to_svrl(report))
    failed = list(svrl.iter(f"{{{SVRL}}}failed-assert"))
    assert failed, etree.tostring(svrl).decode()
    assert any(f.get("role") == "incomplet" and "modèle" in "".join(f.itertext()) for f in failed)


def test_svrl_test_attribute_holds_the_asserts_test(tmp_path):
    """SVRL failed-assert/@test is "the test attribute of the assert" (ISO/IEC 19757-3 Annex D).
    Partage wrote the layer name ("model") there, though the schematron's test is known."""
    catalogue = _catalogue(tmp_path, {VOLB: _sch(VOLET_B, NEEDS_SECTION)})
    report = Validator(_profile(tmp_path, catalogue)).validate(_example(VOLET_B))
    svrl = etree.fromstring(to_svrl(report))
    [failed] = [f for f in svrl.iter(f"{{{SVRL}}}failed-assert") if f.get("id") == "volet-B-section"]
    assert failed.get("test") == "hl7:component/hl7:section/hl7:code[@code='XXXX-0']", failed.get("test")
