"""The one error hierarchy of shopfusion.

Every error a user can cause derives from `ShopfusionError`; its message says what went wrong and what to
do about it. The CLI prints the message and exits with `exit_code`; library code never prints or exits.

    ShopfusionError
    ├── ConfigError            bad settings or config file
    ├── MissingDependencyError an optional extra is not installed (names the pip command)
    ├── CatalogError           a catalog cannot be read at all (missing file, unknown format)
    ├── TooManyRejectsError    more records were rejected than --max-rejects allows
    ├── IndexNotFoundError     no index at the given directory
    ├── IndexStateError        the index is locked, corrupt or built with another model
    ├── QueryError             a bad query, filter or candidate list
    ├── FusionError            impossible fusion settings (weights, alpha)
    ├── BackendError           a search backend (Elasticsearch, Redis, Celery) failed or is unreachable
    └── TrainingError          bad training inputs or arguments
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


def require(module: str, extra: str):  # type: ignore[no-untyped-def]
    """Import an optional dependency or raise `MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra) from exc
