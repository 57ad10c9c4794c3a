"""The registry's tables (SQLAlchemy Core).

Shaped like HAPI FHIR's resource + search-index tables: each registry object is one row
holding its full metadata as JSON (what a query returns), plus the typed columns and
side tables (codes, authors) that queries filter on. Every hot index starts with
`patient_pk`, so each query touches one patient's rows and the tables can be
partitioned or distributed by patient.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# Stable kind codes stored in registry_objects.kind (small, indexable).
KIND_DOCUMENT, KIND_SUBMISSION_SET, KIND_FOLDER, KIND_ASSOCIATION = "D", "S", "F", "A"

patients = Table(
    "patients", metadata,
    Column("pk", Integer, primary_key=True),
    Column("merged_into", Integer, ForeignKey("patients.pk"), nullable=True),
    Column("demographics", Text, nullable=False, default="{}"),   # JSON from the ITI-8 feed
    Column("created_at", String(20), nullable=False),
    Column("updated_at", String(20), nullable=False),
)

patient_identifiers = Table(
    "patient_identifiers", metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False, index=True),
    Column("authority", String(64), nullable=False),    # CX.4 universal id (an OID)
    Column("value", String(64), nullable=False),        # CX.1
    Column("id_type", String(16), nullable=False, default=""),  # CX.5 (NH, PI, INS-NIR...)
    UniqueConstraint("authority", "value", name="uq_patient_identifiers_authority_value"),
)

registry_objects = Table(
    "registry_objects", metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", String(1), nullable=False),
    Column("entry_uuid", String(64), nullable=False),
    Column("lid", String(64), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("unique_id", String(128), nullable=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=True),
    Column("status", String(16), nullable=False),        # Approved, Deprecated, Archived...
    Column("home_community_id", String(64), nullable=False, default=""),
    # DocumentEntry
    Column("creation_time", String(14), nullable=True),   # DTM padded to 14 digits (lower bound)
    Column("service_start", String(14), nullable=True),
    Column("service_stop", String(14), nullable=True),
    Column("hash", String(40), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("repository_unique_id", String(64), nullable=True),
    Column("mime_type", String(128), nullable=True),
    Column("object_type", String(1), nullable=True),      # S stable, O on-demand
    Column("blob_address", String(64), nullable=True),    # SHA-256 in our repository, if we hold it
    # SubmissionSet / Folder
    Column("submission_time", String(14), nullable=True),
    Column("source_id", String(64), nullable=True),
    Column("last_update_time", String(14), nullable=True),
    # Association
    Column("assoc_type", String(80), nullable=True),
    Column("source_uuid", String(64), nullable=True),
    Column("target_uuid", String(64), nullable=True),
    # Bookkeeping
    Column("registered_at", String(20), nullable=False),
    Column("body", Text, nullable=False),                 # metadata.codec JSON
    UniqueConstraint("entry_uuid", name="uq_registry_objects_entry_uuid"),
)
Index("ix_objects_patient_kind_status", registry_objects.c.patient_pk, registry_objects.c.kind,
      registry_objects.c.status, registry_objects.c.creation_time)
Index("ix_objects_unique_id", registry_objects.c.unique_id)
Index("ix_objects_lid", registry_objects.c.lid, registry_objects.c.version)
Index("ix_objects_source", registry_objects.c.source_uuid)
Index("ix_objects_target", registry_objects.c.target_uuid)
Index("ix_objects_blob", registry_objects.c.blob_address)

# One row per uniqueId: makes "exactly one submission wins a uniqueId" a database fact.
# A DocumentEntry may be registered again under its uniqueId only with the same hash
# (ITI TF-3 4.2.4: a resubmitted document is the same document); `hash` records it.
unique_ids = Table(
    "unique_ids", metadata,
    Column("unique_id", String(128), primary_key=True),
    Column("kind", String(1), nullable=False),
    Column("lid", String(64), nullable=False),
    Column("hash", String(40), nullable=True),
)

# Multi-valued search indexes (the HAPI "search parameter index" idea).
object_codes = Table(
    "object_codes", metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("object_pk", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("registry_objects.pk", ondelete="CASCADE"), nullable=False),
    Column("patient_pk", Integer, nullable=True),
    Column("attribute", String(8), nullable=False),     # see registry.indexing.CODE_ATTRIBUTES
    Column("code", String(256), nullable=False),
    Column("scheme", String(128), nullable=False, default=""),
)
Index("ix_codes_patient_attr_code", object_codes.c.patient_pk, object_codes.c.attribute,
      object_codes.c.code)
Index("ix_codes_object", object_codes.c.object_pk)

object_authors = Table(
    "object_authors", metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("object_pk", BigInteger().with_variant(Integer, "sqlite"),
           ForeignKey("registry_objects.pk", ondelete="CASCADE"), nullable=False),
    Column("patient_pk", Integer, nullable=True),
    Column("person", String(256), nullable=False),
)
Index("ix_authors_patient_person", object_authors.c.patient_pk, object_authors.c.person)
Index("ix_authors_object", object_authors.c.object_pk)
