"""The live version an index run builds on, and what of it can be trusted.

A run reuses the live version's products (incremental runs keep what the catalog lacks) and vectors
(unchanged texts are not embedded again). Before reusing anything it asks `indexer.integrity` what is
intact: a damaged product record is neither carried forward nor believed when comparing hashes, a
damaged vector is embedded again, and what could not be trusted is said in the run's warnings. A live
version that cannot be read at all stops an additive run (its products would be lost) and is set aside
by a `--replace` run (the catalog is the whole truth anyway).
"""

from __future__ import annotations

import numpy as np

from indexer.docstore import ProductStore
from indexer.integrity import STORE, VersionCheck
from indexer.manifest import IndexDirectory, Manifest
from shopfusion.errors import IndexStateError


class LiveVersion:
    """The live version of `directory` (`manifest` None when there is none or, with `replace`, when its
    manifest is damaged). `warnings` collects what the run must report."""

    def __init__(self, directory: IndexDirectory, *, replace: bool) -> None:
        self.directory = directory
        self.replace = replace
        self.warnings: list[str] = []
        self.damaged: set[str] = set()
        """Ids of live product records that are damaged (never carried forward)."""
        self.manifest = self._read()
        self.check = (VersionCheck(directory.version_path(self.manifest.version), self.manifest)
                      if self.manifest is not None else None)

    @property
    def products(self) -> int:
        """How many products the live version holds (0 without one)."""
        return int(self.manifest.counts.get("products", 0)) if self.manifest is not None else 0

    def _read(self) -> Manifest | None:
        try:
            return self.directory.current()
        except IndexStateError as exc:
            if not self.replace:
                raise IndexStateError(f"{exc}; or index the full catalog with --replace") from None
            self.warnings.append(f"the live manifest is damaged ({exc}); this version is built from the catalog"
                                 " alone")
            return None

    def open_store(self) -> ProductStore | None:
        """The live product store, its damaged rows noted in `damaged`; None without a live version or
        (with --replace) when the store cannot be read."""
        if self.manifest is None or self.check is None:
            return None
        state = self.check.store()
        version = self.manifest.version
        if not state.readable:
            message = f"the product store of the live version {version} cannot be read ({state.problem})"
            if not self.replace:
                raise IndexStateError(f"{message}: run `shopfusion verify --index {self.directory.path} --repair`,"
                                      " or index the full catalog with --replace")
            self.warnings.append(f"{message}: every product of this catalog counts as added")
            return None
        self.damaged = state.damaged
        if state.damaged:
            self.warnings.append(f"{len(state.damaged)} damaged product record(s) in the live version {version}"
                                 f" (e.g. {sorted(state.damaged)[:3]}): not carried forward")
        return ProductStore(self.directory.version_path(version) / STORE)

    def reusable(self, model_id: str) -> bool:
        """Whether the live vectors were made by this model (else every text is embedded again)."""
        return self.manifest is not None and self.manifest.model_id == model_id

    def damaged_vectors(self, store_order: list[str]) -> set[str] | None:
        """Ids whose live vector fails its integrity check (said in `warnings`); None when the vectors cannot
        be read at all. For a run that reuses live vectors by text hash from their files (`VersionVectors`),
        so only the damaged ids are kept, not the vectors."""
        if self.manifest is None or self.check is None:
            return set()
        state = self.check.vectors(store_order)
        self._warn_vectors(state.readable, state.problem, state.damaged)
        return state.damaged if state.readable else None

    def _warn_vectors(self, readable: bool, problem: str, damaged: set[str]) -> None:
        version = self.manifest.version if self.manifest is not None else "?"
        if not readable:
            self.warnings.append(f"the vectors of the live version {version} cannot be read ({problem}):"
                                 " every product is embedded again")
        elif damaged:
            self.warnings.append(f"{len(damaged)} damaged vector(s) in the live version {version}"
                                 f" (e.g. {sorted(damaged)[:3]}): embedded again, not reused")

    def trusted_vectors(self, model_id: str, store_order: list[str]) -> dict[str, np.ndarray]:
        """Live vectors, by product id, that pass their integrity check (none after a model change)."""
        if self.manifest is None or self.check is None or not self.reusable(model_id):
            return {}
        state = self.check.vectors(store_order)
        self._warn_vectors(state.readable, state.problem, state.damaged)
        return state.trusted
