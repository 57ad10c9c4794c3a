"""The MHD test-kit runner reads and judges as asbestos does, and fails a wrong server.

Three layers: what asbestos' HAPI and its fixture service do to a fixture before it is sent;
FHIRPath as HAPI evaluates it (fhirpathpy underneath); the TestEngine's verdicts on small
scripts written for the purpose; then the NIST scripts against a fake Document Recipient
that makes one mistake at a time (tests/mhd_fake_recipient.py), each of which must fail.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from partage.conformance.mhd import engine, fixtures, hapi, model, runner
from partage.conformance.mhd.fhirpath import (
    FhirPathError,
    as_text,
    eval_for_boolean,
    eval_for_entry_resource,
    eval_for_string,
    evaluate,
    evaluate_items,
)
from partage.conformance.mhd.fhirpath_dialect import rewrite
from tests.conftest import corpus_path
from tests.mhd_fake_recipient import FakeRecipient

NS = 'xmlns="http://hl7.org/fhir"'
MINIMAL = "MHDv420_DocumentRecipient_minimal"
PREREQUISITE = "1_Prerequisite_Single_Document_with_Binary"


# --- what HAPI does to a fixture ------------------------------------------------------------------------

def test_hapi_keeps_the_first_repeat_and_says_so():
    parsed = hapi.read_xml(f"""<Coding {NS}><system value="s"/><code value="first"/><code value="second"/>
      <nonsense value="x"/></Coding>""")
    assert parsed.resource == {"resourceType": "Coding", "system": "s", "code": "first"}
    assert any("Multiple repetitions of non-repeatable element 'code'" in w for w in parsed.warnings)
    assert any("Unknown element 'nonsense'" in w for w in parsed.warnings)


def test_hapi_does_not_require_what_the_schema_requires():
    """A fixture missing a required element is sent as it is: the server must judge it."""
    parsed = hapi.read_xml(f"<DocumentReference {NS}><description value='no status, no content'/></DocumentReference>")
    assert parsed.resource == {"resourceType": "DocumentReference", "description": "no status, no content"}
    assert parsed.warnings == []


def test_hapi_xml_round_trip_keeps_the_resource():
    text = f"""<Bundle {NS}><id value="b"/><type value="transaction"/><total value="2"/>
      <entry><fullUrl value="urn:uuid:1"/><resource><DocumentReference>
        <contained><Patient><id value="sp"/><name><given value="A"/><given value="B"/></name></Patient></contained>
        <extension url="u"><valueBoolean value="true"/></extension>
        <status value="current"><extension url="e"><valueCode value="x"/></extension></status>
        <content><attachment><contentType value="text/plain"/><size value="12"/></attachment></content>
      </DocumentReference></resource><request><method value="POST"/><url value="DocumentReference"/></request></entry>
    </Bundle>"""
    first = hapi.read_xml(text).resource
    assert first["entry"][0]["resource"]["contained"][0]["name"][0]["given"] == ["A", "B"]
    assert first["entry"][0]["resource"]["_status"] == {"extension": [{"url": "e", "valueCode": "x"}]}
    assert first["total"] == 2 and first["entry"][0]["resource"]["content"][0]["attachment"]["size"] == 12
    assert hapi.read_xml(hapi.write(first, hapi.XML)).resource == first
    assert hapi.read_json(hapi.write(first, hapi.JSON)).resource == first
    assert hapi.memory_view(first)["entry"][0]["resource"]["contained"][0]["id"] == "#sp"
    assert first["entry"][0]["resource"]["contained"][0]["id"] == "sp"       # the view is a copy


def test_hapi_refuses_what_is_not_fhir():
    for text in ("<Bundle/>", "<x:Bundle xmlns:x='urn:other'/>", "not xml", f"<Nonsense {NS}/>"):
        with pytest.raises(hapi.FormatError):
            hapi.read_xml(text)


# --- asbestos' fixture service --------------------------------------------------------------------------

def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _bundle(note: str, extra: str = "") -> str:
    return f"<Bundle {NS}><id value='{note}'/><type value='transaction'/>{extra}</Bundle>"


def test_fixture_lookup_order(tmp_path):
    """FixturePartsLoader.loadFixture: the test's folder, then ../Common, then the base collection."""
    _write(tmp_path / "Coll" / "T" / "TestScript.xml", f"<TestScript {NS}/>")
    _write(tmp_path / "Base" / "T" / "Bundle" / "pdb.xml", _bundle("base"))
    _write(tmp_path / "Base" / "Other" / "Bundle" / "pdb.xml", _bundle("base-other"))
    params = {"fixtureId": "pdb", "baseTestCollection": "Base"}
    load = fixtures.load_fixture
    assert load(tmp_path, "Coll", "T", params).bundle["id"] == "base"
    assert load(tmp_path, "Coll", "T", {**params, "baseTestName": "Other"}).bundle["id"] == "base-other"
    _write(tmp_path / "Coll" / "Common" / "pdb.xml", _bundle("common"))
    assert load(tmp_path, "Coll", "T", params).bundle["id"] == "common"
    _write(tmp_path / "Coll" / "T" / "Bundle" / "pdb.xml", _bundle("own"))
    assert load(tmp_path, "Coll", "T", params).bundle["id"] == "own"
    with pytest.raises(fixtures.FixtureError):
        load(tmp_path, "Coll", "T", {"fixtureId": "absent", "baseTestCollection": "Base"})
    with pytest.raises(fixtures.FixtureError):              # no path traversal through the names
        load(tmp_path, "Coll", "T", {"fixtureId": "../T/Bundle/pdb"})


def test_fixture_placeholders(tmp_path):
    _write(tmp_path / "Coll" / "T" / "TestScript.xml", f"<TestScript {NS}/>")
    _write(tmp_path / "Coll" / "U" / "TestScript.xml", f"<TestScript {NS}/>")
    profile = "<meta><profile value='p'/></meta>"
    _write(tmp_path / "Base" / "T" / "Bundle" / "pdb.xml",
           _bundle("x", "<!--@{BundleMetaMinimalProfileElement}--><entry><fullUrl value='urn:uuid:@{RandomUUID}'/></entry>"
                   ).replace("<id value='x'/>", ""))
    _write(tmp_path / "Coll" / "Common" / "BundleMetaMinimalProfileElement.xml", profile)
    loaded = fixtures.load_fixture(tmp_path, "Coll", "T", {"fixtureId": "pdb", "baseTestCollection": "Base"})
    assert loaded.bundle["meta"] == {"profile": ["p"]}
    assert loaded.bundle["entry"][0]["fullUrl"].startswith("urn:uuid:") and "@{" not in loaded.bundle["entry"][0]["fullUrl"]
    _write(tmp_path / "Base" / "U" / "Bundle" / "pdb.xml", _bundle("y", "<!--@{NotAnAsbestosName}-->"))
    with pytest.raises(fixtures.FixtureError, match="Do not understand"):
        fixtures.load_fixture(tmp_path, "Coll", "U", {"fixtureId": "pdb", "baseTestCollection": "Base"})


def test_identifiers_renumbered_as_asbestos_does():
    bundle = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "List", "identifier": [
            {"use": "official", "system": "urn:ietf:rfc:3986", "value": "keep-official"},
            {"use": "usual", "system": "urn:other", "value": "keep-other-system"},
            {"use": "usual", "system": "urn:ietf:rfc:3986", "value": "renumber"}]}},
        {"resource": {"resourceType": "DocumentReference", "masterIdentifier": {"value": "renumber"},
                      "identifier": [{"value": "keep"}]}}]}
    fixtures.allocate_ids(bundle)
    ids = bundle["entry"][0]["resource"]["identifier"]
    assert [i["value"] for i in ids[:2]] == ["keep-official", "keep-other-system"]
    master = bundle["entry"][1]["resource"]["masterIdentifier"]["value"]
    assert ids[2]["value"].startswith("urn:oid:1.2.") and master.startswith("urn:oid:1.2.")
    assert ids[2]["value"] != master and bundle["entry"][1]["resource"]["identifier"] == [{"value": "keep"}]
    again = json.loads(json.dumps(bundle))
    fixtures.allocate_ids(again)
    assert again["entry"][1]["resource"]["masterIdentifier"]["value"] != master


# --- FHIRPath as HAPI evaluates it ---------------------------------------------------------------------

BUNDLE = {"resourceType": "Bundle", "type": "transaction", "entry": [
    {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "DocumentReference", "status": "current",
                                          "contained": [{"resourceType": "Patient", "id": "#sp"}],
                                          "author": [{"reference": "#sp"}],
                                          "context": {"sourcePatientInfo": {"reference": "#other"}}}},
    {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Binary", "contentType": "text/plain"}}]}


def test_precedence_is_hapis():
    """`in` is not ranked in HAPI: `a and b and c in d` is `(a and b and c) in d`."""
    assert rewrite("a and b in c") == "((a and b) in c)"
    assert rewrite("a = b and c or d") == "(((a = b) and c) or d)"
    assert rewrite("a | b is T") == "((a | b))._hapiIsOp('T')"
    expression = ("Bundle.entry.select(resource as DocumentReference).select(context.exists() and "
                  "context.sourcePatientInfo.exists() and context.sourcePatientInfo.reference in "
                  "contained.where(is(Patient)).id).allTrue()")
    # standard FHIRPath would say false (the reference resolves to nothing); HAPI says true
    assert eval_for_string(BUNDLE, expression) == "true"
    assert eval_for_string(BUNDLE, "Bundle.entry[0].resource.context.sourcePatientInfo.reference in "
                                   "Bundle.entry[0].resource.contained.id") == "false"


def test_hapi_forms():
    assert evaluate(BUNDLE, "Bundle.entry.resource.(is(FHIR.DocumentReference))") == [False]   # whole focus
    assert evaluate(BUNDLE, "Bundle.entry[0].resource.(is(FHIR.DocumentReference))") == [True]
    assert evaluate(BUNDLE, "Bundle.entry.resource.contained.select(Patient.id)") == ["#sp"]
    assert evaluate(BUNDLE, "Bundle.entry.resource.where(is(DocumentReference)).status.value") == ["current"]
    assert evaluate(BUNDLE, "Bundle.entry[0].resource is DocumentReference") == [True]
    assert evaluate(BUNDLE, "Bundle.entry[0].resource is FHIR.DocumentReference") == [False]  # name as written
    assert evaluate(BUNDLE, "Bundle.entry.resource is DocumentReference") == [False]          # not one item
    assert evaluate(BUNDLE, "Bundle.entry.resource as Binary") == [BUNDLE["entry"][1]["resource"]]
    assert evaluate(BUNDLE, "true and 'abc'") == []            # a string is neither true nor false
    assert evaluate(BUNDLE, "true and 'yes'") == [True]
    assert evaluate(BUNDLE, "('a'|'b') = ('a'|'c')") == [False]
    assert evaluate(BUNDLE, "{} in ('a')") == [] and evaluate(BUNDLE, "'a' in {}") == [False]


def test_equivalence_of_collections():
    assert eval_for_boolean({}, "('TR_1'|'SUBJ4_3')~('SUBJ4_3'|'TR_1')") is True
    assert eval_for_boolean({}, "('TR_1')~('SUBJ4_3'|'TR_1')") is False
    assert eval_for_boolean({}, "('TR_1'|'SUBJ4_3')~('TR_1')") is False


def test_results_as_asbestos_writes_them():
    assert eval_for_string(BUNDLE, "Bundle.entry.count()") == "2"
    assert eval_for_string(BUNDLE, "Bundle.entry.fullUrl") == \
        "[UriType, UriType]"
    assert eval_for_string(BUNDLE, "'a' | 'b'") == "[StringType[StringType[a]], StringType[StringType[b]]]"
    assert eval_for_string(BUNDLE, "Bundle.entry.resource.where(is(Binary))") == "Binary"
    assert eval_for_string({"resourceType": "List", "date": "2020-01-01"}, "List.date") == "DateTimeType"
    assert eval_for_string({"resourceType": "Patient", "birthDate": "1950-02-23"}, "Patient.birthDate") == "1950-02-23"
    assert eval_for_string({"resourceType": "List"}, "List") == "ListResource"
    assert eval_for_string(BUNDLE, "Bundle.id") is None
    assert eval_for_string(None, "anything") == ""
    assert eval_for_boolean(BUNDLE, "Bundle.entry.fullUrl") is True      # first item, not a boolean
    assert eval_for_boolean(BUNDLE, "(false | true)") is False            # only the first item counts
    assert eval_for_entry_resource(BUNDLE, "Bundle.entry.where(resource is Binary)") == BUNDLE["entry"][1]["resource"]
    assert eval_for_entry_resource(BUNDLE, "Bundle.entry") is None        # not exactly one
    assert as_text(evaluate_items({}, "{}")) is None
    with pytest.raises(FhirPathError):
        evaluate(BUNDLE, "Bundle.entry.(")


# --- the TestEngine's verdicts on small scripts ---------------------------------------------------------

def _assert(aid: str, expression: str, extra: str = "") -> str:
    return f"""<action>{extra}<assert id="{aid}"><description value="{aid}"/>
      <compareToSourceId value="data"/><compareToSourceExpression value="{expression}"/>
      <warningOnly value="false"/></assert></action>"""


DATA_FIXTURE = """<fixture id="data"><autocreate value="false"/><autodelete value="false"/>
  <resource><reference value="Bundle/data.xml"/></resource></fixture>"""


def _script(body: str, header: str = "", variables: str = "") -> str:
    return f"<TestScript {NS}>{header}{DATA_FIXTURE}{variables}{body}</TestScript>"


def _run(tmp_path: Path, script: str, **files: str) -> model.Report:
    folder = tmp_path / "Coll" / "T"
    _write(folder / "TestScript.xml", script)
    _write(folder / "Bundle" / "data.xml", _bundle("d", "<entry><fullUrl value='urn:uuid:1'/></entry>"))
    for name, text in files.items():
        _write(folder / name, text)
    env = model.Environment("http://127.0.0.1:9/fhir", tmp_path)
    ctx = model.TestContext(env, "Coll", "T", {"Id": "Coll", "FhirIgName": "X"})
    return engine.Engine(folder / "TestScript.xml", ctx, cache_dirs=[folder, None]).run()


MODULE = f"""<TestScript {NS}><modifierExtension url="urn:module">
  <extension url="urn:fixture-in"><valueString value="data"/></extension></modifierExtension>
  <test>{_assert("A", "false")}</test><test>{_assert("B", "false")}</test><test>{_assert("C", "true")}</test>
</TestScript>"""


@pytest.mark.parametrize("expected,outcome", [
    ("('A'|'B')", model.PASS), ("('B'|'A')", model.PASS), ("('A')", model.FAIL), ("('A'|'B'|'C')", model.FAIL),
])
def test_expected_failures_are_an_exact_set(tmp_path, expected, outcome):
    call = """<test><action>
      <modifierExtension url="urn:asbestos:test:action:expectFailure">
        <extension url="urn:asbestos:test:action:assertionIdList"><valueString value="${ids}"/></extension>
      </modifierExtension>
      <operation><modifierExtension url="https://github.com/usnistgov/asbestos/wiki/TestScript-Import">
        <extension url="component"><valueString value="module.xml"/></extension>
        <extension url="urn:fixture-in"><valueString value="data"/></extension>
      </modifierExtension></operation></action></test>"""
    outer = f"""<TestScript {NS}>{DATA_FIXTURE}
      <variable><name value="expectedIds"/><defaultValue value="{expected}"/></variable>
      <test><action><operation><modifierExtension
        url="https://github.com/usnistgov/asbestos/wiki/TestScript-Import">
        <extension url="component"><valueString value="inner.xml"/></extension>
        <extension url="urn:variable-in"><valueString value="expectedIds"/></extension>
      </modifierExtension></operation></action></test></TestScript>"""
    inner = f"""<TestScript {NS}><modifierExtension url="urn:module">
      <extension url="urn:variable-in"><valueString value="ids"/></extension></modifierExtension>
      {DATA_FIXTURE}{call}</TestScript>"""
    report = _run(tmp_path, outer, **{"inner.xml": inner, "module.xml": MODULE})
    assert report.result == outcome, json.dumps(report.as_dict(), indent=1)[:3000]
    call_report = report.tests()[0].actions[0].module
    expect_action = call_report.tests()[0].actions[0]          # the expectFailure action itself
    assert expect_action.module.error_report() == (model.FAIL, "'A'|'B'")   # what was compared
    assert not any(a.result == model.ERROR for a in call_report.actions())


def test_first_failure_ends_its_test_and_no_errors_stops_the_rest(tmp_path):
    report = _run(tmp_path, _script(
        f"<test>{_assert('X', 'false')}{_assert('Y', 'true')}</test>"
        f"<test>{_assert('Z', 'true')}</test>"
        f"<test><modifierExtension url='urn:noErrors'/>{_assert('W', 'true')}</test>"))
    assert report.result == model.FAIL
    assert [[a.assert_id for a in s.actions] for s in report.tests()] == [["X"], ["Z"]]
    assert report.error_report() == (model.FAIL, "'X'")


def test_a_failed_condition_does_not_fail_the_script(tmp_path):
    conditional = '<modifierExtension url="https://github.com/usnistgov/asbestos/wiki/TestScript-Conditional"/>'
    report = _run(tmp_path, _script(f"<test>{_assert('IF', 'false', conditional)}{_assert('NEVER', 'false')}</test>"
                                    f"<test>{_assert('AFTER', 'true')}</test>"))
    assert report.result == model.PASS
    assert [a.assert_id for a in report.tests()[0].actions] == ["IF"] and report.tests()[0].actions[0].conditional


def test_variables_as_asbestos_resolves_them(tmp_path):
    variables = """<variable><name value="count"/><expression value="Bundle.entry.count()"/><sourceId value="data"/></variable>
      <variable><name value="nothing"/><expression value="Bundle.id.where(false)"/><sourceId value="data"/></variable>
      <variable><name value="chain"/><defaultValue value="${count} + 1"/></variable>"""
    report = _run(tmp_path, _script(
        f"<test>{_assert('S', '${chain} = 2')}{_assert('E', '${nothing}.empty()')}</test>", variables=variables))
    assert report.result == model.PASS, json.dumps(report.as_dict(), indent=1)
    undefined = _run(tmp_path, _script(f"<test>{_assert('U', '${undefined} = 1')}</test>"))
    assert undefined.result == model.FAIL
    assert "referenced but not defined" in undefined.tests()[0].actions[0].message


def test_a_module_called_with_the_wrong_arguments_is_an_error(tmp_path):
    call = """<test><action><operation><modifierExtension url="https://github.com/usnistgov/asbestos/wiki/TestScript-Import">
      <extension url="component"><valueString value="module.xml"/></extension></modifierExtension></operation></action></test>"""
    report = _run(tmp_path, _script(call), **{"module.xml": MODULE})
    assert report.result == model.FAIL
    assert "inbound fixture" in report.tests()[0].actions[0].message


def test_an_assertion_on_a_response_without_body_is_an_error(tmp_path):
    """AssertionRunner.validate: a fixture with no resource errs (asbestos never reads such a
    response as a pass), whatever the assertion."""
    env = model.Environment("http://127.0.0.1:9/fhir", tmp_path)
    ctx = model.TestContext(env, "Coll", "T", {})
    folder = tmp_path / "Coll" / "T"
    _write(folder / "TestScript.xml", f"<TestScript {NS}/>")
    script = engine.Engine(folder / "TestScript.xml", ctx, cache_dirs=[folder, None])
    script._put("r", model.Fixture("r", None, 404))
    action = model.Action("assert", "")
    from lxml import etree
    script._assert(etree.fromstring(f"""<assert {NS}><sourceId value="r"/><response value="notFound"/>
      <warningOnly value="false"/></assert>"""), action)
    assert action.result == model.ERROR


# --- the NIST scripts against a wrong server -----------------------------------------------------------

@pytest.fixture(scope="module")
def collections():
    return corpus_path("mhd", "TestCollections")


def _kit(fake: FakeRecipient, collections: Path, tests: list[str], **kwargs) -> dict[str, runner.TestResult]:
    out = io.StringIO()
    results = runner.run(collections, fake.base, [MINIMAL], out=out, tests=tests, **kwargs)
    return {r.test: r for r in results}


def test_a_recipient_that_accepts_broken_bundles_fails_the_negative_tests(collections):
    with FakeRecipient("correct") as fake:
        results = _kit(fake, collections, [PREREQUISITE, "Missing_SourceId", "DocumentReplace"])
        sent = fake.received
    assert results[PREREQUISITE].outcome == runner.PASSED, results[PREREQUISITE].reason
    assert results["Missing_SourceId"].outcome == runner.FAILED
    assert "expected is bad" in results["Missing_SourceId"].reason and "found is okay" in results["Missing_SourceId"].reason
    # the fake never supersedes the original: the replace test must say so
    assert results["DocumentReplace"].outcome == runner.FAILED and "superseded" in results["DocumentReplace"].reason
    # what went on the wire is HAPI's re-serialisation: one code per Coding, fresh unique ids
    codings = [c for b in sent for e in b["entry"] for c in
               (e["resource"].get("context", {}).get("practiceSetting", {}).get("coding", []))]
    assert all(isinstance(c.get("code"), str) for c in codings)
    masters = [e["resource"]["masterIdentifier"]["value"] for b in sent for e in b["entry"]
               if e["resource"]["resourceType"] == "DocumentReference"]
    assert len(masters) == len(set(masters)) and all(m.startswith("urn:oid:1.2.") for m in masters)


@pytest.mark.parametrize("mode,reason", [
    ("no_location", "response.location.exists()"),
    ("html_errors", "has no resource"),
    ("empty_search", "cannot be loaded"),
])
def test_each_mistake_fails_the_prerequisite(collections, mode, reason):
    with FakeRecipient(mode) as fake:
        results = _kit(fake, collections, [PREREQUISITE, "Missing_SourceId"])
    assert results[PREREQUISITE].outcome == runner.FAILED and reason in results[PREREQUISITE].reason
    # a negative test reads its prerequisite's answer, which asbestos gives only if it passed
    assert results["Missing_SourceId"].outcome == runner.FAILED


def test_the_token_goes_with_every_request(collections, tmp_path):
    with FakeRecipient("correct") as fake:
        _kit(fake, collections, [PREREQUISITE], token="header.payload.signature")
        seen = [h.get("Authorization") for h in fake.headers]
    assert seen and set(seen) == {"Bearer header.payload.signature"}


def test_cli_reads_the_token_file(collections, tmp_path):
    token = tmp_path / "gp.jwt"
    token.write_text("abc.def.ghi\n")
    with FakeRecipient("correct") as fake:
        done = subprocess.run([sys.executable, "-m", "partage.cli", "testkit", "mhd", "--collections",
                               str(collections.parent), "--fhir", fake.base, "--collection", MINIMAL,
                               "--test", PREREQUISITE, "--token", str(token)],
                              capture_output=True, text=True, timeout=300)
        seen = {h.get("Authorization") for h in fake.headers}
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen == {"Bearer abc.def.ghi"}
    missing = subprocess.run([sys.executable, "-m", "partage.cli", "testkit", "mhd", "--collections",
                              str(collections.parent), "--token", str(tmp_path / "absent.jwt")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "cannot read the token file" in missing.stderr
    assert "Traceback" not in missing.stderr
