"""The one fixed split of the Home Depot development queries used by every quality benchmark.

Rule (written down here and in the README; no randomness, no state): a query's bucket is the first 32 bits
of SHA-1 of its id, divided by 2**32 - 1.

- `test`: bucket < 0.30 (2,505 of the 8,251 queries). Used only to report; never to choose settings.
- `validation`: 0.30 <= bucket < 0.44 (1,142 queries): part of the training side, held out from fitting
  to choose settings (fusion alpha, ranker hyper-parameters, early stopping).
- `fit`: bucket >= 0.44 (4,604 queries): what models are fitted on.
- `train` = `fit` + `validation`.

>>> part("1")  # doctest: +SKIP
'fit'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

TEST_SHARE = 0.30
VALIDATION_END = 0.44
RULE = ("bucket = int(sha1(query_id)[:8], 16) / 0xFFFFFFFF; test: bucket < 0.30; validation: 0.30 <= bucket"
        " < 0.44; fit: bucket >= 0.44; train = fit + validation")


def bucket(query_id: str) -> float:
    return int(hashlib.sha1(query_id.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF


def part(query_id: str) -> str:
    """`test`, `validation` or `fit`."""
    b = bucket(query_id)
    if b < TEST_SHARE:
        return "test"
    return "validation" if b < VALIDATION_END else "fit"


def split(ids: Iterable[str]) -> dict[str, list[str]]:
    """The ids of each part (and `train` = fit + validation), in the order given."""
    out: dict[str, list[str]] = {"fit": [], "validation": [], "test": []}
    for qid in ids:
        out[part(qid)].append(qid)
    out["train"] = out["fit"] + out["validation"]
    return out
