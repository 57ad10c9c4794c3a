"""Full-text search over document text: SQLite FTS5 (embedded) or PostgreSQL ('french').

Both answer the same question the same way: every word of the query must occur (as a
prefix: "hémo" finds "hémoglobine"), results are ranked (FTS5 bm25, PostgreSQL
ts_rank) and come with a highlighted excerpt. Words are reduced to letters and digits
before they reach the engine, so a query cannot use (or break) the engines' own query
syntax. Both fold accents ("hemoglobine" finds "hémoglobine"; on PostgreSQL when the
unaccent extension is available, see migration 0003); PostgreSQL's french configuration
also stems ("glycémies" finds "glycémie").

Callers pass the logical ids of the documents the actor may see; nothing else is searched.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text

MAX_TERMS = 12
PG_CONFIG = "partage_french"       # created by migration 0003: french stemming (+ unaccent)
OPEN, CLOSE = "\u27e6", "\u27e7"     # highlight markers, escaped to <mark> after HTML escaping
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class SearchHit:
    doc_lid: str
    rank: float                 # higher is better, whatever the engine
    excerpt: str                # plain text, the matches between OPEN and CLOSE markers
    document: Any = None        # the DocumentEntry, set by the reader

    @property
    def excerpt_html(self) -> str:
        """The excerpt, HTML-escaped, with the matches in <mark>."""
        return html.escape(self.excerpt).replace(OPEN, "<mark>").replace(CLOSE, "</mark>")

    @property
    def excerpt_text(self) -> str:
        return self.excerpt.replace(OPEN, "").replace(CLOSE, "")


def terms_of(query: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(query or "")][:MAX_TERMS]


def full_text(conn: Connection, lids: list[str], query: str, limit: int = 50) -> list[SearchHit]:
    terms = terms_of(query)
    if not terms or not lids:
        return []
    if conn.dialect.name == "postgresql":
        return _postgresql(conn, lids, terms, limit)
    return _sqlite(conn, lids, terms, limit)


def _sqlite(conn: Connection, lids: list[str], terms: list[str], limit: int) -> list[SearchHit]:
    match = " ".join(f'"{t}"*' for t in terms)
    stmt = text(
        "SELECT t.doc_lid AS doc_lid, bm25(document_text_fts) AS score, "
        f"snippet(document_text_fts, 0, '{OPEN}', '{CLOSE}', '…', 24) AS excerpt "
        "FROM document_text_fts JOIN document_text t ON t.pk = document_text_fts.rowid "
        "WHERE document_text_fts MATCH :match AND t.doc_lid IN :lids "
        "ORDER BY score LIMIT :limit").bindparams(bindparam("lids", expanding=True))
    rows = conn.execute(stmt, {"match": match, "lids": lids, "limit": limit}).all()
    return [SearchHit(r.doc_lid, -float(r.score), r.excerpt or "") for r in rows]


def _postgresql(conn: Connection, lids: list[str], terms: list[str], limit: int) -> list[SearchHit]:
    tsquery = " & ".join(f"{t}:*" for t in terms)
    stmt = text(
        f"SELECT m.doc_lid, m.score, ts_headline('{PG_CONFIG}', m.body, to_tsquery('{PG_CONFIG}', :q), "
        f"'StartSel={OPEN}, StopSel={CLOSE}, MaxWords=30, MinWords=12, MaxFragments=2, "
        "FragmentDelimiter=\" … \"') AS excerpt "
        f"FROM (SELECT doc_lid, body, ts_rank(tsv, to_tsquery('{PG_CONFIG}', :q)) AS score "
        f"      FROM document_text WHERE tsv @@ to_tsquery('{PG_CONFIG}', :q) AND doc_lid IN :lids "
        "      ORDER BY score DESC LIMIT :limit) m ORDER BY m.score DESC"
    ).bindparams(bindparam("lids", expanding=True))
    rows = conn.execute(stmt, {"q": tsquery, "lids": lids, "limit": limit}).all()
    return [SearchHit(r.doc_lid, float(r.score), r.excerpt or "") for r in rows]
