from __future__ import annotations

from pathlib import Path

import pytest

from shopfusion.config import Settings, load_settings
from shopfusion.errors import ConfigError


def test_defaults_without_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.search.fusion == "linear" and settings.index.model == "default"


def test_file_then_environment_precedence(tmp_path: Path) -> None:
    path = tmp_path / "shopfusion.toml"
    path.write_text('[search]\nalpha = 0.3\nfusion = "rrf"\n[elasticsearch]\nhosts = ["http://es:9200"]\n'
                    'password = "secret"\n')
    settings = load_settings(path, env={"SHOPFUSION_SEARCH_ALPHA": "0.7", "SHOPFUSION_INDEX_BATCH_SIZE": "16"})
    assert settings.search.alpha == 0.7 and settings.search.fusion == "rrf"
    assert settings.index.batch_size == 16
    assert settings.elasticsearch.hosts == ("http://es:9200",)
    assert settings.elasticsearch.password == "secret"


def test_credentials_never_serialised_or_shown(tmp_path: Path) -> None:
    settings = load_settings(env={"SHOPFUSION_ELASTICSEARCH_PASSWORD": "hunter2",
                                  "SHOPFUSION_ELASTICSEARCH_API_KEY": "k3y"})
    assert "hunter2" not in repr(settings) and "k3y" not in repr(settings)
    assert "password" not in settings.to_dict()["elasticsearch"]


@pytest.mark.parametrize("text, message", [
    ('[search]\nfusion = "max"\n', "choose one of"),
    ('[search]\nalpha = "high"\n', "not a valid float"),
    ('[nope]\nx = 1\n', "unknown section"),
    ('[search]\ncolour = 1\n', "unknown key"),
    ('[search\n', "not valid TOML"),
])
def test_invalid_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env={})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml", env={})


def test_replace_validates() -> None:
    assert Settings().replace("search", alpha=0.2).search.alpha == 0.2
    with pytest.raises(ConfigError):
        Settings().replace("index", vector_index="annoy")


def test_urls_with_credentials_are_redacted() -> None:
    settings = load_settings(env={"SHOPFUSION_ELASTICSEARCH_HOSTS": "https://elastic:s3cret@es:9200",
                                  "SHOPFUSION_CELERY_BROKER_URL": "redis://:r3dis@redis:6379/0"})
    shown = repr(settings) + str(settings.to_dict())
    assert "s3cret" not in shown and "r3dis" not in shown
    assert settings.elasticsearch.hosts == ("https://elastic:s3cret@es:9200",)
