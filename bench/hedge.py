"""Hedged requests, measured: p99 through the gateway with and without hedging.

Two loopback OpenAI-compatible upstreams serve one model: ``tail`` answers in about
20 ms but one request in ten takes 2 s (seeded), ``steady`` always answers in about
20 ms. The model strategy sends every request to ``tail`` first; with hedging on, a
request that has no answer after the hedge delay gets a copy sent to ``steady``. The same
request sequence runs twice through one gunicorn gevent worker - hedging off, then on -
and the report gives p50/p95/p99/max and the extra upstream requests.

The hedge delay is fixed (``--delay-ms``, 100): with a tail as heavy as 10%, the tail
deployment's own p95 *is* the 2 s tail, so the live-p95 delay would not hedge in time
(The Tail at Scale hedges at the p95 of tails thinner than 5%). The budget is
``--budget`` percent (12).

Run: ``bash bench/hedge.sh`` (its own database and Redis DB, like bench/run.sh); the
figures go to bench/results/hedge.json and are quoted in docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from bench.procs import ROOT, start_gateway

MODEL = "hedge-model"


class Upstream:
    """A fixed-answer upstream; ``tail`` (a set of request numbers) answers after ``tail_seconds``."""

    def __init__(self, *, base_ms: float, tail_every: int | None, tail_seconds: float, seed: int) -> None:
        self.count = 0
        self.lock = threading.Lock()
        rng = random.Random(seed)
        self.slow = {i for i in range(100_000) if tail_every and rng.random() < 1 / tail_every}
        outer = self
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            }
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    number = outer.count
                    outer.count += 1
                time.sleep(tail_seconds if number in outer.slow else base_ms / 1000)
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the gateway cut this copy: it lost the race

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]


def configure(tail_port: int, steady_port: int) -> str:
    from accounts.services import key_issue
    from providers.models import Deployment, PricingRow, Provider
    from routing.config.invalidation import config_changed
    from routing.models import RoutingSettings

    for priority, (name, port) in enumerate((("tail", tail_port), ("steady", steady_port))):
        provider = Provider.objects.create(
            name=name, kind="openai", vendor=name, base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-upstream"
        )
        Deployment.objects.create(
            name=name, model_name=MODEL, provider=provider, provider_model=MODEL, priority=priority
        )
        PricingRow.objects.create(
            vendor=name,
            model=MODEL,
            input_per_mtok=Decimal("1"),
            output_per_mtok=Decimal("2"),
            effective_from=datetime(2024, 1, 1, tzinfo=UTC),
        )
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "model", "hedge_enabled": False})
    config_changed()
    _, secret = key_issue(name="hedge-bench")
    return secret


def set_hedging(*, enabled: bool, delay_ms: int, budget: float) -> None:
    from routing.config.invalidation import config_changed
    from routing.models import RoutingSettings

    RoutingSettings.objects.filter(pk=1).update(
        hedge_enabled=enabled, hedge_delay_ms=delay_ms, hedge_budget_percent=budget
    )
    config_changed()
    time.sleep(2)  # every process polls the configuration version twice a second


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def run(url: str, secret: str, *, requests_count: int, concurrency: int) -> tuple[list[float], int]:
    session_local = threading.local()

    def one(_: int) -> tuple[float, int]:
        session = getattr(session_local, "session", None)
        if session is None:
            session = session_local.session = requests.Session()
        started = time.perf_counter()
        response = session.post(
            url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        )
        return (time.perf_counter() - started) * 1000, response.status_code

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests_count)))
    errors = sum(1 for _, status in results if status != 200)
    return [ms for ms, _ in results], errors


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--budget", type=float, default=12.0)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
    import django

    django.setup()
    results: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency}
    rounds = {}
    for hedged in (False, True):
        tail = Upstream(base_ms=20, tail_every=10, tail_seconds=2.0, seed=7)
        steady = Upstream(base_ms=20, tail_every=None, tail_seconds=0, seed=0)
        if not hedged:
            secret = configure(tail.port, steady.port)
        else:
            from providers.models import Provider
            from routing.config.invalidation import config_changed

            for name, upstream in (("tail", tail), ("steady", steady)):
                Provider.objects.filter(name=name).update(base_url=f"http://127.0.0.1:{upstream.port}/v1")
            config_changed()
        set_hedging(enabled=hedged, delay_ms=args.delay_ms, budget=args.budget)
        gateway = start_gateway(
            args.port, dict(os.environ), workers=1, recording=True, log=ROOT / "var" / "hedge-bench-gateway.log"
        )
        try:
            url = f"http://127.0.0.1:{args.port}"
            run(url, secret, requests_count=20, concurrency=4)  # warm-up
            tail.count = steady.count = 0
            latencies, errors = run(url, secret, requests_count=args.requests, concurrency=args.concurrency)
        finally:
            gateway.stop()
        upstream_requests = tail.count + steady.count
        rounds["hedged" if hedged else "plain"] = {
            **summary(latencies),
            "errors": errors,
            "upstream_requests": upstream_requests,
            "extra_upstream_percent": round(100 * (upstream_requests - args.requests) / args.requests, 2),
        }
    plain, hedged_round = rounds["plain"], rounds["hedged"]
    results.update(rounds)
    results["p99_ratio"] = round(plain["p99_ms"] / hedged_round["p99_ms"], 1)
    results["delay_ms"] = args.delay_ms
    results["budget_percent"] = args.budget
    out = ROOT / "bench" / "results" / "hedge.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
