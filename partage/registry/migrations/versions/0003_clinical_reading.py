"""clinical reading: facts extracted from CDA entries, document text and its full-text index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS_CONFIG = "partage_french"   # partage.registry.text_search uses the same name


def upgrade() -> None:
    op.create_table(
        "clinical_facts",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("doc_lid", sa.String(length=64), nullable=False),
        sa.Column("doc_entry_uuid", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("code_system", sa.String(length=64), nullable=False),
        sa.Column("display", sa.Text(), nullable=False),
        sa.Column("value_num", sa.Float(), nullable=True),
        sa.Column("value_text", sa.Text(), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("ref_low", sa.String(length=64), nullable=False),
        sa.Column("ref_high", sa.String(length=64), nullable=False),
        sa.Column("ref_text", sa.Text(), nullable=False),
        sa.Column("interpretation", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("effective", sa.String(length=14), nullable=False),
        sa.Column("effective_end", sa.String(length=14), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_clinical_facts")),
    )
    op.create_index("ix_facts_doc_kind", "clinical_facts", ["doc_lid", "kind"])
    op.create_index("ix_facts_patient_kind_code", "clinical_facts", ["patient_pk", "kind", "code", "effective"])
    op.create_table(
        "document_text",
        sa.Column("pk", BIG, nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("doc_lid", sa.String(length=64), nullable=False),
        sa.Column("doc_entry_uuid", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_document_text")),
        sa.UniqueConstraint("doc_lid", name="uq_document_text_doc_lid"),
    )
    op.create_index("ix_document_text_patient", "document_text", ["patient_pk"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        # External-content FTS5 over document_text.body; rows are added by the indexer
        # in the registration's transaction. Accents folded: "hemoglobine" finds "hémoglobine".
        op.execute("CREATE VIRTUAL TABLE document_text_fts USING fts5("
                   "body, content='document_text', content_rowid='pk', "
                   "tokenize='unicode61 remove_diacritics 2')")
    elif dialect == "postgresql":
        # The 'french' configuration (stemming), accents folded by unaccent when the
        # extension can be had (trusted since PostgreSQL 13); without it, plain 'french'.
        bind = op.get_bind()
        unaccent = False
        if bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'unaccent'")).first():
            try:
                with bind.begin_nested():
                    bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS unaccent"))
                unaccent = True
            except sa.exc.DBAPIError:
                unaccent = False
        op.execute(f"CREATE TEXT SEARCH CONFIGURATION {TS_CONFIG} (COPY = french)")
        if unaccent:
            op.execute(f"ALTER TEXT SEARCH CONFIGURATION {TS_CONFIG} ALTER MAPPING FOR hword, hword_part, word "
                       "WITH unaccent, french_stem")
        op.execute("ALTER TABLE document_text ADD COLUMN tsv tsvector "
                   f"GENERATED ALWAYS AS (to_tsvector('{TS_CONFIG}'::regconfig, body)) STORED")
        op.execute("CREATE INDEX ix_document_text_tsv ON document_text USING gin (tsv)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS document_text_fts")
    op.drop_index("ix_document_text_patient", table_name="document_text")
    op.drop_table("document_text")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {TS_CONFIG}")
    op.drop_index("ix_facts_patient_kind_code", table_name="clinical_facts")
    op.drop_index("ix_facts_doc_kind", table_name="clinical_facts")
    op.drop_table("clinical_facts")
