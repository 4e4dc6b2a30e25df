"""Choosing an encoder backend and the tolerance for mixing two (no model is loaded here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shopfusion import backends
from shopfusion.backends import BackendRecord, check_mix, choose_backend, drift
from shopfusion.errors import ConfigError, IndexStateError


@dataclass
class FakeEncoder:
    backend: str
    backend_id: str
    agreement: dict[str, float] = field(default_factory=dict)


INT8 = FakeEncoder("onnx-int8", "onnx-int8@abc", {"cosine_mean": 0.995})
TORCH = FakeEncoder("torch", "torch")


def test_drift_is_one_minus_mean_cosine() -> None:
    assert drift({"cosine_mean": 0.993}) == pytest.approx(0.007)
    assert drift({}) == 0.0 and drift(None) == 0.0


def test_same_backend_always_mixes() -> None:
    check_mix(BackendRecord.of(INT8), INT8, min_cosine=0.9999)


def test_other_backend_within_tolerance_is_allowed() -> None:
    check_mix(BackendRecord.of(INT8), TORCH, min_cosine=0.99)  # 0.005 <= 0.01


def test_other_backend_beyond_tolerance_is_refused_with_what_to_do() -> None:
    with pytest.raises(IndexStateError, match='index.backend = "auto"'):
        check_mix(BackendRecord.of(INT8), TORCH, min_cosine=0.999)
    other_int8 = FakeEncoder("onnx-int8", "onnx-int8@def", {"cosine_mean": 0.994})
    with pytest.raises(IndexStateError, match="together 0.0110"):
        check_mix(BackendRecord.of(INT8), other_int8, min_cosine=0.99)


def test_hashing_encoder_has_no_backends() -> None:
    check_mix(BackendRecord("hash", "hash"), TORCH, min_cosine=1.0)


def test_explicit_choices_and_errors() -> None:
    assert choose_backend("torch", "default", "cpu", min_cosine=0.99) == "torch"
    with pytest.raises(ConfigError, match="choose auto"):
        choose_backend("tensorrt", "default", "cpu", min_cosine=0.99)


def test_auto_keeps_the_backend_an_index_was_built_with() -> None:
    assert choose_backend("auto", "default", "cpu", min_cosine=0.99, index_backend="torch") == "torch"
    assert choose_backend("auto", "default", "cpu", min_cosine=0.99, index_backend="onnx-int8") == "onnx-int8"


def test_auto_is_torch_on_a_gpu_and_without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    import shopfusion.encoders

    monkeypatch.setattr(shopfusion.encoders, "resolve_device", lambda device: "cuda")
    assert choose_backend("auto", "default", "auto", min_cosine=0.99) == "torch"
    monkeypatch.setattr(shopfusion.encoders, "resolve_device", lambda device: "cpu")
    monkeypatch.setattr(backends, "onnx_available", lambda: False)
    assert choose_backend("auto", "default", "cpu", min_cosine=0.99) == "torch"


def test_auto_picks_the_fastest_backend_that_meets_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    import shopfusion.encoders

    encoders = {"onnx-int8": INT8, "onnx": FakeEncoder("onnx", "onnx@1", {"cosine_mean": 1.0})}
    monkeypatch.setattr(shopfusion.encoders, "resolve_device", lambda device: "cpu")
    monkeypatch.setattr(backends, "onnx_available", lambda: True)
    monkeypatch.setattr(shopfusion.encoders, "load_encoder", lambda model, device, backend: encoders[backend])
    assert choose_backend("auto", "default", "cpu", min_cosine=0.99) == "onnx-int8"
    assert choose_backend("auto", "default", "cpu", min_cosine=0.999) == "onnx"
    assert choose_backend("auto", "hash:8", "cpu", min_cosine=0.99) == "torch"
