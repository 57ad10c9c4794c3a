"""`partage fsck`: is every registered document's content present, and is every blob used?

A crash can leave a blob without a registration (written, then the transaction never
committed) or a temporary file; it can never leave a registration without its blob,
because the blob is renamed into place before the registry transaction begins. This
command proves that on a real data directory, and cleans the leftovers with --repair.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from .config import Settings
from .registry import schema
from .services import Services

OBJ = schema.registry_objects


@dataclass
class FsckReport:
    missing_blobs: list[tuple[str, str]] = field(default_factory=list)   # (entry_uuid, address)
    unreferenced_blobs: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    registered_documents: int = 0
    blobs: int = 0

    @property
    def consistent(self) -> bool:
        return not self.missing_blobs


def check(services: Services, *, min_age_seconds: float = 300.0) -> FsckReport:
    """Inspect; blobs younger than min_age may belong to a submission still in flight."""
    report = FsckReport()
    with services.registry.read() as conn:
        rows = conn.execute(select(OBJ.c.entry_uuid, OBJ.c.blob_address)
                            .where(OBJ.c.blob_address.is_not(None))).all()
    referenced = set()
    for row in rows:
        report.registered_documents += 1
        referenced.add(row.blob_address)
        if not services.blobs.exists(row.blob_address):
            report.missing_blobs.append((row.entry_uuid, row.blob_address))
    now = time.time()
    for address in services.blobs.addresses():
        report.blobs += 1
        if address not in referenced and _age(services, address, now) >= min_age_seconds:
            report.unreferenced_blobs.append(address)
    temp_files = getattr(services.blobs, "temp_files", lambda: [])()
    report.temp_files = [str(p) for p in temp_files if now - p.stat().st_mtime >= min_age_seconds]
    return report


def _age(services: Services, address: str, now: float) -> float:
    path = getattr(services.blobs, "path", None)
    if path is None:
        return float("inf")
    try:
        return now - path(address).stat().st_mtime
    except FileNotFoundError:
        return 0.0


def remove_leftovers(services: Services, report: FsckReport) -> None:
    for address in report.unreferenced_blobs:
        services.blobs.delete(address)
    for name in report.temp_files:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def run_fsck(settings: Settings, *, repair: bool, min_age_seconds: float = 300.0) -> int:
    services = Services.open(settings, migrate=False)
    try:
        report = check(services, min_age_seconds=min_age_seconds)
        out = sys.stdout
        out.write(f"{report.registered_documents} registered documents with content, "
                  f"{report.blobs} blobs\n")
        for entry_uuid, address in report.missing_blobs:
            out.write(f"MISSING  {entry_uuid} -> blob {address} is absent\n")
        for address in report.unreferenced_blobs:
            out.write(f"UNUSED   blob {address} is referenced by no registry entry\n")
        for name in report.temp_files:
            out.write(f"TEMP     {name}\n")
        if repair:
            remove_leftovers(services, report)
            out.write(f"repaired: removed {len(report.unreferenced_blobs)} blobs and "
                      f"{len(report.temp_files)} temporary files\n")
        out.write("consistent\n" if report.consistent else "INCONSISTENT\n")
        return 0 if report.consistent else 1
    finally:
        services.close()
