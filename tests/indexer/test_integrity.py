"""Issue 14, corruption: damaged files are named by `verify`, never searched, never carried into a new
version, and rebuilt by `verify --repair` (or a re-index) from the intact parts and the catalogs."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.manifest import IndexDirectory
from indexer.pipeline import run_index
from indexer.stores.faiss_store import FaissVectorIndex
from shopfusion.cli import main
from shopfusion.config import Settings
from tests.plugins.catalogs import TINY, write_jsonl

ENV = {"SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": "none"}
SETTINGS = Settings().replace("index", model="hash:32").replace("search", policy="none")


def _records(n: int = 10) -> list[dict]:
    records = []
    for i in range(n):
        for product in TINY:
            record = product.to_dict()
            record["id"] = f"{product.id}-{i:02d}"
            record["title"] = f"{product.title} model {i}"
            records.append(record)
    return records


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One catalog of 120 products indexed once; each test gets its own copy."""
    root = tmp_path_factory.mktemp("integrity")
    catalog = write_jsonl(root / "catalog.jsonl", _records())
    run_index(catalog, root / "idx", settings=SETTINGS)
    return catalog, root / "idx"


@pytest.fixture
def index(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    catalog, source = built
    target = tmp_path / "idx"
    shutil.copytree(source, target)
    return catalog, target


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner(env=ENV).invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _version(index_dir: Path) -> Path:
    return index_dir / "versions" / IndexDirectory(index_dir).read_manifest().version


def _flip(path: Path, offsets: list[int]) -> None:
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _vectors(index_dir: Path) -> dict[str, np.ndarray]:
    store = FaissVectorIndex(_version(index_dir) / "vectors")
    return store.vectors(store.ordered_ids())


def test_a_fresh_index_verifies_with_checksums_of_every_file(index: tuple[Path, Path]) -> None:
    _, idx = index
    manifest = IndexDirectory(idx).read_manifest()
    assert {"products.sqlite", "vectors/vectors.npy", "vectors/ids.json", "vectors/digests.npy",
            "lexical/ordinals.json"} <= set(manifest.files)
    assert json.loads((_version(idx) / "version.json").read_text())["version"] == manifest.version
    code, output = _cli("verify", "--index", str(idx), "--sample", "5")
    assert code == 0 and "ok" in output and "re-encoded 5 products" in output


def test_flipped_vector_bytes_are_found_and_never_reused(index: tuple[Path, Path], built) -> None:
    catalog, idx = index
    expected = _vectors(idx)
    _flip(_version(idx) / "vectors" / "vectors.npy", [200, 4000, 9000])  # three rows past the .npy header
    code, output = _cli("verify", "--index", str(idx), "--json")
    report = json.loads(output)
    assert code == 1 and not report["ok"]
    assert "vectors/vectors.npy" in report["damaged"]["files"] and len(report["damaged"]["vectors"]) == 3
    code, output = _cli("search", "drill", "--index", str(idx))
    assert code == 0  # same sizes, ids in order: searchable; verify names the damage

    summary = run_index(catalog, idx, settings=SETTINGS)
    assert (summary.unchanged, summary.repaired, summary.embedded) == (117, 3, 3) and summary.balanced
    assert any("damaged vector" in w for w in summary.warnings)
    got = _vectors(idx)
    assert got.keys() == expected.keys()
    for pid, vector in expected.items():
        np.testing.assert_allclose(got[pid], vector, atol=1e-6)
    assert _cli("verify", "--index", str(idx))[0] == 0


def test_a_damaged_text_hash_map_never_gives_a_product_another_texts_vector(index: tuple[Path, Path]) -> None:
    """Issue 12 reuses live vectors by text hash through `vectors/text_hashes.bin`; when that file fails
    its checksum the map comes from the product store instead, so swapped rows reuse nothing wrong."""
    catalog, idx = index
    expected = _vectors(idx)
    hashes_file = _version(idx) / "vectors" / "text_hashes.bin"
    rows = np.fromfile(hashes_file, dtype="S32")
    rows[[0, 1]] = rows[[1, 0]]
    rows.tofile(hashes_file)

    summary = run_index(catalog, idx, settings=SETTINGS)
    assert (summary.unchanged, summary.embedded) == (120, 0) and summary.balanced
    got = _vectors(idx)
    for pid, vector in expected.items():
        np.testing.assert_allclose(got[pid], vector, atol=1e-6)
    assert _cli("verify", "--index", str(idx))[0] == 0


def test_shuffled_id_map_is_refused_by_search_and_repaired_without_reembedding(index: tuple[Path, Path]) -> None:
    _, idx = index
    ids_file = _version(idx) / "vectors" / "ids.json"
    ids = json.loads(ids_file.read_text())
    random.Random(3).shuffle(ids)
    ids_file.write_text(json.dumps(ids))
    code, output = _cli("search", "drill", "--index", str(idx))
    assert code == 5 and "damaged" in output and "verify --repair" in output
    code, output = _cli("verify", "--index", str(idx))
    assert code == 1 and "shuffled" in output and "vectors/ids.json" in output
    code, output = _cli("verify", "--index", str(idx), "--repair", "--json")
    repaired = json.loads(output)
    assert code == 0 and repaired["ok"] and repaired["rebuild"]["embedded"] == 0
    assert repaired["rebuild"]["unchanged"] == 120
    assert _cli("search", "drill", "--index", str(idx))[0] == 0


def test_shuffled_tantivy_ordinals_are_found(index: tuple[Path, Path]) -> None:
    _, idx = index
    path = _version(idx) / "lexical" / "ordinals.json"
    ordinals = json.loads(path.read_text())
    ordinals[0], ordinals[1] = ordinals[1], ordinals[0]
    path.write_text(json.dumps(ordinals))
    code, output = _cli("verify", "--index", str(idx))
    assert code == 1 and "lexical/ordinals.json" in output and "do not map back" in output
    assert _cli("verify", "--index", str(idx), "--repair")[0] == 0


@pytest.mark.parametrize("target", ["vectors/vectors.npy", "vectors/ids.json", "products.sqlite",
                                    "lexical/ordinals.json"])
def test_truncated_files_give_clear_errors_and_are_repaired(index: tuple[Path, Path], target: str) -> None:
    _, idx = index
    path = _version(idx) / target
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    code, output = _cli("search", "drill", "--index", str(idx))
    assert code == 5 and "verify --repair" in output
    code, output = _cli("verify", "--index", str(idx))
    assert code == 1 and target in output
    code, output = _cli("verify", "--index", str(idx), "--repair")
    assert code == 0, output
    assert "after repair: ok" in output
    code, output = _cli("search", "cordless drill", "--index", str(idx), "--json")
    assert code == 0 and json.loads(output)["hits"]


@pytest.mark.parametrize("target", ["vectors/vectors.npy", "vectors/ids.json", "products.sqlite",
                                    "lexical/ordinals.json"])
def test_a_reindex_rebuilds_truncated_files(index: tuple[Path, Path], target: str) -> None:
    """`index` on a damaged live version: unreadable vectors are embedded again, a lexical leg is always
    rebuilt from the product store; an unreadable product store stops an additive run (its products
    would be lost) with the fix, and a --replace run rebuilds it from the catalog."""
    catalog, idx = index
    path = _version(idx) / target
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    code, output = _cli("index", str(catalog), "--index", str(idx), "--json")
    if target == "products.sqlite":
        assert code == 5 and "verify --index" in output and "--repair" in output
        code, output = _cli("index", str(catalog), "--index", str(idx), "--replace", "--json")
        assert code == 0, output
        assert json.loads(output)["added"] == 120
    else:
        assert code == 0, output
        summary = json.loads(output)
        assert summary["total"] == 120 and summary["rejected"] == 0
        if target.startswith("vectors/"):
            assert summary["repaired"] == 120 and summary["embedded"] == 120
    assert _cli("verify", "--index", str(idx))[0] == 0
    code, output = _cli("search", "cordless drill", "--index", str(idx), "--json")
    assert code == 0 and json.loads(output)["hits"]


def test_damaged_product_records_are_recovered_from_the_catalog(index: tuple[Path, Path]) -> None:
    import sqlite3

    _, idx = index
    db = sqlite3.connect(_version(idx) / "products.sqlite")
    db.execute("UPDATE products SET doc = replace(doc, 'Makita', 'Mak1ta') WHERE id = 'p01-03'")
    db.commit()
    db.close()
    code, output = _cli("verify", "--index", str(idx), "--json")
    assert code == 1 and json.loads(output)["damaged"]["products"] == ["p01-03"]
    code, output = _cli("verify", "--index", str(idx), "--repair", "--json")
    repaired = json.loads(output)
    assert code == 0 and list(repaired["recovered"]) == ["p01-03"] and repaired["rebuild"]["repaired"] == 1
    from shopfusion.client import Client

    client = Client(idx, settings=SETTINGS)
    assert client.searcher.store.get_many(["p01-03"])["p01-03"].brand == "Makita"
    client.close()


def test_an_additive_run_refuses_to_drop_a_damaged_product_it_lacks(index: tuple[Path, Path], tmp_path: Path) -> None:
    import sqlite3

    from shopfusion.errors import IndexStateError

    _, idx = index
    db = sqlite3.connect(_version(idx) / "products.sqlite")
    db.execute("UPDATE products SET doc = replace(doc, 'drill', 'dr1ll') WHERE id = 'p01-05'")
    db.commit()
    db.close()
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"id": "new-1", "title": "Wheelbarrow"}])
    with pytest.raises(IndexStateError, match="damaged and not in this catalog"):
        run_index(extra, idx, settings=SETTINGS)


def test_unrecoverable_damage_publishes_nothing(index: tuple[Path, Path]) -> None:
    catalog, idx = index
    before = (idx / "manifest.json").read_bytes()
    (_version(idx) / "products.sqlite").write_bytes(b"not a database at all")
    catalog.rename(catalog.with_suffix(".moved"))  # the catalog it was built from is gone
    try:
        code, output = _cli("verify", "--index", str(idx), "--repair")
    finally:
        catalog.with_suffix(".moved").rename(catalog)
    assert code == 5 and "--replace" in output
    assert (idx / "manifest.json").read_bytes() == before
    code, output = _cli("index", str(catalog), "--index", str(idx), "--replace")
    assert code == 0 and "added 120" in output


@pytest.mark.parametrize("manifest_text", ['{"version": "../../..", "format": 1}', "{not json", "[]", ""])
def test_a_damaged_manifest_is_refused_and_restored(index: tuple[Path, Path], manifest_text: str,
                                                    tmp_path: Path) -> None:
    _, idx = index
    live = IndexDirectory(idx).read_manifest().version
    (idx / "manifest.json").write_text(manifest_text)
    outside = list(tmp_path.parent.iterdir())
    code, output = _cli("search", "drill", "--index", str(idx))
    assert code == 5 and ("damaged" in output) and "rollback" in output
    assert list(tmp_path.parent.iterdir()) == outside  # nothing created outside the index
    assert _cli("verify", "--index", str(idx))[0] == 1
    code, output = _cli("verify", "--index", str(idx), "--repair")
    assert code == 0 and f"restored to {live}" in output
    assert _cli("search", "drill", "--index", str(idx))[0] == 0


def test_version_names_are_validated_everywhere(index: tuple[Path, Path]) -> None:
    from indexer.manifest import check_version_name
    from shopfusion.errors import IndexStateError

    _, idx = index
    for bad in ("../../etc", "v1", "v000001/..", "", None):
        with pytest.raises(IndexStateError):
            check_version_name(bad)
    with pytest.raises(IndexStateError):
        IndexDirectory(idx).version_path("../x")
    code, output = _cli("rollback", "--index", str(idx), "--to", "../../tmp")
    assert code == 5 and "not a version name" in output


# -- shrink guard, versions, rollback --------------------------------------------------------------------------
@pytest.mark.parametrize("content, name", [("", "empty.jsonl"), ("id,title\n", "header.csv"),
                                           ('{"id": "a"}\n{"title": "no id"}\n', "rejected.jsonl")])
def test_an_empty_result_is_never_published(index: tuple[Path, Path], tmp_path: Path, content: str,
                                            name: str) -> None:
    _, idx = index
    before = (idx / "manifest.json").read_bytes()
    catalog = tmp_path / name
    catalog.write_text(content)
    code, output = _cli("index", str(catalog), "--index", str(idx), "--replace")
    assert code == 7 and "refusing to publish an empty version" in output and "--allow-shrink" in output
    assert (idx / "manifest.json").read_bytes() == before
    fresh = tmp_path / "fresh"
    assert _cli("index", str(catalog), "--index", str(fresh))[0] == 7 and not (fresh / "manifest.json").exists()
    code, output = _cli("index", str(catalog), "--index", str(idx), "--replace", "--allow-shrink", "--json")
    assert code == 0 and json.loads(output)["total"] == 0


def test_a_large_drop_needs_allow_shrink_and_the_share_is_a_setting(index: tuple[Path, Path], tmp_path: Path) -> None:
    _, idx = index
    half = write_jsonl(tmp_path / "part.jsonl", _records()[:50])  # 120 -> 50: a 58% drop
    code, output = _cli("index", str(half), "--index", str(idx), "--replace")
    assert code == 7 and "drop 70 of the 120" in output and "max_shrink = 50%" in output
    relaxed = CliRunner(env={**ENV, "SHOPFUSION_INDEX_MAX_SHRINK": "0.6"}).invoke(
        main, ["index", str(half), "--index", str(idx), "--replace"])
    assert relaxed.exit_code == 0 and "deleted 70" in relaxed.output


def test_versions_and_rollback(index: tuple[Path, Path], tmp_path: Path) -> None:
    catalog, idx = index
    first = IndexDirectory(idx).read_manifest().version
    smaller = write_jsonl(tmp_path / "smaller.jsonl", _records()[:30])
    assert _cli("index", str(smaller), "--index", str(idx), "--replace", "--allow-shrink")[0] == 0
    code, output = _cli("versions", "--index", str(idx), "--json")
    listed = json.loads(output)["versions"]
    assert code == 0 and [v["products"] for v in listed] == [30, 120] and listed[0]["live"]
    assert listed[1]["version"] == first and listed[1]["created"]
    code, output = _cli("rollback", "--index", str(idx), "--json")
    assert code == 0 and json.loads(output) == {"index": str(idx), "version": first, "products": 120}
    code, output = _cli("search", "hose", "--index", str(idx), "--k", "50", "--json")
    assert len(json.loads(output)["hits"]) > 5
    code, output = _cli("rollback", "--index", str(idx), "--to", listed[0]["version"])
    assert code == 0 and "30 products" in output
    code, output = _cli("rollback", "--index", str(idx), "--to", "v000099")
    assert code == 5 and "not kept" in output


def test_rollback_refuses_a_damaged_version(index: tuple[Path, Path]) -> None:
    catalog, idx = index
    first = IndexDirectory(idx).read_manifest().version
    assert _cli("index", str(catalog), "--index", str(idx))[0] == 0
    _flip(idx / "versions" / first / "vectors" / "vectors.npy", [300])
    code, output = _cli("rollback", "--index", str(idx))
    assert code == 5 and "damaged" in output and "vectors/vectors.npy" in output


def test_keep_versions_is_a_setting(index: tuple[Path, Path]) -> None:
    catalog, idx = index
    runner = CliRunner(env={**ENV, "SHOPFUSION_INDEX_KEEP_VERSIONS": "3"})
    for _ in range(3):
        assert runner.invoke(main, ["index", str(catalog), "--index", str(idx)]).exit_code == 0
    assert len(IndexDirectory(idx).version_names()) == 3
