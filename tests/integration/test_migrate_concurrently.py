"""Several hosts starting at once on a new database (Registry.migrate: one migration per
transaction, each under the migration's transaction-scoped advisory lock on PostgreSQL, behind
SQLite's write lock there): every one of them ends at head, and each migration ran once."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from partage.registry.store import MIGRATIONS_DIR, Registry
from tests.conftest import PROJECT_ROOT, require_postgres
from tests.support import postgres_database

HOSTS = 3
MIGRATE = "import sys; from partage.registry.store import Registry; Registry(sys.argv[1]).migrate(); print('ok')"


def _head() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_database(request, tmp_path):
    """The URL of a database no host has migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    require_postgres()
    with postgres_database("partage_migrate") as url:
        yield url


def test_hosts_migrating_a_new_database_at_once_all_reach_head(new_database):
    url = new_database
    hosts = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(HOSTS)]
    answers = [host.communicate(timeout=300) for host in hosts]
    assert [host.returncode for host in hosts] == [0] * HOSTS, [err[-2000:] for _, err in answers]
    registry = Registry(url)
    try:
        with registry.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == _head()
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    finally:
        registry.dispose()
