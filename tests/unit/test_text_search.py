"""The full-text search's word rules that both engines must share."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_stop_words_are_those_postgresql_drops():
    """SQLite drops from a query the words PostgreSQL's `french` dictionary drops (its
    tsearch_data/french.stop, Snowball's list): both engines answer "fracture du col" alike."""
    from partage.registry.text_search import STOP_WORDS
    found = sorted(Path("/usr/share/postgresql").glob("*/tsearch_data/french.stop"))
    if not found:
        pytest.skip("PostgreSQL's french.stop is not installed here")
    assert STOP_WORDS == set(found[-1].read_text(encoding="utf-8").split())
