"""SAML 2.0 assertions in the shape of the DMP's VIHF (XUA), both ways.

An assertion travels in the WS-Security header of an XDS.b request. It is signed
(enveloped XML-DSig, exclusive c14n, RSA-SHA256) by an identity provider or by the
calling software (LPS), whose certificate must chain to one of the configured trusted
CA certificates. What is read from it becomes an `Actor`:

| VIHF attribute | Actor field |
|---|---|
| Subject/NameID | id (8+RPPS / 0+ADELI for a professional, structure id for a connector) |
| urn:oasis:names:tc:xspa:1.0:subject:subject-id | name |
| urn:oasis:names:tc:xacml:2.0:subject:role (profession, TRE_G15; specialty, TRE_R38) | role, specialty |
| Identifiant_Structure | structure |
| Secteur_Activite | sector |
| urn:oasis:names:tc:xspa:1.0:subject:purposeofuse (1.2.250.1.213.1.1.4.248) | purpose |
| Mode_Acces_Raison | reason (bris de glace justification) |
| urn:oasis:names:tc:xacml:2.0:resource:resource-id (patient INS, CX) | patient_id |
| LPS_Nom, LPS_Version | software |
| urn:partage:1.0:subject:kind (Partage extension) | kind (professional when absent) |

Verification checks, in order: one signature whose reference is the whole assertion
and whose certificate chains to a trusted CA (signxml), then the validity window
(Conditions NotBefore / NotOnOrAfter, with a clock skew), then the audience, then the
`<Issuer>`: required, an entity identifier or an X.509 subject name (Format omitted,
`...:entity` or `...:X509SubjectName`, no name qualifiers: SAML core 2.2.5, 8.3.6, 8.3.3) that
the signing certificate may sign for
(`issuers.check`, the rule a JWT's `iss` follows too). Claims are
read only from the element signxml returns as signed, never from the input tree, so a
wrapped or altered copy of the assertion is never trusted.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lxml import etree
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.util import X509CertChainVerifier
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from . import issuers
from .actor import (
    NORMAL,
    PROFESSIONAL,
    Actor,
    AuthenticationRequired,
    asserted_kind,
    asserted_purpose,
    patient_claim,
)

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"

A_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
A_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
A_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
A_RESOURCE = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
A_STRUCTURE = "Identifiant_Structure"
A_SECTOR = "Secteur_Activite"
A_REASON = "Mode_Acces_Raison"
A_LPS_NAME = "LPS_Nom"
A_LPS_VERSION = "LPS_Version"
A_VIHF_VERSION = "VIHF_Version"
A_AUTH_MODE = "Authentification_Mode"
A_KIND = "urn:partage:1.0:subject:kind"

PROFESSION_SYSTEM = "1.2.250.1.71.1.2.7"     # TRE_G15 Profession
SPECIALTY_SYSTEM = "1.2.250.1.71.4.2.5"      # TRE_R38 Spécialité ordinale
PURPOSE_SYSTEM = "1.2.250.1.213.1.1.4.248"   # VIHF access modes
ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"   # SAML core 8.3.6, an Issuer's format
# An Issuer may also be the signer's certificate subject (SAML core 8.3.3), as assertions signed with
# a structure's certificate name their issuer: the same rule compares it (issuers.check).
X509_SUBJECT = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
ISSUER_FORMATS = (ENTITY, X509_SUBJECT)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise AuthenticationRequired(f"SAML assertion: unreadable time {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- building
def build_assertion(actor: Actor, *, issuer: str, audience: str, not_before: datetime,
                    not_after: datetime, assertion_id: str | None = None) -> etree._Element:
    """The unsigned VIHF-like assertion for this actor (sign it with `credentials`)."""
    nsmap = {"saml2": SAML, "xsi": XSI, "hl7": HL7, "ds": DS}
    S = f"{{{SAML}}}"
    root = etree.Element(S + "Assertion", nsmap=nsmap, ID=assertion_id or f"_{uuid.uuid4().hex}",
                         IssueInstant=_ts(not_before), Version="2.0")
    etree.SubElement(root, S + "Issuer").text = issuer
    etree.SubElement(root, f"{{{DS}}}Signature", Id="placeholder")
    subject = etree.SubElement(root, S + "Subject")
    etree.SubElement(subject, S + "NameID",
                     Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified").text = actor.id
    etree.SubElement(subject, S + "SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer")
    conditions = etree.SubElement(root, S + "Conditions", NotBefore=_ts(not_before),
                                  NotOnOrAfter=_ts(not_after))
    etree.SubElement(etree.SubElement(conditions, S + "AudienceRestriction"), S + "Audience").text = audience
    authn = etree.SubElement(root, S + "AuthnStatement", AuthnInstant=_ts(not_before))
    etree.SubElement(etree.SubElement(authn, S + "AuthnContext"), S + "AuthnContextClassRef").text = \
        "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
    statement = etree.SubElement(root, S + "AttributeStatement")

    def attribute(name: str, *values: str | etree._Element | None) -> None:
        given = [v for v in values if v is not None and not (isinstance(v, str) and v == "")]
        if not given:
            return
        element = etree.SubElement(statement, S + "Attribute", Name=name)
        for value in given:
            holder = etree.SubElement(element, S + "AttributeValue")
            if isinstance(value, etree._Element):
                holder.append(value)
            else:
                holder.text = value

    def coded(tag: str, code: str, system: str) -> etree._Element | None:
        if not code:
            return None
        return etree.Element(f"{{{HL7}}}{tag}", {f"{{{XSI}}}type": "CE", "code": code, "codeSystem": system})

    attribute(A_VIHF_VERSION, "3.0")
    attribute(A_SUBJECT_ID, actor.name)
    attribute(A_ROLE, coded("Role", actor.role, PROFESSION_SYSTEM), coded("Role", actor.specialty, SPECIALTY_SYSTEM))
    attribute(A_STRUCTURE, actor.structure)
    attribute(A_SECTOR, actor.sector)
    attribute(A_PURPOSE, coded("PurposeOfUse", actor.purpose or NORMAL, PURPOSE_SYSTEM))
    attribute(A_REASON, actor.reason)
    attribute(A_RESOURCE, actor.patient_id.format() if actor.patient_id else "")
    software_name, _, software_version = actor.software.partition(" ")
    attribute(A_LPS_NAME, software_name)
    attribute(A_LPS_VERSION, software_version)
    attribute(A_AUTH_MODE, "INDIRECTE" if actor.kind != PROFESSIONAL else "DIRECTE")
    attribute(A_KIND, actor.kind)
    return root


def security_header(signed_assertion: etree._Element | bytes) -> etree._Element:
    """A wsse:Security SOAP header carrying the (already signed) assertion."""
    if isinstance(signed_assertion, bytes):
        signed_assertion = etree.fromstring(signed_assertion)
    header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    header.append(signed_assertion)
    return header


# --------------------------------------------------------------------------- reading
def find_assertion(soap_header: etree._Element | None) -> etree._Element | None:
    """The saml2:Assertion of the wsse:Security header, if any (exactly one accepted)."""
    if soap_header is None:
        return None
    found = [a for sec in soap_header.findall(f"{{{WSSE}}}Security") for a in sec.findall(f"{{{SAML}}}Assertion")]
    if len(found) > 1:
        raise AuthenticationRequired("more than one SAML assertion in the WS-Security header")
    return found[0] if found else None


def verify_assertion(assertion: etree._Element | bytes, *, ca_pem_file: str, audience: str,
                     clock_skew: int = 120, now: datetime | None = None,
                     trusted_issuers: issuers.IssuerPolicy = issuers.SELF_ISSUED) -> Actor:
    """Verify signature, chain, validity window, audience and issuer; the Actor it asserts."""

    data = etree.tostring(assertion) if isinstance(assertion, etree._Element) else assertion
    now = now or datetime.now(UTC)
    try:
        result = XMLVerifier().verify(data, ca_pem_file=ca_pem_file, id_attribute="ID",
                                      expect_config=SignatureConfiguration(require_x509=True))
    except (InvalidSignature, InvalidDigest, InvalidCertificate, InvalidInput) as exc:
        raise AuthenticationRequired(f"SAML assertion signature refused: {exc}") from exc
    except Exception as exc:   # malformed signature structures surface as assorted errors
        raise AuthenticationRequired(f"SAML assertion signature refused: {exc.__class__.__name__}") from exc
    # one signature is expected (signxml answers a list only when several are)
    if not isinstance(result, VerifyResult):
        raise AuthenticationRequired("the signature does not cover the SAML assertion")
    signed = result.signed_xml
    if signed is None or signed.tag != f"{{{SAML}}}Assertion":
        raise AuthenticationRequired("the signature does not cover the SAML assertion")
    S = f"{{{SAML}}}"
    conditions = signed.find(S + "Conditions")
    if conditions is None:
        raise AuthenticationRequired("SAML assertion without Conditions (validity window)")
    skew = timedelta(seconds=clock_skew)
    not_before = _parse_ts(conditions.get("NotBefore"))
    not_after = _parse_ts(conditions.get("NotOnOrAfter"))
    if not_after is None:
        raise AuthenticationRequired("SAML assertion without NotOnOrAfter")
    if not_before is not None and now + skew < not_before:
        raise AuthenticationRequired("SAML assertion is not yet valid")
    if now - skew >= not_after:
        raise AuthenticationRequired("SAML assertion has expired")
    # SAML core 2.5.1.4: the relying party must be named in EACH AudienceRestriction (the
    # Audience of a ProxyRestriction names who may receive derived assertions, not this one's)
    restrictions = [[(a.text or "").strip() for a in r.findall(S + "Audience")]
                    for r in conditions.findall(S + "AudienceRestriction")]
    if not restrictions or any(audience not in names for names in restrictions):
        raise AuthenticationRequired(f"SAML assertion is not for this audience ({audience})")
    issuer = _issuer(signed)
    issuers.check(issuer, _signing_certificate(result, ca_pem_file), trusted_issuers, what="SAML assertion Issuer")
    return dataclasses.replace(_actor_from(signed), credential_expires=int(not_after.timestamp()), issuer=issuer)


def _issuer(signed: etree._Element) -> str:
    """The assertion's Issuer, an entity identifier or an X.509 subject name (SAML core 2.3.3:
    required; 2.2.5, 8.3.6 and 8.3.3: Format omitted, entity or X509SubjectName; NameQualifier /
    SPNameQualifier / SPProvidedID omitted).
    Its text is taken as it stands (xs:string: no trimming), and nothing but text may be in it."""
    found = signed.findall(f"{{{SAML}}}Issuer")
    if len(found) != 1:
        raise AuthenticationRequired("SAML assertion Issuer is required (exactly one)")
    element = found[0]
    if element.get("Format", ENTITY) not in ISSUER_FORMATS:
        raise AuthenticationRequired(f"SAML assertion Issuer must be an entity identifier (Format {ENTITY}) or "
                                     f"an X.509 subject ({X509_SUBJECT}), not {element.get('Format')}")
    qualifiers = [name for name in ("NameQualifier", "SPNameQualifier", "SPProvidedID") if element.get(name) is not None]
    if qualifiers:
        raise AuthenticationRequired(f"SAML assertion Issuer: an entity identifier has no {qualifiers[0]}")
    if len(element):
        raise AuthenticationRequired("SAML assertion Issuer must be text only")
    return element.text or ""


def _signing_certificate(result: VerifyResult, ca_pem_file: str) -> x509.Certificate:
    """The certificate whose key verified the signature: the chain of the signature's X509Data
    verified again as signxml did (the same verifier on the same certificates), its leaf holding
    the key signxml reports it used."""
    x509_data = result.signature_xml.find(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data")
    texts = [] if x509_data is None else x509_data.findall(f"{{{DS}}}X509Certificate")
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode("".join((t.text or "").split()))) for t in texts]
        # signxml.util leaves X509CertChainVerifier unannotated; verify() returns the leaf certificate
        verifier = X509CertChainVerifier(ca_pem_file=ca_pem_file)  # type: ignore[no-untyped-call]
        leaf: x509.Certificate = verifier.verify(chain)  # type: ignore[no-untyped-call]
    except (ValueError, InvalidCertificate) as exc:
        raise AuthenticationRequired(f"SAML assertion signature refused: {exc}") from exc
    if leaf.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo) != result.signature_key:
        raise AuthenticationRequired("SAML assertion signature refused: the key is not the certificate's")
    return leaf


def _actor_from(signed: etree._Element) -> Actor:
    S = f"{{{SAML}}}"
    name_id = (signed.findtext(f"{S}Subject/{S}NameID") or "").strip()
    if not name_id:
        raise AuthenticationRequired("SAML assertion without Subject/NameID")
    attrs: dict[str, list[str | etree._Element]] = {}
    for attribute in signed.iter(S + "Attribute"):
        values: list[str | etree._Element] = []
        for value in attribute.findall(S + "AttributeValue"):
            child = next((c for c in value if isinstance(c.tag, str)), None)
            values.append(child if child is not None else (value.text or "").strip())
        attrs.setdefault(attribute.get("Name", ""), []).extend(values)

    def text(name: str) -> str:
        values = [v for v in attrs.get(name, []) if isinstance(v, str)]
        return values[0] if values else ""

    def codes(name: str) -> dict[str, str]:
        return {v.get("codeSystem", ""): v.get("code", "") for v in attrs.get(name, [])
                if isinstance(v, etree._Element)}

    roles = codes(A_ROLE)
    purpose = asserted_purpose(codes(A_PURPOSE).get(PURPOSE_SYSTEM) or text(A_PURPOSE), "purposeOfUse")
    kind = asserted_kind(text(A_KIND))
    software = " ".join(v for v in (text(A_LPS_NAME), text(A_LPS_VERSION)) if v)
    return Actor(id=name_id, name=text(A_SUBJECT_ID), kind=kind, role=roles.get(PROFESSION_SYSTEM, ""),
                 specialty=roles.get(SPECIALTY_SYSTEM, ""), purpose=purpose,
                 structure=text(A_STRUCTURE), sector=text(A_SECTOR), patient_id=patient_claim(text(A_RESOURCE)),
                 reason=text(A_REASON), software=software, credential_id=signed.get("ID", ""),
                 auth_method="saml")
