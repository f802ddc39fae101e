"""``/metrics`` adds up every gunicorn worker's counts, whichever worker answers the scrape.

Real gunicorn (the production config, two gevent workers); new connections spread the
requests over both workers (the access log names the worker of each); every scrape,
whichever worker serves it, must report the sum. The deadline bounds how long the
workers' snapshot files (written every second) take to show the last requests.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.monitoring.conftest import Scrape
from tests.procs import start_gateway

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Hello"}]


def _scrape(url: str) -> Scrape:
    request = urllib.request.Request(url + "/metrics", headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return Scrape(response.read().decode())


def test_counters_sum_over_two_workers(
    tmp_path: Path, make_provider: Any, make_deployment: Any, make_price: Any, issue_key: Any, redis_client: Any
) -> None:
    provider = make_provider("mock", kind="mock", vendor="mock", api_key="", options={"reply": "hi"})
    make_deployment(provider, "mock-gpt")
    make_price("mock", "mock-gpt", "1.00", "2.00")
    _, secret = issue_key(name="spread")
    server = start_gateway(tmp_path)
    try:
        server.wait_healthy()
        client = openai.OpenAI(
            api_key=secret,
            base_url=server.url + "/v1",
            max_retries=0,
            timeout=10.0,
            default_headers={"Connection": "close"},
        )
        sent = 0
        while sent < 400:
            client.chat.completions.create(model="mock-gpt", messages=HELLO)
            sent += 1
            served: dict[int, int] = {}
            for pid, _ in server.served():
                served[pid] = served.get(pid, 0) + 1
            if sent >= 30 and len(served) == 2 and min(served.values()) >= 5:
                break
        else:
            pytest.fail(f"the requests did not reach both workers: {server.served()[-10:]}")
        assert all(status == 200 for _, status in server.served())

        deadline = time.monotonic() + 10.0
        while True:
            metrics = _scrape(server.url)
            total = metrics.value("gateway_requests_total", model="mock-gpt", status="200")
            if total == sent:
                break
            assert total < sent, f"counted {total} of {sent} requests: counted twice"
            assert time.monotonic() < deadline, f"counted {total} of {sent} requests"
            time.sleep(0.2)
        assert metrics.value("gateway_metrics_processes") == 2
        # Every scrape, whichever worker serves it, reports the same sums.
        for _ in range(6):
            again = _scrape(server.url)
            assert again.value("gateway_requests_total", model="mock-gpt") == sent
            assert again.value("gateway_upstream_latency_seconds_count", deployment="mock-mock-gpt") == sent
            assert again.value("gateway_http_requests_total", route="v1/chat/completions", status="200") == sent
        tokens = again.value("gateway_tokens_total", model="mock-gpt", kind="completion")
        assert tokens > 0 and tokens % sent == 0  # the mock answers every request alike
    finally:
        server.stop()
