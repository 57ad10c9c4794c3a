"""Test support for the professional's page: the development OpenID provider in its own
process (`partage dev-idp`), and a client that signs in through it as a browser would
(redirects followed by hand, cookies kept by hand: `requests` never sends a Secure cookie
over plain http, which a browser does to a loopback address)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from lxml import html

from partage.config import Settings
from partage.services import Services
from tests.support import LiveServer, free_port

CLIENT_SECRET = "test-secret"


@contextlib.contextmanager
def dev_services(data_dir: Path, database_url: str = "") -> Iterator[Services]:
    """Services without authentication and without the PDF text indexer, for in-process pages."""
    services = Services.open(Settings(data_dir=data_dir, database_url=database_url, insecure_dev=True,
                                      text_indexer=False))
    try:
        yield services
    finally:
        services.close()


@contextlib.contextmanager
def signed_in_server(data: Path, env: dict[str, str], ca_file: str,
                     record: Callable[[Services], str]) -> Iterator[LiveServer]:
    """A real `partage serve` signing professionals in through an OpenID provider (`env`: its
    PARTAGE_OIDC_* settings and others), with one record made by `record` (its public id in
    `rid`, its page in `dossier`) and the server's services in `services`."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        live = LiveServer(data, insecure_dev=False, mllp=False, extra_args=["--trust", ca_file])
        live.start()
    try:
        services = Services.open(Settings(data_dir=data), migrate=False)
        try:
            live.rid = record(services)
            live.dossier = f"/dossier/{live.rid}"
            live.services = services
            yield live
        finally:
            services.close()
    finally:
        live.stop()


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
