"""Int8 quantisation of an exported fp32 encoder graph, and the recipe `onnx-int8` ships.

Each `QuantRecipe` knob is one of the usual remedies for int8 drift; `benchmarks/bench_onnx.py` measures
them one by one (quality and speed against torch fp32). `quantize` writes the int8 graph; `smooth` is the
SmoothQuant graph transform the shipped recipe applies first.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shopfusion.onnx_export import FILES, _quiet, probe_texts


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


SHIPPED_RECIPE = QuantRecipe(per_channel=True, smooth=0.7)
"""The int8 recipe `onnx-int8` uses, chosen by measurement (`benchmarks/bench_onnx.py`, README "ONNX
Runtime encoder"): dynamic int8 on the fused graph, per-channel weights, SmoothQuant alpha 0.7. Keeping
the FFN output layers in fp32 as well drifts less but halves the speed; weight-only int8 drifts less but
runs no faster than fp32 here; plain dynamic int8 drifts too far."""


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
