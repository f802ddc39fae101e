"""A key's rate limit holds across server processes: 3 gunicorn workers share one Redis.

600 requests sent together (well within one minute) against a 300 RPM key limit: between
300 and 303 succeed; every other one gets a 429 with Retry-After.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.openai_server import FakeOpenAI
from tests.procs import start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.server.socket.listen(512)  # a backlog for the burst (the stdlib default is 5)
    server.start()
    yield server
    threading.Thread(target=server.stop, daemon=True).start()


def test_600_requests_against_300_rpm_on_three_workers(
    tmp_path: Path, upstream: FakeOpenAI, make_provider: Any, make_deployment: Any, issue_key: Any, redis_client: Any
) -> None:
    provider = make_provider("up", base_url=upstream.url + "/v1", vendor="openai")
    make_deployment(provider, MODEL)
    _, secret = issue_key(rpm_limit=300)
    server = start_gateway(tmp_path, workers=3).wait_healthy()
    try:
        session = threading.local()

        def one(_: int) -> tuple[int, str | None]:
            if not hasattr(session, "s"):
                session.s = requests.Session()
            response = session.s.post(
                server.url + "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {secret}", "Connection": "close"},  # spread over the workers
                timeout=60,
            )
            return response.status_code, response.headers.get("retry-after")

        with ThreadPoolExecutor(max_workers=48) as pool:
            results = list(pool.map(one, range(600)))
        statuses = [status for status, _ in results]
        ok = statuses.count(200)
        assert 300 <= ok <= 303, (
            f"{ok} succeeded; statuses: {sorted(set(statuses))} {[statuses.count(s) for s in sorted(set(statuses))]}"
        )
        assert statuses.count(429) == 600 - ok
        assert all(retry is not None and int(retry) >= 1 for status, retry in results if status == 429)
        assert len(upstream.received) == ok
    finally:
        server.stop()
