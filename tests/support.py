"""Test support: databases per test (SQLite file or a fresh PostgreSQL database) and a
real `partage serve` process on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from partage.config import Settings
from partage.conformance.testkit import __main__ as testkit_entry
from partage.services import Services

PG_ADMIN_URL = os.environ.get("PARTAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("PARTAGE_REQUIRE_POSTGRES", "") == "1" or os.environ.get("CI") == "true"


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@contextmanager
def postgres_database(prefix: str = "partage_test"):
    """A uniquely named database, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`partage serve` in a subprocess, talked to only through its ports."""

    def __init__(self, data_dir: Path, *, database_url: str = "", extra_args: list[str] | None = None,
                 insecure_dev: bool = True, workers: int = 1, mllp: bool = True,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.env = dict(env or {})   # PARTAGE_* settings that have no flag (over os.environ at start)
        self.port = port or free_port()
        self.mllp_port = free_port() if mllp else 0
        self.base_url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "partage.cli", "serve", "--data", str(data_dir),
                "--port", str(self.port), "--mllp-port", str(self.mllp_port),
                "--workers", str(workers), *(extra_args or [])]
        if database_url:
            args += ["--database", database_url]
        if insecure_dev:
            args.append("--insecure-dev")
        self.args = args
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    if self._mllp_ready():
                        return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log()}")

    def _mllp_ready(self) -> bool:
        if not self.mllp_port:
            return True
        try:
            with socket.create_connection(("127.0.0.1", self.mllp_port), timeout=1):
                return True
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def send_signal(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def served_with_services(data_dir: Path, **server: Any) -> Iterator[LiveServer]:
    """`partage serve` on `data_dir` (`server`: LiveServer's options) with this process's own
    services on the same data (`live.services`), for a test that serves and inspects."""
    with LiveServer(data_dir, **server) as live:
        live.services = Services.open(Settings(data_dir=data_dir), migrate=False)
        try:
            yield live
        finally:
            live.services.close()


def run_nist_testkit(server: LiveServer, testkit: Path, codes: Path, out: Path, selection: list[str]) -> int:
    """`partage-testkit nist` against the server's registry, repository and MLLP endpoints, its
    JSON report written to `out`; `selection`: `--collections ...` or `--tests ...`."""
    return testkit_entry.main(["nist", "--testkit", str(testkit), "--codes", str(codes),
                               "--registry", f"{server.base_url}/xds/registry",
                               "--repository", f"{server.base_url}/xds/repository",
                               "--mllp", f"127.0.0.1:{server.mllp_port}", *selection, "--json", str(out)])
