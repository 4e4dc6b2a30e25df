"""compose.yaml's structure (there is no Docker engine in CI: the file is validated here, not run).

Interpolation follows the Compose spec: `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$` for a literal
dollar; the worker's environment is fed to `load_settings` to prove every key is a real setting.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
ENV = {"ELASTIC_PASSWORD": "es-secret", "REDIS_PASSWORD": "redis-secret"}
_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}|"
                       r"(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        if env.get(name):
            return env[name]
        if op == ":?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, ENV)


def test_services_volumes_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"elasticsearch", "redis", "worker", "search"}
    declared = set(compose["volumes"])
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) >= 2, name
        assert check["retries"] >= 3 and re.fullmatch(r"\d+s", check["interval"]), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("/", ".")):
                assert source in declared, f"{name} uses undeclared volume {source}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert {"esdata", "redisdata"} <= declared
    assert "esdata:/usr/share/elasticsearch/data" in services["elasticsearch"]["volumes"]
    assert "redisdata:/data" in services["redis"]["volumes"]


def test_elasticsearch_is_the_official_full_image_matching_the_client_major(compose: dict[str, Any]) -> None:
    es = compose["services"]["elasticsearch"]
    image, tag = es["image"].rsplit(":", 1)
    assert image == "docker.elastic.co/elasticsearch/elasticsearch"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pin = next(d for d in pyproject["project"]["optional-dependencies"]["es"] if d.startswith("elasticsearch"))
    upper = int(re.search(r"<\s*(\d+)", pin).group(1))  # type: ignore[union-attr]
    assert int(tag.split(".")[0]) == upper - 1, f"server {tag} vs client pin {pin}"
    env = es["environment"]
    assert env["ELASTIC_PASSWORD"] == ENV["ELASTIC_PASSWORD"]
    assert env["xpack.security.enabled"] == "true" and env["discovery.type"] == "single-node"
    assert re.fullmatch(r"-Xms(\S+) -Xmx\1", env["ES_JAVA_OPTS"])
    assert "elastic:$ELASTIC_PASSWORD" in " ".join(es["healthcheck"]["test"]).replace("{", "").replace("}", "")


def test_passwords_come_only_from_the_environment(raw: dict[str, Any]) -> None:
    text = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    assert "es-secret" not in text and "redis-secret" not in text
    for missing in ("ELASTIC_PASSWORD", "REDIS_PASSWORD"):
        with pytest.raises(MissingVariable, match=missing):
            interpolate(raw, {k: v for k, v in ENV.items() if k != missing})


def test_worker_runs_shopfusion_worker_with_valid_settings(compose: dict[str, Any]) -> None:
    from shopfusion.config import load_settings

    worker = compose["services"]["worker"]
    assert worker["command"] == ["shopfusion", "worker"]
    assert {name: dep["condition"] for name, dep in worker["depends_on"].items()} == {
        "redis": "service_healthy", "elasticsearch": "service_healthy"}
    env = {key: str(value) for key, value in worker["environment"].items()}
    settings = load_settings(env=env)  # unknown keys or bad values raise ConfigError
    assert settings.celery.broker_url == "redis://:redis-secret@redis:6379/0"
    assert settings.elasticsearch.hosts == ("http://elasticsearch:9200",)
    assert settings.elasticsearch.password == ENV["ELASTIC_PASSWORD"]
    shard_dir = settings.celery.shard_dir
    assert f"{shard_dir}:{shard_dir}" in worker["volumes"]  # the same path inside and outside


def test_worker_image_holds_every_package_and_the_extras(compose: dict[str, Any]) -> None:
    dockerfile = compose["services"]["worker"]["build"]["dockerfile_inline"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, flags=re.M))
    assert packages <= copied
    assert re.search(r'pip install .*"\.\[es,celery\]"', dockerfile)
    assert re.search(r"^USER (?!root)", dockerfile, flags=re.M)
    assert pyproject["project"]["scripts"]["shopfusion"]


def test_search_service_serves_the_index_volume_with_valid_settings(raw: dict[str, Any],
                                                                   compose: dict[str, Any]) -> None:
    from click.testing import CliRunner

    from shopfusion.cli import main
    from shopfusion.config import load_settings

    search = compose["services"]["search"]
    command = search["command"]
    assert command[:2] == ["shopfusion", "serve"]
    index = command[command.index("--index") + 1]
    assert f"index:{index}" in search["volumes"] and "index" in compose["volumes"]
    assert command[command.index("--port") + 1] == "8000" and search["ports"] == ["127.0.0.1:8000:8000"]
    assert "/ready" in " ".join(search["healthcheck"]["test"])
    assert search["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    settings = load_settings(env={k: str(v) for k, v in search["environment"].items()})
    assert settings.service.workers == 2 and settings.service.api_key is None
    keyed = load_settings(env={k: str(v) for k, v in interpolate(
        raw["services"]["search"]["environment"], {**ENV, "SHOPFUSION_API_KEY": "k"}).items()})
    assert keyed.service.api_key == "k"
    assert re.search(r'pip install .*"\.\[es,serve\]"', search["build"]["dockerfile_inline"])
    # the command line is one `shopfusion serve` accepts
    assert CliRunner().invoke(main, [*command[1:], "--help"]).exit_code == 0
