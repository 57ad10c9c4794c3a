"""Full-text search over document text, in French, on both databases.

Both engines answer the same question the same way: every word of the query must occur,
stemmed and with accents folded ("thyroïde" finds "thyroïdienne", "diabete" finds
"diabète", "glycémies" finds "glycémie"), as a prefix of a word's stem ("néphro" finds
"néphrologie"); results are ranked and come with a highlighted excerpt.

- PostgreSQL: the `partage_french` text search configuration (migration 0003: `french`
  stemming, with `unaccent` when the extension can be had), a generated tsvector with a GIN
  index, `ts_rank`, `ts_headline`.
- SQLite: an FTS5 table `document_text_fts` (migration 0006) holding, for each row of
  `document_text`, the Snowball French stem of every word with its accents folded
  (`search_keys`, PyStemmer, the Snowball project's own binding): the same function builds
  the index and the query. Ranked by BM25 over the hits alone (`rank`); the excerpt is cut from the document's text
  around the words whose key the query matches (`excerpt`).

Words are reduced to letters and digits before they reach an engine, so a query cannot
use (or break) the engines' own query syntax. Callers pass the logical ids of the
documents the actor may see; nothing else is searched. This module owns the SQL of the
text index (writes included).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import Stemmer  # PyStemmer ships no type information (pyproject: ignore_missing_imports)
from sqlalchemy import Connection, bindparam, select, text

from . import schema

MAX_TERMS = 12
PG_CONFIG = "partage_french"       # created by migration 0003: french stemming (+ unaccent)
OPEN, CLOSE = "\u27e6", "\u27e7"     # highlight markers, escaped to <mark> after HTML escaping
EXCERPT_WORDS = 24                 # words around the matches (SQLite; ts_headline: MaxWords=30)
EXCERPT_SCAN_CHARS = 400_000       # the excerpt is looked for in the text's first 400 kB
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STEMMER = Stemmer.Stemmer("french")
# French function words, which no text has to hold for a query to match it: the Snowball French
# stop list, the one PostgreSQL's `french` dictionary drops (tsearch_data/french.stop). Dropped
# from every query here, so that "fracture du col" asks the same of both engines.
STOP_WORDS = frozenset("""
    au aux avec ce ces dans de des du elle en et eux il je la le leur lui ma mais me même mes
    moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton
    tu un une vos votre vous c d j l à m n s t y été étée étées étés étant étante étants étantes
    suis es est sommes êtes sont serai seras sera serons serez seront serais serait serions
    seriez seraient étais était étions étiez étaient fus fut fûmes fûtes furent sois soit soyons
    soyez soient fusse fusses fût fussions fussiez fussent ayant ayante ayantes ayants eu eue
    eues eus ai as avons avez ont aurai auras aura aurons aurez auront aurais aurait aurions
    auriez auraient avais avait avions aviez avaient eut eûmes eûtes eurent aie aies ait ayons
    ayez aient eusse eusses eût eussions eussiez eussent
""".split())


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


_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE"})


def normal(text: str) -> str:
    """Text as words are cut from it, in queries and documents alike: compatibility-composed
    (NFKC: decomposed accents, as many input methods and PDFs give them, join their letter,
    so "e" + U+0301 is one word "é"; the ligature "ﬁ" is "fi") and with œ, æ written oe, ae
    (as PostgreSQL's unaccent writes them, so that "oedème" finds "œdème" on both engines)."""
    return unicodedata.normalize("NFKC", text).translate(_LIGATURES)


def terms_of(query: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(normal(query or ""))][:MAX_TERMS]


def _fold(word: str) -> str:
    """Accents off (é -> e, ï -> i): NFKD, combining marks dropped."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", word) if not unicodedata.combining(ch))


@lru_cache(maxsize=65536)
def search_key(word: str) -> str:
    """The key a word is indexed and searched by: its Snowball French stem, accents folded
    (stemming first: the French stemmer reads accents, e.g. to tell a suffix)."""
    return _fold(_STEMMER.stemWord(normal(word).lower()))


def search_keys(body: str) -> str:
    """The text as the SQLite index holds it: the key of every word, space-separated."""
    return " ".join(search_key(w) for w in _WORD.findall(normal(body)))


# --- writes -----------------------------------------------------------------------------------
# Built once: every registration of a document with text writes both.
_INSERT_TEXT = schema.document_text.insert()
_INSERT_FTS = text("INSERT INTO document_text_fts(rowid, stems) VALUES (:pk, :stems)")


def put_text(conn: Connection, *, patient_pk: int, lid: str, entry_uuid: str, body: str) -> None:
    """Store a document's searchable text (one row per logical document) and index it."""
    body = body.replace("\x00", "")   # PostgreSQL text cannot hold NUL (a text/plain document may)
    if not body:
        return
    inserted = conn.execute(_INSERT_TEXT, dict(
        patient_pk=patient_pk, doc_lid=lid, doc_entry_uuid=entry_uuid, body=body)).inserted_primary_key
    assert inserted is not None
    pk = int(inserted[0])
    if conn.dialect.name == "sqlite":
        index_row(conn, pk, body)


def index_row(conn: Connection, pk: int, body: str) -> None:
    """SQLite: the FTS5 row of a document_text row (PostgreSQL's tsvector is generated)."""
    conn.execute(_INSERT_FTS, {"pk": pk, "stems": search_keys(body)})


def delete_text(conn: Connection, lid: str) -> None:
    """Remove a document's text and its index entry (both engines)."""
    t = schema.document_text
    if conn.dialect.name == "sqlite":
        pks = list(conn.execute(select(t.c.pk).where(t.c.doc_lid == lid)).scalars())
        if pks:
            conn.execute(text("DELETE FROM document_text_fts WHERE rowid IN :pks")
                         .bindparams(bindparam("pks", expanding=True)), {"pks": pks})
    conn.execute(t.delete().where(t.c.doc_lid == lid))


# --- reads ------------------------------------------------------------------------------------
def full_text(conn: Connection, lids: list[str], query: str, limit: int = 50,
              excerpts: tuple[int, int] | None = None) -> list[SearchHit]:
    """Up to `limit` ranked hits; `excerpts` (offset, count): the page of hits whose excerpt is
    cut (an excerpt reads the document's text: the other hits get none), None: every hit's."""
    terms = [t for t in terms_of(query) if t not in STOP_WORDS]
    if not terms or not lids:
        return []
    window = excerpts or (0, limit)
    if conn.dialect.name == "postgresql":
        return _postgresql(conn, lids, terms, limit, window)
    return _sqlite(conn, lids, terms, limit, window)


def _sqlite(conn: Connection, lids: list[str], terms: list[str], limit: int,
            window: tuple[int, int]) -> list[SearchHit]:
    keys = [k for k in dict.fromkeys(search_key(t) for t in terms) if k]
    if not keys:
        return []
    match = " ".join(f'"{k}"*' for k in keys)
    # FTS5's bm25() weighs each word by its rarity in the whole index: every patient's documents,
    # those the actor may not see included, so the order and the scores of the visible hits said
    # what hidden documents hold. The rank is computed from the visible hits alone (`rank`).
    stmt = text(
        "SELECT t.pk AS pk, t.doc_lid AS doc_lid, document_text_fts.stems AS stems "
        "FROM document_text_fts JOIN document_text t ON t.pk = document_text_fts.rowid "
        "WHERE document_text_fts MATCH :match AND t.doc_lid IN :lids").bindparams(bindparam("lids", expanding=True))
    rows = conn.execute(stmt, {"match": match, "lids": lids}).all()
    ranked = sorted(zip(rank([r.stems or "" for r in rows], keys), rows, strict=True),
                    key=lambda scored: (-scored[0], scored[1].doc_lid))[:limit]
    lo, hi = window[0], window[0] + window[1]
    shown = [r.pk for _score, r in ranked[lo:hi]]
    bodies: dict[int, str] = {}
    if shown:   # the text is read for the excerpts of the returned page only
        t = schema.document_text
        bodies = {pk: body or "" for pk, body in conn.execute(select(t.c.pk, t.c.body).where(t.c.pk.in_(shown)))}
    return [SearchHit(r.doc_lid, score, excerpt(bodies[r.pk], keys) if r.pk in bodies else "")
            for score, r in ranked]


BM25_K1, BM25_B = 1.2, 0.75


def rank(stems: list[str], keys: list[str]) -> list[float]:
    """Okapi BM25's term-frequency part for each hit (its words' keys, space-separated), lengths
    normalised by the hits' mean: a score that depends on these hits only, never on what else the
    index holds (PostgreSQL's ts_rank likewise reads the document alone)."""
    words = [s.split() for s in stems]
    mean = (sum(len(w) for w in words) / len(words)) if words else 0.0
    out = []
    for w in words:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * (len(w) / mean if mean else 1.0))
        score = 0.0
        for k in keys:
            tf = sum(1 for word in w if word.startswith(k))
            score += tf * (BM25_K1 + 1) / (tf + norm) if tf else 0.0
        out.append(score)
    return out


def excerpt(body: str, keys: list[str], width: int = EXCERPT_WORDS) -> str:
    """About `width` words of `body` around the words whose key starts with one of `keys`
    (the window naming the most different keys), the matches between OPEN and CLOSE."""
    body = unicodedata.normalize("NFC", body)   # a decomposed accent does not cut a word in two
    words = list(_WORD.finditer(body[:EXCERPT_SCAN_CHARS]))
    if not words:
        return ""
    matched: list[tuple[int, int]] = []    # (word index, which key)
    for i, m in enumerate(words):
        key = search_key(m.group())
        for n, k in enumerate(keys):
            if key.startswith(k):
                matched.append((i, n))
                break
    start = 0
    if matched:
        best = -1
        for i, _n in matched:
            first = max(0, i - width // 4)
            covered = len({n for j, n in matched if first <= j < first + width})
            if covered > best:
                best, start = covered, first
    end = min(len(words), start + width)
    hit_words = {i for i, _n in matched if start <= i < end}
    out: list[str] = ["…"] if start > 0 else []
    position = words[start].start()
    for i in range(start, end):
        m = words[i]
        out.append(body[position:m.start()])
        out.append(f"{OPEN}{m.group()}{CLOSE}" if i in hit_words else m.group())
        position = m.end()
    if end < len(words):
        out.append(" …")
    return " ".join("".join(out).split())


def _postgresql(conn: Connection, lids: list[str], terms: list[str], limit: int,
                window: tuple[int, int]) -> list[SearchHit]:
    tsquery = " & ".join(f"{t}:*" for t in terms)
    stmt = text(
        "SELECT m.doc_lid, m.score, CASE WHEN m.rn > :lo AND m.rn <= :hi THEN "
        f"ts_headline('{PG_CONFIG}', m.body, to_tsquery('{PG_CONFIG}', :q), "
        f"'StartSel={OPEN}, StopSel={CLOSE}, MaxWords=30, MinWords=12, MaxFragments=2, "
        "FragmentDelimiter=\" … \"') ELSE '' END AS excerpt "
        "FROM (SELECT r.*, row_number() OVER (ORDER BY r.score DESC, r.doc_lid) AS rn "
        f"      FROM (SELECT doc_lid, body, ts_rank(tsv, to_tsquery('{PG_CONFIG}', :q)) AS score "
        f"            FROM document_text WHERE tsv @@ to_tsquery('{PG_CONFIG}', :q) AND doc_lid IN :lids "
        "            ORDER BY score DESC, doc_lid LIMIT :limit) r) m ORDER BY m.rn"
    ).bindparams(bindparam("lids", expanding=True))
    rows = conn.execute(stmt, {"q": tsquery, "lids": lids, "limit": limit,
                               "lo": window[0], "hi": window[0] + window[1]}).all()
    return [SearchHit(r.doc_lid, float(r.score), r.excerpt or "") for r in rows]
