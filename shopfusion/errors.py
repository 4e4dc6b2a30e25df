"""The one error hierarchy of shopfusion, and the CLI's exit codes.

Every error a user can cause derives from `ShopfusionError`; its message says what went wrong and what to
do about it. The CLI prints the message on stderr and exits with `exit_code`; library code never prints
or exits. No input makes the CLI print a traceback: anything else is a bug.

    ShopfusionError
    ├── ConfigError            bad settings or config file
    ├── MissingDependencyError an optional extra is not installed (names the pip command)
    ├── CatalogError           a catalog cannot be read at all (missing file, unknown format, UTF-16 text,
    │                          a .gz that is not gzip, a truncated gzip stream)
    ├── TooManyRejectsError    more records were rejected than --max-rejects allows
    ├── ShrinkError            publishing would drop more live products than `index.max_shrink` allows
    ├── EmbeddingError         products could not be embedded (the run published the rest)
    ├── IndexNotFoundError     no index at the given directory
    ├── IndexStateError        the index is locked, damaged or built with another model
    ├── QueryError             a bad query (too long, not valid UTF-8), filter, limit or candidate list
    ├── FusionError            impossible fusion settings (weights, alpha)
    ├── BackendError           a search backend (Elasticsearch, Redis, Celery) failed or is unreachable
    └── TrainingError          bad training inputs or arguments

Exit codes of the `shopfusion` command (`EXIT_CODES` below; the README has the same table):

    0  success
    1  `verify` found a problem (drift or damage), or an unexpected error
    2  bad input: config, catalog file, query, filter, limits, candidates, fusion or training arguments
    3  an optional dependency is missing
    4  more records rejected than --max-rejects allows (the index is unchanged)
    5  the index is locked, damaged or incompatible (`verify --repair` or a re-index fixes damage)
    6  a backend (Elasticsearch, Redis/Celery) is unreachable or failed
    7  publishing refused: the new version would drop too many products (the index is unchanged;
       --allow-shrink publishes anyway)
    8  the run finished but some products could not be embedded (published without them; run again)
"""

from __future__ import annotations


class ShopfusionError(Exception):
    """Base class: a message that says how to fix the problem."""

    exit_code = 1


class ConfigError(ShopfusionError):
    exit_code = 2


class MissingDependencyError(ShopfusionError):
    exit_code = 3

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the optional dependency `{module}` is not installed: "
            f"install the `{extra}` extra with `pip install 'shopfusion[{extra}]'`"
        )
        self.module = module
        self.extra = extra


class CatalogError(ShopfusionError):
    exit_code = 2


class TooManyRejectsError(ShopfusionError):
    exit_code = 4


class ShrinkError(ShopfusionError):
    exit_code = 7


class EmbeddingError(ShopfusionError):
    exit_code = 8


class IndexNotFoundError(ShopfusionError):
    exit_code = 2


class IndexStateError(ShopfusionError):
    exit_code = 5


class QueryError(ShopfusionError):
    exit_code = 2


class FusionError(ShopfusionError):
    exit_code = 2


class BackendError(ShopfusionError):
    exit_code = 6


class TrainingError(ShopfusionError):
    exit_code = 2


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "verify found a problem, or an unexpected error",
    2: "bad input (config, catalog, query, filter, limits, candidates, fusion, training arguments)",
    3: "an optional dependency is missing",
    4: "too many records rejected (index unchanged)",
    5: "index locked, damaged or incompatible",
    6: "backend unreachable or failed",
    7: "publishing refused: too many products would be dropped (index unchanged)",
    8: "some products could not be embedded (the rest was published)",
}


def require(module: str, extra: str):  # type: ignore[no-untyped-def]
    """Import an optional dependency or raise `MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra) from exc
