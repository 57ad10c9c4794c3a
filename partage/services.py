"""The services one server process holds: built once per process from Settings.

Doors (SOAP, FHIR, MLLP, web) receive this object instead of reaching for globals, so
tests can build one over a temporary directory and the CLI can build one without HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from .access.decisions import AccessTable
from .cda.gate import CdaGate
from .config import Settings
from .metadata.errors import XdsError
from .metadata.model import DocumentEntry
from .registry.store import Registry
from .repository import open_blob_store
from .repository.store import BlobStore
from .terminology.domain import AffinityDomain, load_affinity_domain

log = logging.getLogger("partage")


@dataclass
class Services:
    settings: Settings
    registry: Registry
    blobs: BlobStore

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True, bounded: bool = False) -> Services:
        """`bounded`: the server's requests run on this registry, each statement within
        `settings.statement_timeout` and each lock wait within `settings.lock_timeout`
        (PostgreSQL); the command line's registry (migrations, bulk loads, fsck) is not bounded."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.database, statement_timeout=settings.statement_timeout if bounded else 0.0,
                            lock_timeout=settings.lock_timeout if bounded else 0.0, pool_size=settings.db_pool_size,
                            max_overflow=settings.db_max_overflow, pool_timeout=settings.db_pool_timeout,
                            pool_recycle=settings.db_pool_recycle)
        if migrate:
            registry.migrate()
        blobs = open_blob_store(settings.blob_url, settings.blob_dir, s3_endpoint_url=settings.s3_endpoint_url,
                                s3_timeout=settings.s3_timeout)
        return cls(settings=settings, registry=registry, blobs=blobs)

    @cached_property
    def domain(self) -> AffinityDomain:
        """The affinity domain (allowed codes), loaded once: SVS files or a NIST codes.xml."""
        return load_affinity_domain(self.settings.codes)

    @cached_property
    def access_table(self) -> AccessTable:
        """The role x class table and the other configurable access tables (--access-matrix)."""
        return AccessTable.load(self.settings.access_matrix)

    @cached_property
    def document_checks(self) -> list[Callable[[DocumentEntry, object, str], list[XdsError]]]:
        """Per-document checks of the ingest flow: the CDA profile on every ClinicalDocument."""
        return [CdaGate.from_settings(self.settings)]

    def close(self) -> None:
        self.registry.dispose()
