"""Hardened parsing: bombs, XXE, DOCTYPEs, depth, size and broken XML are refused as findings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partage import xmlsafe
from partage.cda.parser import ParseLimits, XmlRejected, parse_cda, parse_xml
from partage.terminology.svs import load_svs_file
from partage.xmlsafe import XmlInputError
from tests.unit.test_cda_samples import sample_cda

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>"""

QUADRATIC = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "' + b"x" * 50_000 + b'">]><d>'
             + b"&a;" * 20_000 + b"</d>")

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>"""

XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]><d/>"""

EXTERNAL_DTD = b'<?xml version="1.0"?>\n<!DOCTYPE d SYSTEM "http://127.0.0.1:9/d.dtd"><d/>'


def rejected(data: bytes, limits: ParseLimits | None = None):
    with pytest.raises(XmlRejected) as exc:
        parse_xml(data, limits) if limits else parse_xml(data)
    finding = exc.value.finding
    assert finding.layer == "parse" and finding.severity == "error"
    return finding


def test_billion_laughs_is_refused_without_expansion():
    finding = rejected(BILLION_LAUGHS)
    assert finding.rule == "xml-bomb"
    assert "lol" not in finding.message.replace("laughs", "")   # nothing was expanded into it


def test_quadratic_blowup_is_refused():
    assert rejected(QUADRATIC).rule == "xml-bomb"


def test_external_entity_is_refused_and_never_resolved():
    finding = rejected(XXE)
    assert finding.rule == "xxe-external-entity"
    assert "root:" not in finding.message


def test_external_parameter_entity_is_refused():
    assert rejected(XXE_PARAMETER).rule == "xxe-external-entity"


def test_external_dtd_is_refused():
    finding = rejected(EXTERNAL_DTD)
    assert finding.rule == "xml-doctype-forbidden"
    assert finding.line == 2


def test_plain_doctype_is_refused():
    assert rejected(b"<!DOCTYPE d><d/>").rule == "xml-doctype-forbidden"


def test_doctype_after_bom_comments_and_pis_is_found():
    data = b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- a comment -->\n<?pi x?>\n<!DOCTYPE d [<!ENTITY e "e">]><d>&e;</d>'
    assert rejected(data).rule == "xml-bomb"


def test_utf16_doctype_is_refused():
    data = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>'
    assert rejected(data.encode("utf-16")).rule == "xxe-external-entity"


def test_doctype_text_inside_the_document_is_only_text():
    root = parse_xml(b"<d><!-- <!DOCTYPE d> --><![CDATA[<!DOCTYPE x>]]></d>")
    assert root.tag == "d"


def test_undeclared_entity_is_not_well_formed():
    assert rejected(b"<d>&undeclared;</d>").rule == "not-well-formed"


def test_depth_beyond_libxml2_limit_is_refused():
    depth = 300
    assert rejected(b"<a>" * depth + b"</a>" * depth).rule == "xml-too-deep"


def test_configured_depth_limit():
    limits = ParseLimits(max_depth=50)
    assert rejected(b"<a>" * 60 + b"</a>" * 60, limits).rule == "xml-too-deep"
    assert parse_xml(b"<a>" * 40 + b"</a>" * 40, limits).tag == "a"


def test_size_limit():
    finding = rejected(sample_cda(), ParseLimits(max_bytes=1000))
    assert finding.rule == "xml-too-large"
    assert str(len(sample_cda())) in finding.message


def test_huge_text_node_is_refused():
    data = b"<d>" + b"A" * 10_500_000 + b"</d>"
    assert rejected(data, ParseLimits(max_bytes=20_000_000)).rule == "xml-too-large"


def test_truncated_document_is_not_well_formed_with_a_line():
    data = sample_cda()
    finding = rejected(data[: len(data) // 2])
    assert finding.rule == "not-well-formed"
    assert finding.line and finding.line > 1


@pytest.mark.parametrize("data", [b"", b"   \n ", b"not xml at all", b"<a><b></a>"])
def test_garbage_is_not_well_formed(data):
    assert rejected(data).rule == "not-well-formed"


def test_text_input_is_a_programming_error():
    with pytest.raises(TypeError):
        parse_xml(sample_cda().decode())   # type: ignore[arg-type]


def test_parse_cda_finds_the_clinical_document():
    parsed = parse_cda(sample_cda())
    assert parsed.clinical_document is parsed.root
    assert not parsed.auto_presentable


def test_auto_presentable_wrapper_yields_the_embedded_document():
    body = sample_cda().split(b"?>", 1)[1]
    wrapped = (b'<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" '
               b'xmlns:data="urn:x"><data:Contenu>' + body + b"</data:Contenu></xsl:stylesheet>")
    parsed = parse_cda(wrapped)
    assert parsed.auto_presentable
    assert parsed.clinical_document is not None and parsed.clinical_document.tag.endswith("ClinicalDocument")


def test_other_root_has_no_clinical_document():
    assert parse_cda(b"<html/>").clinical_document is None


def test_svs_files_use_the_hardened_parser(tmp_path):
    path = tmp_path / "evil.xml"
    path.write_bytes(XXE)
    with pytest.raises(XmlInputError) as exc:
        load_svs_file(path)
    assert exc.value.rule == "xxe-external-entity"


@pytest.mark.parametrize("data", [BILLION_LAUGHS, XXE, EXTERNAL_DTD, b"<a>" * 300 + b"</a>" * 300, b"<a><b></a>"])
def test_one_policy_for_cda_and_wire_xml(data):
    """The CDA parser and the SOAP/SVS parser refuse the same input under the same rule id."""
    with pytest.raises(XmlInputError) as wire:
        xmlsafe.parse_xml(data, max_depth=xmlsafe.LIBXML2_MAX_DEPTH)
    assert rejected(data).rule == wire.value.rule


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_are_refused(data):
    try:
        parse_xml(data)
    except XmlRejected as exc:
        assert exc.finding.rule in {"not-well-formed", "xml-bomb", "xxe-external-entity",
                                    "xml-doctype-forbidden", "xml-too-deep", "xml-too-large"}


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="<!>&;%[]\"' ENTITYDOCTYPESYSTEMabc", max_size=200))
def test_doctype_like_text_never_escapes(text):
    data = f'<?xml version="1.0"?><!DOCTYPE d [{text}]><d/>'.encode()
    with pytest.raises(XmlRejected):
        parse_xml(data)
