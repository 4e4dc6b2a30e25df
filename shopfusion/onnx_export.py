"""Offline export of a sentence-transformers encoder to ONNX (fp32 and int8), cached beside the model.

Why: on a CPU the encoder is the whole cost of indexing and most of a query, and ONNX Runtime with an
int8 graph runs the same model several times faster than torch. The export is made once per model, from
its safetensors weights (loaded with `trust_remote_code` off, no hub access), and reused by every process.

What is exported: the whole sentence-transformers pipeline (transformer, pooling, any dense layers,
normalisation), so the ONNX graph returns the sentence embedding itself and the runtime needs neither
torch nor transformers. The tokenizer is saved beside it as `tokenizer.json`.

- `fp32`: the graph after ONNX Runtime's transformer optimiser (fused attention, LayerNorm, GELU), which
  gives the same vectors as torch to float rounding; the plain export is kept when the optimiser does not
  recognise the architecture or changes the outputs.
- `int8`: the fp32 graph quantised by `shopfusion.onnx_quantize` (`SHIPPED_RECIPE`, the measured choice).

Every export measures its own drift from torch fp32 on the shipped probe texts
(`shopfusion/data/probe_texts.json`: mean and minimum cosine, and top-5 overlap of probe-query rankings)
and records it in `export.json`; `index.backend = "auto"` and the search-time backend check read it.

Cache layout (one directory per model)::

    export.json        source checksum, versions, and per variant: file checksum, recipe, measured agreement
    tokenizer.json     the fast tokenizer
    model.onnx         fp32
    model-int8.onnx    int8

It lives in `<model>/onnx/` when the model directory is writable and not an installed package (the
identity hash of a model skips `onnx/`); otherwise in `~/.cache/shopfusion/onnx/<content hash>/`
(`$SHOPFUSION_ONNX_CACHE` moves that root). A model whose weights, config or tokenizer changed has another
source checksum and is exported again; so is a variant whose recipe changed.

>>> export = ensure_export(default_model_path(), "int8", packaged=True)   # doctest: +SKIP
>>> export.path.name, export.agreement["cosine_mean"] > 0.99              # doctest: +SKIP
('model-int8.onnx', True)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shopfusion.artifacts import file_sha256
from shopfusion.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    from shopfusion.onnx_quantize import QuantRecipe

Variant = Literal["fp32", "int8"]
EXPORT_FORMAT = 1
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
FILES: dict[str, str] = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
CACHE_ENV = "SHOPFUSION_ONNX_CACHE"


@dataclass(frozen=True)
class ExportedModel:
    """One exported variant of a model, ready for ONNX Runtime."""

    variant: Variant
    path: Path
    sha256: str
    tokenizer: Path
    source_sha256: str
    dim: int
    max_seq_length: int
    lower_case: bool
    agreement: dict[str, float] = field(default_factory=dict)
    """Drift from torch fp32 on the probe texts: cosine_mean, cosine_min, top5_overlap."""

    @property
    def export_id(self) -> str:
        return self.sha256[:12]


def require_onnx() -> None:
    """Raise `MissingDependencyError` unless onnxruntime (and onnx, for exporting) are installed."""
    for module in ("onnxruntime", "onnx"):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependencyError(module, "onnx") from exc


def cache_dir(model_dir: Path, source_sha256: str, *, packaged: bool = False) -> Path:
    """Where the export of `model_dir` lives: `<model>/onnx/`, or the user cache for read-only models."""
    if not packaged and not _installed(model_dir) and os.access(model_dir, os.W_OK):
        return model_dir / "onnx"
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "shopfusion" / "onnx")
    return root / source_sha256[:16]


def ensure_export(model_dir: str | os.PathLike[str], variant: Variant, *, packaged: bool = False,
                  recipe: QuantRecipe | None = None) -> ExportedModel:
    """The exported `variant` of the model at `model_dir`, exporting it first when missing or stale.

    Safe to call from several processes at once (a file lock serialises the export). `recipe`: the int8
    recipe (default `shopfusion.onnx_quantize.SHIPPED_RECIPE`)."""
    from shopfusion.encoders import check_safetensors, content_sha256
    from shopfusion.onnx_quantize import SHIPPED_RECIPE

    recipe = recipe or SHIPPED_RECIPE

    require_onnx()
    model_dir = Path(model_dir)
    check_safetensors(model_dir)
    source = content_sha256(model_dir)
    target = cache_dir(model_dir, source, packaged=packaged)
    target.mkdir(parents=True, exist_ok=True)
    with _locked(target / ".lock"):
        info = _read_info(target)
        if info.get("source_sha256") != source or info.get("format") != EXPORT_FORMAT:
            info = _export_fp32(model_dir, target, source)
        wanted = recipe.to_dict() if variant == "int8" else None
        entry = info["variants"].get(variant)
        if (entry is None or entry.get("recipe") != wanted
                or not (target / FILES[variant]).is_file()):
            info = _make_variant(model_dir, target, info, variant, recipe)
        entry = info["variants"][variant]
    return ExportedModel(variant, target / FILES[variant], entry["sha256"], target / "tokenizer.json", source,
                         int(info["dim"]), int(info["max_seq_length"]), bool(info["lower_case"]),
                         dict(entry.get("agreement", {})))


# -- export -----------------------------------------------------------------------------------------------
def load_sentence_transformer(model_dir: Path) -> Any:
    """The torch model, on the CPU, eager attention (the pattern ONNX Runtime's fusions recognise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", trust_remote_code=False, local_files_only=True,
                               model_kwargs={"attn_implementation": "eager"})


def _export_fp32(model_dir: Path, target: Path, source: str) -> dict[str, Any]:
    import onnxruntime
    import torch

    model = load_sentence_transformer(model_dir)
    transformer = model[0]
    tokenizer = getattr(transformer, "tokenizer", None)
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"model {model_dir}: ONNX export needs a fast (Rust) tokenizer; use the torch backend")
    for stale in list(FILES.values()) + ["export.json"]:
        (target / stale).unlink(missing_ok=True)
    tokenizer.backend_tokenizer.save(str(target / "tokenizer.json"))
    max_len = int(model.max_seq_length or tokenizer.model_max_length)
    lower_case = bool(getattr(transformer, "do_lower_case", False))
    features = model.preprocess(["a cordless drill", "white interior paint, one gallon, eggshell finish"])
    inputs = [name for name in INPUT_NAMES if name in features]

    class _Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(dict(zip(inputs, tensors, strict=True)))["sentence_embedding"]

    plain = target / "model-plain.onnx.tmp"
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "tokens"} for name in inputs}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.no_grad(), _quiet():
        torch.onnx.export(_Pipeline().eval(), tuple(features[name] for name in inputs), str(plain),
                          input_names=inputs, output_names=["sentence_embedding"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    optimized = target / "model-opt.onnx.tmp"
    graph = "plain"
    if _optimize(model, plain, optimized) and _same_outputs(plain, optimized, model):
        graph = "optimized"
        os.replace(optimized, target / FILES["fp32"])
    else:
        optimized.unlink(missing_ok=True)
        shutil.copyfile(plain, target / FILES["fp32"])
    os.replace(plain, target / "model-plain.onnx")
    dim = int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)())
    info: dict[str, Any] = {
        "format": EXPORT_FORMAT, "source_sha256": source, "model_dir": str(model_dir), "dim": dim,
        "max_seq_length": max_len, "lower_case": lower_case, "inputs": inputs, "opset": OPSET,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "fp32_graph": graph, "variants": {},
    }
    entry: dict[str, Any] = {"sha256": file_sha256(target / FILES["fp32"]), "recipe": None}
    info["variants"]["fp32"] = entry
    entry["agreement"] = _agreement(model, target / FILES["fp32"], target, info)
    _write_info(target, info)
    return info


def _optimize(model: Any, plain: Path, out: Path) -> bool:
    """ONNX Runtime's transformer optimiser (fused attention, LayerNorm, GELU) for BERT-like encoders."""
    config = getattr(model[0], "auto_model", None)
    config = getattr(config, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    kind = getattr(config, "model_type", "")
    if not heads or not hidden or kind not in {"bert", "roberta", "xlm-roberta", "mpnet", "distilbert",
                                                 "electra"}:
        return False
    from onnxruntime.transformers import optimizer

    model_type = "bert" if kind in {"roberta", "xlm-roberta", "mpnet", "electra"} else kind
    with _quiet():
        optimized = optimizer.optimize_model(str(plain), model_type=model_type, num_heads=int(heads),
                                             hidden_size=int(hidden), opt_level=0)
    stats = optimized.get_fused_operator_statistics()
    if not stats.get("Attention") and not stats.get("MultiHeadAttention"):
        return False
    optimized.save_model_to_file(str(out))
    return True


def _same_outputs(a: Path, b: Path, model: Any) -> bool:
    texts = probe_texts()
    va = _run(a, model, texts)
    vb = _run(b, model, texts)
    return bool(np.max(np.abs(va - vb)) < 1e-4)


def _run(path: Path, model: Any, texts: Sequence[str]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for start in range(0, len(texts), 16):
        features = model.preprocess(list(texts[start:start + 16]))
        feed = {k: v.numpy().astype(np.int64) for k, v in features.items() if k in names}
        out.append(session.run(None, feed)[0])
    vectors = np.concatenate(out).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _make_variant(model_dir: Path, target: Path, info: dict[str, Any], variant: Variant,
                  recipe: QuantRecipe) -> dict[str, Any]:
    if variant == "fp32":  # the fp32 file went missing: export again
        return _export_fp32(model_dir, target, info["source_sha256"])
    from shopfusion.onnx_quantize import quantize

    model = load_sentence_transformer(model_dir)
    out = target / FILES["int8"]
    tmp = target / "model-int8.onnx.tmp"
    quantize(target, tmp, recipe, model)
    os.replace(tmp, out)
    entry: dict[str, Any] = {"sha256": file_sha256(out), "recipe": recipe.to_dict()}
    entry["agreement"] = _agreement(model, out, target, info)
    info["variants"]["int8"] = entry
    _write_info(target, info)
    return info


# -- measured agreement ------------------------------------------------------------------------------------
def probe_texts() -> list[str]:
    """The shipped probe set: shopper queries and product texts written for shopfusion."""
    path = Path(__file__).parent / "data" / "probe_texts.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return list(data["queries"]) + list(data["products"])


def agreement(reference: np.ndarray, vectors: np.ndarray, n_queries: int, k: int = 5) -> dict[str, float]:
    """Drift of `vectors` from `reference` (rows aligned, L2-normalised): per-row cosine (mean, min) and
    the mean top-`k` overlap of each of the first `n_queries` rows' rankings of the remaining rows."""
    cosine = np.sum(reference * vectors, axis=1)
    ref_scores = reference[:n_queries] @ reference[n_queries:].T
    new_scores = vectors[:n_queries] @ vectors[n_queries:].T
    ref_top = np.argsort(-ref_scores, axis=1)[:, :k]
    new_top = np.argsort(-new_scores, axis=1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, new_top, strict=True)])
    return {"cosine_mean": round(float(cosine.mean()), 6), "cosine_min": round(float(cosine.min()), 6),
            f"top{k}_overlap": round(float(overlap), 4)}


def _agreement(model: Any, path: Path, target: Path, info: dict[str, Any]) -> dict[str, float]:
    texts = probe_texts()
    reference = model.encode(texts, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    return agreement(np.asarray(reference, dtype=np.float32), _run(path, model, texts),
                     n_queries=len(texts) // 2)


# -- helpers -----------------------------------------------------------------------------------------------
def _installed(path: Path) -> bool:
    """True for a directory inside an installed package (site-packages): never written into."""
    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    resolved = path.resolve()
    return any(part in {"site-packages", "dist-packages"} for part in resolved.parts) or any(
        resolved.is_relative_to(Path(root).resolve()) for root in roots)


def _read_info(target: Path) -> dict[str, Any]:
    try:
        data = json.loads((target / "export.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_info(target: Path, info: dict[str, Any]) -> None:
    tmp = target / "export.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, target / "export.json")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters and quantisers log and warn freely; keep them off the user's terminal."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)
