"""The ONNX Runtime backend against the real packaged MiniLM: export, cache, re-export, vectors.

Exports go to a cache directory of this test session (`$SHOPFUSION_ONNX_CACHE`), never to the user's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from shopfusion.encoders import DEFAULT_MODEL_NAME, default_model_path, load_encoder  # noqa: E402
from shopfusion.onnx_encoder import OnnxEncoder  # noqa: E402
from shopfusion.onnx_export import CACHE_ENV, cache_dir, ensure_export, probe_texts  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = ["cordless drill", "  White Interior Paint, 1 gal.  ", "usb c hub with 4k hdmi and 100w power delivery",
         "Lindt Excellence 70% Cocoa Dark Chocolate Bar, 100 g | Snacks > Chocolates " * 12]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("onnx-cache")
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(root)
    yield root
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="module")
def packaged(onnx_cache: Path) -> dict[str, OnnxEncoder]:
    return {variant: OnnxEncoder(default_model_path(), name=DEFAULT_MODEL_NAME, variant=variant, packaged=True)
            for variant in ("fp32", "int8")}


def test_packaged_model_exports_to_the_user_cache_not_site_packages(packaged, onnx_cache: Path) -> None:
    export = packaged["int8"].export
    assert export.path.is_relative_to(onnx_cache)
    assert not (default_model_path() / "onnx").exists()
    info = json.loads((export.path.parent / "export.json").read_text())
    assert info["source_sha256"] == export.source_sha256 and set(info["variants"]) == {"fp32", "int8"}
    assert packaged["int8"].backend_id == f"onnx-int8@{export.sha256[:12]}"


def test_fp32_gives_the_torch_vectors(packaged, minilm) -> None:
    reference = minilm.encode(TEXTS)
    vectors = packaged["fp32"].encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, reference, atol=2e-5)
    assert packaged["fp32"].model_id == minilm.model_id  # the same weights, whatever runs them


def test_int8_drift_is_measured_and_small(packaged, minilm) -> None:
    agreement = packaged["int8"].agreement
    assert agreement["cosine_mean"] >= 0.99 and agreement["top5_overlap"] >= 0.8
    cosine = np.sum(packaged["int8"].encode(TEXTS) * minilm.encode(TEXTS), axis=1)
    assert cosine.min() >= 0.97


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_query_path_equals_catalog_path(packaged, variant: str) -> None:
    encoder = packaged[variant]
    alone = np.stack([encoder.encode_query(t) for t in TEXTS])
    single = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(alone, single, atol=1e-5)
    batched = encoder.encode(TEXTS, batch_size=64)  # length-bucketed with the other texts
    assert np.sum(alone * batched, axis=1).min() >= 0.99


def test_a_fresh_encoder_can_encode_a_query_first(onnx_cache: Path) -> None:
    """The query session is opened before anything else touched the export (it used to take the
    encoder's lock twice and hang)."""
    encoder = OnnxEncoder(default_model_path(), name=DEFAULT_MODEL_NAME, variant="int8", packaged=True)
    assert encoder.encode_query("cordless drill").shape == (384,)


def test_load_encoder_backends_and_the_export_is_reused(onnx_cache: Path) -> None:
    encoder = load_encoder("default", "cpu", "onnx-int8")
    assert encoder.backend == "onnx-int8" and encoder is load_encoder("default", "cpu", "onnx-int8")
    info = encoder.export.path.parent / "export.json"  # type: ignore[attr-defined]
    stamp = info.stat().st_mtime_ns
    again = ensure_export(default_model_path(), "int8", packaged=True)
    assert again.sha256 == encoder.export.sha256 and info.stat().st_mtime_ns == stamp  # type: ignore[attr-defined]


def test_a_trainer_written_model_exports_beside_itself_and_again_when_its_weights_change(tmp_path: Path,
                                                                                           onnx_cache: Path) -> None:
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "my-encoder"
    shutil.copytree(default_model_path(), model)
    first = ensure_export(model, "fp32")
    assert first.path.parent == model / "onnx"
    encoder = OnnxEncoder(model, variant="fp32")
    before = encoder.encode(["garden hose"])
    weights = load_file(str(model / "model.safetensors"))
    name = next(k for k in weights if k.endswith("pooler.dense.bias") or "encoder.layer.5" in k)
    weights[name] = weights[name] + np.float32(0.05)
    save_file(weights, str(model / "model.safetensors"))
    second = ensure_export(model, "fp32")
    assert second.source_sha256 != first.source_sha256 and second.sha256 != first.sha256
    after = OnnxEncoder(model, variant="fp32").encode(["garden hose"])
    assert not np.allclose(before, after)
    assert cache_dir(model, second.source_sha256) == model / "onnx"


def test_probe_texts_are_shipped() -> None:
    texts = probe_texts()
    assert len(texts) == 100 and all(isinstance(t, str) and t for t in texts)


def test_index_records_the_backend_and_search_checks_the_tolerance(tmp_path: Path, tiny_catalog: Path,
                                                                   onnx_cache: Path) -> None:
    from indexer.manifest import IndexDirectory
    from ranker.searcher import HybridSearcher
    from shopfusion.client import Client
    from shopfusion.config import Settings
    from shopfusion.errors import IndexStateError

    settings = Settings().replace("index", backend="onnx-int8", device="cpu").replace("search", policy="none")
    summary = Client(tmp_path / "idx", settings=settings).index(tiny_catalog)
    manifest = IndexDirectory(tmp_path / "idx").read_manifest()
    assert summary.backend == manifest.backend == "onnx-int8"
    assert manifest.backend_id.startswith("onnx-int8@") and manifest.backend_agreement["cosine_mean"] >= 0.99

    auto = HybridSearcher(tmp_path / "idx", settings.replace("index", backend="auto"))
    assert auto.encoder.backend_id == manifest.backend_id  # auto searches with the index's own backend
    hits = auto.search("cordless drill", k=3).hits
    assert hits[0].product_id in {"p01", "p12"}

    torch_settings = settings.replace("index", backend="torch")
    mixed = HybridSearcher(tmp_path / "idx", torch_settings)  # within the measured tolerance: allowed
    assert [h.product_id for h in mixed.search("garden hose", k=2).hits][0] == "p04"
    strict = torch_settings.replace("index", backend_min_cosine=0.99999)
    with pytest.raises(IndexStateError, match="tolerance"):
        HybridSearcher(tmp_path / "idx", strict)

    again = Client(tmp_path / "idx", settings=settings.replace("index", backend="auto")).index(tiny_catalog)
    assert again.backend == "onnx-int8" and again.embedded == 0  # auto keeps the index's backend


def test_smoothquant_leaves_the_fp32_function_unchanged(packaged) -> None:
    """SmoothQuant only rescales (X / s)(s W): before quantisation the graph computes the same vectors."""
    import onnx
    import onnxruntime as ort

    from shopfusion.onnx_quantize import _token_feeds, smooth

    export = packaged["fp32"].export
    graph = onnx.load(str(export.path), load_external_data=False)
    smoothed = smooth(graph, export.tokenizer, 0.7, probe_texts()[:20], set())
    muls = [n for n in smoothed.graph.node if n.name.endswith("_smooth")]
    assert len(muls) == 24  # 6 layers: fused QKV, attention output, FFN in, FFN out
    feeds = list(_token_feeds(export.tokenizer, TEXTS, {"input_ids", "attention_mask", "token_type_ids"}))
    before = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(smoothed.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in feeds:
        np.testing.assert_allclose(after.run(None, feed)[0], before.run(None, feed)[0], atol=1e-4)
