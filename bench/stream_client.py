"""Hold many streaming chat completions open at once (gevent, raw sockets).

Starts ``--streams`` streams spread evenly over ``--ramp`` seconds, each on its own
connection, and measures per stream: time to first token (first ``data:`` event after
the response headers, from the moment the request was sent), total duration, events
received, and whether it ended with ``[DONE]``. Prints one JSON line prefixed with
``STREAM_JSON``.

    python -m bench.stream_client --url http://127.0.0.1:18084/v1/chat/completions \\
        --streams 2000 --ramp 10 --key sk-... --model bench-stream
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402

from bench.procs import raise_open_files  # noqa: E402
from bench.report import summarize_streams  # noqa: E402


@dataclass
class StreamOutcome:
    ok: bool
    error: str = ""
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    events: int = 0
    max_gap_ms: float = 0.0  # the longest wait between two reads that brought events


def build_request(host: str, port: int, path: str, key: str, model: str) -> bytes:
    body = orjson.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "Count slowly."}], "max_tokens": 64}
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nAccept: */*\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def one_stream(host: str, port: int, request: bytes, timeout: float, state: dict[str, int]) -> StreamOutcome:
    started = time.perf_counter()
    sock = None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(timeout)
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        sock.sendall(request)
        sent = time.perf_counter()
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                return StreamOutcome(False, "closed_before_headers", duration_ms=(time.perf_counter() - started) * 1000)
            buffer += data
        head, _, body = buffer.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"?"
        if status != b"200":
            return StreamOutcome(False, f"http_{status.decode(errors='replace')}")
        ttft = None
        events = 0
        tail = b""
        last = 0.0
        max_gap = 0.0
        while True:
            if b"data:" in body:
                now = time.perf_counter()
                if ttft is None:
                    ttft = (now - sent) * 1000
                else:
                    max_gap = max(max_gap, now - last)
                last = now
            if body:
                scan = tail + body
                events += body.count(b"data:")
                if b"data: [DONE]" in scan:
                    break
                if b'data: {"error"' in scan:
                    return StreamOutcome(False, "error_event", ttft, (time.perf_counter() - sent) * 1000, events)
                tail = scan[-32:]
            body = sock.recv(65536)
            if not body:
                return StreamOutcome(False, "cut_short", ttft, (time.perf_counter() - sent) * 1000, events)
        return StreamOutcome(True, "", ttft, (time.perf_counter() - sent) * 1000, events, max_gap * 1000)
    except TimeoutError:
        return StreamOutcome(False, "timeout", duration_ms=(time.perf_counter() - started) * 1000)
    except OSError as exc:
        return StreamOutcome(False, f"socket_{type(exc).__name__}", duration_ms=(time.perf_counter() - started) * 1000)
    finally:
        if sock is not None:
            state["open"] -= 1
            sock.close()


def run(url: str, streams: int, ramp: float, key: str, model: str, timeout: float) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    request = build_request(host, port, path, key, model)
    state = {"open": 0, "peak": 0}
    # Every stream's start is a timer armed before the first one fires (``spawn_later``): had
    # each stream's greenlet started at once to sleep until its time, the first streams'
    # answers would wait while the hub ran the other thousands of greenlets' first steps
    # (tens of milliseconds for 8,000), and count that wait in their time to first token.
    lead = 0.5
    started_at = time.time() + lead
    now = time.perf_counter()
    begin = now + lead
    jobs = [
        gevent.spawn_later(begin + ramp * i / max(1, streams) - now, one_stream, host, port, request, timeout, state)
        for i in range(streams)
    ]
    gevent.joinall(jobs)
    outcomes = [job.value if job.successful() else StreamOutcome(False, "client_crash") for job in jobs]
    dump = os.environ.get("BENCH_STREAM_DUMP")
    if dump:  # per-stream figures, in start order, for looking into outliers
        with open(dump, "w") as handle:
            for index, o in enumerate(outcomes):
                handle.write(f"{ramp * index / max(1, streams):.3f} {o.ok} {o.error} {o.ttft_ms} {o.duration_ms:.1f}\n")
    summary = summarize_streams(
        ok=[o.ok for o in outcomes],
        errors=[o.error for o in outcomes if not o.ok],
        ttft_ms=[o.ttft_ms for o in outcomes if o.ttft_ms is not None],
        duration_ms=[o.duration_ms for o in outcomes if o.ok],
        events=[o.events for o in outcomes if o.ok],
        max_gap_ms=[o.max_gap_ms for o in outcomes if o.ok],
    )
    summary["started_at"] = round(started_at, 3)  # wall clock: lines the run up with /proc samples
    summary["wall_s"] = round(time.perf_counter() - begin, 3)
    summary["peak_open"] = state["peak"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary["client_max_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    summary["client_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which the streams start")
    parser.add_argument("--key", default="sk-bench")
    parser.add_argument("--model", default="bench-stream")
    parser.add_argument("--timeout", type=float, default=120.0, help="socket timeout per read")
    args = parser.parse_args(argv)
    raise_open_files()
    summary = run(args.url, args.streams, args.ramp, args.key, args.model, args.timeout)
    sys.stdout.write("STREAM_JSON " + orjson.dumps(summary).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
