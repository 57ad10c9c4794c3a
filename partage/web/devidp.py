"""`partage dev-idp`: a local OpenID Connect provider shaped like Pro Santé Connect, for
development, the README tour and the browser tests. DEVELOPMENT ONLY: anyone who reaches
it signs in as any sample professional, by clicking a name.

Built on Authlib's provider components (authorization code grant with PKCE, OpenID Connect
ID tokens, the userinfo endpoint); it publishes its discovery document
(`/.well-known/openid-configuration`) and its keys (`/jwks`), signs ID tokens with an RSA key
made at start, and gives, in the ID token and at `/userinfo`, the claims Pro Santé Connect
gives a professional (`SubjectNameID` = 8+RPPS, `SubjectRole`, `SubjectRefPro.exercices[]`
with profession, savoir-faire and activities). Its users are the professionals of
`partage dev-credentials` (`partage.access.credentials.sample_actors`); one client
(`--client-id`, `--client-secret`) whose redirect URIs are on loopback addresses (or those
given with `--redirect-uri`).

The command (`partage dev-idp`, flags in `partage.cli.devidp`) runs it:

    partage dev-idp --port 9000
    PARTAGE_OIDC_ISSUER=http://127.0.0.1:9000 PARTAGE_OIDC_CLIENT_SECRET=dev-secret partage serve ...
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, Response, jsonify, request
from joserfc.jwk import RSAKey

from ..access.actor import PROFESSIONAL, Actor
from ..access.credentials import sample_actors

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CALLBACK_PATH = "/connexion/retour"


def _names(actor: Actor) -> tuple[str, str, str]:
    """(civility, given, family) from a sample actor's display name ("Dr Claire MARTIN (...)")."""
    words = actor.name.split(" (")[0].split()
    civility = "DR" if words and words[0] in ("Dr", "Pr") else ""
    if civility:
        words = words[1:]
    return civility, " ".join(words[:-1]), words[-1] if words else actor.id


def psc_userinfo(actor: Actor) -> dict[str, Any]:
    """The claims Pro Santé Connect gives for this professional."""
    civility, given, family = _names(actor)
    activity = {"identifiantTechniqueDeLaStructure": actor.structure, "codeSecteurDactivite": actor.sector,
                "raisonSocialeSite": f"Structure {actor.structure}"}
    exercice = {"codeProfession": actor.role, "codeCategorieProfessionnelle": "C",
                "codeCiviliteDexercice": civility, "nomDexercice": family, "prenomDexercice": given,
                "codeTypeSavoirFaire": "S" if actor.specialty else "", "codeSavoirFaire": actor.specialty,
                "activities": [activity]}
    return {"sub": f"psc-{actor.id}", "SubjectNameID": actor.id, "preferred_username": actor.id,
            "given_name": given, "family_name": family, "SubjectRole": [f"{actor.role}^1.2.250.1.213.1.1.5.5"],
            "SubjectRefPro": {"codeCivilite": civility, "exercices": [exercice]},
            "SubjectOrganization": activity["raisonSocialeSite"], "SubjectOrganizationId": actor.structure}


def users() -> dict[str, Actor]:
    """The sample professionals, in their normal access mode (the page asks for bris de glace)."""
    return {key: Actor(**{**a.__dict__, "purpose": "normal", "reason": ""})
            for key, a in sample_actors().items() if a.kind == PROFESSIONAL}


# --- the provider's records (in memory) ------------------------------------------------------------
@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str] = field(default_factory=list)

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0] if self.redirect_uris else ""

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in ("openid", "scope_all", "profile"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if self.redirect_uris:
            return redirect_uri in self.redirect_uris
        parts = urlsplit(redirect_uri)
        return parts.scheme in ("http", "https") and parts.hostname in LOOPBACK and parts.path == CALLBACK_PATH

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret or "", self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post") if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    nonce: str
    code_challenge: str
    code_challenge_method: str
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str:
        return "eidas1"

    def get_amr(self) -> list[str]:
        return ["dev"]


@dataclass
class Token(TokenMixin):
    access_token: str
    client: Client
    scope: str
    user: str
    expires_at: float

    def check_client(self, client: ClientMixin) -> bool:
        return bool(client.get_client_id() == self.client.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        return self.client


class Store:
    """Codes and tokens of one provider process."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.lock = threading.Lock()


# --- the provider ----------------------------------------------------------------------------------
def create_provider(issuer: str, client_id: str = "partage", client_secret: str = "dev-secret",
                    redirect_uris: list[str] | None = None) -> Flask:
    issuer = issuer.rstrip("/")
    app = Flask("partage-dev-idp")
    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 600}
    key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"},
                              private=True)
    store = Store(Client(client_id, client_secret, list(redirect_uris or [])))
    people = users()

    def user_info(user: str, scope: str) -> UserInfo:  # noqa: ARG001 — Authlib's signature
        return UserInfo(psc_userinfo(people[user]))

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code: str, req: Any) -> None:
            with store.lock:
                store.codes[code] = Code(code, req.client.client_id, req.payload.redirect_uri or "",
                                         req.payload.scope or "", req.user, req.payload.data.get("nonce", ""),
                                         req.payload.data.get("code_challenge", ""),
                                         req.payload.data.get("code_challenge_method", ""), int(time.time()),
                                         time.time() + 120)

        def query_authorization_code(self, code: str, client: ClientMixin) -> Code | None:
            with store.lock:
                found = store.codes.get(code)
            if found is None or found.client_id != client.get_client_id() or found.expires_at < time.time():
                return None
            return found

        def delete_authorization_code(self, authorization_code: Code) -> None:
            with store.lock:
                store.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> str:
            return authorization_code.user

    class OpenID(OpenIDCode):
        def exists_nonce(self, nonce: str, req: Any) -> bool:  # noqa: ARG002 — Authlib's signature
            with store.lock:
                return any(c.nonce == nonce for c in store.codes.values())

        def resolve_client_private_key(self, client: ClientMixin) -> RSAKey:  # noqa: ARG002 — Authlib's signature
            return key

        def get_client_algorithm(self, client: ClientMixin) -> str:  # noqa: ARG002 — Authlib's signature
            return "RS256"

        def get_encode_header(self, client: ClientMixin) -> dict[str, str]:  # noqa: ARG002 — Authlib's signature
            return {"alg": "RS256", "kid": str(key.kid)}

        def get_client_claims(self, client: ClientMixin) -> dict[str, Any]:
            return {"iss": issuer, "aud": [client.get_client_id()], "exp": int(time.time()) + 600}

        def generate_user_info(self, user: str, scope: str) -> UserInfo:
            return user_info(user, scope)

    def save_token(token: dict[str, Any], req: Any) -> None:
        with store.lock:
            store.tokens[token["access_token"]] = Token(token["access_token"], req.client, token.get("scope", ""),
                                                        req.user, time.time() + int(token.get("expires_in", 600)))

    server = AuthorizationServer(app, query_client=lambda cid: store.client if cid == store.client.client_id
                                 else None, save_token=save_token)
    server.register_grant(CodeGrant, [OpenID(require_nonce=True), CodeChallenge(required=True)])

    class Validator(BearerTokenValidator):
        def authenticate_token(self, token_string: str) -> Token | None:
            with store.lock:
                return store.tokens.get(token_string)

    protector = ResourceProtector()
    protector.register_token_validator(Validator())

    class UserInfoAt(UserInfoEndpoint):
        def get_issuer(self) -> str:
            return issuer

        def generate_user_info(self, user: str, scope: str) -> UserInfo:
            return user_info(user, scope)

        def resolve_private_key(self) -> RSAKey:
            return key

    server.register_endpoint(UserInfoAt(resource_protector=protector))

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        return jsonify({
            "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token",
            "userinfo_endpoint": f"{issuer}/userinfo", "jwks_uri": f"{issuer}/jwks",
            "end_session_endpoint": f"{issuer}/logout", "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "scope_all"], "acr_values_supported": ["eidas1"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["sub", "SubjectNameID", "SubjectRole", "SubjectRefPro", "given_name",
                                 "family_name", "preferred_username", "SubjectOrganization"]})

    @app.get("/jwks")
    def jwks() -> Response:
        return jsonify({"keys": [key.as_dict(private=False)]})

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        if request.method == "GET":
            try:
                server.get_consent_grant(end_user=None)
            except Exception as exc:   # Authlib's OAuth2Error: answered as the spec says
                return server.handle_error_response(request, exc) if hasattr(exc, "error") else \
                    Response(html.escape(str(exc)), 400)
            buttons = "".join(
                f'<p><button name="user" value="{html.escape(k)}">{html.escape(a.name)} '
                f'<small>— RPPS {html.escape(a.id[1:])}, profession {html.escape(a.role)}'
                f'{" / " + html.escape(a.specialty) if a.specialty else ""}</small></button></p>'
                for k, a in people.items())
            return Response(f'<!doctype html><html lang="fr"><meta charset="utf-8"><title>Pro Santé Connect '
                            f'(développement)</title><h1>Pro Santé Connect — fournisseur de développement</h1>'
                            f'<p>Choisissez le professionnel qui se connecte.</p><form method="post">{buttons}'
                            f'</form></html>', 200, {"Content-Type": "text/html; charset=utf-8"})
        user = request.form.get("user", "")
        return server.create_authorization_response(grant_user=user if user in people else None)

    @app.post("/token")
    def token() -> Any:
        return server.create_token_response()

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo() -> Any:
        return server.create_endpoint_response("userinfo")

    @app.get("/logout")
    def logout() -> Any:
        target = request.args.get("post_logout_redirect_uri", "")
        parts = urlsplit(target)
        if parts.hostname in LOOPBACK or target in store.client.redirect_uris:
            state = request.args.get("state", "")
            return Response("", 302, {"Location": target + (f"?state={state}" if state else "")})
        return Response("<!doctype html><p>Déconnecté.</p>", 200, {"Content-Type": "text/html; charset=utf-8"})

    return app
