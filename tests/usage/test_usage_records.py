"""One usage record per request, whatever fails: a killed consumer, a dropped Redis connection,
a duplicate delivery, a client that hangs up mid-stream."""

from __future__ import annotations

import http.client
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import orjson
import pytest

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import stream_events
from usage.consumer import drain
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


def _complete(openai_for: Any, secret: str, n: int) -> list[str]:
    client = openai_for(secret)
    ids = []
    for _ in range(n):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
        ids.append(raw.headers["x-request-id"])
    return ids


class Killed(Exception):
    pass


def test_a_consumer_killed_between_commit_and_ack_loses_and_duplicates_nothing(
    openai_route: dict[str, Any], openai_for: Any, redis_client: Any
) -> None:
    ids = _complete(openai_for, openai_route["secret"], 5)

    def crash() -> None:
        raise Killed

    with pytest.raises(Killed):
        drain(after_insert=crash)  # inserted and committed, never acknowledged
    assert redis_client.xpending("{gw}:usage", "gw-ingest")["pending"] == 5
    ids += _complete(openai_for, openai_route["secret"], 2)
    # the next worker claims the stale entries and inserts them again: no-ops
    assert drain(claim_idle_ms=0) == 7
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == sorted(ids)
    assert redis_client.xpending("{gw}:usage", "gw-ingest")["pending"] == 0
    assert drain(claim_idle_ms=0) == 0


def test_duplicate_delivery_makes_one_record(openai_route: dict[str, Any], openai_for: Any, redis_client: Any) -> None:
    (request_id,) = _complete(openai_for, openai_route["secret"], 1)
    entries = redis_client.xrange("{gw}:usage")
    assert len(entries) == 1
    redis_client.xadd("{gw}:usage", entries[0][1])  # the same event delivered again
    drain(claim_idle_ms=0)
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == [request_id]
    assert UsageRecord.objects.get().cost_usd == Decimal("0.000006")


def test_dropped_redis_connections_lose_no_record(openai_route: dict[str, Any], openai_for: Any) -> None:
    from gatewaysite.redis import get_redis

    ids = _complete(openai_for, openai_route["secret"], 2)
    get_redis().connection_pool.disconnect()  # every pooled connection drops, as after a Redis restart
    ids += _complete(openai_for, openai_route["secret"], 2)
    get_redis().connection_pool.disconnect()
    drain(claim_idle_ms=0)
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == sorted(ids)


def test_a_client_that_hangs_up_mid_stream_is_billed_for_what_was_used(
    openai_route: dict[str, Any], gateway_url: str
) -> None:
    words = [f" w{i}" for i in range(40)]
    openai_route["fake"].queue(Reply(events=stream_events(words), event_delay=0.05))
    url = urlparse(gateway_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "stream": True})
    conn.request(
        "POST", "/v1/chat/completions", body=body, headers={"Authorization": f"Bearer {openai_route['secret']}"}
    )
    response = conn.getresponse()
    assert response.status == 200
    request_id = response.getheader("x-request-id")
    seen = 0
    while seen < 2:  # read two chunks, then hang up
        line = response.fp.readline()
        if line.startswith(b"data: "):
            seen += 1
    response.close()
    conn.close()
    deadline = time.monotonic() + 20
    record = None
    while record is None and time.monotonic() < deadline:
        drain(claim_idle_ms=0)
        record = UsageRecord.objects.filter(request_id=request_id).first()
        if record is None:
            time.sleep(0.1)
    assert record is not None, "no usage record for the abandoned stream"
    assert record.status == "client_closed"
    assert record.usage_estimated is True
    assert record.prompt_tokens > 0 and record.completion_tokens > 0
    assert record.cost_usd is not None and record.cost_usd > 0
    assert record.completion_tokens < 40  # billed for what was streamed, not for the whole answer
