"""Development credentials: a CA, an identity-provider certificate, and signed SAML
assertions and JWTs for sample actors (`partage dev-credentials --out DIR`).

Nothing here is used to serve requests: the server only verifies (`authn`). Tests and
the README tour use these to talk to a server started with `--trust DIR/ca.pem`.

Files written to DIR:

| file | what |
|---|---|
| ca.pem, ca.key | the development CA (give ca.pem to `partage serve --trust`) |
| idp.pem, idp.key | the signing certificate (issued by the CA) and its key |
| NAME.saml.xml | a signed VIHF-like SAML assertion (put it in wsse:Security) |
| NAME.jwt | a signed bearer JWT (Authorization: Bearer ...) |
| actors.json | every sample actor and its claims |
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree
from signxml.algorithms import SignatureConstructionMethod
from signxml.signer import XMLSigner

from ..metadata.datatypes import CX
from . import issuers, saml, tokens
from .actor import (
    ADMIN,
    BRIS_DE_GLACE,
    CENTRE_15,
    CONNECTOR,
    PATIENT,
    REPRESENTATIVE,
    Actor,
)

DEFAULT_PATIENT = "270017512345615^^^&1.2.250.1.213.1.4.10&ISO"   # the README tour's patient (examples/adt-a01.hl7)
DEFAULT_AUDIENCE = "partage"
SIGNER_CN = "partage development identity provider"
# The issuer the development credentials name: the signing certificate's own identity (its URI
# subjectAltName, see `_issue`), the issuer a server without an issuers file accepts from it.
ISSUER = f"urn:partage:dev:{SIGNER_CN.replace(' ', '-')}"
SOFTWARE = "partage-dev 1"


def sample_actors(patient_id: str | CX = DEFAULT_PATIENT) -> dict[str, Actor]:
    """The issue's sample actors. Professional ids are national ids (8 + RPPS)."""
    hospital = "10B0000001"      # Identifiant_Structure (FINESS-like, illustrative)
    patient = patient_id if isinstance(patient_id, CX) else CX.parse(patient_id, strict=False)
    practice = "10C0000002"
    return {
        "gp": Actor(id="810001234567", name="Dr Claire MARTIN (médecin généraliste)", role="10",
                    specialty="SM26", structure=practice, sector="SA07", software=SOFTWARE),
        "doctor": Actor(id="810000000002", name="Dr Paul CARDIOLOGUE", role="10", specialty="SM04",
                        structure=hospital, sector="SA01", software=SOFTWARE),
        "nurse": Actor(id="810000000003", name="Anne INFIRMIERE", role="60", structure=practice,
                       sector="SA07", software=SOFTWARE),
        "pharmacist": Actor(id="810000000004", name="Marc PHARMACIEN", role="21", structure="10D0000003",
                            sector="SA33", software=SOFTWARE),
        "emergency": Actor(id="810000000005", name="Dr Louise URGENTISTE", role="10", specialty="SM59",
                           structure=hospital, sector="SA01", purpose=BRIS_DE_GLACE,
                           reason="patient unconscious in the emergency department", software=SOFTWARE),
        "regulator": Actor(id="810000000006", name="Dr Henri REGULATEUR (SAMU)", role="10", specialty="SM59",
                           structure="10E0000004", sector="SA01", purpose=CENTRE_15, software=SOFTWARE),
        "occupational": Actor(id="810000000007", name="Dr Jeanne TRAVAIL", role="10", specialty="SM25",
                              structure="10F0000005", sector="SA29", software=SOFTWARE),
        "patient": Actor(id=patient.id, name="the patient", kind=PATIENT,
                         patient_id=patient, software="partage-dev-portal 1"),
        "guardian": Actor(id="guardian-0001", name="a legal representative of the patient",
                          kind=REPRESENTATIVE, patient_id=patient, software="partage-dev-portal 1"),
        "connector": Actor(id=hospital, name="Hôpital de démonstration (DPI connector)", kind=CONNECTOR,
                           structure=hospital, sector="SA01", software="dpi-connector 1"),
        "auditor": Actor(id="auditor-0001", name="the service's auditor", kind=ADMIN,
                         software="partage-admin 1"),
    }


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Partage development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, cn: str, *, days: int = 3650,
           not_before: datetime | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new signing key and certificate issued by the CA of `ca_key` and `ca_cert`."""
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                f"urn:partage:dev:{cn.replace(' ', '-')}")]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


class DevAuthority:
    """A development CA and one signing certificate it issued."""

    def __init__(self, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, key: rsa.RSAPrivateKey,
                 cert: x509.Certificate) -> None:
        self.ca_key, self.ca_cert, self.key, self.cert = ca_key, ca_cert, key, cert

    @classmethod
    def create(cls, *, days: int = 3650, signer_cn: str = SIGNER_CN) -> DevAuthority:
        now = datetime.now(UTC) - timedelta(minutes=5)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_cert = (x509.CertificateBuilder().subject_name(_name("Partage development CA"))
                   .issuer_name(_name("Partage development CA")).public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=True, crl_sign=True,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
        key, cert = _issue(ca_key, ca_cert, signer_cn, days=days)
        return cls(ca_key, ca_cert, key, cert)

    def issue(self, cn: str, *, days: int = 3650,
              not_before: datetime | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        """A new signing key and certificate issued by this CA."""
        return _issue(self.ca_key, self.ca_cert, cn, days=days, not_before=not_before)

    # --- persistence --------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for stem, key, cert in (("ca", self.ca_key, self.ca_cert), ("idp", self.key, self.cert)):
            (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            path = directory / f"{stem}.key"
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)

    @classmethod
    def load(cls, directory: Path) -> DevAuthority:
        def key(name: str) -> rsa.RSAPrivateKey:
            loaded = serialization.load_pem_private_key((directory / name).read_bytes(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):   # save() writes RSA keys only
                raise ValueError(f"{directory / name}: not an RSA private key")
            return loaded

        def cert(name: str) -> x509.Certificate:
            return x509.load_pem_x509_certificate((directory / name).read_bytes())

        return cls(key("ca.key"), cert("ca.pem"), key("idp.key"), cert("idp.pem"))

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    # --- credentials ----------------------------------------------------------------------
    def _window(self, hours: float, not_before: datetime | None) -> tuple[datetime, datetime]:
        start = not_before or datetime.now(UTC) - timedelta(minutes=1)
        return start, start + timedelta(hours=hours)

    def saml_assertion(self, actor: Actor, *, audience: str = DEFAULT_AUDIENCE, hours: float = 8,
                       not_before: datetime | None = None, key: tokens.SigningKey | None = None,
                       cert: x509.Certificate | None = None) -> bytes:
        """A signed VIHF-like assertion (bytes of the saml2:Assertion element), issued as the
        signing certificate's own identity."""
        start, end = self._window(hours, not_before)
        unsigned = saml.build_assertion(actor, issuer=issuers.identity(cert or self.cert), audience=audience,
                                        not_before=start, not_after=end)
        signer = XMLSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm="rsa-sha256",
                           digest_algorithm="sha256", c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
        signer.namespaces = {"ds": saml.DS}
        signed = signer.sign(unsigned, key=key or self.key, cert=[cert or self.cert],
                             reference_uri="#" + unsigned.get("ID", ""),
                             id_attribute="ID")
        return etree.tostring(signed)

    def jwt(self, actor: Actor, *, audience: str = DEFAULT_AUDIENCE, hours: float = 8,
            not_before: datetime | None = None, key: tokens.SigningKey | None = None,
            cert: x509.Certificate | None = None) -> str:
        start, end = self._window(hours, not_before)
        claims = tokens.build_claims(actor, issuer=issuers.identity(cert or self.cert), audience=audience,
                                     not_before=start, not_after=end)
        return tokens.sign(claims, key or self.key, [cert or self.cert])


def write_dev_credentials(out: Path, *, patient_id: str = DEFAULT_PATIENT, audience: str = DEFAULT_AUDIENCE,
                          hours: float = 24 * 30) -> dict[str, Actor]:
    """Create (or reuse) the CA in `out` and write credentials for every sample actor."""
    out.mkdir(parents=True, exist_ok=True)
    authority = DevAuthority.load(out) if (out / "ca.key").exists() else DevAuthority.create()
    authority.save(out)
    actors = sample_actors(patient_id)
    index = {}
    for name, actor in actors.items():
        (out / f"{name}.saml.xml").write_bytes(authority.saml_assertion(actor, audience=audience, hours=hours))
        (out / f"{name}.jwt").write_text(authority.jwt(actor, audience=audience, hours=hours) + "\n")
        index[name] = {k: v for k, v in dataclasses.asdict(actor).items() if v}
    (out / "actors.json").write_text(json.dumps({"audience": audience, "actors": index}, indent=2,
                                                ensure_ascii=False) + "\n")
    return actors
