from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfusion.encoders import HashingEncoder, load_encoder, resolve_device
from shopfusion.errors import ConfigError


def test_hashing_encoder_is_deterministic_and_normalised() -> None:
    encoder = HashingEncoder(16)
    a = encoder.encode(["cordless drill", "garden hose", ""])
    assert a.shape == (3, 16) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a, HashingEncoder(16).encode(["cordless drill", "garden hose", ""]))
    assert float(encoder.encode_query("drill") @ a[0]) > float(encoder.encode_query("drill") @ a[1])


def test_specs() -> None:
    assert load_encoder("hash:8").model_id == "hash:8"
    assert load_encoder("hash:8") is load_encoder("hash:8")
    with pytest.raises(ConfigError, match="hash:<dimension>"):
        load_encoder("hash:x")
    with pytest.raises(ConfigError, match="local paths only"):
        load_encoder("sentence-transformers/all-mpnet-base-v2")


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="safetensors"):
        load_encoder(str(tmp_path)).encode(["x"])


def test_device_resolution() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu", "cuda"}


@pytest.mark.slow
def test_default_model_loads_offline(minilm) -> None:
    vectors = minilm.encode(["cordless drill", "drill driver", "garden hose"])
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    assert minilm.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    np.testing.assert_allclose(minilm.encode_query("cordless drill"), vectors[0], atol=1e-5)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.PT", "x.pth", "sub/model.pkl", "a.pickle",
                                  "last.ckpt", "scaler.joblib"])
def test_any_pickle_is_refused_even_beside_safetensors(tmp_path: Path, name: str) -> None:
    """Issue 14: a `pytorch_model.bin` next to `model.safetensors` used to pass the check and reach torch.load."""
    from shopfusion.encoders import check_safetensors

    (tmp_path / "model.safetensors").write_bytes(b"{}")
    (tmp_path / "config.json").write_text("{}")
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\x80\x04pickle")
    with pytest.raises(ConfigError, match="pickled weights file") as caught:
        check_safetensors(tmp_path)
    assert name in str(caught.value)
    with pytest.raises(ConfigError, match="safetensors only"):
        load_encoder(str(tmp_path), "cpu").encode(["x"])


def test_packaged_model_passes_the_pickle_check() -> None:
    from shopfusion.encoders import check_safetensors, default_model_path

    check_safetensors(default_model_path())


@pytest.mark.parametrize("kind", ["intent-model", "fusion-policy"])
def test_artifact_directories_with_a_pickle_are_refused(tmp_path: Path, kind: str) -> None:
    """Every shopfusion artifact (intent models, fusion policies) is read through `read_card`, which
    applies the same pickle rule before reading anything."""
    import shutil

    from ranker.intent import default_intent_model_dir, load_intent_model
    from ranker.policy import default_policy_dir
    from shopfusion.artifacts import read_card

    source = default_intent_model_dir() if kind == "intent-model" else default_policy_dir()
    copy = tmp_path / "artifact"
    shutil.copytree(source, copy)
    read_card(copy, kind)  # the shipped artifact passes
    (copy / "extra.pkl").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ConfigError, match="extra.pkl"):
        read_card(copy, kind)
    if kind == "intent-model":
        with pytest.raises(ConfigError, match="pickled weights file"):
            load_intent_model(copy)
