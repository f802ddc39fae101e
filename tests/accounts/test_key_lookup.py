"""Key lookups: an unknown prefix costs no database query; keys issued here work at once."""

from __future__ import annotations

import secrets
import string
from datetime import timedelta
from typing import Any

import pytest

from accounts.keycache import key_cache
from accounts.keys import KEY_MARK
from gatewaysite.clock import clock, now

pytestmark = pytest.mark.django_db(transaction=True)

ALPHABET = string.ascii_lowercase + string.digits


def random_key() -> str:
    return f"{KEY_MARK}{''.join(secrets.choice(ALPHABET) for _ in range(8))}_{secrets.token_urlsafe(32)}"


def models(client: Any, secret: str) -> Any:
    return client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}")


@pytest.fixture
def mock_model(make_provider: Any, make_deployment: Any) -> None:
    provider = make_provider("mock", kind="mock", vendor="mock", api_key="")
    make_deployment(provider, "mock-gpt")


def test_unknown_prefixes_and_wrong_secrets_are_refused_without_a_query(
    client: Any, mock_model: None, issue_key: Any, django_assert_num_queries: Any
) -> None:
    _, secret = issue_key()
    assert models(client, secret).status_code == 200  # loads the snapshot, the prefixes and this key

    wrong_secret = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    with django_assert_num_queries(0):
        for _ in range(50):
            response = models(client, random_key())
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
        response = models(client, wrong_secret)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert models(client, secret).status_code == 200


def test_a_key_issued_in_this_process_works_at_once(client: Any, mock_model: None, issue_key: Any) -> None:
    """No poller runs in tests: the issuing process must not wait for one."""
    _, first = issue_key("first")
    assert models(client, first).status_code == 200  # the prefixes are loaded and cached now
    _, second = issue_key("second")
    assert models(client, second).status_code == 200


def test_the_prefixes_are_read_once_per_configuration_change(client: Any, mock_model: None, issue_key: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def key_queries(secret: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            models(client, secret)
        return [q["sql"] for q in captured.captured_queries if "accounts_clientkey" in q["sql"]]

    _, secret = issue_key()
    models(client, secret)
    issue_key("another")  # a configuration change: the next request reloads
    first = key_queries(random_key())
    assert len(first) == 1 and "WHERE" not in first[0]  # every prefix, in one query
    assert key_queries(random_key()) == []
    used = key_queries(secret)  # a known key's row: when it is first used
    assert len(used) == 1 and "prefix" in used[0]
    assert key_queries(secret) == []


def test_expiry_is_decided_by_the_clock_on_every_request(
    client: Any, mock_model: None, issue_key: Any, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    _, secret = issue_key(expires_at=now() + timedelta(minutes=5))
    assert models(client, secret).status_code == 200
    later = now() + timedelta(minutes=6)
    monkeypatch.setattr(clock, "now", lambda: later)
    with django_assert_num_queries(0):  # no configuration change, no reload: the cached key's expiry
        response = models(client, secret)
    assert response.status_code == 401 and response.json()["error"]["code"] == "key_expired"


def test_a_load_that_raced_a_change_is_not_kept(db: None, issue_key: Any) -> None:
    """A clear (a configuration change) while prefixes load: what the load read may predate it."""
    from accounts.models import ClientKey

    original = ClientKey.objects.values_list

    def values_list_then_change(*args: Any, **kwargs: Any) -> Any:
        rows = list(original(*args, **kwargs))  # read before the change ...
        key_cache.clear()  # ... which lands meanwhile
        return rows

    key_cache.clear()
    ClientKey.objects.values_list = values_list_then_change  # type: ignore[method-assign]
    try:
        key_cache.lookup("nothere0")
    finally:
        del ClientKey.objects.values_list
    assert key_cache._prefixes is None  # not kept: the next lookup reads again


def test_requests_that_miss_together_share_one_load(db: None, issue_key: Any) -> None:
    """After a configuration change every request in flight misses the cache at once; they
    wait for one load instead of each opening a database connection (docs/scaling.md)."""
    import threading
    import time

    from django.db import connection
    from django.db.backends.signals import connection_created

    key, _secret = issue_key()
    key_cache.clear()
    opened: list[int] = []

    def slow_connect(sender: Any, **kwargs: Any) -> None:  # a busy database: connecting takes a while
        opened.append(threading.get_ident())
        time.sleep(0.2)

    start = threading.Barrier(20)
    found: list[Any] = []

    def request() -> None:
        start.wait()
        try:
            found.append(key_cache.lookup(key.prefix))
        finally:
            connection.close()

    connection_created.connect(slow_connect)
    try:
        threads = [threading.Thread(target=request) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        connection_created.disconnect(slow_connect)
    assert len(found) == 20 and all(info is not None and info.id == key.id for info in found)
    assert len(opened) <= 2  # the prefix set's load and the key's: not one per request
