"""Shared fixtures: where the reference corpus is, and skips with a stated reason when it is not."""

from __future__ import annotations

import os
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Each registry test runs on SQLite and on PostgreSQL (a database of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    if not _pg_ok():
        if REQUIRE_POSTGRES:
            pytest.fail("PostgreSQL is required (CI) but not reachable on 127.0.0.1:5432")
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432 (CI starts it; see .ci/run)")
    with postgres_database() as url:
        yield url


@pytest.fixture
def services(database_url, tmp_path):
    from partage.config import Settings
    from partage.services import Services

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, insecure_dev=True)
    svc = Services.open(settings)
    yield svc
    svc.close()
