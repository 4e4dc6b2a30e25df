"""Vector files: append, find, read back, survive a torn append; and the streaming vector index builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.stores.faiss_builder import VectorIndexBuilder, text_hash_rows
from indexer.stores.faiss_store import FaissVectorIndex
from indexer.vectorfile import EmbeddingJournal, VectorFile, VectorLookup
from shopfusion.encoders import HashingEncoder
from shopfusion.errors import ConfigError, IndexStateError
from shopfusion.types import Filters
from tests.plugins.catalogs import TINY

KEYS = [f"{i:032x}" for i in range(200)]


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_append_find_read(tmp_path: Path) -> None:
    vf = VectorFile(tmp_path / "v", identity="m", dim=8, create=True)
    data = _vectors(200)
    vf.append(KEYS[:120], data[:120])
    vf.append(KEYS[120:], data[120:])
    rows = vf.find([KEYS[5], "f" * 32, KEYS[150]])
    assert rows.tolist() == [5, -1, 150]
    order = np.random.default_rng(1).permutation(200)
    np.testing.assert_array_equal(vf.read(order), data[order])
    assert VectorFile(tmp_path / "v").count() == 200  # reopened from disk


def test_last_write_of_a_key_wins(tmp_path: Path) -> None:
    vf = VectorFile(tmp_path / "v", identity="m", dim=8, create=True)
    data = _vectors(3)
    vf.append(KEYS[:2], data[:2])
    vf.append(KEYS[:1], data[2:3])
    np.testing.assert_array_equal(vf.read(vf.find(KEYS[:1])), data[2:3])


def test_a_torn_append_loses_only_that_batch(tmp_path: Path) -> None:
    vf = VectorFile(tmp_path / "v", identity="m", dim=8, create=True)
    data = _vectors(10)
    vf.append(KEYS[:10], data)
    with (tmp_path / "v" / "vectors.bin").open("ab") as handle:  # a process killed mid-append
        handle.write(data[:1].tobytes()[:10])
    reopened = VectorFile(tmp_path / "v", identity="m", dim=8, create=True)
    assert reopened.count() == 10
    reopened.append(KEYS[10:12], data[:2])
    np.testing.assert_array_equal(VectorFile(tmp_path / "v").read(np.array([10, 11])), data[:2])


def test_identity_decides_what_is_kept(tmp_path: Path) -> None:
    VectorFile(tmp_path / "v", identity="m", dim=8, create=True).append(KEYS[:3], _vectors(3))
    assert VectorFile(tmp_path / "v", identity="m", dim=8, create=True).count() == 3
    assert EmbeddingJournal(tmp_path / "v", "other model").count() == 0  # a journal of another encoder
    vf = VectorFile(tmp_path / "v")
    with pytest.raises(ConfigError, match="make them again"):
        vf.check("m", 8)
    with pytest.raises(ConfigError, match="not a vector file"):
        VectorFile(tmp_path / "nothing")
    with pytest.raises(IndexStateError, match="32 hex"):
        vf.append(["short"], _vectors(1))


def test_lookup_takes_the_first_source_that_has_a_key(tmp_path: Path) -> None:
    a = VectorFile(tmp_path / "a", identity="m", dim=8, create=True)
    b = VectorFile(tmp_path / "b", identity="m", dim=8, create=True)
    a.append(KEYS[:2], np.ones((2, 8), dtype=np.float32))
    b.append(KEYS[1:4], np.zeros((3, 8), dtype=np.float32))
    lookup = VectorLookup([("a", a), ("b", b)], dim=8)
    source, _ = lookup.locate(KEYS[:5])
    assert source.tolist() == [0, 0, 1, 1, -1]
    assert lookup.fetch(KEYS[:4]).sum(axis=1).tolist() == [8.0, 8.0, 0.0, 0.0]
    with pytest.raises(IndexStateError, match="no vector"):
        lookup.fetch(KEYS[4:5])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_builder_writes_what_the_in_memory_index_writes(tmp_path: Path, kind: str) -> None:
    encoder = HashingEncoder(32)
    vectors = encoder.encode([p.embedding_text() for p in TINY])
    reference = FaissVectorIndex(tmp_path / "ref", dim=32, kind=kind, nprobe=64, create=True)
    reference.upsert(TINY, vectors)
    reference.commit()
    builder = VectorIndexBuilder(tmp_path / "built", dim=32, kind=kind, expected=len(TINY) + 3, nprobe=64)
    builder.add(TINY[:5], vectors[:5], [p.text_hash() for p in TINY[:5]])
    builder.add(TINY[5:], vectors[5:], [p.text_hash() for p in TINY[5:]])
    built = builder.commit()
    assert built.ordered_ids() == reference.ordered_ids() and built.kind == kind
    query = encoder.encode_query("cordless drill")
    assert built.search(query, 5) == reference.search(query, 5)
    filters = Filters(category=("Tools",), price_max=100)
    assert built.search(query, 5, filters) == reference.search(query, 5, filters)
    assert np.load(tmp_path / "built" / "vectors.npy").shape == (len(TINY), 32)  # header rewritten
    keys = text_hash_rows(tmp_path / "built")
    assert keys is not None and keys.tolist() == [p.text_hash().encode() for p in TINY]
