"""`shopfusion serve`: search and re-ranking over HTTP for other engines and services.

`create_app(index_dir)` builds the ASGI application (FastAPI on uvicorn): `POST /search`, `POST /rerank`,
`GET /health`, `GET /ready`, `GET /metrics` and the OpenAPI document at `/openapi.json` (`/docs`).
Modules: `app` (routes, errors, auth, limits, access log), `served` (the loaded index and its hot swap),
`batching` (micro-batched query encodes), `metrics` (Prometheus), `models` (request bodies and the
response schema), `server` (process start-up, workers, graceful shutdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopfusion.service.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from shopfusion.service.app import create_app

        return create_app
    raise AttributeError(name)


__all__ = ["create_app"]
