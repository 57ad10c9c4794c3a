"""Who is asking: the authenticated actor every door hands to the policy.

Authentication mechanisms (SAML/VIHF assertions, bearer JWTs; `partage.access.authn`)
produce an Actor; the only other source is the explicit insecure development mode, whose
actor says so in its id so that it is visible in every audit record.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metadata.datatypes import CX, DatatypeError

# Actor kinds.
PROFESSIONAL = "professional"     # a health professional (VIHF NameID = national id 8+RPPS / 0+ADELI)
PATIENT = "patient"               # the patient, authenticated as themselves
REPRESENTATIVE = "representative"  # a legal representative of the patient
CONNECTOR = "connector"           # a structure's system (hospital DPI connector), indirect authentication
ADMIN = "admin"                   # an administrator / auditor of the service (reads the audit trail)
SYSTEM = "system"                 # internal actors (ITI-8 feed, CLI maintenance)
INSECURE_DEV = "insecure-dev"     # --insecure-dev only

KINDS = (PROFESSIONAL, PATIENT, REPRESENTATIVE, CONNECTOR, ADMIN, SYSTEM, INSECURE_DEV)

# VIHF access modes (purposeOfUse, 1.2.250.1.213.1.1.4.248).
NORMAL, BRIS_DE_GLACE, CENTRE_15 = "normal", "bris_de_glace", "centre_15"
PURPOSES = (NORMAL, BRIS_DE_GLACE, CENTRE_15)


class AuthenticationRequired(Exception):
    """No acceptable credentials: the door answers 401 / a SOAP fault."""


@dataclass(frozen=True)
class Actor:
    id: str                      # national professional id, patient INS, or system id
    name: str = ""
    kind: str = PROFESSIONAL     # see KINDS
    role: str = ""               # profession code (TRE_G15: 10 médecin, 21 pharmacien, 60 infirmier...)
    purpose: str = NORMAL        # normal | bris_de_glace | centre_15
    structure: str = ""          # healthcare organisation id (1.2.250.1.71.4.2.2)
    address: str = ""            # network origin, for the audit trail
    specialty: str = ""          # specialty code (TRE_R38: SM26 médecine générale...)
    sector: str = ""             # sector of activity (TRE_R02: SA01 hospital, SA07 cabinet...)
    patient_id: CX | None = None  # the patient the request is about (VIHF resource-id: an INS);
    #                               for a patient or representative: the patient they are / act for
    reason: str = ""             # justification of a bris_de_glace access
    software: str = ""           # the calling software (LPS name and version)
    credential_id: str = ""      # assertion ID / JWT jti, for the audit trail
    issuer: str = ""             # who vouched for the actor: the assertion's <Issuer>, the token's iss
    auth_method: str = ""        # saml | jwt | insecure-dev | internal
    credential_expires: int = 0  # end of the credential's validity (epoch seconds), for replay checks


INSECURE_DEV_ACTOR = Actor(id="insecure-dev", name="insecure development mode", kind=INSECURE_DEV,
                           auth_method="insecure-dev")
PATIENT_FEED_ACTOR = Actor(id="patient-identity-feed", name="ITI-8 MLLP listener", kind=SYSTEM,
                           auth_method="internal")


def asserted_purpose(purpose: str, claim: str) -> str:
    """The access mode a credential asserts in `claim` (normal when it names none); an unknown
    one is refused."""
    purpose = purpose or NORMAL
    if purpose not in PURPOSES:
        raise AuthenticationRequired(f"unknown access mode ({claim}) {purpose!r}")
    return purpose


def asserted_kind(kind: str) -> str:
    """The actor kind a credential asserts (professional when it names none); the internal
    kinds, which no credential may claim, are refused."""
    kind = kind or PROFESSIONAL
    if kind not in KINDS or kind in (SYSTEM, INSECURE_DEV):
        raise AuthenticationRequired(f"actor kind {kind!r} cannot be asserted")
    return kind


def patient_claim(text: str) -> CX | None:
    """The patient a credential names (VIHF resource-id, IUA person_id), as a CX."""
    if not text:
        return None
    try:
        return CX.parse(text, strict=False)
    except DatatypeError as exc:
        raise AuthenticationRequired(f"the credential's patient {text!r} is not an HL7 CX: {exc}") from None
