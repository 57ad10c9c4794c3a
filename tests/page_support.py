"""Test support for the professional's page: the development OpenID provider in its own
process (`partage dev-idp`), and a client that signs in through it as a browser would
(redirects followed by hand, cookies kept by hand: `requests` never sends a Secure cookie
over plain http, which a browser does to a loopback address)."""

from __future__ import annotations

import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from lxml import html

from tests.support import free_port

CLIENT_SECRET = "test-secret"


class DevIdp:
    """`partage dev-idp` in a subprocess, on a free port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"dev-idp-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DevIdp:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "partage.cli", "dev-idp", "--port", str(self.port),
                                         "--client-secret", CLIENT_SECRET], stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"dev-idp did not start: {self.log_path.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        self._log.close()

    def server_args(self) -> dict[str, str]:
        """The environment a `partage serve` needs to sign in with this provider."""
        return {"PARTAGE_OIDC_ISSUER": self.issuer, "PARTAGE_OIDC_CLIENT_ID": "partage",
                "PARTAGE_OIDC_CLIENT_SECRET": CLIENT_SECRET}


class Browserless:
    """A cookie jar by name (host-blind: one server and one provider on loopback, different
    ports, never the same cookie name) and requests that follow nothing by themselves."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def _keep(self, response: requests.Response) -> None:
        for header in response.raw.headers.getlist("Set-Cookie") if response.raw is not None else []:
            self.set_cookie_headers.append(header)
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def request(self, method: str, url: str, **kwargs: object) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})   # type: ignore[call-overload]
        headers.setdefault("Accept", "text/html,application/xhtml+xml")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = requests.request(method, url, headers=headers, allow_redirects=False, timeout=30,
                                    **kwargs)  # type: ignore[arg-type]
        self._keep(response)
        return response

    def get(self, url: str, **kwargs: object) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def follow(self, response: requests.Response, limit: int = 10) -> requests.Response:
        for _ in range(limit):
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            response = self.get(urljoin(response.url, response.headers["Location"]))
        raise AssertionError("too many redirects")


def sign_in(client: Browserless, base_url: str, path: str, user: str = "gp") -> requests.Response:
    """Open `path` without a session and sign in at the provider as `user`, as a browser would;
    the answer is what the browser shows at the end."""
    response = client.get(base_url + path)
    assert response.status_code == 302, (response.status_code, response.text[:500])
    response = client.get(urljoin(response.url, response.headers["Location"]))   # /connexion
    assert response.status_code == 302, (response.status_code, response.text[:500])
    authorize = response.headers["Location"]
    assert urlsplit(authorize).path == "/authorize"
    chooser = client.get(authorize)
    assert chooser.status_code == 200, chooser.text[:500]
    assert html.fromstring(chooser.text).xpath(f"//button[@value='{user}']")
    response = client.post(authorize, data={"user": user})
    assert response.status_code == 302, (response.status_code, response.text[:500])
    return client.follow(response)


def csrf_of(page_html: str) -> str:
    return str(html.fromstring(page_html).xpath("//input[@name='csrf']/@value")[0])
