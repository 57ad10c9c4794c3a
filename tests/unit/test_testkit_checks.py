"""The NIST test-kit runner's checks, without a server: response status and error codes,
ExpectedContents predicates, XPath assertions, and the affinity-domain code map."""

from __future__ import annotations

from lxml import etree

from partage.conformance.testkit.assertions import ContentsCheck, check_assertions, check_response
from partage.conformance.testkit.codes import QUERY_PARAMETERS, Code, CodeMap
from partage.conformance.testkit.plan import Assertion, Step
from partage.ebxml import constants as C
from partage.ebxml.soap import SoapError

RS, RIM, QUERY = C.RS, C.RIM, C.QUERY
CLASS_CODE = QUERY_PARAMETERS["$XDSDocumentEntryClassCode"]
SS, DOC = "urn:uuid:11111111-1111-4111-8111-111111111111", "urn:uuid:22222222-2222-4222-8222-222222222222"


def _registry_response(status: str, *codes: str) -> etree._Element:
    response = etree.Element(f"{{{RS}}}RegistryResponse", status=status)
    if codes:
        errors = etree.SubElement(response, f"{{{RS}}}RegistryErrorList")
        for code in codes:
            etree.SubElement(errors, f"{{{RS}}}RegistryError", errorCode=code, codeContext="why",
                             severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error")
    return response


def test_status_and_error_codes_are_compared():
    success = Step("s", expected_status=["Success"])
    assert check_response(success, _registry_response(C.STATUS_SUCCESS), None, "RegistryResponse") == []
    assert check_response(success, _registry_response(C.STATUS_FAILURE, "XDSRegistryError"), None,
                          "RegistryResponse")[0].startswith("status Failure, expected Success")
    refusal = Step("r", expected_status=["Failure"], expected_error_codes=["XDSRegistryMetadataError"])
    assert check_response(refusal, _registry_response(C.STATUS_FAILURE, "XDSRegistryMetadataError"), None,
                          "RegistryResponse") == []
    assert check_response(refusal, _registry_response(C.STATUS_FAILURE, "XDSRegistryError"), None,
                          "RegistryResponse") == [
        "expected error code XDSRegistryMetadataError, got XDSRegistryError"]


def test_a_fault_or_a_wrong_answer_element_fails():
    step = Step("s", expected_status=["Success"])
    assert check_response(step, None, SoapError("Receiver", "", "boom"), "RegistryResponse")[0].startswith(
        "SOAP Fault")
    query_answer = etree.Element(f"{{{QUERY}}}AdhocQueryResponse", status=C.STATUS_SUCCESS)
    assert check_response(step, query_answer, None, "RegistryResponse") == [
        "response is AdhocQueryResponse, expected RegistryResponse"]
    # a success status outside the ebRS namespace is not a success
    assert check_response(step, _registry_response("Success"), None, "RegistryResponse")


def _query_answer(*, with_association: bool = True, doc_status: str = C.STATUS_APPROVED) -> etree._Element:
    answer = etree.Element(f"{{{QUERY}}}AdhocQueryResponse", status=C.STATUS_SUCCESS)
    objects = etree.SubElement(answer, f"{{{RIM}}}RegistryObjectList")
    ss = etree.SubElement(objects, f"{{{RIM}}}RegistryPackage", id=SS, status=C.STATUS_APPROVED)
    etree.SubElement(ss, f"{{{RIM}}}ExternalIdentifier", identificationScheme=C.SS_UNIQUE_ID, value="1.2.3")
    etree.SubElement(objects, f"{{{RIM}}}ExtrinsicObject", id=DOC, status=doc_status)
    if with_association:
        etree.SubElement(objects, f"{{{RIM}}}Association", id="urn:uuid:a", sourceObject=SS, targetObject=DOC,
                         associationType=C.ASSOCIATION_HAS_MEMBER, status=C.STATUS_APPROVED)
    return answer


def _expect(*predicates: str) -> etree._Element:
    expected = etree.Element("ExpectedContents")
    for name in predicates:
        etree.SubElement(expected, name)
    return expected


def test_expected_contents_predicates():
    def check(answer, *predicates):
        return ContentsCheck(answer, lambda use: "").run(_expect(*predicates))

    assert check(_query_answer(), "SSwithOneDoc", "DocApp") == []
    assert check(_query_answer(with_association=False), "SSwithOneDoc") == [
        "found 0 Associations instead of 1"]
    assert check(_query_answer(doc_status=C.STATUS_DEPRECATED), "DocApp") == [
        f"DocumentEntry {DOC} has status Deprecated instead of Approved"]
    assert "a SubmissionSet was returned" in check(_query_answer(), "None")


def test_assertions_are_xpath_over_the_section_log():
    log = etree.Element("TestResults")
    etree.SubElement(log, "TestStep").append(_query_answer())
    good = Assertion("approved", "//*[local-name()='ExtrinsicObject']/@status = "
                                 "'urn:oasis:names:tc:ebxml-regrep:StatusType:Approved'")
    bad = Assertion("deprecated", "count(//*[local-name()='ExtrinsicObject'][@id='$doc$']) = 2")
    assert check_assertions([good], [("THIS", "output")], log, {}) == []
    problems = check_assertions([bad], [("THIS", "output")], log, {"$doc$": DOC})
    assert problems == [f"assertion deprecated is false: count(//*[local-name()='ExtrinsicObject'][@id='{DOC}']) = 2"]


def _classification(code: str, scheme: str) -> etree._Element:
    element = etree.Element(f"{{{RIM}}}Classification", classificationScheme=CLASS_CODE, nodeRepresentation=code)
    slot = etree.SubElement(element, f"{{{RIM}}}Slot", name="codingScheme")
    etree.SubElement(etree.SubElement(slot, f"{{{RIM}}}ValueList"), f"{{{RIM}}}Value").text = scheme
    return element


def test_code_map_replaces_foreign_codes_consistently():
    code_map = CodeMap({CLASS_CODE: [Code("A", "1.1", "first"), Code("B", "1.1", "second")]})
    template = etree.Element(f"{{{RIM}}}ExtrinsicObject")
    template.extend([_classification("X", "9.9"), _classification("A", "1.1"), _classification("X", "9.9"),
                     _classification("Y", "9.9")])
    assert code_map.translate_metadata(template) == 3
    codes = [c.get("nodeRepresentation") for c in template]
    assert codes[1] == "A"                      # a domain code stays
    assert codes[0] == codes[2]                 # one foreign code, one replacement
    assert codes[3] != codes[0]                 # different foreign codes stay different
    assert set(codes) <= {"A", "B"}
    query = etree.Element(f"{{{RIM}}}AdhocQuery")
    slot = etree.SubElement(query, f"{{{RIM}}}Slot", name="$XDSDocumentEntryClassCode")
    value = etree.SubElement(etree.SubElement(slot, f"{{{RIM}}}ValueList"), f"{{{RIM}}}Value")
    value.text = "('X^^9.9', 'A^^1.1')"
    code_map.translate_query(query)
    assert value.text == f"('{codes[0]}^^1.1', 'A^^1.1')"
