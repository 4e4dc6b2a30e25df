"""Encoder backends: which one runs the model (`auto`), and when vectors of two backends may be mixed.

The same weights can run on three backends: `torch` (sentence-transformers; CUDA when there is a GPU),
`onnx` (ONNX Runtime, fp32, the same vectors as torch to float rounding) and `onnx-int8` (ONNX Runtime,
int8 weights: several times faster on a CPU, with a small measured drift). Every ONNX export measures its
drift from torch fp32 on the shipped probe texts (`shopfusion.onnx_export`); that measurement is what the
rules below read, so they hold for any model, the packaged one or one the trainer wrote.

`auto` (`index.backend`, the setting):

- on a GPU (`index.device` resolves to CUDA): `torch`;
- indexing into an existing index: the backend that index was built with (an incremental run never
  re-embeds the whole catalog because a default changed);
- otherwise, with the `onnx` extra installed, the fastest backend whose probe drift meets the bar
  (`index.backend_min_cosine`): `onnx-int8`, else `onnx`; without it, `torch`.
- when searching: the backend that built the index.

Mixing: a query encoded by backend B searched against vectors of backend A is allowed when the two
drifts add up to within the bar, `(1 - cos_A) + (1 - cos_B) <= 1 - index.backend_min_cosine`
(cosines are the mean probe cosines to torch fp32; torch itself is 1), and refused otherwise with an
error that says which backend to use.

>>> drift({"cosine_mean": 0.995})
0.005
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shopfusion.errors import ConfigError, IndexStateError, MissingDependencyError

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
FASTEST_FIRST: tuple[Backend, ...] = ("onnx-int8", "onnx", "torch")
"""CPU speed order, measured (README, "ONNX Runtime encoder"): int8 > ONNX fp32 > torch."""


@dataclass(frozen=True)
class BackendRecord:
    """What an index records about the encoder backend that built it (manifest `backend*` fields)."""

    backend: str = "torch"
    backend_id: str = "torch"
    agreement: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, encoder: Any) -> BackendRecord:
        return cls(str(getattr(encoder, "backend", "torch")), str(getattr(encoder, "backend_id", "torch")),
                   dict(getattr(encoder, "agreement", {}) or {}))


def drift(agreement: dict[str, float] | None) -> float:
    """1 - mean probe cosine to torch fp32 (0 for torch itself, or when nothing was measured)."""
    if not agreement or "cosine_mean" not in agreement:
        return 0.0
    return round(max(0.0, 1.0 - float(agreement["cosine_mean"])), 6)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(requested: str, model: str, device: str, *, min_cosine: float,
                   index_backend: str | None = None) -> str:
    """The concrete backend for `requested` (`auto` or one of `BACKENDS`); see the module docstring."""
    from shopfusion.encoders import resolve_device

    if requested != "auto":
        if requested not in BACKENDS:
            raise ConfigError(f"index.backend = {requested!r}: choose auto, {', '.join(BACKENDS)}")
        if requested != "torch" and not onnx_available():
            raise MissingDependencyError("onnxruntime", "onnx")
        return requested
    if model.startswith("hash:"):
        return "torch"  # the hashing encoder has no backends; recorded as its own
    if index_backend in BACKENDS and (index_backend == "torch" or onnx_available()):
        return index_backend
    if resolve_device(device).startswith("cuda") or not onnx_available():
        return "torch"
    from shopfusion.encoders import load_encoder

    for backend in FASTEST_FIRST:
        if backend == "torch":
            return backend
        encoder = load_encoder(model, device, backend=backend)
        if 1.0 - drift(getattr(encoder, "agreement", None)) >= min_cosine:
            return backend
    return "torch"  # pragma: no cover - the loop always returns


def check_mix(index: BackendRecord, query: Any, *, min_cosine: float) -> None:
    """Refuse to search vectors built by `index` with the query encoder `query` beyond the tolerance."""
    query_record = BackendRecord.of(query)
    if query_record.backend_id == index.backend_id or index.backend == "hash" or query_record.backend == "hash":
        return
    combined = drift(index.agreement) + drift(query_record.agreement)
    if combined <= 1.0 - min_cosine + 1e-9:
        return
    raise IndexStateError(
        f"the index was built with the {index.backend_id} encoder backend (drift {drift(index.agreement):.4f}"
        f" from torch fp32) and queries would use {query_record.backend_id} (drift"
        f" {drift(query_record.agreement):.4f}): together {combined:.4f}, more than the tolerance"
        f" 1 - index.backend_min_cosine = {1.0 - min_cosine:.4f}. Search with index.backend = \"auto\""
        f" (or \"{index.backend}\"), or rebuild the index with the backend you want"
    )
