"""Writing trained models in the artifact formats of `shopfusion.artifacts`: safetensors only, never
pickles, never remote code. The trainer writes; `ranker` and `indexer` load.

- `save_encoder(model, path, card)`: a sentence-transformers directory (indexer, workers and the ranker
  load it by path with `shopfusion.encoders.load_encoder(path)`) plus its card (kind `encoder`: the base
  encoder it was fine-tuned from, the data, method, parameters and metrics) and a README.md;
- `save_intent_model(model, path, domain, card)`: the serving head of a `MultiTaskClassifier` as the
  intent-model directory `ranker.intent.load_intent_model` reads (`heads.safetensors`, the card naming
  the encoder whose vectors the head reads, and `encoder/` when the encoder itself was trained);
- `save_checkpoint` / `load_checkpoint`: model and optimizer tensors in safetensors plus a JSON state,
  so a run resumes exactly where it stopped.

>>> from shopfusion.artifacts import ModelCard
>>> card = ModelCard(kind="encoder", method="contrastive", data=("homedepot train queries",))
>>> "contrastive" in card.render("my-encoder")
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shopfusion.artifacts import EncoderRef, ModelCard
from shopfusion.errors import ConfigError, TrainingError


def refuse_pickles(path: Path) -> None:
    """Raise `TrainingError` if a model directory holds any pickled file. The rule is
    `shopfusion.encoders.check_safetensors`, the one every model loader applies (issue 14): the trainer
    only reports it as a training error."""
    from shopfusion.encoders import check_safetensors

    try:
        check_safetensors(path)
    except ConfigError as exc:
        raise TrainingError(str(exc)) from None


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


def encoder_ref(spec: str | Path) -> EncoderRef:
    """The reference of an encoder by spec or directory, as the indexer names it (model id + dim)."""
    from shopfusion.encoders import load_encoder

    return EncoderRef.of(load_encoder(str(spec)))


def save_encoder(model: Any, path: str | Path, card: ModelCard) -> Path:
    """Save a SentenceTransformer (or a `TextEncoder`) as a sentence-transformers directory with its card
    (kind `encoder`) and a README.md rendered from it."""
    path = Path(path)
    st = getattr(model, "model", model)
    st.save(str(path), safe_serialization=True, create_model_card=False)
    refuse_pickles(path)
    card = replace(card, kind="encoder", extra={"embeds": "Product.embedding_text()", **card.extra})
    card.save(path)
    (path / "README.md").write_text(card.render(path.name) + _LOADING.format(name=str(path)), encoding="utf-8")
    return path


_LOADING = """
## Use

Index with it (`shopfusion index CATALOG --index DIR --model {name}`) or load it in Python:

```python
from shopfusion.encoders import load_encoder
encoder = load_encoder({name!r})  # a local directory: safetensors only
```
"""


def save_intent_model(model: Any, path: str | Path, domain: str, card: ModelCard, *, base: str | Path,
                      brands: Sequence[str] = (), service_threshold: float = 0.9) -> Path:
    """Write the head of `domain` of a `MultiTaskClassifier` as an intent-model directory.

    When the encoder was trained (any method but `head`, or a multi-task source phase) it is saved in
    `encoder/` and the card names it: search then encodes each query with it (one more encode per query).
    Otherwise the head reads the vectors of `base` (the index's encoder) and the card names that one."""
    from safetensors.torch import save_file

    from shopfusion.encoders import load_encoder

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    head = model.heads.heads[_head_key(domain)]
    linears = [m for m in head.net if isinstance(m, nn.Linear)]
    tensors = {}
    for i, layer in enumerate(linears):
        tensors[f"layer{i}.weight"] = layer.weight.detach().cpu().float().contiguous()
        tensors[f"layer{i}.bias"] = layer.bias.detach().cpu().float().contiguous()
    save_file(tensors, str(path / "heads.safetensors"))
    (path / "heads.safetensors").chmod(0o644)
    own = bool(getattr(model.encoder, "changed", False))
    base_ref = encoder_ref(base)
    if own:
        save_encoder(model.encoder, path / "encoder", ModelCard(kind="encoder", encoder=base_ref,
                                                                method=f"intent {card.method}", data=card.data))
        reads = EncoderRef.of(load_encoder(str(path / "encoder")))
    else:
        reads = base_ref
    card = replace(card, kind="intent-model", encoder=reads, extra={
        **card.extra, "labels": list(model.heads.labels[domain]), "layers": len(linears), "domain": domain,
        "own_encoder": own, "base_encoder": base_ref.to_dict(), "brands": sorted(set(brands)),
        "service_threshold": service_threshold})
    card.save(path)
    (path / "README.md").write_text(card.render(path.name), encoding="utf-8")
    return path


def _head_key(domain: str) -> str:
    from trainer.heads import _key

    return _key(domain)


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
