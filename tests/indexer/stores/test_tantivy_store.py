from __future__ import annotations

from pathlib import Path

import pytest

from indexer.stores.tantivy_store import TantivyLexicalIndex, build_analyzer
from shopfusion.errors import IndexStateError
from shopfusion.types import Product
from tests.indexer.stores.conformance import LexicalConformance


class TestTantivyEnglish(LexicalConformance):
    @pytest.fixture
    def make_lexical(self, tmp_path: Path):
        return lambda: TantivyLexicalIndex(tmp_path / "lexical", analyzer="english", create=True)


class TestTantivyStandard(LexicalConformance):
    @pytest.fixture
    def make_lexical(self, tmp_path: Path):
        return lambda: TantivyLexicalIndex(tmp_path / "lexical", analyzer="standard", create=True)


def test_english_analyzer_stems_and_drops_stop_words() -> None:
    assert build_analyzer("english").analyze("The drills for kids") == ["drill", "kid"]
    assert build_analyzer("standard").analyze("The drills") == ["the", "drills"]


def test_reopen_after_commit(tmp_path: Path) -> None:
    index = TantivyLexicalIndex(tmp_path / "lex", create=True)
    index.upsert([Product("a", "Garden hose")])
    index.commit()
    reopened = TantivyLexicalIndex(tmp_path / "lex")
    assert [h.product_id for h in reopened.search("hose", k=3)] == ["a"]


def test_open_missing_index_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(IndexStateError, match="shopfusion index"):
        TantivyLexicalIndex(tmp_path / "nothing")


def test_uncommitted_writes_are_invisible_and_lost_on_close(tmp_path: Path) -> None:
    index = TantivyLexicalIndex(tmp_path / "lex", create=True)
    index.upsert([Product("a", "Garden hose")])
    assert index.search("hose", k=3) == []
    index.close()
    index.commit()
    assert index.count() == 0
