"""The ONNX Runtime encoder backend: the same `Encoder` as the torch one, from an exported graph.

`OnnxEncoder` runs the export `shopfusion.onnx_export` makes (fp32, or int8 for `onnx-int8`) with ONNX
Runtime on the CPU. It needs neither torch nor transformers at run time: the tokenizer is the exported
`tokenizer.json` (Rust `tokenizers`), truncated to the model's `max_seq_length` like sentence-transformers.

Catalog batches are length-bucketed: `encode` tokenizes every text, sorts by token count, pads each batch
only to its own longest text and puts the vectors back in input order. A query goes through its own
one-thread session (`encode_query`): for a handful of tokens, thread hand-off costs more than it saves.
Both paths run the same graph on the same token ids, so they give the same vector (to float rounding).

>>> enc = OnnxEncoder(default_model_path(), name=DEFAULT_MODEL_NAME, variant="int8", packaged=True)  # doctest: +SKIP
>>> enc.encode(["cordless drill"]).shape, enc.backend                                             # doctest: +SKIP
((1, 384), 'onnx-int8')
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from shopfusion.onnx_export import ExportedModel, Variant, ensure_export

BACKEND_NAMES: dict[str, str] = {"fp32": "onnx", "int8": "onnx-int8"}


class OnnxEncoder:
    """A sentence-transformers model run by ONNX Runtime; exported (once, cached) on first use."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, variant: Variant = "int8",
                 packaged: bool = False, threads: int = 0, export: ExportedModel | None = None) -> None:
        self.path = Path(path)
        self._name = name
        self.variant: Variant = variant
        self.packaged = packaged
        self.threads = threads
        """Intra-op threads of the batch session; 0: `$OMP_NUM_THREADS` when set (a Celery pool process
        gets its share of the cores that way), else every physical core."""
        self._model_id: str | None = None
        self._export: ExportedModel | None = export
        """Given: run this export as it is (benchmarks of other recipes); None: `ensure_export` on first use."""
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()

    # -- identity ---------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """The identity of the weights, the same as the torch backend's (trained artifacts refer to it)."""
        if self._model_id is None:
            from shopfusion.encoders import _fingerprint

            self._model_id = f"{self._name or self.path.name}@{_fingerprint(self.path)}"
        return self._model_id

    @property
    def backend(self) -> str:
        return BACKEND_NAMES[self.variant]

    @property
    def backend_id(self) -> str:
        """`onnx-int8@<first 12 hex digits of the exported graph's sha256>`."""
        return f"{self.backend}@{self.export.export_id}"

    @property
    def agreement(self) -> dict[str, float]:
        """Measured drift of this graph from torch fp32 on the probe texts (see `onnx_export`)."""
        return dict(self.export.agreement)

    @property
    def export(self) -> ExportedModel:
        if self._export is None:
            with self._lock:
                if self._export is None:
                    self._export = ensure_export(self.path, self.variant, packaged=self.packaged)
        return self._export

    @property
    def dim(self) -> int:
        return self.export.dim

    # -- encoding -----------------------------------------------------------------------------------------
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenize(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        session = self._session("batch")
        step = max(1, batch_size)
        for start in range(0, len(order), step):
            rows = order[start:start + step]
            out[rows] = self._run(session, [encodings[i] for i in rows])
        return out

    def encode_query(self, text: str) -> np.ndarray:
        return self._run(self._session("query"), self._tokenize([text]))[0]

    def _run(self, session: Any, encodings: list[Any]) -> np.ndarray:
        length = max(len(e.ids) for e in encodings)
        feed: dict[str, np.ndarray] = {}
        for name, attribute in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                                ("token_type_ids", "type_ids")):
            if name not in self._inputs:
                continue
            array = np.zeros((len(encodings), length), dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, attribute)
                array[row, : len(values)] = values
            feed[name] = array
        vectors = session.run(None, feed)[0].astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _tokenize(self, texts: list[str]) -> list[Any]:
        tokenizer = self._load_tokenizer()
        prepared = [str(t).strip() for t in texts]
        if self.export.lower_case:
            prepared = [t.lower() for t in prepared]
        return list(tokenizer.encode_batch(prepared))

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(self.export.tokenizer))
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.export.max_seq_length)
            self._tokenizer = tokenizer
        return self._tokenizer

    def _session(self, kind: str) -> Any:
        session = self._sessions.get(kind)
        if session is not None:
            return session
        export = self.export  # before the lock: `export` takes it too (a plain Lock, not re-entrant)
        with self._lock:
            if kind not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                threads = self.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
                options.intra_op_num_threads = 1 if kind == "query" else threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                session = ort.InferenceSession(str(export.path), options, providers=["CPUExecutionProvider"])
                self._inputs = tuple(i.name for i in session.get_inputs())
                self._sessions[kind] = session
        return self._sessions[kind]
