"""Authentication for the doors: credentials in, an Actor out (or AuthenticationRequired).

- SOAP (XDS.b): a signed SAML 2.0 assertion (VIHF-like) in the wsse:Security header.
- HTTP (FHIR, web): `Authorization: Bearer <JWT>`.

Both must be signed by a certificate chaining to one of the CA certificates in the PEM
file named by `Settings.trust` (`--trust`, `PARTAGE_TRUST`), name an issuer that
certificate may sign for (`issuers`: the issuers file `Settings.issuers`, `--issuers`,
`PARTAGE_ISSUERS`, or else the certificate's own identity), be inside their validity
window (with `Settings.clock_skew`) and name `Settings.audience`. With `--insecure-dev`
every request is the INSECURE_DEV_ACTOR, credentials or not. Every outcome is noted on
the request's audit record.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from lxml import etree

from ..config import Settings
from ..registry import credential_uses
from ..registry.store import Registry
from . import audit, issuers, saml, tokens
from .actor import INSECURE_DEV_ACTOR, Actor, AuthenticationRequired


class Holder(Protocol):
    """What authentication reads of the process's Services (access sits below services.py)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def registry(self) -> Registry: ...


def trust_problem(settings: Settings) -> str:
    """Why the configured trust or issuers file cannot serve (empty string: they can, or none is set)."""
    problem = issuers.problem(settings.issuers)
    if problem or not settings.trust:
        return problem
    try:
        with open(settings.trust, "rb") as handle:
            certificates = x509.load_pem_x509_certificates(handle.read())
    except (OSError, ValueError) as exc:
        return f"--trust {settings.trust}: {exc}"
    if not certificates:
        return f"--trust {settings.trust}: no certificate in the file"
    return ""


def _trust(services: Holder) -> str:
    path = services.settings.trust
    if not path:
        raise AuthenticationRequired("this server requires credentials but trusts no certificate authority "
                                     "(start it with --trust CA.pem, or --insecure-dev for development only)")
    if not os.path.isfile(path):
        raise AuthenticationRequired("the configured trust file is missing; no credential can be verified")
    return path


def _issuers(services: Holder) -> issuers.IssuerPolicy:
    try:
        return issuers.load(services.settings.issuers)
    except (OSError, ValueError) as exc:
        raise AuthenticationRequired("the configured issuers file cannot be read; no credential can be "
                                     "verified") from exc


def _consume(services: Holder, actor: Actor) -> None:
    """Refuse a credential already used, when this kind of credential is single-use."""
    mode = (services.settings.one_time_credentials or "none").lower()
    if mode == "none" or (mode == "saml" and actor.auth_method != "saml"):
        return
    if not actor.credential_id:
        raise AuthenticationRequired("a single-use credential needs an identifier (assertion ID / jti)")

    key = f"{actor.auth_method}:{actor.credential_id}"[:160]
    now = int(time.time()) - services.settings.clock_skew
    try:
        credential_uses.consume(services.registry, key, expires_at=actor.credential_expires or now, now=now)
    except credential_uses.AlreadyUsed as exc:
        raise AuthenticationRequired("this credential was already used (replay refused)") from exc


def _done(actor: Actor, address: str) -> Actor:
    if address and not actor.address:
        actor = dataclasses.replace(actor, address=address)
    audit.note_actor(actor)
    return actor


def _authenticated(services: Holder, address: str, verify: Callable[[], Actor]) -> Actor:
    """The actor whose credential `verify` checks, consumed where credentials are single-use;
    a refusal is audited. The insecure development mode answers its fixed actor instead."""
    if services.settings.insecure_dev:
        return _done(INSECURE_DEV_ACTOR, address)
    try:
        actor = verify()
        _consume(services, actor)
    except AuthenticationRequired as exc:
        audit.note_auth_failure(str(exc))
        raise
    return _done(actor, address)


def _saml_actor(services: Holder, header: etree._Element | None) -> Actor:
    assertion = saml.find_assertion(header)
    if assertion is None:
        raise AuthenticationRequired("a signed SAML assertion (VIHF) is required in the WS-Security header")
    s = services.settings
    return saml.verify_assertion(assertion, ca_pem_file=_trust(services), audience=s.audience,
                                 clock_skew=s.clock_skew, trusted_issuers=_issuers(services))


def _bearer_actor(services: Holder, authorization: str | None) -> Actor:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationRequired("a signed bearer token (Authorization: Bearer <JWT>) is required")
    s = services.settings
    return tokens.verify_token(token.strip(), ca_pem_file=_trust(services), audience=s.audience,
                               clock_skew=s.clock_skew, trusted_issuers=_issuers(services))


def soap_actor(services: Holder, header: etree._Element | None, *, address: str = "") -> Actor:
    """The actor of an XDS.b request, from the SOAP Header element (or None)."""
    return _authenticated(services, address, lambda: _saml_actor(services, header))


def http_actor(services: Holder, authorization: str | None, *, address: str = "") -> Actor:
    """The actor of an HTTP request, from its Authorization header."""
    return _authenticated(services, address, lambda: _bearer_actor(services, authorization))
