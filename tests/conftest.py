"""Shared fixtures: where the reference corpus is, and skips with a stated reason when it is not."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CORPUS_DIR = Path(os.environ.get("PARTAGE_CORPUS", PROJECT_ROOT.parent / "shared" / "corpus"))


def corpus_path(*parts: str) -> Path:
    """A path inside ../shared/corpus, or a skip saying it is absent (CI always has it)."""
    path = CORPUS_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference corpus not found at {path} (set PARTAGE_CORPUS or check out shared/ beside the project)")
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return corpus_path()


# --- databases ------------------------------------------------------------------------
from tests.support import REQUIRE_POSTGRES, postgres_available, postgres_database  # noqa: E402

_PG = None


def _pg_ok() -> bool:
    global _PG
    if _PG is None:
        _PG = postgres_available()
    return _PG


def require_postgres() -> None:
    """Fail in CI, skip with the reason elsewhere, when PostgreSQL is not reachable."""
    if not _pg_ok():
        if REQUIRE_POSTGRES:
            pytest.fail("PostgreSQL is required (CI) but not reachable on 127.0.0.1:5432")
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432 (CI starts it; see .ci/run)")


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
# PARTAGE_TEST_SHARDED=1 (.ci/run sets it for the registry, query, access and crash tests): the
# same tests once more on a registry sharded over two more PostgreSQL clusters (registry.sharding).
if os.environ.get("PARTAGE_TEST_SHARDED") == "1":
    BACKENDS.append(pytest.param("sharded", marks=pytest.mark.postgres))


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """Each registry test runs on SQLite and on PostgreSQL (a database of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    require_postgres()
    if request.param == "sharded":
        with sharded_database(request.getfixturevalue("pg_shard_clusters")) as url:
            yield url
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(request):
    """The same for a module's shared server: "" (the embedded SQLite default) or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        yield ""
        return
    require_postgres()
    if request.param == "sharded":
        with sharded_database(request.getfixturevalue("pg_shard_clusters")) as url:
            yield url
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    """A development CA with its signing certificate (partage dev-credentials), saved to disk."""
    from partage.access.credentials import DevAuthority

    directory = tmp_path_factory.mktemp("ca")
    authority = DevAuthority.create()
    authority.save(directory)
    authority.directory = directory
    authority.ca_file = str(directory / "ca.pem")
    return authority


@pytest.fixture
def services(database_url, tmp_path):
    from partage.config import Settings
    from partage.services import Services

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, insecure_dev=True)
    svc = Services.open(settings)
    yield svc
    svc.close()


# --- sharded layout: two extra PostgreSQL clusters, once per session (tests/pg_shards.py) ------
from tests.pg_shards import shard_clusters, sharded_database  # noqa: E402


@pytest.fixture(scope="session")
def pg_shard_clusters():
    """Two throw-away PostgreSQL clusters on free ports for the sharded registry; skipped (or
    failed, when PostgreSQL is required) when the coordinator or initdb is not available."""
    require_postgres()
    try:
        with shard_clusters(2) as clusters:
            yield clusters
    except RuntimeError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"cannot create the shard clusters: {exc}")
        pytest.skip(f"cannot create the shard clusters: {exc}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server (SeaweedFS, tests/s3_support.py) for the module's tests."""
    from tests.s3_support import start_local_s3
    server = start_local_s3(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KB tmpfs to put a blob store on (a full disk); root only, skipped elsewhere."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace')}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
