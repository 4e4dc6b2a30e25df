"""Issue 14: URL credentials are masked in every form, wherever settings or URLs are shown."""

from __future__ import annotations

import pytest

from shopfusion.config import ElasticsearchSettings, load_settings, redact_url

SECRET = "S3cr3t"

FORMS = [
    # (url, what must remain visible)
    (f"redis://:{SECRET}@cache:6379/0", "redis://:***@cache:6379/0"),
    (f"https://elastic:{SECRET}@es:9200", "https://elastic:***@es:9200"),
    (f"redis://:{SECRET}/with/slashes@cache:6379/0", "redis://:***@cache:6379/0"),
    (f"redis://:{SECRET}@at@sign@cache:6379/0", "redis://:***@cache:6379/0"),
    (f"amqp://user:{SECRET}:colon?q@rabbit//vhost", "amqp://user:***@rabbit//vhost"),
    (f"https://{SECRET}@github.com/repo", "https://***@github.com/repo"),
    (f"http://es:9200/?password={SECRET}&pretty=1", "http://es:9200/?password=***&pretty=1"),
    (f"http://es:9200/?api_key={SECRET}", "http://es:9200/?api_key=***"),
    (f"redis://cache:6379/0?token={SECRET};db=1", "redis://cache:6379/0?token=***;db=1"),
    (f"https://blob/x?sig={SECRET}&AWS_SECRET_ACCESS_KEY={SECRET}&se=2030", "https://blob/x?sig=***&"
     "AWS_SECRET_ACCESS_KEY=***&se=2030"),
    (f"redis://:{SECRET}@h1:6379/0;redis://:{SECRET}/x@h2:6379/0", "redis://:***@h1:6379/0;redis://:***@h2:6379/0"),
    (f"http://es1:9200, http://u:{SECRET}@es2:9200", "http://es1:9200, http://u:***@es2:9200"),
    (f"sentinel://:{SECRET}@s1:26379;sentinel://:{SECRET}@s2:26379", "sentinel://:***@s1:26379;sentinel://:***@s2:26379"),
]


@pytest.mark.parametrize("url, shown", FORMS)
def test_every_url_form_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "http://es:9200", "default", "/models/minilm",
                                 "redis://h:6379/0?ssl_cert_reqs=none"])
def test_urls_without_secrets_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize("url, _", FORMS)
def test_settings_repr_and_dict_never_show_url_secrets(url: str, _: str) -> None:
    settings = load_settings(env={"SHOPFUSION_CELERY_BROKER_URL": url, "SHOPFUSION_CELERY_RESULT_BACKEND": url,
                                  "SHOPFUSION_ELASTICSEARCH_HOSTS": url.replace(",", " ")})
    shown = repr(settings) + repr(settings.celery) + repr(settings.elasticsearch) + str(settings.to_dict())
    assert SECRET not in shown


@pytest.mark.parametrize("url, _", FORMS)
def test_celery_and_elasticsearch_messages_mask_secrets(url: str, _: str) -> None:
    from indexer.stores.elasticsearch_store import _redacted_hosts
    from workers.celery_app import redacted

    assert SECRET not in redacted(url)
    assert SECRET not in _redacted_hosts(ElasticsearchSettings(hosts=(url,)))
