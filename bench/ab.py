"""Code trees side by side, all served at once: which costs less CPU per request.

``bash bench/ab.sh before=/tmp/old after=.`` (or ``label=path:NAME~value,...`` to give a
tree environment variables, e.g. ``off=.:GATEWAY_API_FAST_PATH~0``; ``GATEWAY_RECORDING_ENABLED~0``
serves a tree with recording off, so ``on=. off=.:GATEWAY_RECORDING_ENABLED~0`` measures
what recording costs in alternated rounds). Each tree runs one
gunicorn worker on its own port against the same nginx upstream, database and Redis; wrk
runs of ``--duration`` seconds alternate between them (the order reversed every other
round) and the worker's CPU time (``/proc``) is divided by the requests of each run.
The medians over ``--rounds`` say which tree costs less.

Why beside ``bench.bench --compare-root``: that one restarts each tree for every round
and keeps the best of a few. On a shared machine whose speed drifts by tens of percent
within minutes, many short alternated runs with every server already warm, read by their
median, separate a 5-10% difference that best-of-3 misses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench import procs
from bench.bench import MODEL, configure_gateway, django_setup, drain_usage
from bench.report import parse_wrk

UPSTREAM_PORT = 19_280
FIRST_GATEWAY_PORT = 19_281


def variant(spec: str) -> tuple[str, Path, dict[str, str]]:
    """``label=path`` or ``label=path:NAME~value,NAME~value``."""
    label, _, rest = spec.partition("=")
    root, _, assignments = rest.partition(":")
    env = {}
    for item in filter(None, assignments.split(",")):
        name, _, value = item.partition("~")
        env[name] = value
    return label, Path(root or ".").resolve(), env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="label=path[:NAME~value,...]")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tmp", default="/tmp/gw-bench-ab")
    args = parser.parse_args()
    procs.raise_open_files()
    django_setup()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    key = configure_gateway(UPSTREAM_PORT, UPSTREAM_PORT)
    services: list[procs.Service] = [procs.start_nginx(UPSTREAM_PORT, tmp / "nginx")]
    servers: dict[str, tuple[str, list[int]]] = {}
    try:
        for index, spec in enumerate(args.trees):
            label, root, extra = variant(spec)
            port = FIRST_GATEWAY_PORT + index
            env = {**os.environ, **extra}
            recording = extra.get("GATEWAY_RECORDING_ENABLED", "1") != "0"  # off=.:GATEWAY_RECORDING_ENABLED~0
            service = procs.start_gateway(
                port, env, workers=1, recording=recording, log=tmp / f"{label}.log", root=root
            )
            services.append(service)
            servers[label] = (f"http://127.0.0.1:{port}/v1/chat/completions", procs.children(service.pid))

        def run(url: str, pids: list[int]) -> tuple[float, float]:
            before = procs.cpu_ticks(pids)
            result = parse_wrk(
                procs.run_wrk(url, connections=args.connections, duration=args.duration, key=key, model=MODEL)
            )
            ticks = procs.cpu_ticks(pids) - before
            requests = max(1, int(result["requests"]))
            return ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6, float(result["rps"])

        for url, pids in servers.values():
            run(url, pids)  # warm up
        found: dict[str, list[tuple[float, float]]] = {label: [] for label in servers}
        order = list(servers)
        for number in range(args.rounds):
            for label in order if number % 2 == 0 else reversed(order):
                found[label].append(run(*servers[label]))
            drain_usage()
            time.sleep(0.2)
        first = statistics.median(cpu for cpu, _ in found[order[0]])
        print(f"{args.connections} connections, {args.rounds} alternated rounds of {args.duration:g} s, medians:")
        for label, values in found.items():
            cpu = statistics.median(c for c, _ in values)
            rps = statistics.median(r for _, r in values)
            rounds = ", ".join(f"{c:.0f}" for c, _ in values)
            print(f"  {label}: {cpu:,.0f} µs CPU per request (x{cpu / first:.2f}), {rps:,.0f} req/s; rounds: {rounds}")
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
