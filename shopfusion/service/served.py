"""The index a service worker serves, and its hot swap to newly published versions.

A `Generation` is one fully loaded index version: its `Client` (product store, both legs, policy) with
the query encoder shared through the worker's `QueryBatcher`. Requests take a lease on the current
generation for their whole duration. `refresh()` (called every `service.reload_interval` seconds) looks
at the manifest; when `shopfusion index` has published a new version it loads and warms that version
completely *beside* the live one, then swaps one reference under a lock. Requests that started before
the swap finish on the old generation, which is closed when its last lease ends; requests after the
swap see only the new one. No request ever sees a half-loaded index, and nothing restarts.

The model loads once per worker: `load_encoder` caches encoders per process, so a new version built
with the same model reuses the loaded one (and its batcher).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shopfusion.client import Client
from shopfusion.config import Settings
from shopfusion.errors import ShopfusionError
from shopfusion.service.batching import QueryBatcher

log = logging.getLogger("shopfusion.service")


def _freeze_loaded_objects() -> None:
    """Move everything loaded so far (the model, the index, the policy: tens of thousands of long-lived
    objects) out of the cyclic garbage collector's reach. Otherwise every full collection walks them all
    while a request waits: 25-30 ms pauses in about one query in 300 on a 100k-product index, the largest
    part of the p99 (README, "HTTP service"). Requests' own garbage is still collected as before."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("froze %d loaded objects for the garbage collector in %.0f ms", gc.get_freeze_count(),
             (time.perf_counter() - started) * 1000)


@dataclass(eq=False)
class Generation:
    """One loaded index version and the requests using it."""

    client: Client
    version: str
    model_id: str
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0
    retired: bool = False

    def close(self) -> None:
        self.client.close()


class ServedIndex:
    """The current generation of one index directory, swapped atomically when a new version is published."""

    def __init__(self, index_dir: str | os.PathLike[str], settings: Settings, *,
                 on_batch: Callable[[int], None] | None = None,
                 on_swap: Callable[[Generation, Generation | None], None] | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.settings = settings
        self._on_batch = on_batch
        self._on_swap = on_swap
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._current: Generation | None = None
        self._batchers: dict[int, QueryBatcher] = {}
        self._seen: tuple[int, int] | None = None  # (inode, mtime_ns) of the manifest last looked at
        self.error: str | None = None
        """Why the index is not (or no longer) loadable, for /ready; None when all is well."""

    @property
    def current(self) -> Generation | None:
        return self._current

    @property
    def manifest_path(self) -> Path:
        return self.index_dir / "manifest.json"

    @contextlib.contextmanager
    def lease(self) -> Iterator[Generation]:
        """The generation to answer one request with; it stays open until the request is done."""
        with self._lock:
            generation = self._current
            if generation is None:
                raise NotReadyError(self.error or "the index is still loading")
            generation.leases += 1
        try:
            yield generation
        finally:
            with self._lock:
                generation.leases -= 1
                done = generation.retired and generation.leases == 0
            if done:
                generation.close()

    def refresh(self) -> bool:
        """Load the published version if it is not the one served; True when a swap happened."""
        with self._reload_lock:
            try:
                stat = self.manifest_path.stat()
            except FileNotFoundError:
                if self._current is None:
                    self.error = (f"no index at {self.index_dir}: build one with"
                                  f" `shopfusion index CATALOG --index {self.index_dir}`")
                return False
            signature = (stat.st_ino, stat.st_mtime_ns)
            if signature == self._seen:
                return False
            gc.unfreeze()  # what the previous load froze may become garbage once its generation closes
            try:
                return self._swap_in(signature)
            finally:
                _freeze_loaded_objects()

    def _swap_in(self, signature: tuple[int, int]) -> bool:
        """Load the version the manifest names and make it the current one (under `_reload_lock`)."""
        try:
            generation = self._load()
        except Exception as exc:
            self._seen = signature  # retried when the manifest changes again, not in a hot loop
            self.error = f"{type(exc).__name__}: {exc}" if self._current is None else None
            log.error("index version not loaded, still serving %s: %s",
                      self._current.version if self._current else "nothing", exc)
            raise
        self._seen = signature
        if self._current is not None and generation.version == self._current.version:
            generation.close()
            return False
        with self._lock:
            old, self._current = self._current, generation
            self.error = None
            if old is not None:
                old.retired = True
            close_old = old is not None and old.leases == 0
        if close_old:
            assert old is not None
            old.close()
        if self._on_swap is not None:
            self._on_swap(generation, old)
        log.info("serving index version %s (%s)", generation.version, generation.model_id)
        return True

    def _load(self) -> Generation:
        client = Client(self.index_dir, settings=self.settings)
        searcher = client.searcher  # opens store, legs, encoder and policy now
        try:
            encoder = searcher.encoder
            if self.settings.service.micro_batch:
                batcher = self._batchers.get(id(encoder))
                if batcher is None:
                    batcher = QueryBatcher(encoder, max_batch=self.settings.service.max_batch,
                                           on_batch=self._on_batch)
                    self._batchers[id(encoder)] = batcher
                searcher.encoder = batcher
            # warm everything a first request would otherwise pay for: model, FAISS index, tantivy reader
            searcher.encoder.encode_query("warm up")
            _ = searcher.vectors.index
            searcher.lexical.search("warm up", 1)
            if searcher.policy is not None:
                searcher.policy.decide("warm up", searcher.encoder.encode_query("warm up"))
            ranker, _ = searcher.ranker()  # a configured learned ranker: loaded and checked now, and every
            if ranker is not None:  # product read into its table, so no request pays for tokenising candidates
                searcher.stage.warm()
        except BaseException:
            client.close()
            raise
        return Generation(client, searcher.manifest.version, searcher.manifest.model_id)

    def close(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.close()
        for batcher in self._batchers.values():
            batcher.close()
        self._batchers.clear()


class NotReadyError(ShopfusionError):
    """No index version is loaded yet (starting up) or the index cannot be loaded; 503 over HTTP."""
