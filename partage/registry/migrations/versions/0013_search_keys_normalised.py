"""SQLite's full-text index rewritten with the keys of normalised words (NFKC, oe/ae ligatures)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 18:00:00

`text_search.search_keys` now reads words as `text_search.normal` writes them: decomposed
accents join their letter, a ligature is its letters. The SQLite index of the text stored
before holds the old keys (a decomposed "thyroïdite" cut in two, "œdème" not found by
"oedème"): every row is indexed again, in batches. PostgreSQL's index is generated from the
text by the database (unaccent), nothing to do there.
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    from partage.registry.text_search import search_keys   # the keys as the code that reads them makes them

    last = 0
    while True:
        rows = conn.execute(sa.text("SELECT pk, body FROM document_text WHERE pk > :last ORDER BY pk LIMIT :n"),
                            {"last": last, "n": BATCH}).all()
        if not rows:
            return
        for pk, body in rows:
            conn.execute(sa.text("DELETE FROM document_text_fts WHERE rowid = :pk"), {"pk": pk})
            conn.execute(sa.text("INSERT INTO document_text_fts(rowid, stems) VALUES (:pk, :stems)"),
                         {"pk": pk, "stems": search_keys(body or "")})
        last = rows[-1][0]


def downgrade() -> None:
    pass   # the old code reads these keys for every word without a ligature or a decomposed accent
