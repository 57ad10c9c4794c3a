"""The official ANS structuration-minimale schematron, run by Partage's Schematron layer, gives
the same failed asserts as the ANS reference pipeline on every corpus document.

The schematron is the one of ../shared/corpus/cda/schematrons (the ANS files, with the J07
value set the ANS repository lacks rebuilt, as the reference run did); PARTAGE_ANS_SCHEMATRON
may name another copy (e.g. one prepared by benchmarks/prepare_ans_schematron.py).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from partage.cda.parser import XmlRejected, parse_cda
from partage.cda.schematron import load_schematron
from tests.conftest import CORPUS_DIR, corpus_path

ANS_SCH = os.environ.get("PARTAGE_ANS_SCHEMATRON", "")
STRUCMIN = ("cda", "schematrons", "schematrons", "profils", "structurationMinimale", "ASIP-STRUCT-MIN-StrucMin.sch")

# Documents the parser refuses before any schematron runs (Partage refuses every DOCTYPE and
# malformed bytes; the ANS pipeline fails the first two at XSD and expands the XXE entity).
PARSER_REFUSED = {"not-well-formed__VAC-NOTE_2023.01.xml", "xml-bomb__CSE-MDE_2023.01.xml",
                  "xxe-external-entity__BIO-TROD_2024.01_COVID-19.xml"}
ANS_TEXT_LIMIT = 200   # the reference run keeps the first 200 characters of each message


@pytest.fixture(scope="module")
def schematron():
    if ANS_SCH and not Path(ANS_SCH).is_file():
        pytest.fail(f"PARTAGE_ANS_SCHEMATRON={ANS_SCH} is not a file")
    return load_schematron(ANS_SCH or corpus_path(*STRUCMIN))


def _location(loc: str) -> str:
    loc = re.sub(r"\[\d+\]", "", loc.replace("hl7:", ""))
    return "/ClinicalDocument" if loc == "/" else loc   # a rule on the document node: its root element


def _key(loc: str, text: str) -> tuple[str, str]:
    return _location(loc), " ".join(text.split())[:ANS_TEXT_LIMIT].rstrip()


def _cases():
    """(folder, file, reference entry) for every corpus document with an ANS verdict."""
    cda = CORPUS_DIR / "cda"
    for folder, verdicts in (("valid", cda / "ans-verdicts.json"), ("invalid", cda / "invalid" / "ans-verdicts.json")):
        if not verdicts.is_file():
            continue
        for name, entry in sorted(json.loads(verdicts.read_text(encoding="utf-8")).items()):
            if (cda / folder / name).is_file():
                yield folder, name, entry


CASES = list(_cases())   # empty without the corpus: pytest then skips, saying the parameter set is empty


@pytest.mark.parametrize(("folder", "name", "entry"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_failed_asserts_equal_the_ans_pipeline(schematron, folder, name, entry):
    data = (corpus_path("cda", folder) / name).read_bytes()
    reference = [(f["location"], f["text"]) for f in (entry["strucmin"].get("failed_asserts") or [])]
    try:
        parsed = parse_cda(data)
    except XmlRejected:
        assert name in PARSER_REFUSED
        return
    assert name not in PARSER_REFUSED
    findings = [f for f in schematron.check(parsed.root) if f.severity != "info"]
    assert not [f for f in findings if f.rule == "schematron-eval-error"], findings
    ours = Counter(_key(f.location, f.message) for f in findings)
    theirs = Counter(_key(loc, text) for loc, text in reference)
    assert ours == theirs

