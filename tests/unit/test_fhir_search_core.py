"""The pieces FHIR search stands on, each against an independent reading of the rule:

- date comparisons in SQL (registry.search) against FHIR's prefixes on ranges, written again
  here in Python, for random target and search ranges (open sides included);
- the token hashes: what indexing stores is what a predicate looks for, and the system counts;
- parsing of values: escapes, `system|value` forms, prefixes and partial dates, cursors;
- the search-parameter declarations: every token parameter has a translation, every index is
  one the registry can answer, the CapabilityStatement lists exactly the declared parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from partage.fhir import search as S
from partage.fhir import searchparams as SP
from partage.fhir.capability import capability_statement
from partage.metadata.datatypes import CX, DTM, HD, XCN
from partage.metadata.model import Author, Code, DocumentEntry
from partage.mhd.outcome import FhirError
from partage.registry import indexing
from partage.registry import search as R
from partage.registry.search_index import (
    HIGHEST,
    LOWEST,
    DateMatch,
    TokenIndex,
    date_range,
    hash_sys,
    hash_sys_value,
    hash_value,
    normalize,
)

PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]


def stamp(n: int) -> str:
    return f"2024{n:010d}"   # 14 digits, ordered as n


def reference(prefix: str, tl: str, tu: str, pl: str, pu: str) -> bool:
    """FHIR date search (HAPI's reading of ge/le on ranges), target [tl, tu), search [pl, pu)."""
    eq = pl <= tl and tu <= pu
    return {"eq": eq, "ne": not eq, "ge": tu > pl, "gt": tu > pu, "le": tl < pu, "lt": tl < pl,
            "sa": tl >= pu, "eb": tu <= pl}[prefix]


@pytest.fixture(scope="module")
def ranges():
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("low", String(14)), Column("high", String(14)))
    table.create(engine)
    return engine, table


small = st.integers(1, 3)
offsets = st.integers(-4, 4)   # where the searched range starts, from the target's start: edges meet often


@settings(max_examples=400, deadline=None)
@given(prefix=st.sampled_from(PREFIXES), length=small, offset=offsets, width=small,
       open_low=st.booleans(), open_high=st.booleans())
def test_range_predicate_is_fhir_date_search(ranges, prefix, length, offset, width, open_low, open_high):
    engine, table = ranges
    tl, tu = 10, 10 + length
    pl, pu = 10 + offset, 10 + offset + width
    low = LOWEST if open_low else stamp(tl)
    high = HIGHEST if open_high else stamp(tu)
    match = DateMatch(prefix, stamp(pl), stamp(pu))
    with engine.begin() as conn:
        conn.execute(table.delete())
        conn.execute(insert(table).values(low=low, high=high))
        found = conn.execute(select(table.c.low).where(R._range_test(table.c.low, table.c.high, match))).all()
    assert bool(found) == reference(prefix, low, high, stamp(pl), stamp(pu))


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from(PREFIXES), offset=offsets, width=small)
def test_point_predicate_is_the_range_of_one_second(ranges, prefix, offset, width):
    engine, table = ranges
    t, pl, pu = 10, 10 + offset, 10 + offset + width
    match = DateMatch(prefix, stamp(pl), stamp(pu))
    with engine.begin() as conn:
        conn.execute(table.delete())
        conn.execute(insert(table).values(low=stamp(t), high=None))
        found = conn.execute(select(table.c.low).where(R._point_test(table.c.low, match))).all()
    assert bool(found) == reference(prefix, stamp(t), stamp(t + 1), stamp(pl), stamp(pu))


def test_partial_dates_are_the_ranges_they_cover():
    assert date_range(DTM("1970")) == ("19700101000000", "19710101000000")
    assert date_range(DTM("197002")) == ("19700201000000", "19700301000000")
    assert date_range(DTM("19701231")) == ("19701231000000", "19710101000000")
    assert date_range(DTM("20241231235959")) == ("20241231235959", "20250101000000")
    assert date_range(DTM("9999")) == ("99990101000000", HIGHEST)


@pytest.mark.parametrize("text, expected", [
    ("1970", DateMatch("eq", "19700101000000", "19710101000000")),
    ("ge1970-05", DateMatch("ge", "19700501000000", "19700601000000")),
    ("lt2024-03-15T10:00:00Z", DateMatch("lt", "20240315100000", "20240315100001")),
    ("sa2024-03-15T10:00:00+01:00", DateMatch("sa", "20240315090000", "20240315090001")),
    ("eb2024-03-15T10:00", DateMatch("eb", "20240315100000", "20240315100100")),   # no zone: UTC
    ("ne2024", DateMatch("ne", "20240101000000", "20250101000000")),
])
def test_date_values(text, expected):
    assert S.date_match(text, "date") == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13", "ap2024", "ge", "2024-02-30", "24"])
def test_bad_date_values_are_400(text):
    with pytest.raises(FhirError) as caught:
        S.date_match(text, "date")
    assert caught.value.status == 400


@pytest.mark.parametrize("text, expected", [
    ("a|b", ("a", "b")), ("b", (None, "b")), ("|b", ("", "b")), ("a|", ("a", None)),
    (r"a\|b|c", ("a|b", "c")), (r"x\,y", (None, "x,y")), ("a|b|c", ("a", "b|c")),
])
def test_tokens(text, expected):
    assert S.token(text) == expected


def test_commas_split_alternatives_unless_escaped():
    assert S.split_escaped(r"a,b\,c,d", ",") == ["a", r"b\,c", "d"]
    assert [S.unescape(p) for p in S.split_escaped(r"a,b\,c\\,d", ",")] == ["a", "b,c\\", "d"]


def test_normalize_folds_accents_case_and_spaces():
    assert normalize("  Éloïse   LÉVÊQUE ") == "eloise leveque"
    assert normalize("Straße") == "strasse"
    assert normalize("Ærø") == normalize("ærø") == "aero"
    assert normalize("Lætitia Œillet") == "laetitia oeillet"


# --- token hashes: indexing and predicates agree -------------------------------------------------
def test_the_hashes_indexing_stores_are_those_predicates_look_for():
    doc = DocumentEntry(entry_uuid="urn:uuid:1", class_code=Code("10", "1.2.250.1.213.1.1.4.1"),
                        reference_ids=[CX.parse_reference_id("ACC1^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:accession")],
                        authors=[Author(person=XCN(family_name="Lévêque", given_name="Éloïse",
                                                   further_given_names="Marie"))])
    rows = {r["attribute"]: r for r in indexing.code_rows(doc)}
    assert rows["class"]["hash_sys_value"] == hash_sys_value("class", "1.2.250.1.213.1.1.4.1", "10")
    assert rows["class"]["hash_value"] == hash_value("class", "10")
    assert rows["class"]["hash_sys"] == hash_sys("class", "1.2.250.1.213.1.1.4.1")
    assert rows["refid"]["hash_sys_value"] == hash_sys_value("refid", "1.2.3.9", "ACC1")
    assert rows["refid"]["code"].startswith("ACC1^^^&1.2.3.9&ISO")   # ITI-18 matches the whole CX
    # the system counts, and so does the attribute
    assert hash_sys_value("class", "1.2.3", "10") != hash_sys_value("class", "1.2.250.1.213.1.1.4.1", "10")
    assert hash_sys_value("type", "1.2.250.1.213.1.1.4.1", "10") != rows["class"]["hash_sys_value"]
    assert hash_value("class", "10") != hash_sys_value("class", "", "10")
    author = indexing.author_rows(doc)[0]
    assert (author["family_norm"], author["given_norm"]) == ("leveque", "eloise marie")


def test_token_forms_become_the_right_index_values():
    category = SP.DOCUMENT_REFERENCE.by_name["category"].tokens
    assert category is not None
    loinc = {m.system for _, m in category("http://loinc.org", "11488-4")}
    assert {"2.16.840.1.113883.6.1", "http://loinc.org", "urn:oid:2.16.840.1.113883.6.1"} <= loinc
    assert category(None, "10") == [(TokenIndex(("class",)), R.TokenMatch(None, "10"))]
    assert category("", "10") == [(TokenIndex(("class",)), R.TokenMatch("", "10"))]
    identifier = SP.DOCUMENT_REFERENCE.by_name["identifier"].tokens
    assert identifier is not None
    assert identifier("http://other", "urn:oid:1.2.3") == []
    assert identifier("", "urn:oid:1.2.3") == []
    assert {(i.column, m.value) for i, m in identifier(SP.URI, "urn:oid:1.2.3")} == {
        ("entry_uuid", "urn:oid:1.2.3"), ("unique_id", "1.2.3")}
    assert {(i.column, m.value) for i, m in identifier(None, "1.2.3")} == {("entry_uuid", "1.2.3")}
    patient = SP.PATIENT.by_name["identifier"].tokens
    assert patient is not None
    assert [m for _, m in patient(None, "123")] == [R.TokenMatch(None, "123")]
    assert [m for _, m in patient("urn:oid:1.2.3", None)] == [R.TokenMatch("1.2.3", None)]
    assert patient("", "123") == [] and patient("http://not-an-oid", "123") == []


# --- cursors --------------------------------------------------------------------------------------
def test_a_cursor_is_bound_to_its_search():
    text = S.encode_cursor("-date", ("20240101000000", 42))
    assert S.decode_cursor(text, "-date", 2) == ("20240101000000", 42)
    for signature, size in (("date", 2), ("-date", 3), ("_content", 1)):
        with pytest.raises(FhirError):
            S.decode_cursor(text, signature, size)


@pytest.mark.parametrize("text", ["", "!!!", "e30", "W10", "x" * 5000,
                                  S.encode_cursor("-date", (True, 1))[:-2]])
def test_bad_cursors_are_400(text):
    with pytest.raises(FhirError) as caught:
        S.decode_cursor(text, "-date", 2)
    assert caught.value.status == 400


# --- the declarations -----------------------------------------------------------------------------
@pytest.mark.parametrize("resource", [SP.DOCUMENT_REFERENCE, SP.LIST, SP.PATIENT], ids=lambda r: r.resource_type)
def test_every_declared_parameter_can_be_answered(resource):
    for param in resource.params:
        if param.index is None:
            assert param.name in ("patient", "patient.identifier", "_content"), param.name
            continue
        if param.type == "token":
            assert param.tokens is not None, param.name
        for default in resource.default_sort:
            assert resource.by_name[default.lstrip("-")].sort is not None


@pytest.mark.parametrize("resource", [SP.DOCUMENT_REFERENCE, SP.LIST, SP.PATIENT], ids=lambda r: r.resource_type)
def test_the_capability_statement_lists_exactly_the_declarations(resource):
    cs = capability_statement("http://example.org/fhir", "2026-01-01T00:00:00Z")
    listed = {r["type"]: r for r in cs["rest"][0]["resource"]}[resource.resource_type]["searchParam"]
    declared = {(p.name, p.type) for p in resource.params} | {
        (n, t) for n, (t, _) in SP.RESULT_PARAMS.items() if n in resource.results}
    assert {(p["name"], p["type"]) for p in listed} == declared
    assert len(listed) == len(declared)


def test_unknown_parameters_strict_and_lenient():
    params = {"patient.identifier": ["urn:oid:1.2|3"], "status": ["current"], "nonsense": ["1"],
              "category:not": ["x"], "_sort": ["title"], "_total": ["maybe"]}
    with pytest.raises(FhirError) as caught:
        S.document_search(params, strict=True)
    assert caught.value.status == 400 and len(caught.value.issues) == 4
    parsed, _ = S.document_search(params, strict=False)
    assert len(parsed.ignored) == 4
    assert {k for k, _ in parsed.applied} == {"patient.identifier", "status"}
    assert all(i.code == "not-supported" for i in caught.value.issues)


def test_a_search_is_bounded_before_any_sql():
    """Thousands of criteria made SQLite refuse the statement (answered 503, an outage that was not)."""
    many = {"family": [f"a{i}" for i in range(S.MAX_CRITERIA + 1)]}
    with pytest.raises(FhirError) as caught:
        S.patient_search(many)
    assert caught.value.status == 400 and caught.value.issues[0].code == "too-costly"
    parsed, _ = S.patient_search({"family": [f"a{i}" for i in range(S.MAX_CRITERIA)]})
    assert len(parsed.criteria) == S.MAX_CRITERIA
    with pytest.raises(FhirError) as caught:
        S.patient_search({"birthdate": [",".join(["1970"] * (S.MAX_ALTERNATIVES + 1))]})
    assert caught.value.status == 400 and "birthdate" in caught.value.issues[0].diagnostics
    parsed, _ = S.patient_search({"birthdate": [",".join(["1970"] * S.MAX_ALTERNATIVES)]})
    assert len(parsed.criteria[0].alternatives) == S.MAX_ALTERNATIVES
    assert S.patient_search({"identifier": [r"a\," * 500]})[0].criteria   # escaped commas are one value


def test_a_sort_key_given_twice_is_sorted_on_once():
    parsed, _ = S.patient_search({"_sort": [",".join(["birthdate"] * 50), "-birthdate"]})
    assert parsed.sort_keys == ["birthdate"] and len(parsed.sort) == 1 and len(parsed.ignored) == 50
    with pytest.raises(FhirError):
        S.patient_search({"_sort": ["birthdate,-birthdate"]}, strict=True)


def test_patient_identifier_cx():
    parsed, _ = S.document_search({"patient.identifier": ["urn:oid:1.2.250.1.213.1.4.10|279"],
                                   "status": ["current"]})
    assert parsed.patient_identifier() == CX("279", HD.iso("1.2.250.1.213.1.4.10"))


def test_the_conformance_page_names_every_declared_parameter():

    text = (Path(__file__).resolve().parents[2] / "docs" / "conformance.md").read_text(encoding="utf-8")
    section = text[text.index("## FHIR REST (R4) on /fhir"):]
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| resource")}
    for resource in (SP.DOCUMENT_REFERENCE, SP.LIST, SP.PATIENT):
        row = rows[resource.resource_type]
        missing = [p.name for p in resource.params if f"`{p.name}`" not in row]
        assert not missing, (resource.resource_type, missing)
        sortable = [p.name for p in resource.params if p.sort is not None]
        assert all(f"`{name}`" in row.split("|")[3] for name in sortable), resource.resource_type
