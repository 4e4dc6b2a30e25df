"""LambdaMART for the learned ranking stage: features from the searcher, labels from judgments or clicks.

Phases (`train_ranker` runs them in this order):

1. candidates: every training query goes through the searcher exactly as `search` runs it (the policy's
   depth per leg, fusion, `HybridSearcher.candidate_set`), and `ranker.features.extract` turns the union
   of both legs' candidates into a feature matrix. Matrices are cached per index version
   (`FeatureTable`, an `.npz` under `cache_dir`, keyed by the index version and everything that shapes
   the candidates), so a second training run on the same index extracts nothing again;
2. labels: graded judgments become integer gains `round((grade - lowest) * 6)` (as `shopfusion eval`
   scores them; unjudged candidates are 0), or click logs become position-debiased relevance
   (`trainer.clicks`); queries without any positive candidate carry no ranking signal and are left out;
3. fit: LightGBM `lambdarank` with linear label gains (the gain `shopfusion eval`'s nDCG uses), the
   validation queries' nDCG@10 for early stopping; optionally warm-started from another ranker (a few
   target-catalog queries on top of a source model: new trees fit only what the source gets wrong);
4. save: `ranker.txt` (LightGBM text), `shopfusion_card.json`, `README.md`.

>>> RankerParams().lightgbm(label_gain=[0, 1, 2])["objective"]
'lambdarank'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ranker.features import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    FEATURES,
    INTENT_LABELS,
    PORTABLE_EXCLUDED,
    Normalization,
    model_matrix,
)
from ranker.learned import RANKER_FILE, RankerSpec
from shopfusion.artifacts import EncoderRef, ModelCard
from shopfusion.errors import TrainingError, require
from shopfusion.evaluation import GAIN_SCALE

if TYPE_CHECKING:
    from ranker.searcher import HybridSearcher

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "shopfusion" / "ranker-features"
TABLE_FORMAT = 1


# -- 1. candidates and their features, cached per index version -------------------------------------------
@dataclass
class FeatureTable:
    """Feature matrices of many queries stacked: query `texts[i]` owns rows `offsets[i]:offsets[i+1]`
    (its candidates in the fused order, `product_ids`), columns `ranker.features.FEATURE_NAMES`."""

    texts: list[str]
    offsets: np.ndarray
    product_ids: np.ndarray
    x: np.ndarray

    def __post_init__(self) -> None:
        self._where = {text: i for i, text in enumerate(self.texts)}

    def __len__(self) -> int:
        return len(self.texts)

    def __contains__(self, text: object) -> bool:
        return text in self._where

    def rows(self, text: str) -> slice:
        i = self._where[text]
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @classmethod
    def empty(cls) -> FeatureTable:
        return cls([], np.zeros(1, dtype=np.int64), np.array([], dtype=str), np.zeros((0, len(FEATURES)), np.float32))

    @classmethod
    def stack(cls, parts: Sequence[tuple[str, Any, np.ndarray]]) -> FeatureTable:
        """From `(query text, product ids, feature matrix)` per query."""
        sizes = [len(ids) for _, ids, _ in parts]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        ids = np.array([pid for _, group, _ in parts for pid in group], dtype=str)
        x = np.concatenate([m for _, _, m in parts]) if parts else np.zeros((0, len(FEATURES)), np.float32)
        return cls([t for t, _, _ in parts], offsets, ids, x.astype(np.float32))

    def merge(self, other: FeatureTable) -> FeatureTable:
        parts = [(t, self.product_ids[self.rows(t)], self.x[self.rows(t)]) for t in self.texts]
        parts += [(t, other.product_ids[other.rows(t)], other.x[other.rows(t)]) for t in other.texts if t not in self]
        return FeatureTable.stack(parts)

    def save(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, format=np.array([TABLE_FORMAT]), features=np.array(FEATURE_NAMES, dtype=str),
                 texts=np.array(self.texts, dtype=str), offsets=self.offsets, product_ids=self.product_ids, x=self.x)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureTable | None:
        """The table at `path`, or None when missing or written for other features (then re-extracted)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"][0]) != TABLE_FORMAT or tuple(data["features"].tolist()) != FEATURE_NAMES:
                    return None
                return cls([str(t) for t in data["texts"].tolist()], data["offsets"], data["product_ids"], data["x"])
        except (OSError, KeyError, ValueError):
            return None


def cache_key(searcher: HybridSearcher, depth: int) -> str:
    """What the features of a query depend on besides its text: the index version (its directory,
    version name and creation time), the encoder, the lexical engine, the policy and intent model, the
    depth and the feature-set version."""
    from ranker.stage import intent_model_ref

    manifest = searcher.manifest
    identity = {"index": str(searcher.directory.path.resolve()), "version": manifest.version,
                "created": getattr(manifest, "created", None), "model": manifest.model_id,
                "lexical": dict(manifest.lexical), "depth": depth, "features": FEATURE_SET_VERSION,
                "policy": searcher.settings.search.policy, "intent": intent_model_ref(searcher.policy),
                "fusion": {key: getattr(searcher.settings.search, key) for key in ("fusion", "alpha", "normalization")}}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{manifest.version}-{digest}"


def extract_features(searcher: HybridSearcher, texts: Sequence[str], *, depth: int | None = None,
                     cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR, batch_size: int = 64,
                     progress: bool = False) -> FeatureTable:
    """Feature matrices of `texts` as `search` computes them; cached queries are not extracted again.

    Queries are encoded in batches (the same vectors as `encode_query`), then each goes through the
    policy, both legs (`depth` each, default the policy's), fusion and `candidate_set`."""
    from tqdm.auto import tqdm

    from ranker.features import extract
    from ranker.fusion import fuse

    wanted = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    path = None
    table = FeatureTable.empty()
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(searcher, depth or 0)}.npz"
        table = FeatureTable.load(path) or table
    missing = [t for t in wanted if t not in table]
    if missing:
        parts = []
        bar = tqdm(total=len(missing), desc="ranker features", disable=not progress, leave=False)
        for start in range(0, len(missing), batch_size):
            batch = missing[start:start + batch_size]
            vectors = searcher.encoder.encode(batch, batch_size=batch_size)
            for text, vector in zip(batch, vectors, strict=True):
                decision = searcher.policy.decide(text, vector)
                legs = searcher.retrieve(text, vector, depth or decision.row.depth)
                fused = fuse(legs, decision.row.fusion)
                candidates = searcher.candidate_set(text, vector, decision, legs, fused)
                parts.append((text, candidates.ids, extract(candidates)))
            bar.update(len(batch))
        bar.close()
        table = table.merge(FeatureTable.stack(parts))
        if path is not None:
            table.save(path)
    return table


# -- 2. labels ------------------------------------------------------------------------------------------------
@dataclass
class RankingData:
    """Query groups ready for LightGBM: rows `offsets[i]:offsets[i+1]` belong to `query_ids[i]`."""

    query_ids: list[str]
    offsets: np.ndarray
    product_ids: np.ndarray
    x: np.ndarray
    labels: np.ndarray

    @property
    def groups(self) -> np.ndarray:
        return np.diff(self.offsets)

    def positive(self) -> RankingData:
        """Only the queries with at least one candidate of label > 0 (the others carry no signal)."""
        keep = [i for i in range(len(self.query_ids)) if self.labels[self.offsets[i]:self.offsets[i + 1]].max(initial=0) > 0]
        return self.subset(keep)

    def subset(self, keep: Sequence[int]) -> RankingData:
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]) if keep else np.zeros(0, int)
        sizes = [int(self.offsets[i + 1] - self.offsets[i]) for i in keep]
        return RankingData([self.query_ids[i] for i in keep], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                           self.product_ids[rows], self.x[rows], self.labels[rows])


def judgment_gains(qrels: Mapping[str, Mapping[str, float]], min_grade: float | None = None) -> dict[str, dict[str, int]]:
    """Integer gains as `shopfusion eval` computes them (`round((grade - lowest) * 6)`), keeping queries
    without a relevant product (their candidates are all 0)."""
    if min_grade is None:
        lowest = min((g for docs in qrels.values() for g in docs.values()), default=0.0)
        min_grade = lowest if lowest > 0 else 0.0
    return {str(q): {str(d): max(0, round((float(g) - min_grade) * GAIN_SCALE)) for d, g in docs.items()}
            for q, docs in qrels.items()}


def ranking_data(table: FeatureTable, queries: Mapping[str, str], labels: Mapping[str, Mapping[str, float]]) -> RankingData:
    """Groups for the queries (id -> text) that have labels, labels looked up by product id (others 0)."""
    parts_x, parts_ids, parts_y, sizes, ids = [], [], [], [], []
    for qid, text in queries.items():
        text = text.strip()
        if qid not in labels or text not in table:
            continue
        rows = table.rows(text)
        group_ids = table.product_ids[rows]
        judged = labels[qid]
        parts_x.append(table.x[rows])
        parts_ids.append(group_ids)
        parts_y.append(np.array([judged.get(str(pid), 0) for pid in group_ids], dtype=np.float64))
        sizes.append(len(group_ids))
        ids.append(qid)
    if not ids:
        raise TrainingError("no training query has both features and labels: check that the query ids of the"
                        " queries file match those of the judgments (or of the click log)")
    return RankingData(ids, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), np.concatenate(parts_ids),
                       np.concatenate(parts_x), np.concatenate(parts_y))


# -- 3. fit ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankerParams:
    """LambdaMART hyper-parameters (LightGBM names where they exist) and what the model reads.

    - `normalization`: `none`, or `query` (scaled features min-max normalised within each query, scaled
      query-level ones left out): for rankers meant to serve other catalogs;
    - `exclude`: feature names left out of the model (for example catalog-specific ones);
    - `portable`: also leave out `ranker.features.PORTABLE_EXCLUDED` (scaled, title-only and catalog-specific
      features), for rankers meant to serve other catalogs than the one they were trained on;
    - `monotone`: constrain the model to be monotone in every feature with a `direction` (more coverage,
      a better rank in a leg, ... never lowers a score): less freedom to learn one catalog's quirks;
    - `rounds` / `early_stopping`: at most this many trees, stopping when the validation nDCG@`eval_at`
      has not improved for `early_stopping` rounds (the best iteration is kept);
    - `truncation_level`: LightGBM's `lambdarank_truncation_level` (pairs are formed within the top of the
      current order)."""

    num_leaves: int = 31
    learning_rate: float = 0.05
    rounds: int = 1000
    early_stopping: int = 100
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 10.0
    truncation_level: int = 30
    eval_at: int = 10
    seed: int = 0
    threads: int = 0
    normalization: Normalization = "none"
    exclude: tuple[str, ...] = ()
    portable: bool = False
    monotone: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.exclude) - set(FEATURE_NAMES))
        if unknown:
            raise TrainingError(f"unknown features to exclude {unknown}: choose among ranker.features.FEATURE_NAMES")
        if self.normalization not in ("none", "query"):
            raise TrainingError(f"normalization must be `none` or `query`, got {self.normalization!r}")
        if self.rounds < 1 or self.num_leaves < 2 or not 0 < self.learning_rate <= 1:
            raise TrainingError("rounds >= 1, num_leaves >= 2 and 0 < learning_rate <= 1 are required")

    @property
    def feature_names(self) -> tuple[str, ...]:
        left_out = set(self.exclude) | (set(PORTABLE_EXCLUDED) if self.portable else set())
        return tuple(name for name in FEATURE_NAMES if name not in left_out)

    def lightgbm(self, label_gain: Sequence[float]) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.monotone:
            directions = {f.name: f.direction for f in FEATURES}
            extra = {"monotone_constraints": [directions[name] for name in self.feature_names],
                     "monotone_constraints_method": "intermediate"}
        return {**extra,
            "objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [self.eval_at],
            "label_gain": list(label_gain), "lambdarank_truncation_level": self.truncation_level,
            "num_leaves": self.num_leaves, "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf, "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction, "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2, "seed": self.seed, "deterministic": True, "force_row_wise": True,
            "num_threads": self.threads, "verbosity": -1,
        }


@dataclass
class FittedRanker:
    booster: Any
    params: RankerParams
    label_gain: list[float]
    best_iteration: int
    metrics: dict[str, float] = field(default_factory=dict)
    intent_used: bool = False

    def score(self, x: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
        matrix = model_matrix(x, self.params.feature_names, self.params.normalization, offsets)
        return np.asarray(self.booster.predict(matrix, num_iteration=self.best_iteration or None))


def fit_ranker(train: RankingData, valid: RankingData | None, params: RankerParams = RankerParams(), *,
               init_model: Any = None, progress: Callable[[str], None] | None = None) -> FittedRanker:
    """LambdaMART on `train` (queries without a positive label dropped), early-stopped on `valid`.

    `init_model`: a booster (or a `ranker.txt` path) to continue from: the source model's scores are
    the starting point and the new trees fit the target's residual errors, with the source's features
    and normalisation (a warm start; the few target rounds and the shrinkage keep it close to the source)."""
    lightgbm = require("lightgbm", "ranker")
    train = train.positive()
    if not train.query_ids:
        raise TrainingError("no training query has a candidate with a positive label: nothing to learn from")
    top = int(max(train.labels.max(), valid.labels.max() if valid is not None and len(valid.labels) else 0))
    label_gain = [float(g) for g in range(top + 1)]
    names = list(params.feature_names)

    def dataset(data: RankingData, reference: Any = None) -> Any:
        matrix = model_matrix(data.x, names, params.normalization, data.offsets)
        return lightgbm.Dataset(matrix, label=data.labels.astype(np.float64), group=data.groups,
                                feature_name=names, reference=reference, free_raw_data=True)

    train_set = dataset(train)
    valid_sets, callbacks = [], []
    if valid is not None:
        valid = valid.positive()
        if valid.query_ids:
            valid_sets = [dataset(valid, train_set)]
            if params.early_stopping:
                callbacks.append(lightgbm.early_stopping(params.early_stopping, verbose=False))
    if progress is not None:
        callbacks.append(lightgbm.log_evaluation(period=50))
    started = time.perf_counter()
    booster = lightgbm.train(params.lightgbm(label_gain), train_set, num_boost_round=params.rounds,
                             valid_sets=valid_sets, valid_names=["validation"] * len(valid_sets),
                             callbacks=callbacks, init_model=init_model)
    best = int(booster.best_iteration or booster.current_iteration())
    metrics: dict[str, float] = {"train_queries": float(len(train.query_ids)), "train_rows": float(len(train.labels)),
                                 "trees": float(best), "fit_seconds": round(time.perf_counter() - started, 1)}
    if valid_sets:
        metrics["validation_queries"] = float(len(valid.query_ids)) if valid is not None else 0.0
        score = booster.best_score.get("validation", {}).get(f"ndcg@{params.eval_at}")
        if score is not None:
            metrics[f"validation_ndcg@{params.eval_at}"] = float(score)
    intent_columns = [names.index(f"intent_{label}") for label in INTENT_LABELS if f"intent_{label}" in names]
    intent_used = bool(intent_columns) and bool(np.abs(train.x[:, [FEATURE_NAMES.index(names[j]) for j in intent_columns]]).sum())
    return FittedRanker(booster, params, label_gain, best, metrics, intent_used)


def split_validation(query_ids: Sequence[str], share: float) -> tuple[list[str], list[str]]:
    """A stable split by query id (SHA-1), so reruns and growing query files keep their assignment:
    `(fit, validation)` with about `share` of the ids in validation."""
    fit: list[str] = []
    valid: list[str] = []
    for qid in query_ids:
        bucket = int(hashlib.sha1(f"ranker-validation:{qid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (valid if bucket < share else fit).append(qid)
    return fit, valid


def train_ranker(searcher: HybridSearcher, queries: Mapping[str, str], labels: Mapping[str, Mapping[str, float]], *,
                 valid_queries: Mapping[str, str] | None = None,
                 valid_labels: Mapping[str, Mapping[str, float]] | None = None, validation_share: float = 0.2,
                 params: RankerParams = RankerParams(), depth: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR, init_model: Any = None,
                 progress: bool = False) -> tuple[FittedRanker, dict[str, Any]]:
    """Phases 1-3 for `shopfusion train ranker`: features (cached), labels, fit. Without explicit
    validation queries, `validation_share` of the training queries (stable by id) validate."""
    labelled = {qid: text for qid, text in queries.items() if qid in labels}
    if valid_queries is None:
        fit_ids, valid_ids = split_validation(list(labelled), validation_share)
        valid_queries = {q: labelled[q] for q in valid_ids}
        valid_labels = labels
        labelled = {q: labelled[q] for q in fit_ids}
    valid_labels = valid_labels or {}
    table = extract_features(searcher, list(labelled.values()) + list(valid_queries.values()), depth=depth,
                             cache_dir=cache_dir, progress=progress)
    train = ranking_data(table, labelled, labels)
    valid = None
    valid_pairs = {q: t for q, t in valid_queries.items() if q in valid_labels}
    if valid_pairs:
        valid = ranking_data(table, valid_pairs, valid_labels)
    fitted = fit_ranker(train, valid, params, init_model=init_model)
    summary = {"queries": len(labelled), "validation_queries": len(valid_pairs), "candidates": int(len(train.labels)),
               "feature_cache": str(cache_dir) if cache_dir is not None else None}
    return fitted, summary


# -- 4. save ----------------------------------------------------------------------------------------------
def save_ranker(fitted: FittedRanker, output: str | os.PathLike[str], *, searcher: HybridSearcher,
                method: str, data: Sequence[str], depth: int | None = None, metrics: Mapping[str, Any] | None = None,
                notes: str = "") -> Path:
    """Write the artifact directory (`ranker.txt`, `shopfusion_card.json`, `README.md`)."""
    from ranker.stage import intent_model_ref

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    fitted.booster.save_model(str(output / RANKER_FILE), num_iteration=fitted.best_iteration or None)
    manifest = searcher.manifest
    spec = RankerSpec(fitted.params.feature_names, fitted.params.normalization, FEATURE_SET_VERSION,
                      dict(manifest.lexical),
                      intent_model_ref(searcher.policy) if fitted.intent_used else None, depth)
    params = {k: v for k, v in asdict(fitted.params).items() if k not in {"exclude", "threads"}}
    params.update(label_gain=fitted.label_gain,
                  excluded=[name for name in FEATURE_NAMES if name not in fitted.params.feature_names])
    card = ModelCard(kind="ranker", encoder=EncoderRef(manifest.model_id, manifest.dim), method=method,
                     data=tuple(data), params=params, metrics={**fitted.metrics, **dict(metrics or {})},
                     extra={**spec.to_extra(), "index": str(searcher.directory.path), "index_version": manifest.version},
                     notes=notes)
    card.save(output)
    (output / "README.md").write_text(card.render(f"Learned ranker {output.name}"), encoding="utf-8")
    return output


__all__ = ["DEFAULT_CACHE_DIR", "FeatureTable", "FittedRanker", "RankerParams", "RankingData", "cache_key",
           "extract_features", "fit_ranker", "judgment_gains", "ranking_data", "save_ranker", "split_validation",
           "train_ranker"]
