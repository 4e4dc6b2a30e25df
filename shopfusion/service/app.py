"""The ASGI application: routes, error bodies, auth, limits, access logs, metrics and the OpenAPI document.

Built on FastAPI (Starlette underneath, served by uvicorn): see README "HTTP service" for why. Requests
go through `shopfusion.Client` (so `[limits]` apply exactly as in the CLI) on a small thread pool; the
event loop only parses, routes and writes. Every error is a JSON body
`{"error": {"status", "type", "message"}}` whose message says how to fix the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopfusion.candidates import loads_strict
from shopfusion.config import Settings, load_settings
from shopfusion.errors import (
    BackendError,
    ConfigError,
    FusionError,
    IndexNotFoundError,
    QueryError,
    ShopfusionError,
)
from shopfusion.service.metrics import CONTENT_TYPE, ServiceMetrics
from shopfusion.service.models import (
    ERROR_JSON_SCHEMA,
    RESULTS_EXAMPLE,
    RESULTS_JSON_SCHEMA,
    FiltersBody,
    RerankBody,
    SearchBody,
)
from shopfusion.service.pool import LifoThreadPool
from shopfusion.service.served import Generation, NotReadyError, ServedIndex
from shopfusion.types import CATEGORY_SEPARATOR, AttributeFilter, Filters, Results

access_log = logging.getLogger("shopfusion.access")
log = logging.getLogger("shopfusion.service")
T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
WORK_ENDPOINTS = {"/search", "/rerank"}
PROTECTED = WORK_ENDPOINTS | {"/metrics", "/attributes"}
ENDPOINTS = PROTECTED | {"/health", "/ready", "/openapi.json", "/docs"}


class ServiceState:
    """What one worker process holds: the served index, the request thread pool and the metrics."""

    def __init__(self, index_dir: str | os.PathLike[str], settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.served = ServedIndex(index_dir, settings, on_batch=self.metrics.batch_size.observe,
                                  on_swap=self._swapped)
        self.threads, self.threads_reason = request_threads(settings.service.threads, "tantivy")
        self.pool = LifoThreadPool(self.threads, thread_name_prefix="shopfusion-request")
        self.in_flight = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _swapped(self, new: Generation, old: Generation | None) -> None:
        self.metrics.serving(new.version, new.model_id)
        self.metrics.reloads.labels("initial" if old is None else "swapped").inc()
        engine = str(new.client.searcher.manifest.lexical.get("engine", "tantivy"))
        threads, reason = request_threads(self.settings.service.threads, engine)
        if (threads, reason) != (self.threads, self.threads_reason) or old is None:
            self.threads, self.threads_reason = threads, reason
            self.pool.max_workers = threads
            log.info("request threads: %d (%s)", threads, reason)

    def start(self) -> None:
        """Load the index in the background (/health answers at once, /ready once it is loaded), then
        watch the manifest for new versions."""
        self._watcher = threading.Thread(target=self._watch, name="shopfusion-index-watcher", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        interval = self.settings.service.reload_interval
        while not self._stop.is_set():
            try:
                self.served.refresh()
            except ShopfusionError:
                self.metrics.reloads.labels("failed").inc()
            except Exception:  # never let the watcher die: log and keep serving the loaded version
                log.exception("index reload failed")
                self.metrics.reloads.labels("failed").inc()
            if self.served.current is not None and interval <= 0:
                return
            self._stop.wait(interval if interval > 0 else 0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.served.close()

    async def run(self, work: Callable[[Generation], T], timing: dict[str, Any] | None = None) -> T:
        """Run `work` on the current index version in the pool, within `service.request_timeout`.
        With `timing`, records how long the request waited for a thread (`queue`) and worked (`work`),
        in seconds: the middleware sends them as a `Server-Timing` header."""
        submitted = time.perf_counter()

        def task() -> T:
            started = time.perf_counter()
            try:
                with self.served.lease() as generation:
                    return work(generation)
            finally:
                if timing is not None:
                    timing["queue"], timing["work"] = started - submitted, time.perf_counter() - started

        future = asyncio.get_running_loop().run_in_executor(self.pool, task)
        timeout = self.settings.service.request_timeout
        try:
            return await asyncio.wait_for(future, timeout if timeout > 0 else None)
        except TimeoutError:
            raise RequestTimeout(f"the request took longer than service.request_timeout = {timeout} s:"
                                 " ask for fewer candidates or a smaller k/depth, or raise"
                                 " SHOPFUSION_SERVICE_REQUEST_TIMEOUT") from None


def request_threads(configured: int, engine: str) -> tuple[int, str]:
    """How many request threads a worker runs, and why. `service.threads = 0` (the default) means auto:
    one per CPU core this process may use (at least 2), since retrieval and fusion are CPU work and more
    threads than cores only contend for the GIL (README, "HTTP service": on 2 cores, 2 threads served
    1.11-1.13x the requests/s of 4 at concurrency 16); four per core when the lexical leg is Elasticsearch,
    whose requests wait on the network."""
    if configured < 0:
        raise ConfigError(f"service.threads = {configured}: give a number of threads, or 0 for one per CPU core")
    if configured > 0:
        return configured, "service.threads"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if engine == "elasticsearch":
        return max(4, 4 * cores), f"auto: 4 per CPU core ({cores}), the lexical leg waits on Elasticsearch"
    return max(2, cores), f"auto: one per CPU core ({cores}), the work is CPU-bound"


class RequestTimeout(ShopfusionError):
    pass


class Unauthorized(ShopfusionError):
    pass


# -- error bodies ------------------------------------------------------------------------------------
STATUS: dict[type[Exception], int] = {
    QueryError: 400, FusionError: 400, ConfigError: 400, NotReadyError: 503, IndexNotFoundError: 503,
    RequestTimeout: 504, BackendError: 502, Unauthorized: 401,
}


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "type": kind, "message": message}}, status_code=status,
                        headers=headers)


def _status_of(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            parts.append(f"`{where}` is not a known field: remove it (see /docs)")
        elif error["type"] == "missing":
            parts.append(f"`{where}` is required")
        else:
            parts.append(f"`{where}`: {error['msg']} (got {error.get('input')!r:.60})")
    return "; ".join(parts)


async def _body(request: Request, model: type[B]) -> B:
    raw = await request.body()
    if not raw.strip():
        raise QueryError("the request body is empty: send a JSON object (see /docs for examples)")
    try:
        data = loads_strict(raw)
    except json.JSONDecodeError as exc:
        raise QueryError(f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column"
                         f" {exc.colno})") from None
    if not isinstance(data, dict):
        raise QueryError(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise QueryError(_validation_message(exc)) from None
    query = getattr(body, "query", None)
    if isinstance(query, str):
        request.scope.setdefault("shopfusion", {})["query"] = query
    return body


def _filters(body: FiltersBody | None) -> Filters | None:
    if body is None:
        return None
    category = body.category
    if isinstance(category, str):
        category = [p.strip() for p in category.split(CATEGORY_SEPARATOR.strip()) if p.strip()]
    attributes = tuple(
        AttributeFilter(name, values=tuple(str(v) for v in spec)) if isinstance(spec, list)
        else AttributeFilter(name, min=spec.min, max=spec.max, below=spec.below)
        for name, spec in body.attributes.items())
    return Filters(category=tuple(category or ()), brands=tuple(body.brands), price_min=body.price_min,
                   price_max=body.price_max, price_below=body.price_below, attributes=attributes)


def _encoded(results: Results) -> bytes:
    """`Results.to_dict()` as it is (no response model: new fields pass through), encoded with orjson.
    Called on the request thread right after the work, while the results are still in its core's cache
    (on the event loop, after a full-index scan, encoding ran cold: README, "HTTP service")."""
    import orjson

    return orjson.dumps(results.to_dict(), option=orjson.OPT_NON_STR_KEYS)


def _results(body: bytes, generation_version: str | None = None) -> Response:
    headers = {"X-Index-Version": generation_version} if generation_version else None
    return Response(body, media_type="application/json", headers=headers)


def _server_timing(recorded: dict[str, Any], start: float) -> bytes:
    """`Server-Timing` (W3C): milliseconds waiting for a request thread, working (including encoding the
    response), and in all so far, so a client can tell network from service time."""
    parts = [f"{name};dur={recorded[name] * 1000:.3f}" for name in ("queue", "work") if name in recorded]
    parts.append(f"total;dur={(time.perf_counter() - start) * 1000:.3f}")
    return ", ".join(parts).encode()


# -- middleware ----------------------------------------------------------------------------------------
class BodyTooLarge(Exception):
    pass


class ServiceMiddleware:
    """Pure ASGI (no per-request task): auth, body size, load shedding, metrics, structured access log."""

    def __init__(self, app: Any, state: ServiceState) -> None:
        self.app = app
        self.state = state
        service = state.settings.service
        self.key = service.api_key.encode() if service.api_key else None
        self.max_body = service.max_body_bytes
        self.max_inflight = service.max_inflight
        self.log_queries = service.log_queries

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        info: dict[str, Any] = {"status": 500, "bytes_in": 0}
        scope.setdefault("shopfusion", {})

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode()),
                                      (b"server-timing", _server_timing(scope["shopfusion"], start))]
            await send(message)

        async def receive_wrapper() -> dict[str, Any]:
            message = await receive()
            info["bytes_in"] += len(message.get("body", b""))
            if info["bytes_in"] > self.max_body:
                raise BodyTooLarge
            return message

        counted = path in WORK_ENDPOINTS
        try:
            refusal = self._refuse(path, headers)
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
                return
            if counted:
                self.state.in_flight += 1
                self.state.metrics.in_flight.inc()
            try:
                await self.app(scope, receive_wrapper, send_wrapper)
            except BodyTooLarge:
                await self._too_large()(scope, receive, send_wrapper)
            finally:
                if counted:
                    self.state.in_flight -= 1
                    self.state.metrics.in_flight.dec()
        finally:
            seconds = time.perf_counter() - start
            self.state.metrics.observe(endpoint, info["status"], seconds)
            self._log(scope, path, info, seconds, request_id)

    def _refuse(self, path: str, headers: dict[bytes, bytes]) -> JSONResponse | None:
        if self.key is not None and path in PROTECTED:
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                return error_response(401, "Unauthorized", "this endpoint needs `Authorization: Bearer <key>`"
                                      " with the key in service.api_key (SHOPFUSION_SERVICE_API_KEY)",
                                      {"WWW-Authenticate": 'Bearer realm="shopfusion"'})
        if path in WORK_ENDPOINTS:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return self._too_large()
            if self.state.in_flight >= self.max_inflight:
                return error_response(503, "Overloaded", f"{self.state.in_flight} requests are being answered"
                                      f" (service.max_inflight = {self.max_inflight}): retry after a moment",
                                      {"Retry-After": "1"})
        return None

    def _too_large(self) -> JSONResponse:
        return error_response(413, "PayloadTooLarge", f"the request body is larger than service.max_body_bytes ="
                              f" {self.max_body}: send fewer candidates or shorter texts (or raise"
                              " SHOPFUSION_SERVICE_MAX_BODY_BYTES)")

    def _log(self, scope: dict[str, Any], path: str, info: dict[str, Any], seconds: float,
             request_id: str) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        record: dict[str, Any] = {
            "event": "request", "request_id": request_id, "method": scope["method"], "path": path,
            "status": info["status"], "duration_ms": round(seconds * 1000, 3), "bytes_in": info["bytes_in"],
            "client": client[0] if client else None,
        }
        query = scope["shopfusion"].get("query")
        if query is not None:
            record["query_chars"] = len(query)
            if self.log_queries:
                record["query"] = query
        current = self.state.served.current
        if current is not None:
            record["index_version"] = current.version
        access_log.info(json.dumps(record, ensure_ascii=False))


# -- the application ---------------------------------------------------------------------------------
def create_app(index_dir: str | os.PathLike[str], settings: Settings | None = None, *,
               config: str | os.PathLike[str] | None = None) -> FastAPI:
    """The service for one index directory. Cheap: the index loads when the server starts it.

    >>> app = create_app("var/demo-index")          # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app)            # doctest: +SKIP
    """
    from shopfusion import __version__

    settings = settings or load_settings(config)
    state = ServiceState(Path(index_dir), settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, state.stop)

    app = FastAPI(title="shopfusion", version=__version__, lifespan=lifespan, redoc_url=None,
                  description=("Hybrid product search (BM25 + dense vectors fused per query intent) and"
                               " re-ranking of other engines' results. Bodies of /search and /rerank are"
                               " `Results` documents, the same as `shopfusion search --json`."))
    app.state.shopfusion = state

    @app.exception_handler(ShopfusionError)
    async def shopfusion_error(_: Request, exc: ShopfusionError) -> JSONResponse:
        status = _status_of(exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: "no such endpoint: see /docs (POST /search, POST /rerank, GET /attributes, /health, /ready,"
                        " /metrics)",
                   405: "wrong method: /search and /rerank take POST, the others GET"}.get(exc.status_code,
                                                                                       str(exc.detail))
        return error_response(exc.status_code, "HTTPError", message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, type(exc).__name__, "internal error: see the service log")

    work_docs = {
        "responses": {
            "200": {"description": "A Results document.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Results"}, "example": RESULTS_EXAMPLE}}},
            **{str(code): {"description": text, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}} for code, text in (
                (400, "A bad request: the message says how to fix it."), (401, "Missing or wrong API key."),
                (413, "Body larger than service.max_body_bytes."), (503, "Not ready yet, or overloaded."),
                (504, "Took longer than service.request_timeout."))},
        },
    }

    def body_doc(name: str, model: type[BaseModel]) -> dict[str, Any]:
        extra: Any = model.model_config.get("json_schema_extra") or {}
        examples: list[Any] = extra.get("examples", [])
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{name}"},
            "examples": {f"example{i + 1}": {"value": e} for i, e in enumerate(examples)}}}}, **work_docs}

    @app.post("/search", summary="Hybrid search", openapi_extra=body_doc("SearchBody", SearchBody))
    async def search(request: Request) -> Response:
        """Search the served index: BM25 and dense retrieval fused per query intent."""
        body = await _body(request, SearchBody)

        def work(generation: Generation) -> tuple[bytes, str]:
            return _encoded(generation.client.search(
                body.query, k=body.k, filters=_filters(body.filters), fusion=body.fusion, alpha=body.alpha,
                normalization=body.normalization, rrf_k=body.rrf_k, depth=body.depth, mode=body.mode,
                explain=body.explain, facets=body.facets or (), facet_size=body.facet_size, sort=body.sort,
                page=body.page, offset=body.offset)), generation.version

        encoded, version = await state.run(work, request.scope["shopfusion"])
        return _results(encoded, version)

    @app.post("/rerank", summary="Re-rank another engine's results",
              openapi_extra=body_doc("RerankBody", RerankBody))
    async def rerank(request: Request) -> Response:
        """Re-order a candidate list, an Elasticsearch/OpenSearch `_search` response or a Solr response
        for the query; candidates that cannot be scored are listed in `unscored`."""
        body = await _body(request, RerankBody)
        if body.candidates is None:
            raise QueryError("`candidates` is required: a list of ids/objects or a search response body")

        def work(generation: Generation) -> tuple[bytes, str]:
            return _encoded(generation.client.rerank(
                body.query, body.candidates, fusion=body.fusion, alpha=body.alpha,
                normalization=body.normalization, rrf_k=body.rrf_k, explain=body.explain,
                engine_weight=body.engine_weight, fields=body.fields)), generation.version

        encoded, version = await state.run(work, request.scope["shopfusion"])
        return _results(encoded, version)

    @app.get("/attributes", summary="What the served index can filter, facet and sort on")
    async def attributes(values: int = 5) -> JSONResponse:
        """The attribute catalog of the served version (`shopfusion attributes --json`): built-in fields
        and every catalog attribute with its kind, product count, distinct values and the `values` most
        frequent ones."""
        if not 0 <= values <= 1000:
            raise QueryError(f"values must be from 0 to 1000, got {values}")

        def work(generation: Generation) -> dict[str, Any]:
            catalog = generation.client.searcher.catalog
            fields = sorted(catalog.fields.values(), key=lambda f: (not f.builtin, -f.products, f.name))
            return {"index_version": generation.version, "products": catalog.products,
                    "fields": [info.to_dict(values) for info in fields]}

        return JSONResponse(await state.run(work))

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        """200 while the process serves HTTP, loaded or not (use /ready for traffic)."""
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness", responses={503: {"description": "Not loaded (yet)."}})
    async def ready() -> JSONResponse:
        """200 once an index version and its models are loaded; 503 (with the reason) before."""
        current = state.served.current
        if current is None:
            return JSONResponse({"ready": False, "reason": state.served.error or "loading the index and models"},
                                status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"ready": True, "index_version": current.version, "model_id": current.model_id,
                             "loaded_at": current.loaded_at, "request_threads": state.threads})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Request counts and latency histograms per endpoint, the index version and model id."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (SearchBody, RerankBody):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            components["Results"] = RESULTS_JSON_SCHEMA
            components["Error"] = ERROR_JSON_SCHEMA
            if state.settings.service.api_key:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path in PROTECTED:
                    for operation in schema["paths"].get(path, {}).values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(ServiceMiddleware, state=state)  # type: ignore[arg-type]
    return app


def app_from_environment() -> FastAPI:
    """The factory each `uvicorn --workers N` process calls (`shopfusion serve` sets the variables)."""
    from shopfusion.service.server import configure_logging

    configure_logging()  # a worker is a new interpreter: without this its access log would go nowhere
    index_dir = os.environ.get("SHOPFUSION_SERVE_INDEX") or os.environ.get("SHOPFUSION_INDEX")
    if not index_dir:
        raise ConfigError("set SHOPFUSION_SERVE_INDEX (or SHOPFUSION_INDEX) to the index directory to serve")
    return create_app(index_dir, config=os.environ.get("SHOPFUSION_CONFIG") or None)
