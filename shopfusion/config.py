"""Settings: one TOML file plus environment variables, read by the CLI and the Python client alike.

Precedence, lowest first: the defaults below, the config file (`--config FILE`, else `$SHOPFUSION_CONFIG`,
else `./shopfusion.toml` when present), environment variables `SHOPFUSION_<SECTION>_<KEY>` (for example
`SHOPFUSION_SEARCH_ALPHA=0.3`), then keyword arguments of a call.

Every value remembers where it came from (`Settings.source("search", "alpha")`: `default`, `file PATH`,
`env SHOPFUSION_SEARCH_ALPHA` or `call`); `shopfusion config` prints it, and search applies a fusion
setting given in the file, the environment or per call over the fusion policy's row (`--explain` names
the override), so a setting given is never silently ignored.

Credentials (`elasticsearch.password`, `elasticsearch.api_key`, `service.api_key`) are read like any other key but are
excluded from `repr` and from `to_dict`, so they are never logged or serialised; passwords inside URLs
(broker URLs, hosts) are masked by `redact_url` wherever a URL is shown.

Example `shopfusion.toml`::

    [index]
    model = "default"          # packaged all-MiniLM-L6-v2, or a local sentence-transformers directory
    vector_index = "auto"      # flat | hnsw | ivf | auto (tuned ivf above hnsw_threshold products)

    [search]
    fusion = "linear"
    alpha = 0.5                # weight of the dense leg in linear fusion
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from shopfusion.errors import ConfigError

VectorIndexKind = Literal["auto", "flat", "hnsw", "ivf"]
EncoderBackend = Literal["auto", "torch", "onnx", "onnx-int8"]
DEFAULT_BACKEND: EncoderBackend = "auto"
"""The shipped `index.backend`. One constant, so that switching the default is a one-line change (the
measurements behind each choice are in the README, "ONNX Runtime encoder")."""
Analyzer = Literal["english", "standard"]


@dataclass(frozen=True)
class IndexSettings:
    model: str = "default"
    """`default` (packaged all-MiniLM-L6-v2), `hash:<dim>` (deterministic test encoder) or a local path."""
    batch_size: int = 64
    vector_index: VectorIndexKind = "auto"
    hnsw_threshold: int = 200_000
    """With `vector_index = "auto"`, catalogs larger than this use the approximate index `auto` picks
    (IVF, its width tuned at build time: `ann_target_recall`) instead of exact search. (The name predates
    that choice; README "Scale" has the measurements behind it.)"""
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    """HNSW search width. Set explicitly (file, environment, call), it is used as given; left at its
    default, an HNSW index uses the width its build tuned (`ann_target_recall`)."""
    ivf_nprobe: int = 16
    """IVF lists searched. Set explicitly, it is used as given; left at its default, an IVF index uses the
    width its build tuned (`ann_target_recall`)."""
    ann_target_recall: float = 0.95
    """An approximate index (`ivf`, `hnsw`, or `auto` above `hnsw_threshold`) is built, then searched with
    the smallest width (nprobe / efSearch) whose recall@10 against exact search reaches this on
    `ann_tune_sample` pseudo-queries made from the catalog's own titles; the choice is recorded in the
    index manifest and shown by `shopfusion versions` and the index summary. 0 turns the tuning off."""
    ann_max_width: int = 1024
    """The widest nprobe / efSearch the tuning may pick (it bounds the dense leg's latency); when even this
    misses the target, the cap is used and the index summary warns."""
    ann_tune_sample: int = 1000
    """Pseudo-queries the width tuning measures recall on (about +-0.01 of recall at 0.95)."""
    analyzer: Analyzer = "english"
    """Lexical analysis: `english` (lowercase, English stop words, Porter stemming) or `standard`."""
    max_field_chars: int = 100_000
    """Records with a longer text field are rejected (a sign of a broken export)."""
    keep_versions: int = 2
    """Versions kept on disk (and in Elasticsearch) for `shopfusion rollback`; the live one always stays."""
    max_shrink: float = 0.5
    """A run refuses to publish a version that drops more than this share of the live version's products
    (and always refuses an empty version) unless `--allow-shrink` is given; 1.0 turns the share check off."""
    lexical: Literal["tantivy", "elasticsearch"] = "tantivy"
    executor: Literal["local", "celery"] = "local"
    device: str = "auto"
    """`auto` picks CUDA when torch sees a GPU, else CPU; or name one (`cpu`, `cuda:0`)."""
    backend: EncoderBackend = DEFAULT_BACKEND
    """What runs the encoder: `torch`, `onnx` (ONNX Runtime fp32), `onnx-int8` (ONNX Runtime int8; the
    `onnx` extra) or `auto`: torch on a GPU, the backend an existing index was built with, else the
    fastest one whose measured drift meets `backend_min_cosine` (see `shopfusion.backends`)."""
    backend_min_cosine: float = 0.995
    """The quality bar of the encoder backends: mean cosine to torch fp32 on the probe texts that `auto`
    asks of a backend, and the least agreement allowed when an index is searched with another backend
    than the one that built it (their drifts add up)."""


@dataclass(frozen=True)
class SearchSettings:
    k: int = 10
    depth: int = 200
    """Candidates each leg retrieves before fusion."""
    fusion: Literal["rrf", "linear"] = "linear"
    alpha: float = 0.3
    """Linear fusion: weight of the dense leg; the lexical leg gets 1 - alpha. 0.3 was the best static
    alpha on the Home Depot train queries with the packaged encoder (benchmarks/bench_model_chain.py); the
    shipped fusion policy's default row uses the same number."""
    normalization: Literal["minmax", "zscore"] = "minmax"
    rrf_k: float = 60.0
    policy: str = "default"
    """Per-intent fusion rows: `default` (the shipped policy), `none` (the static fusion above for every
    query) or the directory of a policy written by `shopfusion train policy`. Fusion keys set explicitly
    (file, environment, call) override the row."""
    intent_model: str = "default"
    """Query intent model: `default` (shipped, trained on openly licensed data for the packaged encoder),
    `none` (rules only) or the directory of a model written by `shopfusion train intent`. An explicitly
    given model trained on another encoder than the index's is refused; the shipped one falls back to the
    rules with a warning in the results."""
    on_leg_failure: Literal["degrade", "fail"] = "degrade"
    """When one retrieval leg's engine is down (Elasticsearch unreachable, say): `degrade` answers a hybrid
    search from the other leg with a warning in the results; `fail` raises the backend's error."""
    vector_threads: int = 1
    """OpenMP threads one query's FAISS search uses (0: FAISS's default, one per core). One thread per
    query is faster for single queries and leaves the other cores to concurrent requests and to a
    co-located Elasticsearch (README, issue 13)."""
    ranker: str = "none"
    """Learned ranking stage after fusion: `none`, or the directory of a ranker written by
    `shopfusion train ranker` (it then orders the union of both legs' candidates)."""


@dataclass(frozen=True)
class ElasticsearchSettings:
    hosts: tuple[str, ...] = ("http://127.0.0.1:9200",)
    index_prefix: str = "shopfusion"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    request_timeout: float = 30.0
    max_retries: int = 3
    analyzer: str = "english"
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    chunk_size: int = 500
    max_chunk_bytes: int = 10 * 1024 * 1024
    attribute_fields: int = 1000
    """Attributes (those most products have) that get keyword / numeric fields of their own in a new index
    version, for fast filters and facets; the rest share one nested field. 0: every attribute nested.
    The index's mapping holds about twice this many fields."""

    __repr__ = lambda self: _redacted_repr(self)  # noqa: E731


@dataclass(frozen=True)
class CelerySettings:
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    queue: str = "shopfusion"
    concurrency: int = 1
    batch_size: int = 256
    shard_dir: str | None = None
    """Directory all workers can read and write (shared volume); defaults to `<index>/shards`."""
    task_time_limit: int = 600
    max_retries: int = 3
    outage_timeout: float = 120.0
    """Seconds an indexing run waits for a broker or result backend that went away mid-run (retrying all
    the while) before it fails with a `BackendError`; the batches already embedded are journaled."""

    __repr__ = lambda self: _redacted_repr(self)  # noqa: E731


@dataclass(frozen=True)
class LimitsSettings:
    """Bounds on what one request may ask for. The Python client enforces them, so the CLI and the HTTP
    service do too; a request over a bound is a `QueryError` that names the bound and its setting."""

    max_query_chars: int = 1_000
    """Longer queries are refused (a 100 KB query would cost seconds of CPU in both legs)."""
    max_k: int = 1_000
    """Most results one call returns (`k`)."""
    max_depth: int = 10_000
    """Most candidates one retrieval leg may fetch (`depth`)."""
    max_candidates: int = 10_000
    """Most candidates one re-rank call may send."""


@dataclass(frozen=True)
class ServiceSettings:
    """`shopfusion serve`: the HTTP service. `[limits]` apply to its requests too (it calls the client)."""

    host: str = "127.0.0.1"
    """Loopback by default: put a reverse proxy (TLS) in front before listening beyond the host."""
    port: int = 8000
    workers: int = 1
    """Server processes; each loads the index and the model once."""
    threads: int = 0
    """Request threads per worker doing the work (retrieval, fusion, query encodes); 0 = auto: one per CPU
    core (at least 2), four per core with Elasticsearch as the lexical leg. The service logs the value."""
    max_inflight: int = 64
    """Requests one worker accepts at once; more get 503 with Retry-After (shed load, don't queue forever)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body (413 above it); 10,000 candidates with short texts fit in about 3 MB."""
    request_timeout: float = 10.0
    """Seconds before a request gets 504 (its thread finishes the work, the answer is dropped)."""
    api_key: str | None = field(default=None, repr=False)
    """When set, /search, /rerank and /metrics need `Authorization: Bearer <key>` (env SHOPFUSION_SERVICE_API_KEY)."""
    log_queries: bool = False
    """Access logs carry query text only when this is on (queries can hold personal data)."""
    reload_interval: float = 1.0
    """Seconds between checks of the index manifest for a newly published version (0: never reload)."""
    micro_batch: bool = True
    """Query encodes that arrive together run as one batch (no waiting: whatever is queued when the model
    frees up); off: each request thread encodes its own query."""
    max_batch: int = 32
    shutdown_timeout: float = 30.0
    """On SIGTERM, seconds that requests in flight get to finish before the process exits anyway."""

    __repr__ = lambda self: _redacted_repr(self)  # noqa: E731


SECRET_KEYS = {"password", "api_key"}
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARAM = re.compile(
    r"^(password|passwd|pwd|pass|secret|token|auth|key|apikey|credentials?|sig|signature|client_secret"
    r"|private_key|[a-z_-]*(api|access|secret|auth|session)[_-]?(key|token))$", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Any URL (or list of URLs) with its secrets masked, for logs, messages and reprs.

    - `scheme://user:secret@host` -> `scheme://user:***@host`, also when the secret holds `/`, `@`, `:`
      or `?` (the user part ends at the last `@` of the URL, so a secret is never cut short; an address
      with `@` in its path is masked too far rather than too little);
    - `scheme://token@host` (a bare token as user) -> `scheme://***@host`;
    - query parameters such as `?password=`, `&api_key=`, `token=`, `secret=`, `sig=` -> `=***`;
    - several URLs in one string (`redis://:a@h1;redis://:b@h2`, comma or space separated) each masked.

    >>> redact_url("redis://:p@ss/w0rd@cache:6379/0?password=x&db=1")
    'redis://:***@cache:6379/0?password=***&db=1'
    """
    starts = [m.start() for m in _URL_START.finditer(url)]
    if not starts:
        return _redact_query(url) if "=" in url else url
    pieces = [url[: starts[0]]]
    for start, end in zip(starts, starts[1:] + [len(url)], strict=True):
        pieces.append(_redact_one(url[start:end]))
    return "".join(pieces)


def _redact_one(url: str) -> str:
    scheme_end = url.index("://") + 3
    rest = url[scheme_end:]
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else "***"
        return url[:scheme_end] + userinfo + "@" + _redact_query(rest)
    return url[:scheme_end] + _redact_query(rest)


def _redact_query(text: str) -> str:
    """`key=value` pairs (after `?`, `&` or `;`) whose key names a secret get `***` as value."""
    def mask(match: re.Match[str]) -> str:
        key = match.group(2)
        return match.group(0) if not _SECRET_PARAM.match(key) else f"{match.group(1)}{key}=***"

    return re.sub(r"([?&;]|^)([^=&;?#\s]+)=([^&;#\s]*)", mask, text)


def _redacted_repr(settings: Any) -> str:
    shown = {f.name: _redact_value(getattr(settings, f.name)) for f in fields(settings) if f.name not in SECRET_KEYS}
    return f"{type(settings).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


@dataclass(frozen=True)
class Settings:
    index: IndexSettings = field(default_factory=IndexSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)
    celery: CelerySettings = field(default_factory=CelerySettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """`section.key` -> where its value came from; keys not listed have their default."""

    def source(self, section: str, key: str) -> str:
        """`default`, `file PATH`, `env NAME` or `call`."""
        return self.sources.get(f"{section}.{key}", "default")

    def explicit(self, section: str, key: str) -> bool:
        """Whether the user gave this value (file, environment or call) rather than leaving the default."""
        return self.source(section, key) != "default"

    def described(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every value with its source (credentials left out), as `shopfusion config --json` prints it."""
        values = self.to_dict()
        return {section: {key: {"value": value, "source": self.source(section, key)} for key, value in keys.items()}
                for section, keys in values.items()}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Settings as plain data, credentials left out."""
        out: dict[str, dict[str, Any]] = {}
        for section in fields(self):
            if section.name == "sources":
                continue
            values = dataclasses.asdict(getattr(self, section.name))
            out[section.name] = {k: _redact_value(v) for k, v in values.items() if k not in SECRET_KEYS}
        return out

    def replace(self, section: str, *, source: str = "call", **changes: Any) -> Settings:
        """A copy with some keys of one section changed (validated like the file); `None` keeps a value.
        The changed keys are recorded as coming from `source`."""
        current = getattr(self, section)
        given = {k: v for k, v in changes.items() if v is not None}
        merged = dataclasses.asdict(current) | given
        sources = {**self.sources, **{f"{section}.{key}": source for key in given}}
        return dataclasses.replace(self, **{section: _build(type(current), merged, section)}, sources=sources)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, tuple | list):
        return [_redact_value(v) for v in value]
    return value


def check_count(name: str, value: object, meaning: str) -> int:
    """A setting that counts something (0 allowed), or a `ConfigError` that names it and says what it is."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}: {meaning}")
    return value


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from a TOML file and the environment; see the module docstring for precedence."""
    env = os.environ if env is None else env
    data: dict[str, dict[str, Any]] = {}
    config_path = Path(path) if path else _default_config_path(env)
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path} not found: check the path or drop --config")
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path} is not valid TOML: {exc}") from exc
    sections = {f.name: f.type for f in fields(Settings) if f.name != "sources"}
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(
            f"unknown section(s) {sorted(unknown)} in {config_path}: expected one of {sorted(sections)}"
        )
    built: dict[str, Any] = {}
    sources: dict[str, str] = {}
    hints = get_type_hints(Settings)
    for name in sections:
        cls = hints[name]
        section_data = data.get(name, {})
        if not isinstance(section_data, dict):
            raise ConfigError(f"[{name}] in {config_path} must be a table of keys, got {section_data!r}")
        values = dict(section_data)
        sources.update({f"{name}.{key}": f"file {config_path}" for key in values})
        prefix = f"SHOPFUSION_{name.upper()}_"
        for key, raw in env.items():
            if key.startswith(prefix):
                values[key[len(prefix) :].lower()] = raw
                sources[f"{name}.{key[len(prefix):].lower()}"] = f"env {key}"
        built[name] = _build(cls, values, name)
    return Settings(**built, sources=sources)


def _default_config_path(env: Mapping[str, str]) -> Path | None:
    if env.get("SHOPFUSION_CONFIG"):
        return Path(env["SHOPFUSION_CONFIG"])
    local = Path("shopfusion.toml")
    return local if local.is_file() else None


def _build(cls: type, values: Mapping[str, Any], section: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in [{section}]: expected some of {sorted(known)}")
    converted = {key: _coerce(value, hints[key], f"{section}.{key}") for key, value in values.items()}
    return cls(**converted)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} = {value!r} is not allowed: choose one of {list(args)}")
        return value
    if type(None) in args:  # Optional[X]
        if value is None or value == "":
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return tuple(str(v) for v in value)
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in {"1", "true", "yes", "on"}:
                    return True
                if lowered in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} = {value!r} is not a valid {getattr(hint, '__name__', hint)}") from exc
    return value
