"""Model artifacts: one directory format per kind, each with a model card, written by `trainer`, loaded
by `ranker` and `indexer`.

| kind            | directory holds                                                    | written by             |
|-----------------|--------------------------------------------------------------------|------------------------|
| `encoder`       | a sentence-transformers directory (safetensors)                    | `shopfusion train encoder` / `adapt` |
| `intent-model`  | `heads.safetensors`, optionally `encoder/` (its own fine-tuned encoder) | `shopfusion train intent` |
| `fusion-policy` | `policy.json` (per-intent fusion rows)                              | `shopfusion train policy` |
| `ranker`        | `ranker.txt` (LightGBM text format)                                 | `shopfusion train ranker` |

Every artifact directory holds `shopfusion_card.json`, the model card: its kind and format version, the
encoder whose vectors it was trained on (`EncoderRef`: model id and content hash), the method, the
training data, the parameters and the metrics. Cards are JSON, weights are safetensors or LightGBM text:
nothing is ever pickled.

Compatibility: a model trained on one encoder's vectors is meaningless on another's. `check_encoder`
compares a card's encoder with the index's by content hash (a renamed or copied directory still
matches; a fine-tuned one does not) and either refuses with an error that says what to do, or returns a
warning for the caller to surface (`Results.warnings`) when it falls back to something else.

>>> ref = EncoderRef("sentence-transformers/all-MiniLM-L6-v2@0123456789ab", 384)
>>> ref.content_hash
'0123456789ab'
>>> card = ModelCard(kind="ranker", encoder=ref, method="lambdarank")
>>> ModelCard.from_dict(card.to_dict()).encoder == ref
True
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shopfusion.errors import ConfigError, IndexStateError

ArtifactKind = Literal["encoder", "intent-model", "fusion-policy", "ranker"]
KINDS: tuple[str, ...] = ("encoder", "intent-model", "fusion-policy", "ranker")
CARD_FILE = "shopfusion_card.json"
CARD_FORMAT = "shopfusion-model-card"
CARD_VERSION = 1


@dataclass(frozen=True)
class EncoderRef:
    """Which encoder produced the vectors a model reads: `model_id` is `name@content-hash` (as
    `shopfusion.encoders` names a model; `hash:<dim>` for the test encoder) and `dim` its width."""

    model_id: str
    dim: int

    @property
    def content_hash(self) -> str:
        """The part that identifies the weights (the name before `@` may differ between copies)."""
        return self.model_id.rsplit("@", 1)[-1]

    @property
    def name(self) -> str:
        return self.model_id.rsplit("@", 1)[0]

    def same_as(self, other: EncoderRef) -> bool:
        return self.content_hash == other.content_hash and self.dim == other.dim

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "content_hash": self.content_hash, "dim": self.dim}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderRef:
        return cls(str(data["model_id"]), int(data["dim"]))

    @classmethod
    def of(cls, encoder: Any) -> EncoderRef:
        """The reference of a loaded `shopfusion.encoders.Encoder`."""
        return cls(str(encoder.model_id), int(encoder.dim))


@dataclass(frozen=True)
class ModelCard:
    """What an artifact is, what it was trained on and how well it did (saved as `shopfusion_card.json`).

    `data` names the training inputs (paths and counts); `extra` holds what only that kind needs (the
    intent model's labels and heads, the ranker's feature names, ...)."""

    kind: str
    encoder: EncoderRef | None = None
    method: str = ""
    data: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    notes: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown artifact kind {self.kind!r}: one of {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"format": CARD_FORMAT, "version": CARD_VERSION, "kind": self.kind,
                "encoder": self.encoder.to_dict() if self.encoder else None, "method": self.method,
                "data": list(self.data), "params": dict(self.params), "metrics": dict(self.metrics),
                "extra": dict(self.extra), "created": self.created, "notes": self.notes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        encoder = data.get("encoder")
        return cls(kind=str(data["kind"]), encoder=EncoderRef.from_dict(encoder) if encoder else None,
                   method=str(data.get("method", "")), data=tuple(data.get("data", ())),
                   params=dict(data.get("params", {})), metrics=dict(data.get("metrics", {})),
                   extra=dict(data.get("extra", {})), created=str(data.get("created", "")),
                   notes=str(data.get("notes", "")))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / CARD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(CARD_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def render(self, name: str) -> str:
        """The card as Markdown (the README.md of an artifact directory)."""
        lines = [f"# {name}", "", f"A shopfusion `{self.kind}` artifact, trained with `shopfusion train`.", ""]
        if self.encoder:
            lines.append(f"- encoder: `{self.encoder.model_id}` (dim {self.encoder.dim})")
        lines += [f"- method: `{self.method or '-'}`", f"- created: {self.created}", "", "## Training data", ""]
        lines += [f"- {item}" for item in self.data] or ["- (not recorded)"]
        lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in sorted(self.params.items())]
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in sorted(self.metrics.items())]
        if self.notes:
            lines += ["", "## Notes", "", self.notes]
        return "\n".join(lines) + "\n"


def read_versioned_json(path: Path, *, what: str, fmt: str, version: int, fix: str) -> dict[str, Any]:
    """A JSON document of one of shopfusion's formats (`{"format": fmt, "version": n, ...}`): refused with
    a clear error when unreadable, of another format, or of a version this shopfusion does not read
    (`fix` says what to do then)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ConfigError(f"{path} is not a shopfusion {what}")
    found = data.get("version")
    if not isinstance(found, int) or found < 1 or found > version:
        raise ConfigError(f"{path} has {what} format version {found!r}; this shopfusion reads up to {version}: {fix}")
    return data


def read_card(directory: str | os.PathLike[str], kind: str | None = None) -> ModelCard:
    """Load the card of an artifact directory, checking its kind; errors say what the directory lacks.
    A directory holding any pickle file is refused before anything in it is read (the one rule of
    `shopfusion.encoders.check_safetensors`: no pickle path at all, whatever else is there)."""
    from shopfusion.encoders import check_safetensors

    directory = Path(directory)
    check_safetensors(directory)
    path = directory / CARD_FILE
    if not path.is_file():
        hint = f" (a `{kind}` written by `shopfusion train`)" if kind else ""
        raise ConfigError(f"{directory} has no {CARD_FILE}: give the directory of a shopfusion artifact{hint}")
    data = read_versioned_json(path, what="model card", fmt=CARD_FORMAT, version=CARD_VERSION,
                               fix="upgrade shopfusion")
    try:
        card = ModelCard.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path} is malformed ({exc})") from exc
    if kind is not None and card.kind != kind:
        raise ConfigError(f"{directory} holds a `{card.kind}`, not a `{kind}`")
    return card


def check_encoder(card: ModelCard, index_encoder: EncoderRef, *, what: str, strict: bool) -> str | None:
    """Compare the encoder a model was trained on with the index's.

    Returns None when they match. Otherwise `strict` raises `IndexStateError` (a model the user asked for
    explicitly must not be used on vectors it cannot read), and non-strict returns a warning for the
    caller to show next to its results when it falls back."""
    if card.encoder is None or card.encoder.same_as(index_encoder):
        return None
    message = (f"{what} was trained on vectors of {card.encoder.model_id} (dim {card.encoder.dim}) but the"
               f" index is encoded with {index_encoder.model_id} (dim {index_encoder.dim})")
    if strict:
        raise IndexStateError(f"{message}: retrain it for this encoder with `shopfusion train`, or search an"
                              " index built with the encoder it was trained on")
    return message


def update_with_file(digest: Any, path: Path) -> None:
    """Feed `path`'s bytes to a hashlib `digest`, a megabyte at a time (model weights, vector files)."""
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def file_sha256(path: Path) -> str:
    """The SHA-256 of one file's bytes, streamed."""
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()


def directory_hash(directory: str | os.PathLike[str], *, skip: tuple[str, ...] = (CARD_FILE, "README.md")) -> str:
    """A content hash of every file of an artifact (relative names and bytes), 12 hex digits. Cards and
    READMEs are left out: they describe the weights, they are not the weights."""
    root = Path(directory)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root)
        if relative.name in skip or relative.parts[0] in {"onnx", "checkpoints"}:
            continue
        digest.update(str(relative).encode("utf-8") + b"\0")
        update_with_file(digest, file)
    return digest.hexdigest()[:12]
