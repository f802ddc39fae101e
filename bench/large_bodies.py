"""Large bodies phase: do four 4 MB estimate-cost bodies stall the other requests of a process?

Four client threads send ``POST /v1/routing/estimate-cost`` with a body of about 4 MB
(one user message of English-like words, tokenized with tiktoken) back to back, to one
gateway process, while a fifth times ``GET /v1/models`` every 20 ms. The figure is the
probe's p99 under that load (target: under 50 ms), next to the same probe on the idle
process. Run by ``bench/bench.py --phases large``, or alone against a running gateway::

    .venv/bin/python -m bench.large_bodies --url http://127.0.0.1:8084 --key gw-... --model bench-large
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import threading
import time
from typing import Any
from urllib.parse import urlsplit

SENDERS = 4
BODY_BYTES = 4_000_000
PROBE_INTERVAL = 0.02


def large_body(model: str, size: int = BODY_BYTES, seed: int = 1) -> bytes:
    """A chat body of about ``size`` bytes: one message of random lower-case words."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(5000)]
    text_size = size - 100
    parts: list[str] = []
    length = 0
    while length < text_size:
        word = rng.choice(words)
        parts.append(word)
        length += len(word) + 1
    text = " ".join(parts)[:text_size]
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": round(_percentile(values, 0.50) or 0, 1),
        "p99_ms": round(_percentile(values, 0.99) or 0, 1),
        "max_ms": round(max(values), 1) if values else None,
        "mean_ms": round(statistics.fmean(values), 1) if values else None,
    }


class _Client:
    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            return 0, (time.perf_counter() - started) * 1000
        return response.status, (time.perf_counter() - started) * 1000


def _probe(url: str, key: str, seconds: float) -> tuple[list[float], int]:
    client = _Client(url, key)
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, ms = client.request("GET", "/v1/models")
        if status == 200:
            latencies.append(ms)
        else:
            errors += 1
        time.sleep(PROBE_INTERVAL)
    return latencies, errors


def measure(url: str, key: str, model: str, *, seconds: float = 10.0, senders: int = SENDERS) -> dict[str, Any]:
    body = large_body(model)
    idle, idle_errors = _probe(url, key, min(3.0, seconds))

    stop = threading.Event()
    durations: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send() -> None:
        client = _Client(url, key)
        while not stop.is_set():
            status, ms = client.request("POST", "/v1/routing/estimate-cost", body)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    durations.append(ms)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # every sender has a body in flight
    loaded, loaded_errors = _probe(url, key, seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    return {
        "config": {"senders": senders, "body_bytes": len(body), "seconds": seconds, "probe_interval_s": PROBE_INTERVAL},
        "probe_idle": {**_summary(idle), "errors": idle_errors},
        "probe_loaded": {**_summary(loaded), "errors": loaded_errors},
        "estimates": {**_summary(durations), "statuses": {str(k): v for k, v in sorted(statuses.items())}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.url, args.key, args.model, seconds=args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
