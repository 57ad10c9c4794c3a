"""ebRIM 3.0 <-> model: what is written is read back identically, and malformed
metadata is refused with XDSRegistryMetadataError naming the place."""

import pytest
from lxml import etree

from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.metadata.datatypes import CX
from partage.metadata.errors import XdsErrors
from partage.metadata.model import Association, AssociationType, AvailabilityStatus, Code
from tests import factories as F

LCM = f"{{{C.LCM}}}"


def _request_xml(request) -> etree._Element:
    root = etree.Element(LCM + "SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), root)
    return etree.fromstring(etree.tostring(root))


def _normalise(obj):
    obj.availability_status = obj.availability_status or AvailabilityStatus.APPROVED
    obj.lid = obj.lid if obj.lid and obj.lid != obj.entry_uuid else ""
    obj.version = obj.version or ("1" if obj.kind != "Association" else "")
    for author in getattr(obj, "authors", []):
        author.classification_id = ""
    return obj


def test_round_trip_of_every_object_kind():
    pid = F.patient_id()
    request = F.submission(pid, [F.document(pid, "urn:uuid:11111111-1111-4111-8111-111111111111")],
                           folders=[F.folder(pid, "urn:uuid:22222222-2222-4222-8222-222222222222")],
                           contents=False)
    request.documents[0].reference_ids = [CX.parse_reference_id("123^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession")]
    request.documents[0].extra_slots = {"urn:example:custom": ["a", "b"]}
    request.associations.append(Association(
        entry_uuid="urn:uuid:33333333-3333-4333-8333-333333333333",
        association_type=AssociationType.RPLC, source_uuid=request.documents[0].entry_uuid,
        target_uuid="urn:uuid:44444444-4444-4444-8444-444444444444",
        documentation=Code("c", "s", "d")))
    back = ebrim.read_submission(_request_xml(request))
    expected = [_normalise(o) for o in request.objects()]
    got = [_normalise(o) for o in back.objects()]
    assert got == expected


def _broken(mutate) -> list[str]:
    pid = F.patient_id()
    xml = _request_xml(F.submission(pid, contents=False))
    mutate(xml)
    with pytest.raises(XdsErrors) as exc:
        ebrim.read_submission(xml)
    return [e.context for e in exc.value.errors]


def test_slot_with_two_values_where_one_is_allowed():
    def mutate(xml):
        value = xml.find(f".//{{{C.RIM}}}Slot[@name='creationTime']/{{{C.RIM}}}ValueList")
        etree.SubElement(value, f"{{{C.RIM}}}Value").text = "2020"
    assert any("creationTime must have exactly one value" in c for c in _broken(mutate))


def test_code_without_coding_scheme():
    def mutate(xml):
        c = xml.find(f".//{{{C.RIM}}}Classification[@classificationScheme='{C.DOC_CODE_SCHEMES['class_code']}']")
        c.remove(c.find(f"{{{C.RIM}}}Slot"))
    assert any("codingScheme" in c for c in _broken(mutate))


def test_unclassified_registry_package():
    def mutate(xml):
        for c in xml.iter(f"{{{C.RIM}}}Classification"):
            if c.get("classificationNode") == C.NODE_SUBMISSION_SET:
                c.getparent().remove(c)
    assert any("neither as SubmissionSet nor as Folder" in c for c in _broken(mutate))
