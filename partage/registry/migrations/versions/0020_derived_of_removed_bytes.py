"""forget the facts and text read from bytes that ITI-86 removed

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 10:00:00

ITI-86 (Remove Documents) takes a document's bytes out of the repository's answers and keeps its
metadata. What was read from the bytes (clinical facts, searchable text, a pending text job) was
kept, so the removed content was still served: FHIR Observation / Immunization..., `$summary`,
`_content` hits with excerpts of the removed text, the page. The removal now forgets them
(`registry.derived.forget_content`); this drops those left by the removals made before (the rows
`partage fsck` reports as DERIVED whose document is still registered, no version of it holding bytes). Not undone.
"""
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# a document still registered none of whose versions holds bytes: what ITI-86 leaves (derived rows of
# documents no version of which remains are fsck's to repair, as before)
WITHOUT_BYTES = ("doc_lid IN (SELECT lid FROM registry_objects WHERE kind = 'D') "
                 "AND doc_lid NOT IN (SELECT lid FROM registry_objects WHERE kind = 'D' AND blob_address IS NOT NULL)")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":   # the FTS5 rows of the text rows (PostgreSQL: generated)
        op.execute(f"DELETE FROM document_text_fts WHERE rowid IN (SELECT pk FROM document_text WHERE {WITHOUT_BYTES})")
    for table in ("clinical_facts", "document_text", "text_index_jobs"):
        op.execute(f"DELETE FROM {table} WHERE {WITHOUT_BYTES}")


def downgrade() -> None:
    pass   # what was read from removed bytes is not read again (the bytes are not the repository's)
