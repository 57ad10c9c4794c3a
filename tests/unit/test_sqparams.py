"""ITI-18 parameter syntax and each query's parameter table."""

import pytest

from partage.metadata.errors import XdsErrors
from partage.xds.sqparams import Params, ParamSyntaxError, parse_value


@pytest.mark.parametrize("text, items", [
    ("('a')", ["a"]),
    ("('a','b')", ["a", "b"]),
    ("( 'a' , 'b' )", ["a", "b"]),
    ("'single'", ["single"]),
    ("200412", ["200412"]),
    ("('it''s')", ["it's"]),
    ("('x^^1.2','y^^1.3')", ["x^^1.2", "y^^1.3"]),
    ("(1, 2)", ["1", "2"]),
])
def test_values_parse(text, items):
    assert parse_value(text) == items


@pytest.mark.parametrize("text", ["", "('a'", "('a' 'b')", "'open", "()", "( )", "('a',)", "'a','b'", "'a'b'",
                                  "('a',,'b')"])
def test_malformed_values_raise(text):
    with pytest.raises(ParamSyntaxError):
        parse_value(text)


def test_and_or_groups_and_flattening():
    """ITI TF-2a 3.18.4.1.2.3.6: the values of one Slot (one list or several Value elements) are
    ORed, Slots of one AND/OR parameter ANDed."""
    p = Params("FindDocuments", {
        "$XDSDocumentEntryPatientId": [["'1^^^&1.2&ISO'"]],
        "$XDSDocumentEntryStatus": [["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]],
        "$XDSDocumentEntryEventCodeList": [["('a^^s')", "('b^^s')"], ["('c^^s')"]],
        "$XDSDocumentEntryClassCode": [["('x^^s')", "('y^^s')"]],
    })
    assert p.groups("$XDSDocumentEntryEventCodeList") == [["a^^s", "b^^s"], ["c^^s"]]
    assert p.groups("$XDSDocumentEntryClassCode") == [["x^^s", "y^^s"]]
    assert p.value("$XDSDocumentEntryPatientId") == "1^^^&1.2&ISO"


def test_a_parameter_without_and_semantics_repeated_is_refused():
    with pytest.raises(XdsErrors) as exc:
        Params("FindDocuments", {"$XDSDocumentEntryPatientId": [["'1^^^&1.2&ISO'"]],
                                 "$XDSDocumentEntryStatus": [["('Approved')"], ["('Deprecated')"]]})
    assert exc.value.codes == ["XDSStoredQueryParamNumber"]


def test_missing_required_parameter():
    with pytest.raises(XdsErrors) as exc:
        Params("FindDocuments", {"$XDSDocumentEntryPatientId": [["'1^^^&1.2&ISO'"]]})
    assert exc.value.codes == ["XDSStoredQueryMissingParam"]


def test_single_valued_parameter_given_twice():
    with pytest.raises(XdsErrors) as exc:
        Params("FindDocuments", {"$XDSDocumentEntryPatientId": [["('1^^^&1.2&ISO','2^^^&1.2&ISO')"]],
                                 "$XDSDocumentEntryStatus": [["('Approved')"]]})
    assert exc.value.codes == ["XDSStoredQueryParamNumber"]


def test_exactly_one_of_uuid_or_unique_id():
    with pytest.raises(XdsErrors) as both:
        Params("GetDocuments", {"$XDSDocumentEntryEntryUUID": [["('urn:uuid:1')"]],
                                "$XDSDocumentEntryUniqueId": [["('1.2')"]]})
    assert both.value.codes == ["XDSStoredQueryParamNumber"]
    with pytest.raises(XdsErrors) as neither:
        Params("GetDocuments", {})
    assert neither.value.codes == ["XDSStoredQueryMissingParam"]


def test_unknown_parameter_is_a_warning():
    p = Params("GetAssociations", {"$uuid": [["('urn:uuid:1')"]], "$Bogus": [["'x'"]]})
    assert [w.code for w in p.warnings] == ["XDSStoredQueryParamNumber"]


@pytest.mark.parametrize("value", ["('a^^')", "('^^1.2.3')", "('Dialysis')", "('x^^1.2', 'a^^')"])
def test_coded_parameter_needs_code_and_scheme(value):
    """ITI-18 coded values are code^^codingScheme (NIST 11897 classcode_scheme_mismatch, old_scheme)."""
    with pytest.raises(XdsErrors) as exc:
        Params("FindDocuments", {"$XDSDocumentEntryPatientId": [["'1^^^&1.2&ISO'"]],
                                 "$XDSDocumentEntryStatus": [["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]],
                                 "$XDSDocumentEntryClassCode": [[value]]})
    assert exc.value.codes == ["XDSRegistryError"]
    assert "$XDSDocumentEntryClassCode" in exc.value.summary()


def test_coded_parameters_of_every_query_are_checked():
    with pytest.raises(XdsErrors):
        Params("FindFolders", {"$XDSFolderPatientId": [["'1^^^&1.2&ISO'"]], "$XDSFolderStatus": [["('Approved')"]],
                               "$XDSFolderCodeList": [["('F1')"]]})
    with pytest.raises(XdsErrors):
        Params("FindSubmissionSets", {"$XDSSubmissionSetPatientId": [["'1^^^&1.2&ISO'"]],
                                      "$XDSSubmissionSetStatus": [["('Approved')"]],
                                      "$XDSSubmissionSetContentType": [["('04')"]]})
