"""What running on several hosts needs from the store: concurrent first starts migrate once,
pool settings reach the engine, the blob store a setting names."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect

from partage.config import Settings
from partage.registry.store import Registry
from partage.repository import FilesystemBlobStore, open_blob_store
from partage.services import Services
from tests.support import postgres_available, postgres_database

pg = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL not reachable on 127.0.0.1:5432")


@pg
@pytest.mark.postgres
def test_hosts_starting_together_migrate_once():
    with postgres_database() as url:
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def host():
            registry = Registry(url)
            try:
                start.wait()
                registry.migrate()
            except BaseException as exc:
                errors.append(exc)
            finally:
                registry.dispose()

        threads = [threading.Thread(target=host, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "migrations blocked each other"
        assert errors == []
        registry = Registry(url)
        assert "registry_objects" in inspect(registry.engine).get_table_names()
        registry.dispose()


@pg
@pytest.mark.postgres
def test_pool_settings_reach_the_engine(tmp_path):
    with postgres_database() as url:
        settings = Settings.from_env({"PARTAGE_DB_POOL_SIZE": "3", "PARTAGE_DB_MAX_OVERFLOW": "2",
                                      "PARTAGE_DB_POOL_TIMEOUT": "7", "PARTAGE_DB_POOL_RECYCLE": "600"},
                                     data_dir=tmp_path, database_url=url)
        services = Services.open(settings)
        pool = services.registry.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._recycle) == (3, 2, 7, 600)
        services.close()


def test_blob_store_setting(tmp_path):
    assert isinstance(open_blob_store("", tmp_path / "a"), FilesystemBlobStore)
    store = open_blob_store(f"file://{tmp_path / 'b'}", tmp_path / "a")
    assert store.root == tmp_path / "b"
    assert open_blob_store(str(tmp_path / "c"), tmp_path / "a").root == tmp_path / "c"
    with pytest.raises(ValueError):
        open_blob_store("ftp://host/x", tmp_path)
