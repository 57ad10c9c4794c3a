"""The bulk load path writes the rows the registration path writes, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import delete, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import entry_index, schema
from partage.registry.bulk import BulkLoader
from partage.registry.register import register
from tests import factories as F

# Times of the run (second resolution: the two snapshots may straddle a second) and keys.
VOLATILE = {"pk", "object_pk", "registered_at", "updated_at"}


def _request(pid):
    return F.registered_ids(F.submission(pid, [F.document(pid, "d1"), F.document(pid, "d2", title="Second")],
                                         contents=False))


def _snapshot(conn):
    objs = schema.registry_objects
    by_pk = {r.pk: r.entry_uuid for r in conn.execute(select(objs.c.pk, objs.c.entry_uuid))}

    def rows(table, key):
        out = []
        for row in conn.execute(select(table)):
            d = dict(row._mapping)
            if "object_pk" in d:
                d["object"] = by_pk[d["object_pk"]]
            if "registered_at" in d:   # a new object's FHIR version time is its registration time
                assert d["updated_at"] == d["registered_at"], d
            out.append({k: v for k, v in d.items() if k not in VOLATILE})
        return sorted(out, key=lambda d: tuple(str(d.get(k)) for k in key))

    return {"objects": rows(objs, ["entry_uuid"]),
            "codes": rows(schema.object_codes, ["object", "attribute", "code"]),
            "authors": rows(schema.object_authors, ["object", "person"]),
            "unique_ids": rows(schema.unique_ids, ["unique_id"])}


def _clear(conn):
    for table in (schema.object_codes, schema.object_authors, schema.registry_objects, schema.unique_ids):
        conn.execute(delete(table))
    if entry_index.sharded(conn):   # a sharded registry's global entryUUID index
        conn.execute(delete(entry_index.entry_uuids))


def test_bulk_rows_are_the_registration_rows(services):
    registry = services.registry
    pid = F.patient_id()
    with registry.write() as conn:
        registry.upsert_patient(conn, [pid])
    request = _request(pid)
    twin = copy.deepcopy(request)
    with registry.write() as conn:
        register(registry, conn, request, {request.documents[0].entry_uuid: "ab" * 32})
    with registry.read() as conn:
        registered = _snapshot(conn)
    with registry.write() as conn:
        _clear(conn)

    loader = BulkLoader(registry, batch_size=2)
    loader.add(twin, {twin.documents[0].entry_uuid: "ab" * 32})
    loader.flush()
    with registry.read() as conn:
        bulk = _snapshot(conn)
    assert bulk == registered
    assert loader.stats.documents == 2 and loader.stats.patients == 0   # the patient was known
    assert len(registered["objects"]) == 5 and registered["codes"] and registered["authors"]


def test_bulk_loaded_documents_are_found_and_ingest_continues(services):
    registry = services.registry
    loader = BulkLoader(registry, batch_size=3)
    pids = [F.patient_id() for _ in range(3)]
    for pid in pids:
        for _ in range(2):
            loader.add(_request(pid))
    loader.flush()
    assert loader.stats.patients == 3 and loader.stats.documents == 12 and loader.stats.batches >= 2
    query = QueryService(services, INSECURE_DEV_ACTOR)
    for pid in pids:
        found = query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects
        assert len(found) == 4 and {d.patient_id for d in found} == {pid}
    # The normal path still works after a bulk load (sequences / autoincrement advanced).
    result = IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pids[0]))
    assert result.assigned_ids
    assert len(query.find_documents(pids[0], DocumentFilter(statuses=["Approved"])).objects) == 5


def test_a_failed_batch_forgets_the_patients_it_created(services):
    """A batch that fails rolls back the patients it created: the loader must not go on filing
    rows under their keys (a sharded registry has no foreign key to refuse them)."""
    loader = BulkLoader(services.registry)
    first = _request(F.patient_id())
    loader.add_all([first])
    pid = F.patient_id()
    clash = _request(pid)
    clash.submission_set.unique_id = first.submission_set.unique_id   # already claimed: the batch fails
    loader.add(clash)
    with pytest.raises(Exception) as failure:
        loader.flush()
    assert "unique" in str(failure.value).lower() or "duplicate" in str(failure.value).lower(), failure.value
    again = _request(pid)
    loader.add_all([again])
    with services.registry.read() as conn:
        pk = services.registry.patient_pk(conn, pid)
        owners = set(conn.execute(select(schema.registry_objects.c.patient_pk).where(
            schema.registry_objects.c.entry_uuid.in_([o.entry_uuid for o in again.objects()]))).scalars())
    assert pk is not None and owners == {pk}
    assert len(QueryService(services, INSECURE_DEV_ACTOR).find_documents(
        pid, DocumentFilter(statuses=["Approved"])).objects) == 2
