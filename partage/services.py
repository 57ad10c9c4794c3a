"""The services one server process holds: built once per process from Settings.

Doors (SOAP, FHIR, MLLP, web) receive this object instead of reaching for globals, so
tests can build one over a temporary directory and the CLI can build one without HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from .config import Settings
from .registry.store import Registry
from .repository.store import BlobStore, FilesystemBlobStore

log = logging.getLogger("partage")


@dataclass
class Services:
    settings: Settings
    registry: Registry
    blobs: BlobStore

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.database)
        if migrate:
            registry.migrate()
        blobs = FilesystemBlobStore(settings.blob_dir)
        return cls(settings=settings, registry=registry, blobs=blobs)

    @cached_property
    def domain(self):
        """The affinity domain (allowed codes), loaded once: SVS files or a NIST codes.xml."""
        from .terminology.domain import load_affinity_domain

        return load_affinity_domain(self.settings.codes)

    @cached_property
    def document_checks(self) -> list:
        """Per-document checks of the ingest flow (the CDA profile, when configured)."""
        return []

    def close(self) -> None:
        self.registry.dispose()
