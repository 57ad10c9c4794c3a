"""ITI-18 Registry Stored Query judged clause by clause (review, round 3), over the wire.

What the NIST SQ.b collection does not send: one Slot holding several Value elements of an
AND/OR parameter (ITI TF-2a 3.18.4.1.2.3.6: the values of one Slot are ORed, Slots of the same
name ANDed), a parameter without AND/OR semantics given in two Slots, value lists that are not
the 3.18.4.1.2.3.5 syntax (an empty list, a list without its parentheses, a trailing comma), a
single-valued parameter of GetFoldersForDocument given several values, a parameter a query does
not define standing for a required one, $XDSDocumentEntryType left out (Stable entries only) or
given a value that is neither type, and the coded parameters of GetAll. Every request is a
real SOAP request to a served `partage serve`.
"""

from __future__ import annotations

import pytest
from lxml import etree

from partage.ebxml import constants as C
from partage.metadata.datatypes import CX
from partage.metadata.model import Association, AssociationType, Code, ObjectType
from tests import factories as F
from tests.support import served_with_services
from tests.xdsclient import Reply, XdsClient, objects_of

RIM = f"{{{C.RIM}}}"
Q = f"{{{C.QUERY}}}"
APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
EVERY_STATUS = ("('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved',"
                "'urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated')")
EVENT = "1.2.3.4"
REFERRAL = "urn:ihe:iti:xds:2013:referral"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served_with_services(tmp_path_factory.mktemp("sqround3") / "data", mllp=False) as live:
        yield live


def _patient(server) -> CX:
    pid = F.patient_id()
    with server.services.registry.write() as conn:
        server.services.registry.upsert_patient(conn, [pid])
    return pid


def _file(server, pid, docs, **kwargs):
    request = F.submission(pid, docs, **kwargs)
    reply = XdsClient(server.base_url).provide_and_register(
        request, {d.entry_uuid: f"<doc>{d.unique_id}</doc>".encode() for d in docs})
    assert reply.status == "Success", reply.error_codes
    return request


def _query(server, name: str, slots: list[tuple[str, list[str]]], return_type: str = "LeafClass") -> Reply:
    """An AdhocQueryRequest with exactly these Slots, in this order (a name may repeat)."""
    body = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
    etree.SubElement(body, Q + "ResponseOption", returnType=return_type, returnComposedObjects="true")
    adhoc = etree.SubElement(body, RIM + "AdhocQuery", id=C.STORED_QUERY_IDS[name])
    for key, values in slots:
        value_list = etree.SubElement(etree.SubElement(adhoc, RIM + "Slot", name=key), RIM + "ValueList")
        for value in values:
            etree.SubElement(value_list, RIM + "Value").text = value
    return XdsClient(server.base_url).call(f"{server.base_url}/xds/registry", C.ACTION_STORED_QUERY, body)


def _find(server, pid, *slots: tuple[str, list[str]], status: str = APPROVED) -> Reply:
    return _query(server, "FindDocuments", [("$XDSDocumentEntryPatientId", [f"'{pid}'"]),
                                            ("$XDSDocumentEntryStatus", [status]), *slots])


def _uids(reply: Reply) -> set[str]:
    """The uniqueIds of the DocumentEntries an answer holds."""
    assert reply.status == "Success", reply.error_codes
    return {e.get("value") for e in reply.body.iter(f"{RIM}ExternalIdentifier")
            if e.get("identificationScheme") == C.DOC_UNIQUE_ID}


def _refused(reply: Reply, *codes: str) -> None:
    assert reply.status == "Failure", (reply.status, reply.error_codes)
    assert reply.error_codes and set(reply.error_codes) <= set(codes), reply.error_codes


# --------------------------------------------------------------------------- 3.18.4.1.2.3.6 AND/OR
@pytest.fixture(scope="module")
def events(server):
    """Three documents of one patient: event codes a, b, and a with b."""
    pid = _patient(server)
    docs = {name: F.document(pid, f"d{name}", event_codes=[Code(c, EVENT) for c in codes],
                             confidentiality_codes=[Code(c, "2.16.840.1.113883.5.25") for c in conf])
            for name, codes, conf in (("a", ["EA"], ["N"]), ("b", ["EB"], ["R"]), ("ab", ["EA", "EB"], ["N", "R"]))}
    _file(server, pid, list(docs.values()))
    return pid, {name: d.unique_id for name, d in docs.items()}


@pytest.mark.parametrize("param, a, b", [
    ("$XDSDocumentEntryEventCodeList", f"EA^^{EVENT}", f"EB^^{EVENT}"),
    ("$XDSDocumentEntryConfidentialityCode", "N^^2.16.840.1.113883.5.25", "R^^2.16.840.1.113883.5.25"),
])
def test_values_of_one_slot_are_ored_and_slots_of_one_name_anded(server, events, param, a, b):
    """ITI TF-2a 3.18.4.1.2.3.6: within one Slot the values are ORed, whether written as one
    list `('a','b')` or as several Value elements; a second Slot of the same name is ANDed
    (the NIST toolkit reads them so: one SQCodeOr per Slot, an SQCodeAnd of the Slots). Several
    Value elements in one Slot were read as an AND."""
    pid, uid = events
    everyone = {uid["a"], uid["b"], uid["ab"]}
    assert _uids(_find(server, pid, (param, [f"('{a}','{b}')"]))) == everyone
    assert _uids(_find(server, pid, (param, [f"('{a}')", f"('{b}')"]))) == everyone
    assert _uids(_find(server, pid, (param, [f"('{a}')"]), (param, [f"('{b}')"]))) == {uid["ab"]}
    assert _uids(_find(server, pid, (param, [f"('{a}')", f"('{b}')"]), (param, [f"('{b}')"]))) == {
        uid["b"], uid["ab"]}


@pytest.mark.parametrize("param, value", [
    ("$XDSDocumentEntryClassCode", "('10^^1.2.250.1.213.1.1.4.1')"),
    ("$XDSDocumentEntryStatus", APPROVED),
    ("$XDSDocumentEntryAuthorPerson", "('%')"),
    ("$XDSDocumentEntryCreationTimeFrom", "2020"),
])
def test_a_parameter_without_and_semantics_given_in_two_slots_is_refused(server, events, param, value):
    """ITI TF-2a 3.18.4.1.2.3.6: AND semantics (a second Slot of one name) exist for the
    parameters the query tables mark so; ebRIM 3.0 names a Slot once per object. Any other
    parameter given in two Slots is an error (the toolkit: "defined multiple times"), not
    silently merged into an OR."""
    pid, _ = events
    base = [("$XDSDocumentEntryPatientId", [f"'{pid}'"]), ("$XDSDocumentEntryStatus", [APPROVED])]
    slots = [*base, (param, [value])] if param != "$XDSDocumentEntryStatus" else base
    reply = _query(server, "FindDocuments", [*slots, (param, [value])])
    _refused(reply, "XDSStoredQueryParamNumber", "XDSRegistryError")


def test_reference_id_slots_are_anded(server):
    """$XDSDocumentEntryReferenceIdList has AND/OR semantics (FindDocumentsByReferenceId, and
    Partage's own parameter table says so); two Slots were flattened into one OR."""
    pid = _patient(server)
    r1, r2 = (f"{n}^^^&1.2.250.1.999.7&ISO^{REFERRAL}" for n in ("R1", "R2"))
    one = F.document(pid, "one", reference_ids=[CX.parse(r1)])
    both = F.document(pid, "both", reference_ids=[CX.parse(r1), CX.parse(r2)])
    _file(server, pid, [one, both])
    base = [("$XDSDocumentEntryPatientId", [f"'{pid}'"]), ("$XDSDocumentEntryStatus", [APPROVED])]
    name, param = "FindDocumentsByReferenceId", "$XDSDocumentEntryReferenceIdList"
    assert _uids(_query(server, name, [*base, (param, [f"('{r1}','{r2}')"])])) == {one.unique_id, both.unique_id}
    assert _uids(_query(server, name, [*base, (param, [f"('{r1}')"]), (param, [f"('{r2}')"])])) == {both.unique_id}


# --------------------------------------------------------------------------- 3.18.4.1.2.3.5 value coding
@pytest.mark.parametrize("param, value", [
    ("$XDSDocumentEntryStatus", "()"),                  # an empty list: every status, Deprecated too
    ("$XDSDocumentEntryClassCode", "( )"),
    ("$XDSDocumentEntryAuthorPerson", "('%',)"),          # a trailing comma
    ("$XDSDocumentEntryAuthorPerson", "'%','x'"),         # a list without its parentheses
    ("$XDSDocumentEntryAuthorPerson", "'O'B%'"),          # a quote inside a string not doubled
    ("$XDSDocumentEntryAuthorPerson", "('%' 'x')"),
    ("$XDSDocumentEntryAuthorPerson", "('%'"),
])
def test_a_value_not_in_the_stored_query_syntax_is_an_error(server, events, param, value):
    """ITI TF-2a 3.18.4.1.2.3.5: a string is quoted (an embedded quote doubled), several values
    are a parenthesized, comma-separated list of at least one value. A value written otherwise
    is an XDSRegistryError naming the parameter, never read as some other filter: an empty
    status list selected every status, `'a','b'` was one string `a','b`."""
    pid, _ = events
    slots = [("$XDSDocumentEntryPatientId", [f"'{pid}'"])]
    if param != "$XDSDocumentEntryStatus":
        slots.append(("$XDSDocumentEntryStatus", [APPROVED]))
    reply = _query(server, "FindDocuments", [*slots, (param, [value])])
    _refused(reply, "XDSRegistryError")


def test_well_formed_values_are_still_read(server, events):
    pid, uid = events
    everyone = {uid["a"], uid["b"], uid["ab"]}
    assert _uids(_find(server, pid, ("$XDSDocumentEntryAuthorPerson", ["( '%MARTIN%' , 'x''y' )"]))) == everyone
    assert _uids(_find(server, pid, ("$XDSDocumentEntryAuthorPerson", ["'%MARTIN%'"]))) == everyone
    assert _uids(_find(server, pid, ("$XDSDocumentEntryCreationTimeFrom", ["20240315093000"]),
                       ("$XDSDocumentEntryCreationTimeTo", ["20240315093001"]))) == everyone
    assert _uids(_find(server, pid, ("$XDSDocumentEntryCreationTimeTo", ["20240315093000"]))) == set()


# --------------------------------------------------------------------------- 3.18.4.1.2.3.7 the query list
def test_get_folders_for_document_takes_one_document(server, events):
    """ITI TF-2a 3.18.4.1.2.3.7: GetFoldersForDocument's $XDSDocumentEntryEntryUUID and
    $XDSDocumentEntryUniqueId are single-valued: several values are XDSStoredQueryParamNumber
    (3.18.4.1.2.4), not an answer about the first document only."""
    _, uid = events
    reply = _query(server, "GetFoldersForDocument",
                   [("$XDSDocumentEntryUniqueId", [f"('{uid['a']}','{uid['b']}')"])])
    _refused(reply, "XDSStoredQueryParamNumber")
    assert _query(server, "GetFoldersForDocument", [("$XDSDocumentEntryUniqueId", [f"'{uid['a']}'"])]).status == \
        "Success"


def test_get_documents_and_associations_has_no_logical_id_parameter(server, events):
    """ITI TF-2a 3.18.4.1.2.3.7: GetDocumentsAndAssociations takes $XDSDocumentEntryEntryUUID or
    $XDSDocumentEntryUniqueId (the Metadata Update option adds $XDSDocumentEntryLogicalID to
    GetDocuments only). Partage accepted $XDSDocumentEntryLogicalID as the one id given, then
    ran the query with no id: an empty Success. Neither id given is XDSStoredQueryMissingParam."""
    _, uid = events
    [doc] = objects_of(_query(server, "GetDocuments", [("$XDSDocumentEntryUniqueId", [f"('{uid['a']}')"])]))
    reply = _query(server, "GetDocumentsAndAssociations", [("$XDSDocumentEntryLogicalID", [f"('{doc.logical_id}')"])])
    _refused(reply, "XDSStoredQueryMissingParam", "XDSStoredQueryParamNumber")
    found = _query(server, "GetDocumentsAndAssociations", [("$XDSDocumentEntryEntryUUID", [f"('{doc.entry_uuid}')"])])
    assert uid["a"] in _uids(found)


@pytest.mark.parametrize("name, slots", [
    ("GetDocuments", []),
    ("GetDocuments", [("$XDSDocumentEntryEntryUUID", ["('urn:uuid:1')"]), ("$XDSDocumentEntryUniqueId", ["('1.2')"])]),
    ("GetFolders", [("$XDSFolderEntryUUID", ["('urn:uuid:1')"]), ("$XDSFolderUniqueId", ["('1.2')"])]),
    ("GetSubmissionSetAndContents", []),
    ("GetFolderAndContents", [("$XDSFolderEntryUUID", ["'urn:uuid:1'"]), ("$XDSFolderUniqueId", ["'1.2'"])]),
    ("GetRelatedDocuments", [("$XDSDocumentEntryUniqueId", ["'1.2'"])]),
    ("GetAssociations", []),
    ("GetAll", [("$patientId", ["'1^^^&1.2&ISO'"]), ("$XDSDocumentEntryStatus", [APPROVED]),
                ("$XDSSubmissionSetStatus", [APPROVED])]),
])
def test_required_and_exclusive_parameters_held(server, name, slots):
    """Held (regression guard): neither id, both ids, a required parameter missing."""
    reply = _query(server, name, slots)
    _refused(reply, "XDSStoredQueryMissingParam", "XDSStoredQueryParamNumber")


def test_a_parameter_the_query_does_not_define_is_ignored_with_a_warning(server, events):
    """Held: an unknown parameter does not fail the query; the answer says it was not used."""
    pid, uid = events
    reply = _find(server, pid, ("$XDSDocumentEntryNoSuchThing", ["'x'"]))
    assert _uids(reply) == {uid["a"], uid["b"], uid["ab"]}
    assert reply.error_codes == ["XDSStoredQueryParamNumber"]


# --------------------------------------------------------------------------- On-Demand objectType
@pytest.fixture(scope="module")
def on_demand(server):
    """A patient with a stable and an on-demand DocumentEntry (ITI-61/ITI-42 register)."""
    pid = _patient(server)
    stable = F.document(pid, "st")
    _file(server, pid, [stable])
    # Partage takes On-Demand entries through ITI-42 (it has no ITI-61), with a hash and size
    od = F.document(pid, "od", object_type=ObjectType.ON_DEMAND, hash="0" * 40, size=1,
                    repository_unique_id="1.2.250.1.999.3")
    request = F.submission(pid, [od], contents=False)
    reply = XdsClient(server.base_url).register(request)
    assert reply.status == "Success", reply.error_codes
    return pid, stable.unique_id, od.unique_id


def test_without_document_entry_type_only_stable_entries_are_found(server, on_demand):
    """ITI TF-2a 3.18.4.1.2.3.7 (On-Demand Documents option): $XDSDocumentEntryType not given
    means Stable entries only (so that a consumer unaware of On-Demand entries never gets one;
    the NIST toolkit assumes the Stable type when the parameter is absent)."""
    pid, stable, od = on_demand
    assert _uids(_find(server, pid)) == {stable}
    assert _uids(_find(server, pid, ("$XDSDocumentEntryType", [f"('{C.OBJECT_TYPE_ON_DEMAND}')"]))) == {od}
    both = f"('{C.OBJECT_TYPE_STABLE}','{C.OBJECT_TYPE_ON_DEMAND}')"
    assert _uids(_find(server, pid, ("$XDSDocumentEntryType", [both]))) == {stable, od}
    reply = _query(server, "GetAll", [("$patientId", [f"'{pid}'"]), ("$XDSDocumentEntryStatus", [APPROVED]),
                                      ("$XDSSubmissionSetStatus", [APPROVED]), ("$XDSFolderStatus", [APPROVED])])
    assert {stable} == _uids(reply) & {stable, od}


def test_a_document_entry_type_that_is_neither_type_is_an_error(server, on_demand):
    """$XDSDocumentEntryType takes the Stable or the On-Demand objectType UUID (ITI TF-3
    4.2.3.2): another value is an XDSRegistryError, not a filter that matches nothing."""
    pid, _, _ = on_demand
    _refused(_find(server, pid, ("$XDSDocumentEntryType", ["('urn:uuid:00000000-0000-0000-0000-000000000000')"])),
             "XDSRegistryError")


# --------------------------------------------------------------------------- GetAll's coded parameters
@pytest.mark.parametrize("param, value", [
    ("$XDSDocumentEntryFormatCode", "('urn:asip:ci-sis:vsm:2012')"),
    ("$XDSDocumentEntryConfidentialityCode", "('N^^')"),
])
def test_get_all_coded_parameters_need_their_coding_scheme(server, events, param, value):
    """ITI TF-2a 3.18.4.1.2.3.7: GetAll's $XDSDocumentEntryFormatCode and
    $XDSDocumentEntryConfidentialityCode are coded parameters, `code^^scheme`, as FindDocuments'
    are (refused there without a scheme, NIST 11897); GetAll matched them on the code alone."""
    pid, _ = events
    reply = _query(server, "GetAll", [("$patientId", [f"'{pid}'"]), ("$XDSDocumentEntryStatus", [APPROVED]),
                                      ("$XDSSubmissionSetStatus", [APPROVED]), ("$XDSFolderStatus", [APPROVED]),
                                      (param, [value])])
    _refused(reply, "XDSRegistryError")


def test_get_all_confidentiality_slots_are_anded(server, events):
    pid, uid = events
    base = [("$patientId", [f"'{pid}'"]), ("$XDSDocumentEntryStatus", [APPROVED]),
            ("$XDSSubmissionSetStatus", [APPROVED]), ("$XDSFolderStatus", [APPROVED])]
    conf = "$XDSDocumentEntryConfidentialityCode"
    reply = _query(server, "GetAll", [*base, (conf, ["('N^^2.16.840.1.113883.5.25')"]),
                                      (conf, ["('R^^2.16.840.1.113883.5.25')"])])
    assert _uids(reply) & set(uid.values()) == {uid["ab"]}


# --------------------------------------------------------------------------- 3.18.4.1.2.4 errors (held)
def test_leaf_class_of_two_patients_is_not_single_patient_object_refs_are_answered(server, events):
    _, uid = events
    other = _patient(server)
    [doc] = _file(server, other, [F.document(other, "x")]).documents
    ids = f"('{uid['a']}','{doc.unique_id}')"
    _refused(_query(server, "GetDocuments", [("$XDSDocumentEntryUniqueId", [ids])]), "XDSResultNotSinglePatient")
    reply = _query(server, "GetDocuments", [("$XDSDocumentEntryUniqueId", [ids])], "ObjectRef")
    assert reply.status == "Success" and len(list(reply.body.iter(f"{RIM}ObjectRef"))) == 2


def test_an_unknown_patient_is_an_empty_answer(server):
    """Held: ITI-18 names no error for a patient the registry has no entries for; an empty
    Success (Partage also answers so for a patient whose record the actor may not see)."""
    reply = _find(server, F.patient_id())
    assert reply.status == "Success" and objects_of(reply) == []


def test_get_related_documents_follows_the_association_types_asked(server):
    pid = _patient(server)
    original = F.document(pid, "orig")
    _file(server, pid, [original])
    [orig] = objects_of(_query(server, "GetDocuments", [("$XDSDocumentEntryUniqueId", [f"('{original.unique_id}')"])]))
    addendum = F.document(pid, "apnd")
    request = F.submission(pid, [addendum], extra_associations=[Association(
        entry_uuid="rel", association_type=AssociationType.APND, source_uuid="apnd", target_uuid=orig.entry_uuid)])
    reply = XdsClient(server.base_url).provide_and_register(request, {"apnd": b"<doc>apnd</doc>"})
    assert reply.status == "Success", reply.error_codes
    rel = [("$XDSDocumentEntryUniqueId", [f"'{original.unique_id}'"])]
    found = _query(server, "GetRelatedDocuments", [*rel, ("$AssociationTypes", [f"('{AssociationType.APND}')"])])
    assert _uids(found) == {original.unique_id, addendum.unique_id}
    none = _query(server, "GetRelatedDocuments", [*rel, ("$AssociationTypes", [f"('{AssociationType.RPLC}')"])])
    assert none.status == "Success" and objects_of(none) == []


@pytest.mark.parametrize("param", ["$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus"])
def test_a_slot_without_any_value_is_an_error(server, events, param):
    """A Slot whose ValueList holds no Value gives the parameter no value (ITI TF-2a
    3.18.4.1.2.3.5): an error naming it, not an internal error (the patient) nor a filter that
    selects every status."""
    pid, _ = events
    slots = [("$XDSDocumentEntryPatientId", [f"'{pid}'"]), ("$XDSDocumentEntryStatus", [APPROVED])]
    reply = _query(server, "FindDocuments", [(n, [] if n == param else v) for n, v in slots])
    _refused(reply, "XDSRegistryError", "XDSStoredQueryMissingParam")
    assert "internal error" not in etree.tostring(reply.body).decode()
