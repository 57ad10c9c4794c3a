"""Namespaces and CI-SIS identifiers the CDA modules share (facts of the CI-SIS, not choices)."""

from __future__ import annotations

HL7 = "urn:hl7-org:v3"
SDTC = "urn:hl7-org:sdtc"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XSL = "http://www.w3.org/1999/XSL/Transform"
NS = {"hl7": HL7, "sdtc": SDTC, "xsi": XSI}

CLINICAL_DOCUMENT = f"{{{HL7}}}ClinicalDocument"

# CDA R2 typeId.
TYPE_ID_ROOT = "2.16.840.1.113883.1.3"
TYPE_ID_EXTENSION = "POCD_HD000040"

# Header templateIds every CI-SIS document carries.
TEMPLATE_HL7_FRANCE = "2.16.840.1.113883.2.8.2.1"
TEMPLATE_CISIS = "1.2.250.1.213.1.1.1.1"
# IHE XDS-SD (scanned / unstructured document): replaces the document-model template.
TEMPLATE_XDS_SD = "1.3.6.1.4.1.19376.1.2.20"
GENERIC_TEMPLATES = frozenset({TEMPLATE_HL7_FRANCE, TEMPLATE_CISIS})
CISIS_MODEL_PREFIX = "1.2.250.1.213.1.1.1."

# Patient identifiers: INS-NIR, INS-NIA, test INS-NIR, demo INS-NIR.
INS_ROOTS = frozenset({
    "1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11",
})
# Custodian organisation: a health structure (FINESS/SIRET... in the national directory) or
# the DMP host.
CUSTODIAN_ROOTS = frozenset({"1.2.250.1.71.4.2.2", "1.2.250.1.213.4.1"})

CONFIDENTIALITY_SYSTEM = "2.16.840.1.113883.5.25"
LOINC = "2.16.840.1.113883.6.1"

# Unstructured bodies (XDS-SD as profiled by the CI-SIS): accepted media types, and the
# ones that must travel base64-encoded.
NONXML_MEDIA_TYPES = frozenset({"application/pdf", "text/plain", "text/rtf", "image/jpeg", "image/tiff"})
BINARY_MEDIA_TYPES = frozenset({"application/pdf", "image/jpeg", "image/tiff"})
MEDIA_MAGIC = {
    "application/pdf": (b"%PDF-",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
    "text/rtf": (b"{\\rtf",),
}

# XDS formatCode of an XDS-SD document, by media type (IHE ITI TF-3 / CI-SIS TRE_A11).
XDS_SD_FORMAT_CODES = {
    "application/pdf": "urn:ihe:iti:xds-sd:pdf:2008",
    "text/plain": "urn:ihe:iti:xds-sd:text:2008",
}

# Value sets named by the rules (CI-SIS JDV OIDs).
VS_TYPE_CODE = "1.2.250.1.213.1.1.5.471"            # JDV_J07_XdsTypeCode_CISIS
VS_CONFIDENTIALITY = "2.16.840.1.113883.1.11.10228"  # HL7 Confidentiality
