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
- `int8`: the fp32 graph quantised by `QuantRecipe` (see `SHIPPED_RECIPE` for the measured choice).

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
import dataclasses
import fcntl
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shopfusion.errors import ConfigError, MissingDependencyError

Variant = Literal["fp32", "int8"]
EXPORT_FORMAT = 1
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
FILES: dict[str, str] = {"fp32": "model.onnx", "int8": "model-int8.onnx"}
CACHE_ENV = "SHOPFUSION_ONNX_CACHE"


@dataclass(frozen=True)
class QuantRecipe:
    """How the int8 graph is made from the fp32 one. Each knob is one of the usual remedies for int8 drift;
    `benchmarks/bench_onnx.py` measures them (speed and quality against torch fp32) one by one.

    - `method`: `dynamic` (weights int8 ahead of time, activations quantised per call from the range of
      the whole batch), `static` (activation ranges calibrated once on `calibration` texts; QDQ graph) or
      `weight-only` (block-wise `bits`-bit weights, `MatMulNBits`, activations quantised per row and
      block at run time, so a text's vector does not depend on the batch it is in).
    - `per_channel`: one scale per output channel of each weight instead of one per tensor.
    - `reduce_range`: 7-bit weights (avoids overflow on CPUs without VNNI; costs precision elsewhere).
    - `keep_fp32`: substrings of node names left unquantised (the sensitive layers).
    - `op_types`: operators quantised (`MatMul` for the dense layers, `Attention` for the fused QKV).
    - `graph`: quantise the `optimized` fp32 graph (fused operators) or the `plain` export.
    - `smooth`: SmoothQuant before quantising (calibrated on the probe texts).
    """

    method: Literal["dynamic", "static", "weight-only"] = "dynamic"
    per_channel: bool = False
    reduce_range: bool = False
    keep_fp32: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    graph: Literal["optimized", "plain"] = "optimized"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    bits: int = 8
    """`weight-only`: bits per weight (8 or 4), in blocks of `block_size` along the input dimension."""
    block_size: int = 32
    smooth: float = 0.0
    """SmoothQuant migration strength alpha (0: off): before quantising, each quantised product X W
    becomes (X / s) (s W) with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) from the probe texts, so the
    few outlier channels of X no longer set the scale of the whole tensor."""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


SHIPPED_RECIPE = QuantRecipe(per_channel=True, smooth=0.75)
"""The int8 recipe `onnx-int8` uses, chosen by measurement (`benchmarks/bench_onnx.py`, README "ONNX
Runtime encoder"): dynamic int8 on the fused graph, per-channel weights, SmoothQuant alpha 0.75. The
weight-only recipes drift less but run no faster than fp32 here; plain dynamic int8 drifts too far."""


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
                  recipe: QuantRecipe = SHIPPED_RECIPE) -> ExportedModel:
    """The exported `variant` of the model at `model_dir`, exporting it first when missing or stale.

    Safe to call from several processes at once (a file lock serialises the export)."""
    from shopfusion.encoders import check_safetensors, content_sha256

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
    entry: dict[str, Any] = {"sha256": _sha256(target / FILES["fp32"]), "recipe": None}
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
    model = load_sentence_transformer(model_dir)
    out = target / FILES["int8"]
    tmp = target / "model-int8.onnx.tmp"
    quantize(target, tmp, recipe, model)
    os.replace(tmp, out)
    entry: dict[str, Any] = {"sha256": _sha256(out), "recipe": recipe.to_dict()}
    entry["agreement"] = _agreement(model, out, target, info)
    info["variants"]["int8"] = entry
    _write_info(target, info)
    return info


def quantize(export_dir: Path, out: Path, recipe: QuantRecipe, model: Any,
             calibration: Sequence[str] | None = None) -> None:
    """Write the int8 graph of the fp32 export in `export_dir` to `out`, following `recipe`.

    `model` (the loaded sentence-transformers model) tokenizes the calibration texts of static
    quantisation (default: the probe texts)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = export_dir / (FILES["fp32"] if recipe.graph == "optimized" else "model-plain.onnx")
    graph = onnx.load(str(source), load_external_data=False)
    keep = [n.name for n in graph.graph.node if any(p in n.name for p in recipe.keep_fp32)] if recipe.keep_fp32 else []
    with tempfile.TemporaryDirectory(prefix="shopfusion-quant-") as tmp:
        if recipe.method == "weight-only":
            _quantize_weights(graph, out, recipe, keep)
            return
        if recipe.smooth:
            smoothed = Path(tmp) / "smoothed.onnx"
            onnx.save(smooth(graph, export_dir / "tokenizer.json", recipe.smooth, list(calibration or probe_texts()),
                             {n.name for n in graph.graph.node if n.name in keep}), str(smoothed))
            source = smoothed
        if recipe.method == "dynamic":
            with _quiet():
                quantize_dynamic(str(source), str(out), per_channel=recipe.per_channel,
                                 reduce_range=recipe.reduce_range, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=list(recipe.op_types), nodes_to_exclude=keep,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            return
        prepared = Path(tmp) / "prepared.onnx"
        with _quiet():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        reader = _CalibrationReader(model, prepared, list(calibration or probe_texts()))
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[recipe.calibration]
        with _quiet():
            quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=[t for t in recipe.op_types if t != "Attention"],
                            nodes_to_exclude=keep, calibrate_method=method,
                            extra_options={"CalibMovingAverage": True,
                                           "DefaultTensorType": onnx.TensorProto.FLOAT})


def smooth(graph: Any, tokenizer: Path, alpha: float, texts: Sequence[str], skip: set[str]) -> Any:
    """SmoothQuant (Xiao et al., 2023) on an fp32 graph: for every MatMul or fused Attention with a
    constant 2-D weight, insert `X * (1/s)` before it and scale the weight's rows by `s`. The product is
    unchanged; the activation's outlier channels shrink, so per-tensor (dynamic) int8 loses less. Costs
    one element-wise Mul per layer input at run time. Activation maxima come from running `texts`."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(graph)
    inits = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    targets = [node for node in model.graph.node
               if node.op_type in ("MatMul", "Attention") and node.name not in skip and len(node.input) > 1
               and node.input[1] in inits and uses[node.input[1]] == 1 and len(inits[node.input[1]].dims) == 2]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    wanted = sorted({node.input[0] for node in targets})
    for name in wanted:
        if name not in outputs:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    amax: dict[str, np.ndarray] = {}
    for feed in _token_feeds(tokenizer, texts, {i.name for i in session.get_inputs()}):
        for name, value in zip(names, session.run(None, feed), strict=True):
            if name in wanted:
                channel_max = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
                amax[name] = np.maximum(amax.get(name, channel_max), channel_max)
    nodes = list(model.graph.node)
    target_names = {node.name for node in targets}
    del model.graph.node[:]
    for node in nodes:
        if node.name in target_names:
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            activation = amax[node.input[0]]
            scale = activation ** alpha / np.maximum(np.abs(weight).max(axis=1), 1e-8) ** (1.0 - alpha)
            scale = np.where(activation > 0, np.clip(scale, 1e-4, 1e4), 1.0).astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
            inverse = f"{node.name}_smooth_inverse"
            model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
            smoothed = f"{node.name}_smoothed_input"
            model.graph.node.append(helper.make_node("Mul", [node.input[0], inverse], [smoothed],
                                                     name=f"{node.name}_smooth"))
            node.input[0] = smoothed
        model.graph.node.append(node)
    return model


def _token_feeds(tokenizer: Path, texts: Sequence[str], inputs: set[str], batch: int = 16) -> Iterator[dict[str, np.ndarray]]:
    """Model inputs for `texts`, from the exported tokenizer, `batch` texts padded together."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    for start in range(0, len(texts), batch):
        encodings = tok.encode_batch([t.strip() for t in texts[start:start + batch]])
        length = max(len(e.ids) for e in encodings)
        feed = {}
        for name, attribute in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                ("token_type_ids", "type_ids")):
            if name in inputs:
                array = np.zeros((len(encodings), length), dtype=np.int64)
                for row, encoding in enumerate(encodings):
                    values = getattr(encoding, attribute)
                    array[row, : len(values)] = values
                feed[name] = array
        yield feed


def _quantize_weights(graph: Any, out: Path, recipe: QuantRecipe, keep: list[str]) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=recipe.block_size, is_symmetric=True, accuracy_level=4,
                                          bits=recipe.bits, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(graph, bits=recipe.bits, block_size=recipe.block_size, is_symmetric=True,
                                     accuracy_level=4, nodes_to_exclude=keep, algo_config=config,
                                     op_types_to_quantize=("MatMul",))
    with _quiet():
        quantizer.process()
    quantizer.model.save_model_to_file(str(out), False)


class _CalibrationReader:
    """Feeds tokenized calibration texts to ONNX Runtime's static-quantisation calibrator."""

    def __init__(self, model: Any, graph: Path, texts: list[str], batch: int = 20) -> None:
        import onnx

        names = {i.name for i in onnx.load(str(graph), load_external_data=False).graph.input}
        # One padding length for every batch: the histogram calibrators need tensors of one shape.
        features = model.preprocess(texts)
        arrays = {k: v.numpy().astype(np.int64) for k, v in features.items() if k in names}
        usable = len(texts) - len(texts) % batch if len(texts) >= batch else len(texts)  # and one batch size
        self._feeds = [{k: v[start:start + batch] for k, v in arrays.items()} for start in range(0, usable, batch)]
        self._iter = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


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


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
