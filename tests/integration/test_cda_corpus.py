"""Acceptance on the shared corpus: agreement with the ANS reference verdicts on the official
examples (>= 98 %), and every negative case refused by a finding naming its rule and element."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from partage.cda.profile import Profile, get_profile, get_validator
from tests.conftest import corpus_path

pytestmark = pytest.mark.corpus

PARSE_RULES = {"not-well-formed", "xml-bomb", "xxe-external-entity", "xml-doctype-forbidden"}


@pytest.fixture(scope="module")
def profile() -> Profile:
    return get_profile("cisis", schema=str(corpus_path("xsd", "cda")), valuesets=str(corpus_path("valuesets")))


def _positions(xpath: str) -> str:
    """Drop [n] position predicates (ours appear only when siblings share a name)."""
    return re.sub(r"\[\d+\]", "", xpath)


def test_verdicts_agree_with_the_ans_pipeline(profile):
    verdicts = json.loads(corpus_path("cda", "ans-verdicts.json").read_text(encoding="utf-8"))
    validator = get_validator(profile)
    valid_dir = corpus_path("cda", "valid")
    files = sorted(p for p in valid_dir.glob("*.xml"))
    assert len(files) == 62
    disagreements = []
    for path in files:
        report = validator.validate(path.read_bytes(), filename=path.name)
        ans_pass = verdicts[path.name]["verdict"] == "pass"
        if report.valid != ans_pass:
            disagreements.append((path.name, ans_pass, sorted(report.rules())))
    agreement = 1 - len(disagreements) / len(files)
    assert agreement >= 0.98, disagreements


def test_the_ans_failure_is_found_for_the_same_reason(profile):
    """eDISP-MED_2024.01 fails the ANS StrucMin schematron: a family-name qualifier SP."""
    path = corpus_path("cda", "valid", "eDISP-MED_2024.01.xml")
    report = get_validator(profile).validate(path.read_bytes())
    assert not report.valid
    [finding] = [f for f in report.findings if f.severity == "error"]
    assert finding.rule == "patient-name-qualifier"
    assert _positions(finding.location).startswith("/hl7:ClinicalDocument/hl7:recordTarget/hl7:patientRole"
                                                   "/hl7:patient/hl7:name/hl7:family")


def _negative_cases() -> list[tuple[str, dict]]:
    try:
        expected = json.loads(corpus_path("cda", "invalid", "expected.json").read_text(encoding="utf-8"))
    except pytest.skip.Exception:
        return []
    return sorted(expected.items())


CASES = _negative_cases()


@pytest.mark.skipif(not CASES, reason="reference corpus not found")
@pytest.mark.parametrize("name, case", CASES, ids=[c[0].split("__")[0] for c in CASES])
def test_negative_case_is_refused_naming_rule_and_element(profile, name, case):
    path: Path = corpus_path("cda", "invalid", name)
    report = get_validator(profile).validate(path.read_bytes(), filename=name)
    assert not report.valid
    named = [f for f in report.findings if f.rule == case["rule"] and f.severity == "error"]
    assert named, sorted(report.rules())
    if case["rule"] in PARSE_RULES:
        assert named[0].layer == "parse" and named[0].line
    else:
        assert case["xpath"] in {_positions(f.location) for f in named}, [f.location for f in named]
