"""Coding systems: XDS codingScheme (mostly an OID) <-> FHIR Coding.system (a URI).

The MHD "FHIR maps" write an OID scheme as `urn:oid:`, except for the code systems FHIR
names by URL (LOINC, SNOMED CT, the HL7 v3 confidentiality codes, the IHE format codes,
the French NOS terminologies PDSm uses). One table, read both ways, so the FHIR door
and the XDS door always agree on what a code is.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from ..metadata.datatypes import is_oid

# OID -> canonical FHIR URL. Every URL here is also accepted on input.
CANONICAL: dict[str, str] = {
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.5.25": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "2.16.840.1.113883.5.4": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "1.3.6.1.4.1.19376.1.2.3": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
    "1.2.250.1.213.1.1.4.1": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument",
    "1.2.250.1.71.4.2.4": "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite",
    "1.2.250.1.213.1.1.4.9": "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice",
    "1.2.250.1.213.1.1.4.13": "https://mos.esante.gouv.fr/NOS/TRE_A07-StatusVisibiliteDocument/FHIR/TRE-A07-StatusVisibiliteDocument",
}
# Other URLs seen for the same systems (older IG versions, JDV value-set URLs used as systems).
ALIASES: dict[str, str] = {
    "http://hl7.org/fhir/v3/Confidentiality": "2.16.840.1.113883.5.25",
    "http://terminology.hl7.org/CodeSystem/v3-ConfidentialityClassification": "2.16.840.1.113883.5.25",
    "urn:ihe:formatcode": "1.3.6.1.4.1.19376.1.2.3",
    "http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem": "1.3.6.1.4.1.19376.1.2.3",
    "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode": "1.3.6.1.4.1.19376.1.2.3",
}
SCHEME_OF_URL = {url: oid for oid, url in CANONICAL.items()} | ALIASES

# A codingScheme that is neither an OID nor a known URL (NIST writes "LOINC",
# "Connect-a-thon folderCodeList") still needs a URI: this prefix keeps it reversible.
OPAQUE_PREFIX = "urn:partage:codingScheme:"


def system_of(scheme: str) -> str:
    """FHIR Coding.system for an XDS codingScheme."""
    if scheme.lower().startswith("urn:oid:"):
        scheme = scheme[8:]
    if scheme in CANONICAL:
        return CANONICAL[scheme]
    if is_oid(scheme):
        return f"urn:oid:{scheme}"
    if scheme.startswith(("http://", "https://", "urn:")) and " " not in scheme:
        return scheme
    return OPAQUE_PREFIX + quote(scheme, safe="")


def scheme_of(system: str) -> str:
    """XDS codingScheme for a FHIR Coding.system."""
    if not system:
        return ""
    if system in SCHEME_OF_URL:
        return SCHEME_OF_URL[system]
    if system.lower().startswith("urn:oid:"):
        return system[8:]
    if system.startswith(OPAQUE_PREFIX):
        return unquote(system[len(OPAQUE_PREFIX):])
    return system
