"""Run by test_crash_resume in a subprocess that kills itself with SIGKILL at a named moment of the run.

Usage: python -m tests.indexer.crash_target CATALOG INDEX_DIR [KILL_AT]

KILL_AT (absent: run to the end and print the summary as JSON) is one of
    read:N     after N catalog records were read (phase 1: staging)
    embed:N    right after the N-th embedding batch of this run was journaled (phase 3)
    build:N    at the N-th chunk written to the lexical leg of the version being built (phase 4)
    switch     after the finished version was moved into versions/, before the manifest names it
    prune      after the manifest was switched, before old versions are pruned and staging is removed
The moment is chosen by the test, not by a timer, so every kill lands where the test means it to, on a
fast or a busy machine alike. Nothing is faked: the process really dies with SIGKILL, mid-write.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import indexer.manifest as manifest
import indexer.pipeline as pipeline
from shopfusion.config import Settings

MOMENTS = ("read", "embed", "build", "switch", "prune")


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after_calls(function: Callable[..., Any], calls: int, *, before: bool = False) -> Callable[..., Any]:
    """`function`, killing the process at its `calls`-th call (before it runs, or after it returned)."""
    count = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if before and count >= calls:
            _die()
        result = function(*args, **kwargs)
        if count >= calls:
            _die()
        return result

    return wrapper


def arm(kill_at: str) -> None:
    """Install the kill at `kill_at` (see the module docstring)."""
    moment, _, number = kill_at.partition(":")
    calls = int(number or 1)
    if moment == "read":
        read_catalog = pipeline.read_catalog

        def reading(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for i, record in enumerate(read_catalog(*args, **kwargs), 1):
                yield record
                if i >= calls:
                    _die()

        pipeline.read_catalog = reading  # type: ignore[assignment]
    elif moment == "embed":
        journal = pipeline.EmbeddingJournal  # wherever the pipeline takes its journal from
        journal.append = _after_calls(journal.append, calls)  # type: ignore[method-assign]
    elif moment == "build":
        open_lexical = pipeline.open_lexical

        def opening(*args: Any, **kwargs: Any) -> Any:
            store = open_lexical(*args, **kwargs)
            if kwargs.get("create"):  # the version being built
                store.upsert = _after_calls(store.upsert, calls, before=True)  # type: ignore[method-assign]
            return store

        pipeline.open_lexical = opening
    elif moment == "switch":
        write = manifest.write_json_atomic

        def writing(path: Path, data: Any) -> None:
            if path.name == manifest.MANIFEST and (path.parent / "versions" / data["version"]).is_dir():
                _die()
            write(path, data)

        manifest.write_json_atomic = writing  # type: ignore[assignment]
    elif moment == "prune":
        manifest.IndexDirectory.prune = _after_calls(manifest.IndexDirectory.prune, 1, before=True)  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown moment {kill_at!r}: one of {', '.join(MOMENTS)}")


def main() -> None:
    pipeline.EMBED_BATCH = 100
    if len(sys.argv) > 3:
        arm(sys.argv[3])
    settings = Settings().replace("index", model="hash:32")
    summary = pipeline.run_index(sys.argv[1], sys.argv[2], settings=settings)
    print(json.dumps(summary.to_dict()))


if __name__ == "__main__":
    main()
