"""Saving and loading trained models: safetensors only, never pickles, never remote code.

- `save_encoder(model, path, card)`: a normal sentence-transformers directory (indexer, workers and the
  ranker load it by path with `shopfusion.encoders.load_encoder(path)`) plus a model card README.md
  holding the training data, method, parameters and metrics;
- `save_classifier` / `load_classifier`: the shared encoder directory, `heads.safetensors` and
  `classifier.json` (domains, labels, head shape);
- `save_checkpoint` / `load_checkpoint`: model and optimizer tensors in safetensors plus a JSON state,
  so a run resumes exactly where it stopped.

>>> card = ModelCard(method="contrastive", data=["homedepot train queries"], params={"lr": 2e-5})
>>> "contrastive" in card.render("my-encoder")
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shopfusion.errors import TrainingError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


@dataclass
class ModelCard:
    """What a trained model was made from and how well it does; rendered as the model's README.md."""

    method: str
    data: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    notes: str = ""

    def render(self, name: str) -> str:
        lines = [f"# {name}", "", "Trained with the shopfusion `trainer` package.", "",
                 f"- base model: `{self.base_model}`", f"- method: `{self.method}`", "", "## Training data", ""]
        lines += [f"- {item}" for item in self.data] or ["- (not recorded)"]
        lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in sorted(self.params.items())]
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in sorted(self.metrics.items())]
        if self.notes:
            lines += ["", "## Notes", "", self.notes]
        lines += ["", "## Loading", "", "```python", "from shopfusion.encoders import load_encoder",
                  f"encoder = load_encoder({name!r})  # a local directory: safetensors only", "```", ""]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "data": self.data, "params": self.params, "metrics": self.metrics,
                "base_model": self.base_model, "notes": self.notes}


def refuse_pickles(path: Path) -> None:
    """Raise `TrainingError` if a model directory holds pickled weight files."""
    pickled = sorted(p for p in path.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise TrainingError(
            f"{pickled[0]} is a pickled weights file; shopfusion loads safetensors only: re-save the model"
            " with safetensors (`model.save(path, safe_serialization=True)`) and delete the pickle"
        )


def load_sentence_transformer(path: str | Path, device: str = "cpu") -> Any:
    """Load a local sentence-transformers directory (`default` = the packaged MiniLM): safetensors only,
    `trust_remote_code` off, no hub access."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if str(path) == "default":
        from shopfusion.encoders import default_model_path

        path = default_model_path()
    path = Path(path)
    if not path.is_dir():
        raise TrainingError(f"model {path} is not a directory: give a local sentence-transformers directory")
    refuse_pickles(path)
    if not list(path.rglob("*.safetensors")):
        raise TrainingError(f"model {path} has no .safetensors weights")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, trust_remote_code=False, local_files_only=True)


def save_encoder(model: Any, path: str | Path, card: ModelCard) -> Path:
    """Save a SentenceTransformer (or a `TextEncoder`) as a sentence-transformers dir with a model card."""
    path = Path(path)
    st = getattr(model, "model", model)
    st.save(str(path), safe_serialization=True, create_model_card=False)
    refuse_pickles(path)
    (path / "README.md").write_text(card.render(path.name), encoding="utf-8")
    (path / "shopfusion_training.json").write_text(json.dumps(card.to_dict(), indent=2, default=str),
                                                   encoding="utf-8")
    return path


def save_classifier(model: Any, path: str | Path, card: ModelCard) -> Path:
    """Save a `MultiTaskClassifier`: encoder dir (when trainable), heads in safetensors, labels in JSON."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    encoder_spec: str | None = None
    if getattr(model.encoder, "trainable", False):
        save_encoder(model.encoder, path / "encoder", card)
        encoder_spec = "encoder"
    else:
        encoder_spec = getattr(getattr(model.encoder, "encoder", None), "model_id", None)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.heads.state_dict().items()}
    save_file(tensors, str(path / "heads.safetensors"))
    meta = {"labels": model.heads.labels, "dim": model.heads.dim, "hidden": model.heads.hidden,
            "dropout": model.heads.dropout, "encoder": encoder_spec,
            "max_seq_length": getattr(getattr(model.encoder, "model", None), "max_seq_length", None)}
    (path / "classifier.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (path / "README.md").write_text(card.render(path.name), encoding="utf-8")
    return path


def load_classifier(path: str | Path, device: str = "auto") -> Any:
    """Load what `save_classifier` wrote; the encoder spec may be a saved directory or `hash:<dim>`."""
    from safetensors.torch import load_file

    from trainer.models import FrozenEncoder, MultiTaskClassifier, TextEncoder, pick_device

    path = Path(path)
    meta_path = path / "classifier.json"
    if not meta_path.is_file():
        raise TrainingError(f"{path} holds no classifier.json: is it a directory written by save_classifier?")
    refuse_pickles(path)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    spec = meta.get("encoder")
    encoder: TextEncoder | FrozenEncoder
    if spec == "encoder":
        encoder = TextEncoder.from_path(str(path / "encoder"), max_seq_length=meta.get("max_seq_length"),
                                        device=device)
    elif isinstance(spec, str) and spec.startswith("hash:"):
        from shopfusion.encoders import load_encoder

        encoder = FrozenEncoder(load_encoder(spec))
    else:
        raise TrainingError(f"{path}: cannot rebuild encoder {spec!r}; save the classifier with a trainable"
                            " encoder or a hash encoder")
    model = MultiTaskClassifier(encoder, head_hidden=meta.get("hidden"), dropout=meta.get("dropout", 0.1))
    for domain, labels in meta["labels"].items():
        model.heads.add(domain, labels)
    model.heads.load_state_dict(load_file(str(path / "heads.safetensors")))
    return model.to(pick_device(device))


def save_checkpoint(path: str | Path, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer | None,
                    state: Mapping[str, Any]) -> Path:
    """Write `model.safetensors` (every module's state), `optimizer.safetensors` and `trainer_state.json`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v.detach().cpu().contiguous()
               for name, module in modules.items() for k, v in module.state_dict().items()}
    save_file(_dedupe(tensors), str(path / "model.safetensors"))
    meta: dict[str, Any] = {"state": dict(state)}
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        opt_tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, Any] = {}
        for idx, entry in opt_state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    opt_tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{key}"] = value
        save_file(opt_tensors, str(path / "optimizer.safetensors"))
        meta["optimizer"] = {"param_groups": opt_state["param_groups"], "scalars": scalars}
    (path / "trainer_state.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return path


def load_checkpoint(path: str | Path, modules: Mapping[str, nn.Module],
                    optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote into `modules` (and `optimizer`); returns the saved state."""
    from safetensors.torch import load_file

    path = Path(path)
    refuse_pickles(path)
    if not (path / "model.safetensors").is_file():
        raise TrainingError(f"{path} is not a checkpoint (no model.safetensors)")
    tensors = load_file(str(path / "model.safetensors"))
    for name, module in modules.items():
        prefix = f"{name}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = module.state_dict()
        for k in expected:  # tied weights were saved once
            if k not in own:
                raise TrainingError(f"checkpoint {path} lacks {name}.{k}: it was written by another model")
        module.load_state_dict(own)
    meta = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    if optimizer is not None and "optimizer" in meta:
        opt_tensors = load_file(str(path / "optimizer.safetensors"))
        state: dict[int, dict[str, Any]] = {}
        for key, value in list(opt_tensors.items()) + list(meta["optimizer"]["scalars"].items()):
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    return dict(meta["state"])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The `checkpoint-<step>` directory with the highest step, if any."""
    root = Path(output_dir)
    found = sorted((int(p.name.split("-")[1]), p) for p in root.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit()) if root.is_dir() else []
    return found[-1][1] if found else None


def _dedupe(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): clone the duplicates."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen and value.numel() else value
        seen.add(ptr)
    return out
