"""Index backends behind two Protocols: `LexicalIndex` (tantivy embedded, Elasticsearch remote) and
`VectorIndex` (FAISS, CPU or GPU). `open_lexical` picks the lexical engine from settings."""

from __future__ import annotations

from pathlib import Path

from indexer.stores.base import BulkReport, LexicalIndex, VectorIndex
from shopfusion.config import Settings


def open_lexical(settings: Settings, version_dir: Path, version: str, namespace: str, *,
                 create: bool, engine: str | None = None, analyzer: str | None = None) -> LexicalIndex:
    """The lexical leg of one index version: `engine` (default: `index.lexical`) decides which."""
    engine = engine or settings.index.lexical
    if engine == "tantivy":
        from indexer.stores.tantivy_store import TantivyLexicalIndex

        return TantivyLexicalIndex(version_dir / "lexical", analyzer=analyzer or settings.index.analyzer,  # type: ignore[arg-type]
                                   create=create)
    if engine == "elasticsearch":
        from shopfusion.errors import require

        require("elasticsearch", "es")
        from indexer.stores.elasticsearch_store import ElasticsearchLexicalIndex

        return ElasticsearchLexicalIndex(settings.elasticsearch, namespace=namespace, version=version,
                                         create=create)
    from shopfusion.errors import ConfigError

    raise ConfigError(f"unknown lexical engine {engine!r}: use `tantivy` or `elasticsearch`")


__all__ = ["BulkReport", "LexicalIndex", "VectorIndex", "open_lexical"]
