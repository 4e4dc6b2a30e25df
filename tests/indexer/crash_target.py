"""Run by test_crash_resume in a subprocess that the test kills with SIGKILL at various moments.

Usage: python -m tests.indexer.crash_target CATALOG INDEX_DIR
The executor sleeps a little per batch so that a kill can land in every phase of the run."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator

import indexer.pipeline as pipeline
from shopfusion.config import Settings
from workers.executor import EmbedBatch, EmbedResult, LocalExecutor


class SlowExecutor(LocalExecutor):
    def map(self, model: str, batches: Iterable[EmbedBatch], *, backend: str = "torch") -> Iterator[EmbedResult]:
        for batch in batches:
            time.sleep(0.1)
            yield from super().map(model, [batch], backend=backend)


def main() -> None:
    pipeline.EMBED_BATCH = 100
    settings = Settings().replace("index", model="hash:32")
    summary = pipeline.run_index(sys.argv[1], sys.argv[2], settings=settings, executor=SlowExecutor())
    print(json.dumps(summary.to_dict()))


if __name__ == "__main__":
    main()
