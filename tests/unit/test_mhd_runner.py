"""The MHD test-kit runner's FHIRPath dialect and verdicts: the asbestos (HAPI) semantics the
NIST scripts are written against, where plain FHIRPath would read them differently."""

from __future__ import annotations

from partage.conformance.mhd import engine
from partage.conformance.mhd.fhirpath import as_text, evaluate, is_true
from partage.fhir.update import apply_fhirpath_patch

BUNDLE = {"resourceType": "Bundle", "entry": [
    {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "DocumentReference", "status": "current",
                                          "contained": [{"resourceType": "Patient", "id": "#sp"}],
                                          "author": [{"reference": "#sp"}]}},
    {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Binary", "contentType": "text/plain"}}]}


def test_boolean_results_read_like_asbestos():
    assert is_true([True, False]) is True          # only the first item counts
    assert is_true([]) is False
    assert is_true(["anything"]) is True
    assert is_true([False]) is False
    assert as_text(["a", "b"]) == "[a, b]" and as_text([]) == "" and as_text([3]) == "3"


def test_hapi_dialect():
    # `x.(expr)` evaluates expr on each item
    assert evaluate(BUNDLE, "Bundle.entry.resource.(is(FHIR.DocumentReference))") == [True, False]
    # a type name at the start of a nested path filters by resource type
    assert evaluate(BUNDLE, "Bundle.entry.resource.contained.select(Patient.id)") == ["#sp"]
    assert evaluate(BUNDLE, "Bundle.entry.resource.contained.select(Practitioner.id)") == []
    assert evaluate(BUNDLE, "Bundle.entry.resource.((is(FHIR.DocumentReference) and author.exists()) implies "
                            "(author.reference in contained.(Practitioner.id | Patient.id)))")[0] is True
    # HAPI's `.value` of a primitive is the primitive
    assert evaluate(BUNDLE, "Bundle.entry.resource.where(is(DocumentReference)).status.value") == ["current"]


def test_variable_without_value_is_the_empty_collection(tmp_path):
    script = tmp_path / "TestScript.xml"
    script.write_text("""<TestScript xmlns="http://hl7.org/fhir">
      <variable><name value="profile"/><expression value="Bundle.meta.profile"/><sourceId value="anonymous"/></variable>
      <variable><name value="total"/><expression value="Bundle.entry.count()"/><sourceId value="anonymous"/></variable>
    </TestScript>""")
    env = engine.Environment("http://127.0.0.1:1/fhir", tmp_path, {}, tmp_path, tmp_path)
    run = engine.Script(script, env)
    assert run.substitute("true or ${profile}") == f"true or {engine.EMPTY}"
    assert evaluate({}, run.substitute("true or ${profile}")) == [True]
    assert run.substitute("${total}") == "0"


def test_verdicts():
    step = engine.Step
    assert engine.verdict([step("a", "", engine.PASS), step("a", "", engine.SKIPPED)]) == engine.PASS
    assert engine.verdict([step("a", "", engine.PASS), step("a", "", engine.NOT_RUN)]) == engine.NOT_RUN
    assert engine.verdict([step("a", "", engine.NOT_RUN), step("a", "", engine.FAIL)]) == engine.FAIL
    assert engine.verdict([step("a", "", engine.MANUAL_REVIEW), step("a", "", engine.WARNING)]) == engine.PASS


def test_fhirpath_patch_parameters():
    resource = {"resourceType": "DocumentReference", "status": "current",
                "securityLabel": [{"coding": [{"code": "N"}]}]}

    def op(kind, path, **parts):
        items = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
        items += [{"name": k, **v} for k, v in parts.items()]
        return {"name": "operation", "part": items}

    patched = apply_fhirpath_patch(resource, {"resourceType": "Parameters", "parameter": [
        op("replace", "DocumentReference.status", value={"valueCode": "superseded"}),
        op("replace", "DocumentReference.securityLabel[0]", value={"valueCodeableConcept": {"coding": [{"code": "R"}]}}),
        op("add", "DocumentReference", name={"valueString": "extension"}, value={"part": [
            {"name": "url", "valueUri": "urn:x"}, {"name": "valueBoolean", "valueBoolean": True}]})]})
    assert patched["status"] == "superseded"
    assert patched["securityLabel"] == [{"coding": [{"code": "R"}]}]
    assert patched["extension"] == [{"url": "urn:x", "valueBoolean": True}]
    assert resource["status"] == "current"           # the input is left alone
    removed = apply_fhirpath_patch(patched, {"parameter": [op("delete", "DocumentReference.extension.where(url='urn:x')")]})
    assert removed["extension"] == []
