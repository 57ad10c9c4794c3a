"""Signing in to the professional's page: OpenID Connect as Pro Santé Connect works.

    GET  /connexion                 -> the provider's authorization endpoint (authorization
                                       code + PKCE S256, state, nonce; Authlib's Flask client)
    GET  /connexion/retour          <- the provider: code exchanged for tokens, the ID token
                                       verified (signature by the provider's JWKS, issuer,
                                       audience, nonce), the userinfo read; the professional
                                       becomes a session
    POST /connexion/deconnexion     ends the session (and the provider's, when it says how)

The professional's identity is read from the ID token and userinfo as Pro Santé Connect
gives it (`SubjectNameID`: the national id 8+RPPS; `SubjectRefPro.exercices[]`: profession,
savoir-faire, activities with the structure and its sector) and turned into the IHE IUA
claims the bearer-JWT door reads, so `partage.access.tokens.actor_from_claims` builds the
one Actor both doors use. The session is Flask's signed cookie (`__Host-partage_session`: Secure,
HttpOnly, SameSite=Lax so that the provider's redirect back carries it) holding those claims,
an expiry (`Settings.session_lifetime`, 8 h by default), when it was last used (idle expiry:
`Settings.session_idle`, 30 min by default, as NIST SP 800-63B asks at AAL2 and OWASP ASVS
3.3.2 at level 2) and a session id that the registry knows (`page_sessions`): the page refuses
an expired or idle session, one ended by a sign-out, and the one a browser held before it
signed in again.
The access mode (normal, or bris de glace with its reason) is chosen per patient on the page
and kept in the session (`partage.web.clinical_page`). The signing key is
`Settings.session_secret`, else a random key kept in the data directory (`session.key`),
shared by the workers of one host; several hosts must share `PARTAGE_SESSION_SECRET`.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    request,
    session,
    url_for,
)
from requests.exceptions import RequestException
from werkzeug.wrappers import Response as WerkzeugResponse

from ..access import audit, saml
from ..access.actor import BRIS_DE_GLACE, NORMAL, Actor, AuthenticationRequired
from ..access.tokens import actor_from_claims
from ..config import Settings
from ..metadata.datatypes import CE
from ..registry import page_sessions
from .pages import message, view_error

log = logging.getLogger("partage.web.login")
bp = Blueprint("login", __name__, url_prefix="/connexion", template_folder="templates")
bp.register_error_handler(Exception, view_error)   # French pages, no stack trace
PROVIDER = "psc"
SCOPE = "openid scope_all"       # what Pro Santé Connect asks for the professional's exercises
ACR = "eidas1"                   # Pro Santé Connect's level for a professional (CPS card or e-CPS)
# The __Host- prefix (RFC 6265bis 4.1.3.2, OWASP ASVS 3.4.4): a browser keeps it only when Secure,
# Path=/ and without Domain, so no sibling host or path can plant or shadow the session.
COOKIE = "__Host-partage_session"
PROFESSION_ROLE_SYSTEM = "1.2.250.1.213.1.1.5.5"   # SubjectRole "10^1.2.250.1.213.1.1.5.5"


class LoginRequired(Exception):
    """No session (or an expired one) and no bearer token: a browser is sent to sign in."""


# --- the app's side -------------------------------------------------------------------------------
def session_secret(settings: Settings) -> str:
    """The key that signs session cookies: the setting, else one kept in the data directory."""
    if settings.session_secret:
        return settings.session_secret
    path = Path(settings.data_dir) / "session.key"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    for _ in range(50):   # another worker may be writing it right now
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty")


def install(app: Flask, settings: Settings) -> None:
    """The session cookie's settings and the OpenID Connect client."""
    app.secret_key = session_secret(settings)
    app.config.update(SESSION_COOKIE_NAME=COOKIE, SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", PERMANENT_SESSION_LIFETIME=settings.session_lifetime,
                      SESSION_REFRESH_EACH_REQUEST=False)
    oauth = OAuth(app)
    if settings.oidc_issuer:
        oauth.register(PROVIDER, client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret,
                       server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
                       client_kwargs={"scope": SCOPE, "code_challenge_method": "S256", "timeout": 10})
    app.extensions["partage_oauth"] = oauth
    app.register_blueprint(bp)


def _provider() -> Any:
    oauth = current_app.extensions["partage_oauth"]
    client = oauth.create_client(PROVIDER)
    if client is None:
        # Not an outage (nothing to retry): this server has no sign-in, as a path it does not serve.
        abort(message("Connexion indisponible", "La connexion par Pro Santé Connect n'est pas configurée sur "
                      "ce serveur (réglage oidc_issuer).", 404))
    return client


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def check_csrf() -> None:
    sent = request.form.get("csrf", "")
    if not sent or not hmac.compare_digest(sent, str(session.get("csrf", ""))):
        abort(403)


def session_actor(rid: str = "") -> Actor | None:
    """The signed-in professional (None without a live session), in the access mode chosen for
    patient `rid`; noted on the request's audit record."""
    claims = session.get("claims")
    expires = session.get("expires", 0)
    seen = session.get("seen", 0)
    sid = str(session.get("sid") or "")
    now = int(time.time())
    idle = current_app.extensions["partage"].settings.session_idle
    if not isinstance(claims, dict) or not isinstance(expires, int | float) or expires <= now or not sid \
            or not isinstance(seen, int | float) or now - seen >= idle:   # absolute, then idle expiry
        return None
    with current_app.extensions["partage"].registry.read() as conn:
        if not page_sessions.is_live(conn, sid, now):   # ended by a sign-out
            return None
    if now - seen >= max(idle // 10, 1):   # the idle clock restarts (the cookie is rewritten now and then)
        session["seen"] = now
    try:
        actor = actor_from_claims(claims)
    except AuthenticationRequired:
        return None
    actor = dataclasses.replace(actor, auth_method="oidc", credential_id=f"oidc:{page_sessions.key(sid)[:16]}",
                                credential_expires=int(expires), address=request.remote_addr or "")
    emergency = (session.get("bdg") or {}).get(rid) if rid else None
    if emergency:
        actor = dataclasses.replace(actor, purpose=BRIS_DE_GLACE, reason=str(emergency))
    audit.note_actor(actor)
    return actor


def signed_in_name() -> str:
    claims = session.get("claims") or {}
    return str(((claims.get("extensions") or {}).get("ihe_iua") or {}).get("subject_name") or "")


MAX_RETURN_PATH = 1024   # the place to go back to rides in the session cookie (4 KB in all, RFC 6265 6.1)


def _local(target: str) -> str:
    """Only a path of this site (never another host) is a place to go back to after signing in;
    one too long for the session cookie (which would then be dropped by the browser, and the
    sign-in with it) is the home page."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or len(target) > MAX_RETURN_PATH:
        return "/"
    return target


# --- Pro Santé Connect's claims -> the IUA claims of the bearer door ----------------------------------
def psc_claims(userinfo: dict[str, Any], id_token: dict[str, Any]) -> dict[str, Any]:
    """The IHE IUA-like claims (`partage.access.tokens`) of a Pro Santé Connect professional."""
    info = {**id_token, **userinfo}
    national_id = str(info.get("SubjectNameID") or info.get("preferred_username") or "")
    if not national_id:
        raise AuthenticationRequired("the identity provider did not give the professional's national id "
                                     "(SubjectNameID)")
    found = info.get("SubjectRefPro")
    ref: dict[str, Any] = found if isinstance(found, dict) else {}
    exercices = [e for e in (ref.get("exercices") or []) if isinstance(e, dict)]
    exercice = exercices[0] if exercices else {}
    role = str(exercice.get("codeProfession") or "")
    if not role:
        for value in info.get("SubjectRole") or []:
            ce = CE.parse(str(value))   # code^system (Pro Santé Connect) or code^text^system
            code, system = ce.identifier, ce.coding_system or ce.text
            if not system or system == PROFESSION_ROLE_SYSTEM:
                role = code
                break
    activities = [a for a in (exercice.get("activities") or []) if isinstance(a, dict)]
    activity = activities[0] if activities else {}
    given = str(exercice.get("prenomDexercice") or info.get("given_name") or "")
    family = str(exercice.get("nomDexercice") or info.get("family_name") or "")
    civility = str(exercice.get("codeCiviliteDexercice") or "")
    title = {"DR": "Dr", "PR": "Pr"}.get(civility.upper(), "")
    iua: dict[str, Any] = {
        "subject_name": " ".join(p for p in (title, given, family) if p),
        "subject_organization_id": str(activity.get("identifiantTechniqueDeLaStructure")
                                       or activity.get("numeroFinessSite") or info.get("SubjectOrganizationId") or ""),
        "purpose_of_use": {"system": saml.PURPOSE_SYSTEM, "code": NORMAL},
        "national_provider_identifier": national_id,
    }
    if role:
        iua["subject_role"] = {"system": saml.PROFESSION_SYSTEM, "code": role}
    vihf = {"kind": "professional", "specialty": str(exercice.get("codeSavoirFaire") or ""),
            "sector": str(activity.get("codeSecteurDactivite") or ""), "software": "Partage (page web)"}
    return {"sub": national_id, "iss": str(id_token.get("iss") or ""), "jti": str(info.get("sid") or info.get("jti") or ""),
            "extensions": {"ihe_iua": iua, "fr_vihf": {k: v for k, v in vihf.items() if v}}}


# --- routes -----------------------------------------------------------------------------------------
@bp.get("")
def sign_in() -> WerkzeugResponse:
    provider = _provider()
    session["after_login"] = _local(request.args.get("suite", "/"))
    try:
        answer: WerkzeugResponse = provider.authorize_redirect(url_for("login.callback", _external=True),
                                                               acr_values=ACR)
        return answer
    except (RequestException, OAuthError, ValueError) as exc:
        log.warning("identity provider unreachable: %s", exc)
        return _failed("Le service d'identification ne répond pas. Réessayez dans un instant.", 502)


@bp.get("/retour")
def callback() -> WerkzeugResponse:
    provider = _provider()
    try:
        token = provider.authorize_access_token()
        if not token.get("id_token") or not token.get("userinfo"):   # Authlib verifies one only if given
            raise OAuthError(description="the provider's token answer has no ID token")
        id_claims = dict(token["userinfo"])   # the verified ID token's claims
        userinfo = dict(provider.userinfo(token=token))
        if str(userinfo.get("sub") or "") != str(id_claims.get("sub") or ""):   # OIDC Core 5.3.2
            raise OAuthError(description="the userinfo answer is not about the ID token's subject")
        claims = psc_claims(userinfo, id_claims)
        actor_from_claims(claims)   # refuses what the bearer door would refuse
    except (OAuthError, AuthenticationRequired) as exc:
        log.warning("sign-in refused: %s", exc)
        return _failed("La connexion a échoué : l'identification n'a pas pu être vérifiée.", 401)
    except (RequestException, ValueError) as exc:
        log.warning("identity provider error: %s", exc)
        return _failed("Le service d'identification ne répond pas. Réessayez dans un instant.", 502)
    after = session.pop("after_login", "/")
    previous = str(session.get("sid") or "")
    session.clear()
    now = int(time.time())
    expires = now + int(current_app.permanent_session_lifetime.total_seconds())
    sid = secrets.token_urlsafe(24)
    with current_app.extensions["partage"].registry.write() as conn:
        if previous:   # the session this browser held ends: a copy of its cookie opens nothing any more
            page_sessions.end(conn, previous, now)
        page_sessions.open_session(conn, sid, claims["sub"], now, expires)
    session.permanent = True
    session.update(claims=claims, expires=expires, seen=now, sid=sid, csrf=secrets.token_urlsafe(24),
                   id_token=token.get("id_token", ""))
    return redirect(_local(after))


@bp.post("/deconnexion")
def sign_out() -> WerkzeugResponse:
    check_csrf()
    id_token = str(session.get("id_token") or "")
    if session.get("sid"):
        with current_app.extensions["partage"].registry.write() as conn:
            page_sessions.end(conn, str(session["sid"]), int(time.time()))
    session.clear()
    oauth = current_app.extensions["partage_oauth"]
    provider = oauth.create_client(PROVIDER)
    if provider is not None and id_token:
        try:
            if provider.load_server_metadata().get("end_session_endpoint"):
                answer: WerkzeugResponse = provider.logout_redirect(
                    post_logout_redirect_uri=url_for("login.signed_out", _external=True), id_token_hint=id_token)
                return answer
        except (RequestException, OAuthError, ValueError) as exc:
            log.warning("identity provider logout skipped: %s", exc)
    return redirect(url_for("login.signed_out"))


@bp.get("/au-revoir")
def signed_out() -> Response:
    return message("Déconnexion", "Vous êtes déconnecté(e).", 200, link=("/connexion", "Se reconnecter"))


def _failed(text: str, status: int) -> Response:
    return message("Connexion impossible", text, status, link=("/connexion", "Réessayer"))
