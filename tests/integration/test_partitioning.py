"""partage.registry.partitioning: the registry keeps working on tables partitioned by patient
hash (PostgreSQL), and a patient's query reads one partition."""

from __future__ import annotations

import pytest

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.config import Settings
from partage.ingest import IngestService
from partage.metadata.model import Association, AssociationType
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import partitioning
from partage.registry.bulk import BulkLoader
from partage.services import Services
from tests import factories as F
from tests.conftest import require_postgres
from tests.support import postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def partitioned(tmp_path):
    require_postgres()   # partitioning is PostgreSQL only
    with postgres_database() as url:
        services = Services.open(Settings(data_dir=tmp_path / "data", database_url=url, insecure_dev=True))
        partitioning.partition(services.registry, partitions=4)
        yield services
        services.close()


def _patient(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    return pid


def _find(services, pid, status="Approved"):
    return QueryService(services, INSECURE_DEV_ACTOR).find_documents(pid, DocumentFilter(statuses=[status])).objects


def test_registry_flows_on_partitioned_tables(partitioned):
    services = partitioned
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    a, b = _patient(services), _patient(services)
    ingest.provide_and_register(F.submission(a))
    ingest.provide_and_register(F.submission(b))
    original = _find(services, a)[0].entry_uuid
    rplc = Association(entry_uuid="rplc", association_type=AssociationType.RPLC, source_uuid="doc2",
                       target_uuid=original)
    ingest.provide_and_register(F.submission(a, [F.document(a, "doc2")], extra_associations=[rplc]))
    assert [d.entry_uuid for d in _find(services, a, "Deprecated")] == [original]
    assert len(_find(services, a)) == 1

    with services.registry.write() as conn:           # rows move to the survivor's partition
        services.registry.merge_patients(conn, a, b)
    assert len(_find(services, a)) == 2 and len(_find(services, a, "Deprecated")) == 1

    loader = BulkLoader(services.registry)
    c = F.patient_id()
    loader.add(F.submission(c, contents=False))
    loader.flush()
    assert len(_find(services, c)) == 1

    with services.registry.read() as conn:
        pk = services.registry.patient_pk(conn, a)
        plan = "\n".join(r[0] for r in conn.exec_driver_sql(
            "EXPLAIN SELECT body FROM registry_objects WHERE patient_pk = %(pk)s AND kind = 'D'", {"pk": pk}))
    assert plan.count(" on registry_objects_p") == 1, plan   # one partition of four


def test_partitioning_twice_is_refused_and_migrations_still_run(partitioned):
    with pytest.raises(ValueError, match="already partitioned"):
        partitioning.partition(partitioned.registry, partitions=4)
    partitioned.registry.migrate()     # at head: nothing to do, no error
