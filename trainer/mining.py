"""A small BM25 (numpy + scipy sparse) and hard-negative mining for contrastive training.

BM25 here is the Lucene variant (`idf = ln(1 + (N - df + 0.5) / (df + 0.5))`, k1 = 1.2, b = 0.75) over
lower-cased word tokens; it exists so the trainer can mine hard negatives and build teacher scores without
an index server. Retrieval at query time uses the indexer's engines, not this.

>>> bm25 = BM25().fit(["cordless drill", "corded drill", "garden hose"], ["a", "b", "c"])
>>> [hit for hit, _ in bm25.search("cordless drill", k=2)]
['a', 'b']
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from shopfusion.errors import TrainingError

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25:
    """Sparse BM25 scorer: `fit(documents, ids)`, then `search(query, k)` or `score(query, ids)`."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise TrainingError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1 = k1
        self.b = b
        self.ids: list[str] = []

    def fit(self, documents: Sequence[str], ids: Sequence[str]) -> BM25:
        from scipy import sparse
        from sklearn.feature_extraction.text import CountVectorizer

        if len(documents) != len(ids) or not documents:
            raise TrainingError("BM25.fit needs one id per document and at least one document")
        self.vectorizer = CountVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None)
        tf = self.vectorizer.fit_transform(documents).tocsr().astype(np.float32)
        n = tf.shape[0]
        df = np.bincount(tf.indices, minlength=tf.shape[1])
        self.idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        lengths = np.asarray(tf.sum(axis=1)).ravel()
        norm = self.k1 * (1 - self.b + self.b * lengths / max(lengths.mean(), 1e-9))
        rows = np.repeat(np.arange(n), np.diff(tf.indptr))
        data = tf.data * (self.k1 + 1) / (tf.data + norm[rows])
        # documents x terms weights; a query's score is the sum over its terms
        self.weights = sparse.csr_matrix((data * self.idf[tf.indices], tf.indices, tf.indptr), shape=tf.shape)
        self.weights_t = self.weights.T.tocsr()
        self.ids = list(ids)
        self.index = {d: i for i, d in enumerate(self.ids)}
        return self

    def _query_vector(self, query: str) -> np.ndarray:
        vocab = self.vectorizer.vocabulary_
        return np.array([vocab[t] for t in tokenize(query) if t in vocab], dtype=np.int64)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document (dense array, index order of `ids`)."""
        terms = self._query_vector(query)
        if terms.size == 0:
            return np.zeros(len(self.ids), dtype=np.float32)
        return np.asarray(self.weights_t[terms].sum(axis=0)).ravel()

    def search(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        scores = self.scores(query)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def score(self, query: str, ids: Sequence[str]) -> np.ndarray:
        scores = self.scores(query)
        return np.array([scores[self.index[d]] if d in self.index else 0.0 for d in ids], dtype=np.float32)


def mine_hard_negatives(
    bm25: BM25,
    query: str,
    exclude: Collection[str],
    *,
    n: int = 1,
    depth: int = 30,
    skip_top: int = 2,
    rng: np.random.Generator | None = None,
) -> list[str]:
    """Up to `n` products BM25 ranks highly for `query` that are not in `exclude` (its judged or known
    relevant products). The first `skip_top` unjudged hits are skipped: they are often unjudged positives."""
    rng = rng or np.random.default_rng(0)
    hits = [d for d, _ in bm25.search(query, depth) if d not in exclude][skip_top:]
    if not hits:
        return []
    chosen = rng.choice(len(hits), size=min(n, len(hits)), replace=False)
    return [hits[int(i)] for i in chosen]


def judged_split(
    judged: Mapping[str, float], positive_grade: float, negative_grade: float
) -> tuple[list[str], list[str]]:
    """Graded judgments -> (positives: grade >= positive_grade, negatives: grade <= negative_grade)."""
    if negative_grade >= positive_grade:
        raise TrainingError(
            f"negative_grade {negative_grade} must be below positive_grade {positive_grade}"
        )
    positives = sorted(d for d, g in judged.items() if g >= positive_grade)
    negatives = sorted(d for d, g in judged.items() if g <= negative_grade)
    return positives, negatives
