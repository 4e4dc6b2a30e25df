"""The served index in-process: a loaded version's objects are frozen for the garbage collector, and a
swap unfreezes them first so that the old version can be collected."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfusion.config import load_settings
from shopfusion.service.served import ServedIndex
from tests.plugins.service import BASE_ENV, build_index


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as it found it


def test_loading_freezes_what_was_loaded_and_a_swap_starts_from_scratch(tmp_path: Path, unfrozen: None) -> None:
    index_dir = tmp_path / "idx"
    build_index(index_dir).close()
    served = ServedIndex(index_dir, load_settings(env=BASE_ENV))
    try:
        gc.unfreeze()
        assert served.refresh() and gc.get_freeze_count() > 0
        first = served.current
        assert first is not None and first.client.search("drill", k=1).hits
        build_index(index_dir).close()  # publishes a new version
        assert served.refresh()
        assert served.current is not None and served.current.version != first.version
        assert gc.get_freeze_count() > 0 and served.current.client.search("drill", k=1).hits
        assert not served.refresh()  # nothing new: nothing reloaded
    finally:
        served.close()
