"""Signed bearer JWTs (IHE IUA-like) for the FHIR and web doors, both ways.

A token is signed (RS256, PS256 or ES256) by a key whose certificate travels in the
JOSE header (`x5c`, leaf first) and must chain to one of the configured trusted CA
certificates, as a SAML assertion's does, and be one the `iss` claim's issuer may sign
with (`issuers.check`, the rule SAML's `<Issuer>` follows too). Claims:

| claim | Actor field |
|---|---|
| iss | checked: required, bound to the signing certificate (`issuers`) |
| sub | id (national professional id, patient INS id, structure id) |
| aud, exp, nbf, iat, jti | checked (audience, validity window) / credential_id |
| extensions.ihe_iua.subject_name | name |
| extensions.ihe_iua.subject_organization_id | structure |
| extensions.ihe_iua.subject_role {system, code} | role (profession, TRE_G15) |
| extensions.ihe_iua.purpose_of_use {system, code} | purpose (normal, bris_de_glace, centre_15) |
| extensions.ihe_iua.person_id | patient_id (CX of the patient's INS) |
| extensions.fr_vihf.{kind, specialty, sector, reason, software} | the DMP fields IUA has no name for |
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from signxml.exceptions import InvalidCertificate
from signxml.util import X509CertChainVerifier

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
from .saml import PROFESSION_SYSTEM, PURPOSE_SYSTEM, SPECIALTY_SYSTEM

# The accepted algorithms and the key type each verifies with (RFC 7518 3.3, 3.4, 3.5).
KEY_TYPES: dict[str, type] = {"RS256": rsa.RSAPublicKey, "PS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey}
ALGORITHMS = list(KEY_TYPES)

# The private keys credentials are signed with (the development CA issues RSA ones).
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def build_claims(actor: Actor, *, issuer: str, audience: str, not_before: datetime,
                 not_after: datetime, jti: str | None = None) -> dict[str, Any]:
    iua: dict[str, Any] = {"subject_name": actor.name, "subject_organization_id": actor.structure,
           "purpose_of_use": {"system": PURPOSE_SYSTEM, "code": actor.purpose or NORMAL}}
    if actor.role:
        iua["subject_role"] = {"system": PROFESSION_SYSTEM, "code": actor.role}
    if actor.patient_id:
        iua["person_id"] = actor.patient_id.format()
    if actor.kind == PROFESSIONAL:
        iua["national_provider_identifier"] = actor.id
    vihf = {"kind": actor.kind}
    for key in ("specialty", "sector", "reason", "software"):
        if getattr(actor, key):
            vihf[key] = getattr(actor, key)
    return {"iss": issuer, "sub": actor.id, "aud": audience, "iat": int(not_before.timestamp()),
            "nbf": int(not_before.timestamp()), "exp": int(not_after.timestamp()),
            "jti": jti or uuid.uuid4().hex, "extensions": {"ihe_iua": iua, "fr_vihf": vihf}}


def sign(claims: dict[str, Any], key: SigningKey, chain: list[x509.Certificate]) -> str:
    x5c = [base64.b64encode(c.public_bytes(_der())).decode("ascii") for c in chain]
    algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    return jwt.encode(claims, key, algorithm=algorithm, headers={"x5c": x5c})


def _der() -> Encoding:
    return Encoding.DER


def verify_token(token: str, *, ca_pem_file: str, audience: str, clock_skew: int = 120,
                 now: datetime | None = None, trusted_issuers: issuers.IssuerPolicy = issuers.SELF_ISSUED) -> Actor:
    """Verify chain, signature, issuer, audience and validity window; the Actor the token asserts."""

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthenticationRequired(f"unreadable bearer token: {exc}") from exc
    if header.get("alg") not in ALGORITHMS:
        raise AuthenticationRequired(f"bearer token algorithm {header.get('alg')!r} is not accepted")
    try:
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header.get("x5c") or []]
    except (ValueError, TypeError) as exc:
        raise AuthenticationRequired("bearer token x5c is not a certificate chain") from exc
    if not chain:
        raise AuthenticationRequired("bearer token has no x5c certificate chain")
    moment = now or datetime.now(UTC)
    try:
        # signxml.util leaves X509CertChainVerifier unannotated; verify() returns the leaf certificate
        verifier = X509CertChainVerifier(ca_pem_file=ca_pem_file, verification_time=moment)  # type: ignore[no-untyped-call]
        leaf: x509.Certificate = verifier.verify(chain)  # type: ignore[no-untyped-call]
    except InvalidCertificate as exc:
        raise AuthenticationRequired(f"bearer token certificate refused: {exc}") from exc
    public_key = leaf.public_key()
    algorithm = str(header.get("alg"))
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) or \
            not isinstance(public_key, KEY_TYPES.get(algorithm, type(None))) or \
            (isinstance(public_key, ec.EllipticCurvePublicKey) and not isinstance(public_key.curve, ec.SECP256R1)):
        # the header names the algorithm, the certificate the key: they must agree, or the
        # token is not one (and no library is asked to verify a signature with the wrong key)
        raise AuthenticationRequired(f"bearer token refused: algorithm {algorithm} does not fit its certificate's key")
    try:
        claims = jwt.decode(token, public_key, algorithms=[algorithm], audience=audience,
                            leeway=clock_skew, options={"require": ["exp", "sub", "aud", "iat"]})
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationRequired("bearer token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthenticationRequired("bearer token is not yet valid") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthenticationRequired(f"bearer token is not for this audience ({audience})") from exc
    except jwt.PyJWTError as exc:
        raise AuthenticationRequired(f"bearer token refused: {exc}") from exc
    if now is not None and claims["exp"] + clock_skew <= now.timestamp():
        raise AuthenticationRequired("bearer token has expired")
    issuers.check(claims.get("iss"), leaf, trusted_issuers, what="bearer token iss")
    return dataclasses.replace(actor_from_claims(claims), credential_expires=int(claims["exp"]))


def _object(value: Any, claim: str) -> dict[str, Any]:
    """A claim that must be a JSON object (absent: empty); any other shape refuses the token."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AuthenticationRequired(f"bearer token refused: claim {claim} is not a JSON object")
    return value


def _purpose_code(value: Any) -> str:
    """The access mode of purpose_of_use: a Coding, or an array of Codings (the one of the VIHF
    access modes' system, else the first)."""
    if isinstance(value, list):
        codings = [_object(c, "purpose_of_use") for c in value]
        value = next((c for c in codings if c.get("system") == PURPOSE_SYSTEM), codings[0] if codings else None)
    return str(_object(value, "purpose_of_use").get("code") or "")


def actor_from_claims(claims: dict[str, Any]) -> Actor:
    ext = _object(claims.get("extensions"), "extensions")
    iua, vihf = _object(ext.get("ihe_iua"), "ihe_iua"), _object(ext.get("fr_vihf"), "fr_vihf")
    purpose = asserted_purpose(_purpose_code(iua.get("purpose_of_use")), "purpose_of_use")
    kind = asserted_kind(str(vihf.get("kind") or ""))
    role = _object(iua.get("subject_role"), "subject_role")
    specialty = vihf.get("specialty") or ""
    if isinstance(specialty, dict):
        specialty = specialty.get("code", "") if specialty.get("system", SPECIALTY_SYSTEM) == SPECIALTY_SYSTEM else ""
    return Actor(id=str(claims["sub"]), name=str(iua.get("subject_name") or ""), kind=kind,
                 role=str(role.get("code") or "") if role.get("system", PROFESSION_SYSTEM) == PROFESSION_SYSTEM else "",
                 purpose=purpose, structure=str(iua.get("subject_organization_id") or ""),
                 specialty=str(specialty), sector=str(vihf.get("sector") or ""),
                 patient_id=patient_claim(str(iua.get("person_id") or "")), reason=str(vihf.get("reason") or ""),
                 software=str(vihf.get("software") or ""), credential_id=str(claims.get("jti") or ""),
                 issuer=str(claims.get("iss") or ""), auth_method="jwt")
