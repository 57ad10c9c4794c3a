"""Migration 0016 (registry.bodies): a registry that lived before it keeps its bodies' JSON and
reads them as before, what is registered after it is packed, and the way down gives the older
code its JSON back; on SQLite, PostgreSQL and (CI's sharded phase) the sharded layout."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import schema
from partage.registry.bodies import VERSION_1
from partage.registry.store import MIGRATIONS_DIR
from tests import factories as F

OBJ = schema.registry_objects


@pytest.fixture
def services(database_url, tmp_path):
    from partage.config import Settings
    from partage.services import Services

    svc = Services.open(Settings(data_dir=tmp_path / "data", database_url=database_url, insecure_dev=True))
    yield svc
    svc.close()


def _alembic(services, step, target: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with services.registry.engine.connect() as conn:   # a transaction per migration, as migrate()
        cfg.attributes["connection"] = conn
        step(cfg, target)


def _first_bytes(services) -> dict[str, set[bytes]]:
    """Each object's first stored byte, by entryUUID."""
    with services.registry.read() as conn:
        rows = conn.execute(select(OBJ.c.entry_uuid, OBJ.c.body)).all()
    return {r.entry_uuid: (r.body.encode() if isinstance(r.body, str) else bytes(r.body))[:1] for r in rows}


def _found(services, pid) -> list:
    reply = QueryService(services, INSECURE_DEV_ACTOR).find_documents(pid, DocumentFilter(statuses=["Approved"]))
    return sorted(reply.objects, key=lambda d: d.unique_id)


def test_bodies_stored_before_the_migration_read_as_before_and_new_ones_are_packed(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    ingest.provide_and_register(F.submission(pid, [F.document(pid, "a", title="Échographie — contrôle")]))
    assert set(_first_bytes(services).values()) == {VERSION_1}
    before = _found(services, pid)

    _alembic(services, command.downgrade, "0015")
    assert set(_first_bytes(services).values()) == {b"{"}        # the older code's JSON again
    assert _found(services, pid) == before
    if services.registry.engine.dialect.name == "postgresql":
        with services.registry.read() as conn:
            kind = conn.exec_driver_sql("SELECT data_type FROM information_schema.columns WHERE "
                                        "table_name = 'registry_objects' AND column_name = 'body'").scalar()
        assert kind == "text"

    _alembic(services, command.upgrade, "head")
    old = _first_bytes(services)
    assert set(old.values()) == {b"{"}                           # kept as they were, as bytes
    assert _found(services, pid) == before
    ingest.provide_and_register(F.submission(pid, [F.document(pid, "b")]))
    new = {uuid: first for uuid, first in _first_bytes(services).items() if uuid not in old}
    assert new and set(new.values()) == {VERSION_1}
    assert len(_found(services, pid)) == 2
