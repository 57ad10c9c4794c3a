"""Who may sign for an issuer: the one rule binding a credential's issuer to its signer.

A bearer JWT's `iss` and a SAML assertion's `<Issuer>` name the authority vouching for the
claims; the certificate that signed the credential (`x5c` leaf, `ds:X509Certificate`) must
belong to that authority (RFC 8725 3.8, RFC 7519 4.1.1, SAML core 2.3.3, IHE IUA), or
any certificate the trusted CA ever issued (a connector's, a professional's) could speak
for any issuer. The rule, for both kinds of credential:

- the issuer is a non-empty string, compared to the names below exactly (RFC 7519 2 and 7.3:
  StringOrURI values are compared as strings, no case folding, no normalisation);
- with an issuers file (`--issuers`, `PARTAGE_ISSUERS`), the issuer must be one the file
  names, and the signing certificate one of those the file lists for it; nothing else is
  an issuer;
- without one, the issuer must be the signing certificate's own identity: one of its URI
  subjectAltNames, or its subject as an RFC 4514 string. A certificate then speaks for
  itself only.

The issuers file is JSON: an object whose keys are the issuers and whose values list who
may sign for each, one string per certificate: `sha256:<hex>` (the certificate's SHA-256
fingerprint, colons allowed), `subject:<RFC 4514 DN>` (its subject), or `uri:<URI>` (one
of its URI subjectAltNames).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .actor import AuthenticationRequired

KINDS = ("sha256", "subject", "uri")


@dataclass(frozen=True)
class IssuerPolicy:
    """Who may sign for which issuer; `signers` None: each certificate for itself alone."""

    signers: dict[str, frozenset[str]] | None = None


SELF_ISSUED = IssuerPolicy()


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def identities(cert: x509.Certificate) -> list[str]:
    """The names a certificate is known by: its URI subjectAltNames, then its subject (RFC 4514)."""
    return [*_uris(cert), cert.subject.rfc4514_string()]


def identity(cert: x509.Certificate) -> str:
    """The issuer a certificate signs as when no issuers file says otherwise (its first URI SAN,
    else its subject): what the development credentials put in `iss` and `<Issuer>`."""
    return identities(cert)[0]


def _descriptions(cert: x509.Certificate) -> set[str]:
    """Every issuers-file entry that names this certificate."""
    return {"sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
            "subject:" + cert.subject.rfc4514_string(), *("uri:" + u for u in _uris(cert))}


def _entry(value: Any, issuer: str) -> str:
    if not isinstance(value, str) or value.partition(":")[0] not in KINDS or not value.partition(":")[2]:
        raise ValueError(f"issuer {issuer!r}: {value!r} is not sha256:<hex>, subject:<DN> or uri:<URI>")
    kind, _, rest = value.partition(":")
    if kind != "sha256":
        return value
    digest = rest.replace(":", "").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"issuer {issuer!r}: {value!r} is not a SHA-256 fingerprint")
    return "sha256:" + digest


def parse(text: str | bytes) -> IssuerPolicy:
    """An issuers file's policy (ValueError: why the file cannot serve)."""
    document = json.loads(text)
    if not isinstance(document, dict) or not document:
        raise ValueError("an issuers file is a JSON object naming at least one issuer")
    signers: dict[str, frozenset[str]] = {}
    for issuer, entries in document.items():
        if not issuer:
            raise ValueError("an issuer cannot be the empty string")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"issuer {issuer!r}: a non-empty list of certificates is expected")
        signers[issuer] = frozenset(_entry(e, issuer) for e in entries)
    return IssuerPolicy(signers)


@functools.lru_cache(maxsize=8)
def _load(path: str, _stamp: tuple[int, int]) -> IssuerPolicy:
    """The file's policy, cached by path and (mtime, size): a changed file is read again."""
    with open(path, "rb") as handle:
        return parse(handle.read())


def load(path: str) -> IssuerPolicy:
    """The policy of the issuers file `path` ("" : no file, each certificate its own issuer);
    read again when the file changes. OSError / ValueError: the file cannot serve."""
    if not path:
        return SELF_ISSUED
    status = os.stat(path)
    return _load(path, (status.st_mtime_ns, status.st_size))


def problem(path: str) -> str:
    """Why the issuers file cannot serve (empty string: it can, or none is set)."""
    if not path:
        return ""
    try:
        load(path)
    except (OSError, ValueError) as exc:
        return f"--issuers {path}: {exc}"
    return ""


def check(issuer: object, cert: x509.Certificate, policy: IssuerPolicy, *, what: str) -> str:
    """The credential's issuer if `cert` may sign for it under `policy`; else AuthenticationRequired.
    `what` names the field in the refusal (`bearer token iss`, `SAML assertion Issuer`)."""
    if not isinstance(issuer, str) or not issuer:
        raise AuthenticationRequired(f"{what} is required (a non-empty string naming the issuer)")
    if policy.signers is None:
        if issuer not in identities(cert):
            raise AuthenticationRequired(f"{what} {issuer!r} is not the signing certificate's own identity "
                                         "(its URI subjectAltName or subject), and no issuers file names it")
        return issuer
    allowed = policy.signers.get(issuer)
    if allowed is None:
        raise AuthenticationRequired(f"{what} {issuer!r} is not a trusted issuer")
    if not allowed & _descriptions(cert):
        raise AuthenticationRequired(f"{what} {issuer!r}: the signing certificate is not one of this issuer's")
    return issuer
