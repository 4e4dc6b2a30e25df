"""`shopfusion serve` over real HTTP: a real server process on a loopback port (tests/plugins/service.py).

Every endpoint, every candidate format, limits and error bodies, auth on and off, the request timeout,
access logs, the hot swap under a bounded request loop, and SIGTERM with requests in flight.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shopfusion.client import Client
from shopfusion.config import load_settings
from shopfusion.types import Filters
from tests.plugins.catalogs import TINY
from tests.plugins.service import BASE_ENV, Reply, Server, build_index, running_server
from tests.shopfusion.test_candidates import ES_BODY, SOLR_BODY

pytestmark = pytest.mark.slow


def error(reply: Reply) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"} and body["error"]["status"] == reply.status, body
    return body["error"]


# -- endpoints ------------------------------------------------------------------------------------------
def test_health_ready_openapi_and_docs(server: Server) -> None:
    assert server.request("GET", "/health").json() == {"status": "ok"}
    ready = server.request("GET", "/ready").json()
    assert ready["ready"] is True and ready["index_version"] == "v000001" and ready["model_id"] == "hash:32"
    assert ready["request_threads"] >= 2  # auto: one per core, at least two
    spec = server.request("GET", "/openapi.json").json()
    assert {"/search", "/rerank", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    rerank_body = spec["paths"]["/rerank"]["post"]["requestBody"]["content"]["application/json"]
    assert any("hits" in json.dumps(e["value"]) for e in rerank_body["examples"].values())
    ok = spec["paths"]["/search"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["example"]["schema"] == "shopfusion.results/1"
    assert spec["components"]["schemas"]["Results"]["properties"]["schema"]["const"] == "shopfusion.results/1"
    assert {"SearchBody", "RerankBody", "Error"} <= set(spec["components"]["schemas"])
    assert server.request("GET", "/docs").status == 200


def test_search_body_is_the_clients_results(server: Server, served_index: Path) -> None:
    reply = server.post("/search", {"query": "cordless drill", "k": 3, "explain": True,
                                    "filters": {"category": "Tools > Power Tools", "price_max": 200}})
    assert reply.status == 200 and reply.headers["x-index-version"] == "v000001"
    client = Client(served_index, settings=load_settings(env=BASE_ENV))
    try:
        expected = client.search("cordless drill", k=3, explain=True,
                                 filters=Filters(category=("Tools", "Power Tools"), price_max=200)).to_dict()
    finally:
        client.close()
    assert reply.json() == json.loads(json.dumps(expected))
    assert reply.json()["schema"] == "shopfusion.results/1" and reply.json()["hits"][0]["legs"]
    timing = dict(part.strip().split(";dur=") for part in reply.headers["server-timing"].split(","))
    assert set(timing) == {"queue", "work", "total"}
    assert float(timing["work"]) <= float(timing["total"])


def test_search_with_attribute_filters_facets_sort_and_pages(server: Server, served_index: Path) -> None:
    body = {"query": "cordless drill driver", "k": 2, "page": 2, "sort": "-price", "facets": "brand,category,voltage",
            "filters": {"attributes": {"voltage": ["18v"]}, "price_below": 140}}
    reply = server.post("/search", body)
    assert reply.status == 200, reply.body
    data = reply.json()
    client = Client(served_index, settings=load_settings(env=BASE_ENV))
    try:
        expected = client.search("cordless drill driver", k=2, page=2, sort="-price", facets="brand,category,voltage",
                                 filters=Filters(attributes={"voltage": ("18v",)}, price_below=140)).to_dict()
    finally:
        client.close()
    assert data == json.loads(json.dumps(expected))
    assert data["page"]["number"] == 2 and data["facets"]["fields"]["voltage"]["buckets"][0]["value"] == "18v"
    numeric = server.post("/search", {"query": "drill", "filters": {"attributes": {"pieces": {"min": 10}}}}).json()
    assert [h["product_id"] for h in numeric["hits"]] == ["p03"]
    attributes = server.request("GET", "/attributes?values=2").json()
    assert attributes["index_version"] == "v000001" and attributes["products"] == len(TINY)
    voltage = next(f for f in attributes["fields"] if f["name"] == "voltage")
    assert voltage["kind"] == "text" and voltage["values"][0] == {"value": "18v", "label": "18V", "count": 2}


def test_search_modes_and_fusion_overrides(server: Server) -> None:
    lexical = server.post("/search", {"query": "garden hose", "mode": "lexical", "k": 2}).json()
    assert lexical["fusion"]["mode"] == "lexical" and lexical["hits"][0]["product_id"] == "p04"
    rrf = server.post("/search", {"query": "garden hose", "fusion": "rrf", "rrf_k": 10}).json()
    assert rrf["fusion"]["method"] == "rrf" and rrf["fusion"]["rrf_k"] == 10


def test_rerank_shopfusion_list(server: Server) -> None:
    body = {"query": "cordless drill", "candidates": ["p04", {"id": "p01", "score": 1.5},
                                                       {"id": "x-1", "title": "Ryobi cordless drill 18V"}],
            "explain": True}
    data = server.post("/rerank", body).json()
    ids = [h["product_id"] for h in data["hits"]]
    assert set(ids) == {"p04", "p01", "x-1"} and ids[-1] == "p04"
    assert data["fusion"]["scored_from_text"] == 1 and data["unscored"] == []


def test_rerank_elasticsearch_body_as_it_came(server: Server) -> None:
    unmapped = server.post("/rerank", {"query": "cordless drill", "candidates": ES_BODY}).json()
    # p02 is indexed: scored from the index; the others are ranked last in their order, and reported
    assert [h["product_id"] for h in unmapped["hits"]] == ["p02", "ext-9", "ext-10"]
    reasons = {u["product_id"]: u["reason"] for u in unmapped["unscored"]}
    assert set(reasons) == {"ext-9", "ext-10"} and '"title": "name"' in reasons["ext-9"]
    assert unmapped["warnings"]
    mapped = server.post("/rerank", {"query": "cordless drill", "candidates": ES_BODY,
                                     "fields": {"title": "name", "brand": "maker.name"}, "explain": True}).json()
    hits = {h["product_id"]: h for h in mapped["hits"]}
    assert list(hits)[-1] == "ext-10" and hits["ext-9"]["product"]["brand"] == "Ryobi"
    assert hits["ext-9"]["legs"]["engine"]["raw"] == 4.0
    assert [u["product_id"] for u in mapped["unscored"]] == ["ext-10"]


def test_rerank_solr_body(server: Server) -> None:
    data = server.post("/rerank", {"query": "cordless drill", "candidates": SOLR_BODY}).json()
    assert {h["product_id"] for h in data["hits"]} == {"p01", "solr-1"} and data["unscored"] == []


def test_metrics_count_requests_and_name_the_index(server: Server) -> None:
    server.post("/search", {"query": "hammer"})
    server.post("/search", {"query": ""})
    text = server.request("GET", "/metrics").body.decode()
    assert 'shopfusion_requests_total{endpoint="/search",status="200"}' in text
    assert 'shopfusion_requests_total{endpoint="/search",status="400"}' in text
    assert 'shopfusion_request_duration_seconds_bucket{endpoint="/search",le="0.005"}' in text
    assert 'shopfusion_index_info{model_id="hash:32",version="v000001"} 1.0' in text
    assert "shopfusion_encode_batch_size_count" in text


def test_access_log_is_json_without_query_text(server: Server) -> None:
    server.post("/search", {"query": "secret-shopper-words"}, headers={"X-Request-ID": "trace-123"})
    time.sleep(0.2)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"event"')]
    mine = [line for line in lines if line["request_id"] == "trace-123"]
    assert mine and mine[0]["path"] == "/search" and mine[0]["status"] == 200
    assert mine[0]["query_chars"] == len("secret-shopper-words") and "query" not in mine[0]
    assert "secret-shopper-words" not in server.log()


# -- limits and errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, status, fragment", [
    ({"query": "drill", "k": 51}, 400, "limits.max_k"),
    ({"query": "drill", "k": 0}, 400, "`k`"),
    ({"query": "drill", "depth": 10**9}, 400, "limits.max_depth"),
    ({"query": "x" * 101}, 400, "limits.max_query_chars"),
    ({"query": "  "}, 400, "empty"),
    ({"query": "drill", "colour": "red"}, 400, "`colour` is not a known field"),
    ({"k": 3}, 400, "`query` is required"),
    ({"query": "drill", "alpha": 2}, 400, "`alpha`"),
    ({"query": "drill", "filters": {"price_min": 9, "price_max": 1}}, 400, "swap the bounds"),
    ({"query": "drill", "mode": "magic"}, 400, "`mode`"),
    ({"query": "drill", "filters": {"attributes": {"color": ["red"]}}}, 400, "close names"),
    ({"query": "drill", "filters": {"attributes": {"voltage": {"min": 1}}}}, 400, "text attribute"),
    ({"query": "drill", "filters": {"attributes": {"voltage": []}}}, 400, "neither values nor bounds"),
    ({"query": "drill", "facets": "colour"}, 400, "unknown attribute 'colour'"),
    ({"query": "drill", "page": 0}, 400, "`page`"),
])
def test_search_errors_say_how_to_fix(server: Server, body: dict[str, Any], status: int, fragment: str) -> None:
    reply = server.post("/search", body)
    assert reply.status == status and fragment in error(reply)["message"]


@pytest.mark.parametrize("raw, fragment", [
    (b'{"query": "drill", "candidates": [{"id": "p01", "score": NaN}]}', "NaN"),
    (b'{"query": "drill", "candidates": [{"id": "p01", "score": Infinity}]}', "Infinity"),
    (b'{"query": "drill", "candidates": [{"id": "p01", "score": true}]}', "score must be a number"),
    (b'{"query": "drill", "candidates": [{"title": "no id"}]}', "has no `id`"),
    (b'{"query": "drill", "candidates": {"foo": 1}}', "not recognised"),
    (b'{"query": "drill", "candidates": ["p01"], "fields": {"colour": "c"}}', "unknown field"),
    (b'{"query": "drill"}', "`candidates` is required"),
    (b'{"query": "drill", "candidates": [' + b'"p01",' * 200 + b'"p02"]}', "limits.max_candidates"),
    (b'{"query": "drill", "candidates": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested too deeply"),
    (b"{not json", "not valid JSON"),
    (b"", "body is empty"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"query": "caf\xe9"}', "UTF-8"),
    (b'{"query": "dr\\ud800ill", "candidates": ["p01"]}', "lone surrogate"),
])
def test_rerank_errors_say_how_to_fix(server: Server, raw: bytes, fragment: str) -> None:
    reply = server.request("POST", "/rerank", raw=raw)
    assert reply.status == 400 and fragment in error(reply)["message"], reply.body


def test_body_size_limit_413(server: Server) -> None:
    big = {"query": "drill", "candidates": [{"id": f"x{i}", "text": "y" * 500} for i in range(150)]}
    reply = server.post("/rerank", big)
    assert reply.status == 413 and "service.max_body_bytes" in error(reply)["message"]
    # no Content-Length (chunked): the bytes are counted as they arrive
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        payload = json.dumps(big).encode()
        chunks = iter([payload[i:i + 8192] for i in range(0, len(payload), 8192)])
        connection.request("POST", "/rerank", body=chunks, encode_chunked=True,
                           headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        response = connection.getresponse()
        assert response.status == 413 and b"max_body_bytes" in response.read()
    finally:
        connection.close()


def test_unknown_paths_and_methods(server: Server) -> None:
    missing = server.request("GET", "/nope")
    assert missing.status == 404 and "/search" in error(missing)["message"]
    wrong = server.request("GET", "/search")
    assert wrong.status == 405 and "POST" in error(wrong)["message"]


# -- auth, timeout, query logging ---------------------------------------------------------------------------
def test_api_key_timeout_and_query_logging(served_index: Path, tmp_path: Path) -> None:
    env = {"SHOPFUSION_SERVICE_API_KEY": "s3cret-key-value", "SHOPFUSION_SERVICE_LOG_QUERIES": "true",
           "SHOPFUSION_SERVICE_REQUEST_TIMEOUT": "0.0005"}
    with running_server(served_index, tmp_path / "auth.log", env) as server:
        assert server.request("GET", "/health").status == 200  # probes stay open
        assert server.request("GET", "/ready").status == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key-value"}):
            reply = server.post("/search", {"query": "drill"}, headers=headers)
            assert reply.status == 401 and reply.headers["www-authenticate"].startswith("Bearer")
            assert "SHOPFUSION_SERVICE_API_KEY" in error(reply)["message"]
        assert server.request("GET", "/metrics").status == 401
        assert server.request("GET", "/attributes").status == 401  # the catalog is the merchant's data
        good = {"Authorization": "Bearer s3cret-key-value"}
        assert server.request("GET", "/metrics", headers=good).status == 200
        assert server.request("GET", "/attributes", headers=good).status != 401  # (504: this server's timeout)
        spec = server.request("GET", "/openapi.json").json()
        assert spec["paths"]["/search"]["post"]["security"] == [{"bearer": []}]
        # authorised, then refused by the (absurdly small) timeout: 504 saying which setting to raise
        slow = {"query": "logged-query-text", "candidates": [{"id": f"x{i}", "text": f"drill {i}"} for i in range(2000)]}
        reply = server.post("/rerank", slow, headers=good)
        assert reply.status == 504 and "SHOPFUSION_SERVICE_REQUEST_TIMEOUT" in error(reply)["message"]
        assert server.request("GET", "/health").status == 200  # still serving
        time.sleep(0.2)
        log = server.log()
    assert "s3cret-key-value" not in log
    assert '"query": "logged-query-text"' in log


# -- hot swap -------------------------------------------------------------------------------------------------
NEW_PRODUCT = {"id": "p99", "title": "Turbo cordless drill 40V", "brand": "Makita",
               "category_path": ["Tools", "Power Tools", "Drills"], "price": 300.0}


def test_hot_swap_under_load(tmp_path: Path) -> None:
    """Re-index twice while a bounded request loop runs: every answer is a 200 whose hits match the
    version it names (never a mix), versions only move forward per client, and no restart happens."""
    index_dir = tmp_path / "idx"
    base = [p.to_dict() for p in TINY]
    build_index(index_dir, base).close()
    with running_server(index_dir, tmp_path / "swap.log") as server:
        pid = server.process.pid
        replies: list[tuple[int, str, list[str]]] = []
        problems: list[str] = []
        stop = threading.Event()

        def loop() -> None:
            last = ""
            for _ in range(5000):  # bounded
                if stop.is_set():
                    return
                reply = server.post("/search", {"query": "turbo cordless drill", "k": 20})
                if reply.status != 200:
                    problems.append(f"{reply.status}: {reply.body[:200]!r}")
                    continue
                version = reply.headers["x-index-version"]
                if version < last:
                    problems.append(f"version went back from {last} to {version}")
                last = version
                replies.append((reply.status, version, [h["product_id"] for h in reply.json()["hits"]]))

        threads = [threading.Thread(target=loop) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            build_index(index_dir, [*base, NEW_PRODUCT]).close()                    # v000002 adds p99
            _wait_for_version(server, "v000002")
            time.sleep(0.3)
            build_index(index_dir, [p for p in base if p["id"] != "p01"] + [NEW_PRODUCT]).close()  # v000003
            _wait_for_version(server, "v000003")
            time.sleep(0.3)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        assert not problems, problems[:5]
        by_version = Counter(version for _, version, _ in replies)
        assert set(by_version) == {"v000001", "v000002", "v000003"}, by_version
        for _, version, ids in replies:
            assert ("p99" in ids) == (version >= "v000002"), (version, ids)
            assert ("p01" in ids) == (version < "v000003"), (version, ids)
        assert server.process.pid == pid and server.process.poll() is None
        metrics = server.request("GET", "/metrics").body.decode()
        assert 'shopfusion_index_reloads_total{result="swapped"} 2.0' in metrics
        assert 'shopfusion_index_info{model_id="hash:32",version="v000003"} 1.0' in metrics


def _wait_for_version(server: Server, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.request("GET", "/ready").json().get("index_version") == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"{version} not served after {timeout} s:\n{server.log()[-3000:]}")


def test_a_broken_new_version_keeps_the_old_one_serving(tmp_path: Path) -> None:
    index_dir = tmp_path / "idx"
    build_index(index_dir).close()
    with running_server(index_dir, tmp_path / "broken.log") as server:
        manifest = json.loads((index_dir / "manifest.json").read_text())
        shutil.copytree(index_dir / "versions" / "v000001", index_dir / "versions" / "v000002")
        (index_dir / "versions" / "v000002" / "vectors" / "vectors.npy").unlink()
        (index_dir / "manifest.json").write_text(json.dumps({**manifest, "version": "v000002"}))
        deadline = time.monotonic() + 30
        while "shopfusion_index_reloads_total{result=\"failed\"}" not in server.request("GET", "/metrics").body.decode():
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.1)
        assert server.request("GET", "/ready").json()["index_version"] == "v000001"
        assert server.post("/search", {"query": "drill"}).status == 200
        assert "still serving v000001" in server.log()


# -- graceful shutdown ------------------------------------------------------------------------------------------
def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path, served_index: Path) -> None:
    server = Server(served_index, tmp_path / "term.log", {"SHOPFUSION_SERVICE_THREADS": "2"})
    try:
        server.wait_ready()
        slow = {"query": "cordless drill", "candidates": [{"id": f"x{i}", "title": f"drill model {i} cordless"}
                                                           for i in range(3000)]}
        replies: list[Reply | BaseException] = []

        def call() -> None:
            try:
                replies.append(server.post("/rerank", slow, timeout=120))
            except BaseException as exc:  # recorded, asserted below
                replies.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while "shopfusion_requests_in_flight 4.0" not in server.request("GET", "/metrics").body.decode():
            assert time.monotonic() < deadline, "the slow requests never got in flight"
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=120)
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    # uvicorn finishes the shutdown, then re-raises the signal it caught: the exit reads as SIGTERM
    assert code in (0, -signal.SIGTERM), server.log()[-2000:]
    assert "Application shutdown complete" in server.log()
    assert len(replies) == 4 and all(isinstance(r, Reply) and r.status == 200 for r in replies), replies
    assert all(len(r.json()["hits"]) == 3000 for r in replies if isinstance(r, Reply))
    assert "Shutting down" in server.log()


def test_api_key_is_never_shown_by_config_or_repr() -> None:
    from click.testing import CliRunner

    from shopfusion.cli import main

    settings = load_settings(env={"SHOPFUSION_SERVICE_API_KEY": "hunter2-key"})
    assert settings.service.api_key == "hunter2-key"
    assert "hunter2-key" not in repr(settings) and "hunter2-key" not in json.dumps(settings.to_dict())
    result = CliRunner(env={"SHOPFUSION_SERVICE_API_KEY": "hunter2-key"}).invoke(main, ["config"])
    assert result.exit_code == 0 and "hunter2-key" not in result.output and "max_body_bytes = " in result.output


def test_two_workers_share_the_port_and_sum_their_metrics(served_index: Path, tmp_path: Path) -> None:
    # every worker process rebuilds its settings: what the command line set must reach all of them
    args = ("--workers", "2", "--threads", "3", "--api-key-env", "SF_TEST_KEY", "--log-queries")
    key = {"Authorization": "Bearer s3cret"}
    with running_server(served_index, tmp_path / "workers.log", {"SF_TEST_KEY": "s3cret"}, args) as server:
        deadline = time.monotonic() + 60  # /ready answered by one worker: wait until both have loaded
        while server.request("GET", "/metrics", headers=key).body.decode().count("shopfusion_index_info{") < 2:
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.1)
        for _ in range(6):
            assert server.post("/search", {"query": "drill"}, headers=key).status == 200
            assert server.post("/search", {"query": "drill"}).status == 401  # no worker without the key
        assert server.request("GET", "/ready").json()["request_threads"] == 3
        metrics = server.request("GET", "/metrics", headers=key).body.decode()
        assert 'shopfusion_requests_total{endpoint="/search",status="200"} 6.0' in metrics
        assert metrics.count('shopfusion_index_info{model_id="hash:32",pid=') >= 2  # one series per worker pid
        assert '"query": "drill"' in server.log() and "s3cret" not in server.log()


def test_not_ready_until_an_index_is_published(tmp_path: Path) -> None:
    """No index yet: live but not ready, work is refused with 503 + Retry-After; the first published
    version is picked up without a restart."""
    index_dir = tmp_path / "later"
    server = Server(index_dir, tmp_path / "later.log")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if server.request("GET", "/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and server.process.poll() is None, server.log()
            time.sleep(0.1)
        ready = server.request("GET", "/ready")
        assert ready.status == 503 and "shopfusion index" in ready.json()["reason"]
        refused = server.post("/search", {"query": "drill"})
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert "shopfusion index" in error(refused)["message"]
        build_index(index_dir).close()
        _wait_for_version(server, "v000001")
        assert server.post("/search", {"query": "drill"}).status == 200
    finally:
        server.stop()
