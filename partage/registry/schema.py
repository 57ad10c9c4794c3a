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
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# The object kinds are the model's; re-exported under the names the registry's modules use.
from ..metadata import limits
from ..metadata.kinds import KIND_ASSOCIATION as KIND_ASSOCIATION
from ..metadata.kinds import KIND_DOCUMENT as KIND_DOCUMENT
from ..metadata.kinds import KIND_FOLDER as KIND_FOLDER
from ..metadata.kinds import KIND_SUBMISSION_SET as KIND_SUBMISSION_SET

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# Stable kind codes stored in registry_objects.kind (small, indexable).

# The key of the tables that grow without bound: 64 bits on PostgreSQL, SQLite's INTEGER
# (the rowid) there.
BIG_KEY = BigInteger().with_variant(Integer, "sqlite")


def _big_pk() -> Column[int]:
    return Column("pk", BIG_KEY, primary_key=True)


def _lease() -> list[Column[object]]:
    """A worker's claim on a queued row: who holds it and until when (epoch seconds); the
    claim lapses on its own if the worker dies."""
    return [Column("claimed_by", String(64), nullable=True),
            Column("claimed_until", Float, nullable=True)]


def _source_document() -> list[Column[object]]:
    """What a row read from a document is keyed by: the patient, the document's logical id
    (what stays while versions replace each other) and the version it was read from."""
    return [Column("patient_pk", Integer, nullable=False),
            Column("doc_lid", String(64), nullable=False),
            Column("doc_entry_uuid", String(64), nullable=False)]


patients = Table(
    "patients", metadata,
    Column("pk", Integer, primary_key=True),
    Column("merged_into", Integer, ForeignKey("patients.pk"), nullable=True),
    Column("demographics", Text, nullable=False, default="{}"),   # JSON from the ITI-8 feed
    # What URLs and FHIR name the patient by: random, so ids cannot be enumerated (migration 0005).
    Column("public_id", String(64), nullable=True),
    Column("created_at", String(20), nullable=False),
    Column("updated_at", String(20), nullable=False),
    # The FHIR Patient's version (meta.versionId, ETag): 1, then one more at each change (0006).
    Column("revision", Integer, nullable=False, default=1, server_default="1"),
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
Index("ix_patient_identifiers_value", patient_identifiers.c.value)   # a value-only search (0006)

# The patients' search index (registry.patient_index; migration 0006): one row per name part
# (normalized, and as given) and one for the birth date (the range it covers).
patient_index = Table(
    "patient_index", metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=False),
    Column("attribute", String(16), nullable=False),      # family | given | birthdate
    Column("value_norm", String(200), nullable=True),
    Column("value_exact", String(200), nullable=True),
    Column("low", String(14), nullable=True),
    Column("high", String(14), nullable=True),
)
Index("ix_patient_index_value", patient_index.c.attribute, patient_index.c.value_norm)
Index("ix_patient_index_date", patient_index.c.attribute, patient_index.c.low)
Index("ix_patient_index_patient", patient_index.c.patient_pk)

registry_objects = Table(
    "registry_objects", metadata,
    _big_pk(),
    Column("kind", String(1), nullable=False),
    Column("entry_uuid", String(64), nullable=False),
    Column("lid", String(64), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("unique_id", String(limits.UNIQUE_ID), nullable=True),
    Column("patient_pk", Integer, ForeignKey("patients.pk"), nullable=True),
    Column("status", String(16), nullable=False),        # Approved, Deprecated, Archived...
    # DocumentEntry: the logical document across its versions (ITI-57, same lid) and its
    # replacements (RPLC, XFRM_RPLC): the lid of the first one. The gate judges a version
    # by the newest versions of its lineage too (partage.access.gate; migration 0005).
    Column("lineage", String(64), nullable=True),
    Column("home_community_id", String(limits.HOME_COMMUNITY_ID), nullable=False, default=""),
    # DocumentEntry
    Column("creation_time", String(14), nullable=True),   # DTM padded to 14 digits (lower bound)
    Column("service_start", String(14), nullable=True),
    Column("service_stop", String(14), nullable=True),
    # The end of each of these ranges, exclusive (search_index.date_range): "2024" covers
    # 20240101000000 up to 20250101000000 (migration 0006).
    Column("creation_high", String(14), nullable=True),
    Column("service_start_high", String(14), nullable=True),
    Column("service_stop_high", String(14), nullable=True),
    Column("hash", String(40), nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("repository_unique_id", String(64), nullable=True),
    Column("mime_type", String(limits.MIME_TYPE), nullable=True),
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
    # The row's own version (FHIR meta.versionId, ETag) and when it last changed (meta.lastUpdated):
    # a status change rewrites the row (register.rewrite) and counts one more (migration 0006).
    Column("revision", Integer, nullable=False, default=1, server_default="1"),
    Column("updated_at", String(20), nullable=True),
    # metadata.codec JSON, deflated against a fixed dictionary (registry.bodies; migration 0016)
    Column("body", LargeBinary, nullable=False),
    UniqueConstraint("entry_uuid", name="uq_registry_objects_entry_uuid"),
)
Index("ix_objects_patient_kind_status", registry_objects.c.patient_pk, registry_objects.c.kind,
      registry_objects.c.status, registry_objects.c.creation_time)
# FHIR search's default order (newest registration first, migration 0006): a heavy patient's
# first page is read from this index in order, not sorted from all its entries (registry.search).
Index("ix_objects_patient_kind_registered", registry_objects.c.patient_pk, registry_objects.c.kind,
      registry_objects.c.registered_at, registry_objects.c.pk)
Index("ix_objects_unique_id", registry_objects.c.unique_id)
Index("ix_objects_lid", registry_objects.c.lid, registry_objects.c.version)
Index("ix_objects_source", registry_objects.c.source_uuid)
Index("ix_objects_target", registry_objects.c.target_uuid)
Index("ix_objects_blob", registry_objects.c.blob_address)
Index("ix_objects_lineage", registry_objects.c.lineage, registry_objects.c.status)
Index("ix_patients_public_id", patients.c.public_id, unique=True)

# What ITI-62 (and ITI-86) removed: kept for the audit trail and for recovery, never read by
# queries; `partage access purge` (an administrator) removes them for good (migration 0005).
removed_objects = Table(
    "removed_objects", metadata,
    _big_pk(),
    Column("entry_uuid", String(64), nullable=False),
    Column("kind", String(1), nullable=False),
    Column("patient_pk", Integer, nullable=True),
    Column("removed_at", String(20), nullable=False),
    Column("removed_by", String(128), nullable=False),
    Column("transaction", String(16), nullable=False),      # ITI-62 | ITI-86
    Column("blob_address", String(64), nullable=True),      # bytes kept until a purge
    Column("body", LargeBinary, nullable=False),            # the removed row's, as it was stored
)
Index("ix_removed_patient", removed_objects.c.patient_pk)

# One row per uniqueId: makes "exactly one submission wins a uniqueId" a database fact.
# A DocumentEntry may be registered again under its uniqueId only with the same hash
# (ITI TF-3 4.2.4: a resubmitted document is the same document); `hash` records it.
unique_ids = Table(
    "unique_ids", metadata,
    Column("unique_id", String(limits.UNIQUE_ID), primary_key=True),
    Column("kind", String(1), nullable=False),
    Column("lid", String(64), nullable=False),
    Column("hash", String(40), nullable=True),
)

# Multi-valued search indexes (the HAPI "search parameter index" idea).
object_codes = Table(
    "object_codes", metadata,
    _big_pk(),
    Column("object_pk", BIG_KEY,
           ForeignKey("registry_objects.pk", ondelete="CASCADE"), nullable=False),
    Column("patient_pk", Integer, nullable=True),
    Column("attribute", String(8), nullable=False),     # see registry.indexing.CODE_ATTRIBUTES
    Column("code", String(limits.CODE), nullable=False),
    Column("scheme", String(limits.CODING_SCHEME), nullable=False, default=""),
    # The token as search compares it, hashed (registry.search_index.token_hashes; migration 0006).
    Column("hash_sys_value", BigInteger, nullable=True),
    Column("hash_value", BigInteger, nullable=True),
    Column("hash_sys", BigInteger, nullable=True),
)
Index("ix_codes_patient_attr_code", object_codes.c.patient_pk, object_codes.c.attribute,
      object_codes.c.code)
Index("ix_codes_object", object_codes.c.object_pk)
Index("ix_codes_patient_hash_sv", object_codes.c.patient_pk, object_codes.c.hash_sys_value)
Index("ix_codes_patient_hash_v", object_codes.c.patient_pk, object_codes.c.hash_value)
Index("ix_codes_patient_hash_s", object_codes.c.patient_pk, object_codes.c.hash_sys)

object_authors = Table(
    "object_authors", metadata,
    _big_pk(),
    Column("object_pk", BIG_KEY,
           ForeignKey("registry_objects.pk", ondelete="CASCADE"), nullable=False),
    Column("patient_pk", Integer, nullable=True),
    Column("person", String(limits.AUTHOR_PERSON), nullable=False),
    # Name parts as string search compares them (search_index.normalize; migration 0006):
    # the family name; the given names, first and further, space-separated.
    Column("family_norm", String(200), nullable=True),
    Column("given_norm", String(200), nullable=True),
)
Index("ix_authors_patient_person", object_authors.c.patient_pk, object_authors.c.person)
Index("ix_authors_object", object_authors.c.object_pk)

# --- access control state and the audit trail (partage.access; migration 0002) ----------
# One row per patient whose record exists: opened with the patient's consent, closable.
patient_access = Table(
    "patient_access", metadata,
    Column("patient_pk", Integer, ForeignKey("patients.pk"), primary_key=True),
    Column("status", String(8), nullable=False),                  # open | closed
    Column("medecin_traitant", String(64), nullable=False, default=""),   # national id
    Column("bdg_opposed", Integer, nullable=False, default=0),    # patient opposed bris de glace
    Column("opened_at", String(20), nullable=False),
    Column("closed_at", String(20), nullable=True),
    Column("updated_at", String(20), nullable=False),
)

# Professionals the patient blocked (refused everywhere; never the médecin traitant).
patient_blocks = Table(
    "patient_blocks", metadata,
    Column("patient_pk", Integer, ForeignKey("patients.pk"), primary_key=True),
    Column("professional_id", String(64), primary_key=True),
    Column("created_at", String(20), nullable=False),
)

# Append-only: one row per access (ATNA-like fields). patient_pk has no foreign key so
# that the trail outlives a purged record.
audit_events = Table(
    "audit_events", metadata,
    _big_pk(),
    Column("recorded_at", String(32), nullable=False),            # ISO 8601 UTC
    Column("action", String(80), nullable=False),                 # ITI-18, ITI-43, ITI-67...
    Column("request", String(300), nullable=False, default=""),   # method and path / wsa:Action
    Column("outcome", Integer, nullable=False),                   # ATNA: 0, 4, 8, 12
    Column("decision", String(16), nullable=False),               # permit | filtered | deny | error
    Column("actor_id", String(128), nullable=False),
    Column("actor_name", String(256), nullable=False, default=""),
    Column("actor_kind", String(16), nullable=False),
    Column("actor_role", String(32), nullable=False, default=""),
    Column("purpose", String(16), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("structure", String(64), nullable=False, default=""),
    Column("address", String(64), nullable=False, default=""),
    Column("credential_id", String(128), nullable=False, default=""),
    Column("patient_pk", Integer, nullable=True),
    Column("patient_id", String(256), nullable=False, default=""),
    Column("objects", Text, nullable=False, default="[]"),        # JSON list of document uniqueIds
    Column("detail", Text, nullable=False, default=""),
    Column("issuer", String(256), nullable=False, default=""),     # who vouched for the actor (migration 0017)
)
Index("ix_audit_patient", audit_events.c.patient_pk, audit_events.c.pk)
Index("ix_audit_actor", audit_events.c.actor_id, audit_events.c.pk)

# Lineages of more than one version (migrations 0011, 0012: registry.lineages), with every
# patient holding one of their versions: the view reads newest versions for these lineages
# only, narrowed to these patients' shards. An ITI-57 new version that names another patient
# (a filing error corrected) moves the document and leaves the older versions, and the
# documents they replaced, with the first one: both patients are here. Written where a
# row joins a lineage (`register.insert_objects`: a replacement, a new version), carried to
# the survivor by a merge (`patients.merge`).
lineage_patients = Table(
    "lineage_patients", metadata,
    Column("lineage", String(64), primary_key=True),
    Column("patient_pk", Integer, primary_key=True),
)

# Credentials already used (assertion ID / jti), until they expire: replay detection.
credential_uses = Table(
    "credential_uses", metadata,
    Column("credential_id", String(160), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),           # epoch seconds
)

# PostgreSQL only (migration 0010): one row per writing thread, bumped at the end of a request
# whose writes committed without waiting for the WAL flush (Registry.one_sync): that small
# synchronous commit flushes the WAL past every earlier one, once for the whole request.
durability_marks = Table(
    "durability_marks", metadata,
    Column("writer", String(64), primary_key=True),   # host, process and thread
    Column("bumps", BigInteger, nullable=False),
)

# What the HL7 v2 feeds answered (migration 0015; registry.hl7_answers): one row per message
# accepted, keyed by the SHA-256 of its sender (MSH-3, MSH-4) and MSH-10, so that a
# retransmission gets the original's answer instead of being processed again. `digest` is the
# message's content (MSH-7 left out), which tells a retransmission from another message
# reusing the id. Bounded: the oldest rows go (PARTAGE_HL7_ANSWERS_MAX_AGE / _MAX_MESSAGES).
hl7_answers = Table(
    "hl7_answers", metadata,
    _big_pk(),                                                  # arrival order: the count bound drops the lowest
    Column("message_key", String(64), nullable=False, unique=True),
    Column("sender", Text, nullable=False),                    # MSH-3|MSH-4 as received (ER7 text)
    Column("control_id", Text, nullable=False),                # MSH-10
    Column("digest", String(64), nullable=False),
    Column("code", String(2), nullable=False),                 # MSA-1
    Column("text", Text, nullable=False, default=""),          # MSA-3
    Column("answered_at", BigInteger, nullable=False, index=True),   # epoch seconds
)

# Sessions of the professional's page (partage.web.login; migration 0008): the cookie is
# signed and carries the claims, this row lets a sign-out end it for good. `sid_hash` is the
# SHA-256 of the session id (a copy of the table opens no session).
page_sessions = Table(
    "page_sessions", metadata,
    Column("sid_hash", String(64), primary_key=True),
    Column("actor_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),           # epoch seconds
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("ended_at", BigInteger, nullable=True),
)

# Notices owed to patients: bris de glace and centre 15 accesses (written with the access's
# audit row), new documents (written with the registration, when configured). The outbox
# sender (partage.notify) e-mails them; the delivery columns came with migration 0007.
access_notifications = Table(
    "access_notifications", metadata,
    _big_pk(),
    Column("patient_pk", Integer, nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
    Column("kind", String(32), nullable=False),                  # bris_de_glace | centre_15 | new_document
    Column("message", Text, nullable=False),
    Column("audit_pk", BIG_KEY, nullable=True),
    Column("sent_at", String(32), nullable=True),
    Column("notice_id", String(64), nullable=True),              # the e-mail's Message-ID (one per notice)
    Column("documents", Text, nullable=True),                    # new_document: JSON list of entryUUIDs
    Column("state", String(16), nullable=False, server_default="pending"),   # pending | sent | skipped | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=True),             # epoch seconds; NULL = now
    *_lease(),
    Column("last_error", Text, nullable=True),
)
Index("ix_access_notifications_due", access_notifications.c.state, access_notifications.c.next_attempt_at)

# --- notifications (partage.notify; migration 0007) --------------------------------------
# Subscriptions made through DSUB (ITI-52) or FHIR (DSUBm ITI-110). `actor` is the subscriber
# as authenticated when subscribing (JSON, no credential): deliveries are judged as that
# actor's reads. `patient_pk` NULL: a multi-patient subscription. `ends_at`: epoch seconds.
subscriptions = Table(
    "subscriptions", metadata,
    _big_pk(),
    Column("public_id", String(64), nullable=False),
    Column("door", String(8), nullable=False),                   # dsub | fhir
    Column("topic", String(16), nullable=False),                 # document | submission_set
    Column("payload", String(16), nullable=False),               # full | minimal | id-only | empty
    Column("patient_pk", Integer, nullable=True),
    Column("patient_id", String(256), nullable=False, default=""),   # the CX subscribed to (HL7 text)
    Column("filter", Text, nullable=False, default="{}"),        # partage.notify.model.Filter as JSON
    Column("endpoint", String(2048), nullable=False),
    Column("mime_type", String(64), nullable=False, default=""),
    Column("base_url", String(512), nullable=False, default=""),  # the server as the subscriber named it
    Column("status", String(16), nullable=False),                # requested | active | off | error
    Column("actor_id", String(128), nullable=False),
    Column("actor", Text, nullable=False),
    Column("events", Integer, nullable=False, default=0),        # events delivered since the start
    Column("resource", Text, nullable=False, default="{}"),      # the door's terms (FHIR resource, DSUB EPR parameters)
    Column("error", Text, nullable=False, default=""),
    Column("ends_at", Float, nullable=False),
    Column("created_at", String(20), nullable=False),
    Column("updated_at", String(20), nullable=False),
    UniqueConstraint("public_id", name="uq_subscriptions_public_id"),
)
Index("ix_subscriptions_patient_status", subscriptions.c.patient_pk, subscriptions.c.status)
Index("ix_subscriptions_actor", subscriptions.c.actor_id)

# The outbox: one row per (registration, subscription) written in the registration's
# transaction, and handshakes; the sender claims rows (a lease), delivers, and marks them.
# `delivery_id` is what the recipient deduplicates on (wsa:MessageID, Bundle.id): the id of
# the message sent with the content whose digest is `content_digest` (a retry carrying
# other content, judged again, is another message with a new id: outbox.stamp).
notification_outbox = Table(
    "notification_outbox", metadata,
    _big_pk(),
    Column("delivery_id", String(64), nullable=False),
    Column("subscription_pk", BIG_KEY, nullable=False),
    Column("kind", String(16), nullable=False),                  # event | handshake
    Column("patient_pk", Integer, nullable=True),
    Column("patient_id", String(256), nullable=False, default=""),
    Column("submission_set", String(64), nullable=False, default=""),
    Column("documents", Text, nullable=False, default="[]"),     # JSON list of DocumentEntry entryUUIDs
    Column("created_at", String(32), nullable=False),
    Column("state", String(16), nullable=False),                 # pending | delivered | skipped | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    *_lease(),
    Column("event_number", Integer, nullable=True),              # FHIR: given when first sent, kept on retries
    Column("content_digest", String(64), nullable=True),         # of what `delivery_id` was sent with (0018)
    Column("delivered_at", String(32), nullable=True),
    Column("last_error", Text, nullable=False, default=""),
    UniqueConstraint("delivery_id", name="uq_notification_outbox_delivery_id"),
)
Index("ix_outbox_due", notification_outbox.c.state, notification_outbox.c.next_attempt_at)
Index("ix_outbox_subscription", notification_outbox.c.subscription_pk)

# --- clinical reading (partage.clinical; migration 0003) ------------------------------
# Facts extracted from level-3 CDA entries. Keyed by the source document's logical id
# (`doc_lid`): a fact is current while an Approved version of that document is held, and
# is shown only to whom that version is shown (partage.clinical.read).
clinical_facts = Table(
    "clinical_facts", metadata,
    _big_pk(),
    *_source_document(),
    Column("seq", Integer, nullable=False),                   # document order
    Column("kind", String(16), nullable=False),               # lab, vital, allergy, problem, ...
    Column("code", String(64), nullable=False, default=""),
    Column("code_system", String(64), nullable=False, default=""),
    Column("display", Text, nullable=False, default=""),
    Column("value_num", Float, nullable=True),
    Column("value_text", Text, nullable=False, default=""),
    Column("unit", String(32), nullable=False, default=""),
    Column("ref_low", String(64), nullable=False, default=""),
    Column("ref_high", String(64), nullable=False, default=""),
    Column("ref_text", Text, nullable=False, default=""),
    Column("interpretation", String(16), nullable=False, default=""),
    Column("status", String(32), nullable=False, default=""),
    Column("effective", String(14), nullable=False, default=""),   # UTC digits, lower bound
    Column("effective_end", String(14), nullable=False, default=""),
    Column("detail", Text, nullable=False, default="{}"),          # JSON
)
Index("ix_facts_doc_kind", clinical_facts.c.doc_lid, clinical_facts.c.kind)
Index("ix_facts_patient_kind_code", clinical_facts.c.patient_pk, clinical_facts.c.kind,
      clinical_facts.c.code, clinical_facts.c.effective)

# The searchable text of each document (one row per logical document). The full-text
# index is the database's own: an FTS5 table `document_text_fts` of French stems (rowid = pk;
# migration 0008, partage.registry.text_search) on SQLite,
# a generated tsvector column `tsv` ('french' configuration) with a GIN index on
# PostgreSQL; both are created by migration 0003, not declared here.
document_text = Table(
    "document_text", metadata,
    _big_pk(),
    *_source_document(),
    Column("body", Text, nullable=False),
    UniqueConstraint("doc_lid", name="uq_document_text_doc_lid"),
)
Index("ix_document_text_patient", document_text.c.patient_pk)

# Documents whose PDF text is still to be indexed (partage.clinical.queue; migration 0004).
# The registration's transaction adds a row; a background indexer claims it (a lease:
# claimed_by / claimed_until, epoch seconds), writes the document's whole text into
# document_text and deletes the row in one transaction. A row outlives a crash: its
# lease expires and another process takes it.
text_index_jobs = Table(
    "text_index_jobs", metadata,
    _big_pk(),
    Column("doc_entry_uuid", String(64), nullable=False),   # the version whose bytes are read
    Column("doc_lid", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),       # ISO 8601 UTC
    Column("attempts", Integer, nullable=False, default=0),
    *_lease(),
)
