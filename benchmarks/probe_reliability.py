"""Reliability probes (issue 14): hostile input, corruption and service outages, each run as an operator
would (the real `shopfusion` command in a subprocess: exit code, stderr, files on disk), with the
expected and the observed behaviour printed as a table.

    python benchmarks/probe_reliability.py                # the probes that need no service (about a minute)
    python benchmarks/probe_reliability.py --services     # also Redis and Elasticsearch outages (a few minutes;
                                                          # starts a private Redis and Elasticsearch node)
    python benchmarks/probe_reliability.py --only 1,7     # some probes

The data is made here (the fast hashing encoder, `hash:32`, no model download); nothing is read from
../shared. Results: a Markdown table on stdout and `benchmarks/results/reliability_probes.json`.
Probes owned by other issues (filters: 13, candidate files: 11) are run too and labelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "PYTHONPATH": str(REPO), "SHOPFUSION_INDEX_MODEL": "hash:32", "SHOPFUSION_SEARCH_POLICY": "none",
       "SHOPFUSION_SEARCH_INTENT_MODEL": "none", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
for key in [k for k in ENV if k.startswith(("SHOPFUSION_CELERY_", "SHOPFUSION_ELASTICSEARCH_"))]:
    ENV.pop(key)


@dataclasses.dataclass
class Outcome:
    ok: bool
    observed: str


@dataclasses.dataclass
class Probe:
    number: int
    area: str
    probe: str
    expected: str
    run: Callable[[Path], Outcome]
    owner: str = "14"
    services: bool = False


def sh(*args: str | bytes, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`shopfusion ARGS` in a subprocess (bytes arguments reach argv as they are)."""
    command: list[str | bytes] = [sys.executable, "-m", "shopfusion.cli", *args]
    proc = subprocess.run(command, env=env or ENV, capture_output=True, timeout=timeout, cwd=REPO)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def said(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [""])[-1]
    return f"exit {proc.returncode}: {text[:150]}"


def expect(proc: subprocess.CompletedProcess[str], code: int, fragment: str = "") -> Outcome:
    ok = proc.returncode == code and fragment in (proc.stdout + proc.stderr) and "Traceback" not in proc.stderr
    return Outcome(ok, said(proc))


def catalog(root: Path, n: int = 12, name: str = "catalog.jsonl") -> Path:
    from tests.plugins.catalogs import TINY

    records = []
    for i in range(n // len(TINY) + 1):
        for product in TINY:
            record = product.to_dict()
            record["id"] = f"{product.id}-{i:03d}"
            records.append(record)
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:n]))
    return path


def built(root: Path, n: int = 120) -> Path:
    index = root / "idx"
    if not (index / "manifest.json").exists():
        proc = sh("index", str(catalog(root, n)), "--index", str(index))
        assert proc.returncode == 0, proc.stderr
    return index


def version_dir(index: Path) -> Path:
    return index / "versions" / json.loads((index / "manifest.json").read_text())["version"]


def index_one(root: Path, name: str, content: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
    path = root / name
    path.write_bytes(content)
    return sh("index", str(path), "--index", str(root / f"idx-{name}"), "--json", *extra)


def rejects(root: Path, name: str) -> list[dict]:
    path = root / f"idx-{name}" / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the probes ------------------------------------------------------------------------------------------
def p_empty_replace(root: Path) -> Outcome:
    index = built(root)
    before = (index / "manifest.json").read_bytes()
    results = []
    for name, content in (("empty.jsonl", b""), ("header.csv", b"id,title\n")):
        (root / name).write_bytes(content)
        results.append(sh("index", str(root / name), "--index", str(index), "--replace"))
    ok = all(r.returncode == 7 for r in results) and (index / "manifest.json").read_bytes() == before
    return Outcome(ok, said(results[0]) + "; header-only CSV: exit " + str(results[1].returncode))


def p_utf16(root: Path) -> Outcome:
    lines = "".join(json.dumps({"id": f"a{i}", "title": "Drill"}) + "\n" for i in range(21))
    return expect(index_one(root, "utf16.jsonl", lines.encode("utf-16")), 2, "UTF-16")


def p_rollback(root: Path) -> Outcome:
    index = built(root)
    small = catalog(root, 20, "small.jsonl")
    shrink = sh("index", str(small), "--index", str(index), "--replace")
    forced = sh("index", str(small), "--index", str(index), "--replace", "--allow-shrink")
    listed = sh("versions", "--index", str(index), "--json")
    back = sh("rollback", "--index", str(index))
    counts = [v["products"] for v in json.loads(listed.stdout)["versions"]] if listed.returncode == 0 else []
    ok = shrink.returncode == 7 and forced.returncode == 0 and back.returncode == 0 and "120 products" in back.stdout
    return Outcome(ok, f"120 -> 20 without --allow-shrink: exit {shrink.returncode}; versions {counts};"
                       f" rollback: {back.stdout.strip()[-60:]}")


def _reject_probe(name: str, content: bytes, fragment: str) -> Callable[[Path], Outcome]:
    """The bad record on line 1, a good one on line 2: one reject with its reason, the rest indexed."""
    def run(root: Path) -> Outcome:
        proc = index_one(root, name, content + json.dumps({"id": "ok", "title": "fine"}).encode() + b"\n")
        found = [r["reason"] for r in rejects(root, name)]
        ok = proc.returncode == 0 and any(fragment in r for r in found) and "Traceback" not in proc.stderr
        return Outcome(ok, f"exit {proc.returncode}; reject: {(found or ['none'])[0][:110]}")
    return run


def p_csv_cell(root: Path) -> Outcome:
    proc = index_one(root, "big.csv", b"id,title,description\n1,x," + b"a" * 140_000 + b"\n2,ok,fine\n")
    found = [r["reason"] for r in rejects(root, "big.csv")]
    ok = proc.returncode == 0 and json.loads(proc.stdout)["added"] == 1 and "max_field_chars" in found[0]
    return Outcome(ok, f"exit {proc.returncode}; row 2 added, row 1: {found[0][:90]}")


def p_not_gzip(root: Path) -> Outcome:
    return expect(index_one(root, "c.jsonl.gz", b'{"id": "a", "title": "x"}\n'), 2, "not gzip-compressed")


def p_truncated_gzip(root: Path) -> Outcome:
    data = gzip.compress(b"".join(json.dumps({"id": i, "title": f"t {i}"}).encode() + b"\n" for i in range(3000)))
    return expect(index_one(root, "t.jsonl.gz", data[: len(data) // 2]), 2, "truncated")


def p_query_utf8(root: Path) -> Outcome:
    index = built(root)
    a = sh("search", b"dri\xffll", "--index", str(index))
    b = sh("search", b"a\xed\xa0\x80b", "--index", str(index))
    return Outcome(a.returncode == b.returncode == 2 and "UTF-8" in a.stderr, said(a))


def p_query_surrogate(root: Path) -> Outcome:
    from shopfusion.client import Client
    from shopfusion.errors import QueryError

    try:
        Client(built(root)).search("dri\ud800ll")
    except QueryError as exc:
        return Outcome("lone surrogate" in str(exc), f"QueryError (exit {exc.exit_code}): {str(exc)[:100]}")
    return Outcome(False, "no error")


def p_candidates_binary(root: Path) -> Outcome:
    path = root / "cands.bin"
    path.write_bytes(os.urandom(4096))
    return expect(sh("rerank", "drill", "--index", str(built(root)), "--candidates", str(path)), 2)


def p_candidates_deep(root: Path) -> Outcome:
    path = root / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return expect(sh("rerank", "drill", "--index", str(built(root)), "--candidates", str(path)), 2)


def p_huge_k(root: Path) -> Outcome:
    index = built(root)
    runs = [sh("search", "drill", "--index", str(index), flag, value)
            for flag, value in (("--k", str(2**31)), ("--depth", str(2**31)), ("--k", str(10**23)))]
    ok = all(r.returncode == 2 and "limits.max_" in r.stderr for r in runs)
    return Outcome(ok, "; ".join(f"exit {r.returncode}" for r in runs) + f": {runs[0].stderr.strip()[:80]}")


def p_client_k(root: Path) -> Outcome:
    from shopfusion.client import Client
    from shopfusion.errors import QueryError

    try:
        Client(built(root)).search("drill", k=2**31)
    except QueryError as exc:
        return Outcome("max_k" in str(exc), f"QueryError: {str(exc)[:100]}")
    return Outcome(False, "no error")


def p_long_query(root: Path) -> Outcome:
    return expect(sh("search", "drill " * 20_000, "--index", str(built(root))), 2, "max_query_chars")


def p_many_candidates(root: Path) -> Outcome:
    path = root / "many.jsonl"
    path.write_text("".join(json.dumps({"id": f"x{i}", "title": f"drill {i}"}) + "\n" for i in range(100_000)))
    return expect(sh("rerank", "drill", "--index", str(built(root)), "--candidates", str(path)), 2, "max_candidates")


def p_ids(root: Path) -> Outcome:
    content = (json.dumps({"id": " padded ", "title": "one"}) + "\n" + json.dumps({"id": "padded", "title": "two"})
               + "\n").encode()
    proc = index_one(root, "ids.jsonl", content)
    summary = json.loads(proc.stdout)
    return Outcome(summary["added"] == 2 and summary["duplicates"] == 0,
                   f"added {summary['added']}, duplicates {summary['duplicates']}")


def p_bom(root: Path) -> Outcome:
    proc = index_one(root, "bom.jsonl", b"\xef\xbb\xbf" + json.dumps({"id": "a", "title": "x"}).encode() + b"\n")
    summary = json.loads(proc.stdout)
    return Outcome(summary["added"] == 1 and summary["rejected"] == 0, f"added {summary['added']}, rejected"
                                                                       f" {summary['rejected']}")


def p_parquet(root: Path) -> Outcome:
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": ["a"], "title": ["Drill"],
                      "price": pa.array([decimal.Decimal("12.50")], pa.decimal128(10, 2)),
                      "attributes": pa.array([[("color", "red")]], pa.map_(pa.string(), pa.string()))})
    pq.write_table(table, root / "p.parquet")
    index = root / "idx-parquet"
    proc = sh("index", str(root / "p.parquet"), "--index", str(index), "--json")
    hits = json.loads(sh("search", "drill", "--index", str(index), "--json").stdout)["hits"]
    product = hits[0]["product"] if hits else {}
    ok = product.get("price") == 12.5 and product.get("attributes") == {"color": "red"}
    return Outcome(ok and proc.returncode == 0, f"price {product.get('price')}, attributes {product.get('attributes')}")


def p_filter(value: str) -> Callable[[Path], Outcome]:
    def run(root: Path) -> Outcome:
        return expect(sh("search", "drill", "--index", str(built(root)), "--filter", value), 2)
    return run


def p_rerank_scores(root: Path) -> Outcome:
    path = root / "nan.json"
    path.write_text('[{"id": "p01-000", "score": NaN}, {"id": "p02-000", "score": Infinity}, {"id": "p03-000", "score": true}]')
    return expect(sh("rerank", "drill", "--index", str(built(root)), "--candidates", str(path), "--json"), 2)


def p_json_nan(root: Path) -> Outcome:
    from shopfusion.serialization import dumps

    text = dumps({"score": float("nan"), "legs": [float("inf")]}, indent=None)
    return Outcome("NaN" not in text and "Infinity" not in text, text)


def _copy(root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(built(root), target)
    return target


def p_flipped(root: Path) -> Outcome:
    index = _copy(root, "flipped")
    path = version_dir(index) / "vectors" / "vectors.npy"
    data = bytearray(path.read_bytes())
    for offset in (300, 5000, 9000):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    verify = sh("verify", "--index", str(index))
    again = sh("index", str(root / "catalog.jsonl"), "--index", str(index), "--json")
    summary = json.loads(again.stdout) if again.returncode == 0 else {}
    ok = verify.returncode == 1 and "vectors/vectors.npy" in verify.stdout and summary.get("repaired") == 3
    return Outcome(ok, f"verify exit {verify.returncode} (names vectors/vectors.npy, 3 rows); re-index: repaired"
                       f" {summary.get('repaired')}, unchanged {summary.get('unchanged')}, embedded {summary.get('embedded')}")


def p_shuffled(root: Path) -> Outcome:
    import random

    index = _copy(root, "shuffled")
    path = version_dir(index) / "vectors" / "ids.json"
    ids = json.loads(path.read_text())
    random.Random(0).shuffle(ids)
    path.write_text(json.dumps(ids))
    search = sh("search", "drill", "--index", str(index))
    verify = sh("verify", "--index", str(index))
    repair = sh("verify", "--index", str(index), "--repair")
    ok = search.returncode == 5 and verify.returncode == 1 and repair.returncode == 0
    return Outcome(ok, f"search exit {search.returncode}, verify exit {verify.returncode} (shuffled), repair exit"
                       f" {repair.returncode}")


def p_truncated(root: Path) -> Outcome:
    codes = []
    for target in ("vectors/vectors.npy", "vectors/ids.json", "products.sqlite"):
        index = _copy(root, "trunc-" + target.replace("/", "-"))
        path = version_dir(index) / target
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        runs = [sh("search", "drill", "--index", str(index)), sh("verify", "--index", str(index)),
                sh("verify", "--index", str(index), "--repair"), sh("search", "drill", "--index", str(index))]
        if any("Traceback" in r.stderr for r in runs):
            return Outcome(False, f"{target}: traceback")
        codes.append((target, [r.returncode for r in runs]))
    ok = all(c == [5, 1, 0, 0] for _, c in codes)
    return Outcome(ok, "search, verify, verify --repair, search: " + "; ".join(f"{t} {c}" for t, c in codes))


def p_bad_manifest(root: Path) -> Outcome:
    index = _copy(root, "badmanifest")
    (index / "manifest.json").write_text(json.dumps({"version": "../../..", "format": 1}))
    before = sorted(p.name for p in root.parent.iterdir())
    search = sh("search", "drill", "--index", str(index))
    outside = sorted(p.name for p in root.parent.iterdir()) != before
    repair = sh("verify", "--index", str(index), "--repair")
    ok = search.returncode == 5 and not outside and repair.returncode == 0
    return Outcome(ok, f"{said(search)[:110]}; created outside: {outside}; repair exit {repair.returncode}")


def p_pickle(root: Path) -> Outcome:
    from shopfusion.encoders import check_safetensors
    from shopfusion.errors import ConfigError

    model = root / "model"
    model.mkdir(exist_ok=True)
    (model / "model.safetensors").write_bytes(b"{}")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    try:
        check_safetensors(model)
    except ConfigError as exc:
        return Outcome(True, f"ConfigError: {str(exc)[:100]}")
    return Outcome(False, "accepted")


def p_redaction(root: Path) -> Outcome:
    from shopfusion.config import redact_url

    forms = ["redis://:p/ss@cache:6379/0", "redis://:p@ss@cache:6379/0", "http://es:9200/?password=p%40ss",
             "http://es:9200/?api_key=k3y", "redis://:a@h1/0;redis://:b/c@h2/0"]
    shown = [redact_url(u) for u in forms]
    leaked = [s for s in shown if any(secret in s for secret in ("p/ss", "p@ss", "p%40ss", "k3y", ":a@", "b/c"))]
    return Outcome(not leaked, f"{len(forms)} forms masked, e.g. {shown[0]}, {shown[2]}")


# -- probes with services ----------------------------------------------------------------------------------------
def _redis_outage(root: Path, down: float, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    from shopfusion.config import CelerySettings
    from tests.plugins.redis import RedisServer, settings_env

    run = root / f"redis-outage-{uuid.uuid4().hex[:6]}"
    server = RedisServer(run / "redis")
    url = server.start()
    celery = CelerySettings(broker_url=url + "/0", result_backend=url + "/1", queue=f"probe-{run.name}",
                            shard_dir=str(run / "shards"), max_retries=2, task_time_limit=120, outage_timeout=timeout)
    env = {**ENV, **settings_env(celery), "SHOPFUSION_WORKER_TEST_SLOW_MARKER": "slowpoke",
           "SHOPFUSION_WORKER_TEST_SLOW_SECONDS": "5", "PYTHONUNBUFFERED": "1"}
    log = run / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.worker_main", "worker", "--concurrency=1",
                               f"--queues={celery.queue}", "--loglevel=INFO", "--without-gossip", "--without-mingle"],
                              env=env, cwd=REPO,
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: b" ready." in log.read_bytes(), "the Celery worker did not start")
        records = [{"id": f"p{n:05d}", "title": f"product {n}" + (" slowpoke" if n == 1500 else "")} for n in range(2000)]
        cat = run / "catalog.jsonl"
        cat.write_text("".join(json.dumps(r) + "\n" for r in records))
        cli_env = {k: v for k, v in env.items() if not k.startswith("SHOPFUSION_WORKER_TEST")}
        cli_env["SHOPFUSION_INDEX_EXECUTOR"] = "celery"
        result: dict[str, subprocess.CompletedProcess[str]] = {}
        thread = threading.Thread(target=lambda: result.update(proc=sh(
            "index", str(cat), "--index", str(run / "idx"), "--json", env=cli_env)))
        thread.start()
        _wait(lambda: bool(list((run / "shards").glob("*.slow"))) or not thread.is_alive(), "no batch started")
        server.stop()
        stopped = time.monotonic()
        time.sleep(down)
        server.start()
        thread.join()
        return result["proc"], time.monotonic() - stopped
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a warm shutdown waiting on its broker reconnect loop
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        server.stop()


def _wait(condition: Callable[[], bool], failure: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.05)


def p_redis_transient(root: Path) -> Outcome:
    proc, _ = _redis_outage(root, 20, 120)
    summary = json.loads(proc.stdout) if proc.returncode == 0 else {}
    ok = proc.returncode == 0 and summary.get("embedding_failed") == 0 and summary.get("rejected") == 0
    return Outcome(ok, f"exit {proc.returncode}; added {summary.get('added')}, rejected {summary.get('rejected')},"
                       f" not embedded {summary.get('embedding_failed')}")


def p_redis_long(root: Path) -> Outcome:
    proc, _ = _redis_outage(root, 60, 15)
    ok = proc.returncode == 6 and "outage_timeout = 15" in proc.stderr
    start = max(0, proc.stderr.find("has been unreachable"))
    return Outcome(ok, f"exit {proc.returncode} while Redis was still down: ...{proc.stderr[start:start + 80]}")


def p_es_down(root: Path) -> Outcome:
    import socket

    from tests.plugins.elasticsearch import DisposableNode

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = os.environ.get("SHOPFUSION_ES_RUN_DIR") or str(Path.home() / ".cache/shopfusion/elasticsearch/run")
    node = DisposableNode(Path(base).parent / f"run-probe-{uuid.uuid4().hex[:6]}", port)
    node.start()
    try:
        env = {**ENV, "SHOPFUSION_INDEX_LEXICAL": "elasticsearch", "SHOPFUSION_ELASTICSEARCH_HOSTS": node.url,
               "SHOPFUSION_ELASTICSEARCH_ANALYZER": "standard", "SHOPFUSION_ELASTICSEARCH_MAX_RETRIES": "1"}
        index = root / "idx-es"
        assert sh("index", str(catalog(root, 24, "es.jsonl")), "--index", str(index), env=env).returncode == 0
        node.stop()
        hybrid = sh("search", "cordless drill", "--index", str(index), "--json", env=env)
        failing = sh("search", "cordless drill", "--index", str(index), env={**env, "SHOPFUSION_SEARCH_ON_LEG_FAILURE": "fail"})
        data = json.loads(hybrid.stdout) if hybrid.returncode == 0 else {}
        ok = bool(data.get("hits")) and "lexical leg is down" in " ".join(data.get("warnings", [])) and failing.returncode == 6
        return Outcome(ok, f"hybrid: exit {hybrid.returncode}, {len(data.get('hits', []))} hits, warning"
                           f" '{(data.get('warnings') or [''])[0][:60]}...'; on_leg_failure=fail: exit {failing.returncode}")
    finally:
        node.stop()
        shutil.rmtree(node.run_dir, ignore_errors=True)


PROBES = [
    Probe(1, "shrink", "`index EMPTY --replace` (empty file, header-only CSV) over 120 products", "exit 7, index unchanged", p_empty_replace),
    Probe(2, "input", "UTF-16 export (21 lines)", "exit 2: re-export as UTF-8", p_utf16),
    Probe(3, "rollback", "120 -> 20 products with --replace; `versions`; `rollback`", "exit 7 without --allow-shrink; rollback restores 120", p_rollback),
    Probe(4, "input", "deeply nested JSON line", "one reject with a reason", _reject_probe("n.jsonl", b'{"id":"a","title":"x","attributes":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "nested too deeply")),
    Probe(5, "input", "400-digit price", "reject: too large", _reject_probe("p.jsonl", b'{"id":"a","title":"x","price":' + b"9" * 400 + b"}\n", "too large")),
    Probe(6, "input", "CSV cell over 128 KB", "read; judged by index.max_field_chars", p_csv_cell),
    Probe(7, "input", "a `.gz` that is not gzip", "exit 2: not gzip-compressed", p_not_gzip),
    Probe(8, "input", "truncated gzip", "exit 2: truncated after line N", p_truncated_gzip),
    Probe(9, "query", "query with invalid UTF-8 bytes (command line)", "exit 2: not valid UTF-8", p_query_utf8),
    Probe(10, "query", "query with a lone surrogate (Client)", "QueryError (exit 2)", p_query_surrogate),
    Probe(11, "query", "binary candidates file", "exit 2", p_candidates_binary, owner="11"),
    Probe(12, "query", "100k-deep candidates file", "exit 2", p_candidates_deep, owner="11"),
    Probe(13, "limits", "`--k`/`--depth` 2**31, `--k` 10**23", "exit 2 naming limits.max_k / max_depth", p_huge_k),
    Probe(14, "limits", "`Client.search(k=2**31)`", "QueryError naming max_k", p_client_k),
    Probe(15, "limits", "100 KB query", "exit 2: limits.max_query_chars", p_long_query),
    Probe(16, "limits", "re-rank 100k candidates with titles", "exit 2: limits.max_candidates", p_many_candidates),
    Probe(17, "values", "price \"12,50\"", "reject: ambiguous", _reject_probe("c.jsonl", b'{"id":"a","title":"x","price":"12,50"}\n', "ambiguous")),
    Probe(18, "values", "ids \" padded \" and \"padded\"", "two products", p_ids),
    Probe(19, "values", "UTF-8 BOM before line 1", "line 1 indexed", p_bom),
    Probe(20, "values", "Parquet DECIMAL price, MAP attributes", "read exactly", p_parquet),
    Probe(21, "values", "`--filter price=nan`", "exit 2", p_filter("price=nan"), owner="13"),
    Probe(22, "values", "`--filter brand=`", "exit 2", p_filter("brand="), owner="13"),
    Probe(23, "values", "rerank scores NaN, Infinity, true", "exit 2", p_rerank_scores, owner="11"),
    Probe(24, "values", "`--json` with a NaN or Infinity value", "null, never a bare NaN", p_json_nan),
    Probe(25, "corruption", "flipped bytes in vectors.npy; verify; re-index", "verify exit 1 naming the file; re-index re-embeds the 3 rows", p_flipped),
    Probe(26, "corruption", "shuffled vectors/ids.json", "search exit 5; verify exit 1; repair exit 0", p_shuffled),
    Probe(27, "corruption", "truncated vectors.npy / ids.json / products.sqlite", "search 5, verify 1, repair 0, search 0", p_truncated),
    Probe(28, "corruption", "manifest `version` of `../../..`", "exit 5, nothing created outside; repair restores", p_bad_manifest),
    Probe(29, "security", "pytorch_model.bin beside model.safetensors", "refused", p_pickle),
    Probe(30, "security", "URL credentials: `/` or `@` in the password, `?password=`, `?api_key=`, several URLs", "masked", p_redaction),
    Probe(31, "outage", "Redis stopped 20 s mid-run (Celery executor)", "exit 0, no product rejected or failed", p_redis_transient, services=True),
    Probe(32, "outage", "Redis stopped 60 s, celery.outage_timeout = 15", "exit 6 while Redis is still down", p_redis_long, services=True),
    Probe(33, "outage", "Elasticsearch stopped, hybrid search", "dense-leg answer + warning; exit 6 with on_leg_failure=fail", p_es_down, services=True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", action="store_true", help="also run the Redis and Elasticsearch outage probes")
    parser.add_argument("--only", help="comma-separated probe numbers")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "reliability_probes.json"))
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(",")} if args.only else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="sf-probes-") as tmp:
        root = Path(tmp) / "work"
        root.mkdir()
        for probe in PROBES:
            if (only and probe.number not in only) or (probe.services and not args.services and not only):
                continue
            started = time.monotonic()
            try:
                outcome = probe.run(root)
            except Exception as exc:  # a probe that breaks is a failed probe, reported like the others
                outcome = Outcome(False, f"probe error: {type(exc).__name__}: {exc}"[:200])
            rows.append({**{k: v for k, v in dataclasses.asdict(probe).items() if k != "run"},
                         "observed": outcome.observed, "pass": outcome.ok,
                         "seconds": round(time.monotonic() - started, 1)})
            print(f"probe {probe.number:2d} {'pass' if outcome.ok else 'FAIL'}: {outcome.observed}", file=sys.stderr)
    print("| # | area | probe | expected | observed | result |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        owner = "" if row["owner"] == "14" else f" (issue {row['owner']})"
        observed = row["observed"].replace("|", "/")
        print(f"| {row['number']} | {row['area']} | {row['probe']}{owner} | {row['expected']} | {observed} |"
              f" {'pass' if row['pass'] else '**FAIL**'} |")
    passed = sum(r["pass"] for r in rows)
    print(f"\n{passed} of {len(rows)} probes pass")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"probes": rows, "passed": passed, "total": len(rows)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
