"""the professional's page: French keyword search on SQLite (Snowball stems), page sessions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 09:00:00

SQLite only: `document_text_fts` was an external-content FTS5 table over
document_text.body (accents folded, no stemming). It becomes a table of its own holding,
for each document_text row (rowid = pk), the key of every word: its Snowball French
stem with accents folded (`partage.registry.text_search.search_keys`, the function the
queries use). Every existing row is re-indexed here. PostgreSQL is unchanged: its
`partage_french` configuration (migration 0003) already stems.

Both databases: `page_sessions`, the sessions of the professional's page (ended at sign-out).
"""
import sqlalchemy as sa
from alembic import op

from partage.registry.text_search import search_keys

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 200


def upgrade() -> None:
    op.create_table(
        "page_sessions",
        sa.Column("sid_hash", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("sid_hash", name=op.f("pk_page_sessions")),
    )
    op.create_index(op.f("ix_page_sessions_expires_at"), "page_sessions", ["expires_at"])
    if op.get_bind().dialect.name != "sqlite":
        return
    bind = op.get_bind()
    op.execute("DROP TABLE IF EXISTS document_text_fts")
    op.execute("CREATE VIRTUAL TABLE document_text_fts USING fts5("
               "stems, tokenize='unicode61 remove_diacritics 2')")
    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT pk, body FROM document_text WHERE pk > :last ORDER BY pk LIMIT :n"),
                            {"last": last, "n": BATCH}).all()
        if not rows:
            break
        bind.execute(sa.text("INSERT INTO document_text_fts(rowid, stems) VALUES (:pk, :stems)"),
                     [{"pk": r.pk, "stems": search_keys(r.body or "")} for r in rows])
        last = rows[-1].pk


def downgrade() -> None:
    op.drop_index(op.f("ix_page_sessions_expires_at"), table_name="page_sessions")
    op.drop_table("page_sessions")
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TABLE IF EXISTS document_text_fts")
    op.execute("CREATE VIRTUAL TABLE document_text_fts USING fts5("
               "body, content='document_text', content_rowid='pk', "
               "tokenize='unicode61 remove_diacritics 2')")
    op.execute("INSERT INTO document_text_fts(document_text_fts) VALUES ('rebuild')")
