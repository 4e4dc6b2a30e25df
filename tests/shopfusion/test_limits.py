"""`[limits]`: the client refuses oversized requests before doing any work (the CLI and service inherit it)."""

from __future__ import annotations

import pytest

from shopfusion.client import Client
from shopfusion.config import load_settings
from shopfusion.errors import QueryError


@pytest.fixture
def client(tmp_path):
    # no index exists: a refused request must fail on the limit, before anything loads
    return Client(tmp_path / "none", settings=load_settings(env={}))


@pytest.mark.parametrize("call, fragment", [
    (lambda c: c.search("x" * 1001), "max_query_chars"),
    (lambda c: c.search("drill", k=2**31), "max_k"),
    (lambda c: c.search("drill", k=10**23), "max_k"),
    (lambda c: c.search("drill", depth=2**31), "max_depth"),
    (lambda c: c.rerank("drill", ["a"] * 10_001), "max_candidates"),
    (lambda c: c.search("drill", k=2.5), "integer"),
])
def test_oversized_requests_are_refused_with_the_setting_to_change(client, call, fragment):
    with pytest.raises(QueryError, match=fragment):
        call(client)


def test_limits_come_from_the_environment():
    settings = load_settings(env={"SHOPFUSION_LIMITS_MAX_K": "5"})
    assert settings.limits.max_k == 5
    with pytest.raises(QueryError, match="max_k = 5"):
        Client("/nonexistent", settings=settings).search("drill", k=6)
