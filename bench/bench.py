"""The gateway benchmark: what the gateway adds on top of a fast upstream.

Run it with ``bash bench/run.sh`` (``make bench``); see docs/benchmark.md. This module
drives the phases; ``bench/report.py`` turns the raw figures into the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import large_bodies, peers, procs
from bench.report import (
    STREAM_MARKER,
    STREAM_TARGET,
    check_targets,
    cpu_peak_percent,
    cpu_percent,
    headline,
    machine,
    median_split,
    parse_gc_pauses,
    parse_marked_json,
    parse_wrk,
    render_markdown,
    render_peers,
    rss_slope_kb,
    split_rest,
    summarize_collapsed,
    summarize_compare,
    summarize_peers,
)

ROOT = procs.ROOT
RESULTS = ROOT / "bench" / "results"
DOCS = (ROOT / "docs" / "benchmark.md", ROOT / "README.md")  # each gets the latest table between the markers
DOC_START = "<!-- bench:latest:start -->"
DOC_END = "<!-- bench:latest:end -->"
PEERS_START = "<!-- bench:peers:start -->"  # the peer table has its own block: a peer run rewrites only it
PEERS_END = "<!-- bench:peers:end -->"
MODEL = "bench-model"
STREAM_MODEL = "bench-stream"
UPSTREAM_REPLY = "Hello! This is a fixed benchmark reply."  # bench/nginx.conf's message
LARGE_MODEL = "large-gpt-4o"  # not matched by the bench rule (bench-*)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- the gateway's configuration (in this process, through Django) ----------------------


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
    import django

    django.setup()


def configure_gateway(upstream_port: int, stream_port: int) -> str:
    """Providers, deployments, prices and a rule for the benchmark; returns a client key."""
    from accounts.services import key_issue
    from gatewaysite.config.changes import config_changed
    from providers.models import Deployment, PricingRow, Provider
    from routing.models import RoutingRule, RoutingSettings, RuleTarget

    since = datetime(2024, 1, 1, tzinfo=UTC)
    deployments = {}
    for name, port, model, provider_model, price in (
        ("bench-a", upstream_port, MODEL, "bench-upstream", ("0.15", "0.60")),
        ("bench-b", upstream_port, MODEL, "bench-upstream", ("0.30", "1.20")),
        ("bench-stream", stream_port, STREAM_MODEL, "bench-stream", ("0.15", "0.60")),
        # large bodies phase: estimate-cost only (no call), tokenized with tiktoken's o200k_base
        ("bench-large", upstream_port, LARGE_MODEL, "gpt-4o", ("2.50", "10.00")),
    ):
        provider = Provider.objects.create(
            name=name, kind="openai", vendor=name, base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-upstream"
        )
        deployments[name] = Deployment.objects.create(
            name=f"{name}-dep", model_name=model, provider=provider, provider_model=provider_model
        )
        PricingRow.objects.create(
            vendor=name,
            model=provider_model,
            input_per_mtok=Decimal(price[0]),
            output_per_mtok=Decimal(price[1]),
            effective_from=since,
        )
    rule = RoutingRule.objects.create(name="bench-rule", priority=1, model_pattern="bench-*", action="route")
    RuleTarget.objects.create(rule=rule, deployment=deployments["bench-a"], position=0)
    RuleTarget.objects.create(rule=rule, deployment=deployments["bench-b"], position=1)
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "model"})
    config_changed()
    _key, secret = key_issue(name="bench")
    return secret


def strategy_names() -> list[str]:
    from routing.strategies.registry import strategy_names as names

    return names()


def set_strategy(name: str) -> None:
    from gatewaysite.config.changes import config_changed
    from routing.models import RoutingSettings

    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": name})
    config_changed()


def drain_usage() -> int:
    """Move the usage stream into Postgres (what Celery does in production)."""
    from usage.consumer import drain

    total = 0
    while True:
        moved = drain(batch_size=1000, max_batches=50)
        total += moved
        if not moved:
            return total


def usage_records() -> int:
    from usage.models import UsageRecord

    return UsageRecord.objects.count()


# --- measuring --------------------------------------------------------------------------


def probe(url: str, key: str, model: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return probe_reply(url, key, model, headers)[0]


def probe_reply(
    url: str, key: str, model: str, headers: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """One completion; the response headers and the parsed JSON body."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
        return {k.lower(): v for k, v in response.headers.items()}, payload


def wait_for_strategy(url: str, key: str, name: str, timeout: float = 10.0) -> tuple[str, int]:
    """Probe until the gateway routes with ``name``; returns what it used and the probe count."""
    deadline = time.monotonic() + timeout
    seen, probes = "", 0
    while time.monotonic() < deadline:
        seen = probe(url, key, MODEL).get("x-gateway-strategy", "")
        probes += 1
        if seen == name:
            break
        time.sleep(0.2)
    return seen, probes


def measure(
    url: str,
    *,
    connections: int,
    duration: float,
    key: str,
    pids: list[int],
    threads: int = 1,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    before = procs.cpu_ticks(pids)
    all_before, wrk_before = procs.process_ticks(), procs.children_ticks(CLK_TCK)
    machine_before, started = procs.machine_ticks(), time.monotonic()
    with procs.RssSampler(pids) as sampler:
        output = procs.run_wrk(
            url, connections=connections, duration=duration, key=key, model=MODEL, threads=threads, headers=headers
        )
    machine_after, window = procs.machine_ticks(), time.monotonic() - started
    all_after, wrk_after = procs.process_ticks(), procs.children_ticks(CLK_TCK)
    result = parse_wrk(output)
    # everything but the measured workers, per request and by command: the load generator
    # (wrk, a child that has exited by now), the upstream, Redis, the kernel's interrupts
    result["rest_us_per_req"] = split_rest(
        all_before,
        all_after,
        exclude=pids,
        extra_ticks={"wrk": wrk_after - wrk_before, "irq+softirq": machine_after[2] - machine_before[2]},
        requests=result["requests"],
        clk_tck=CLK_TCK,
    )
    # the whole machine's CPU over the same window as the workers' (what everything else spent
    # is the difference), and the hypervisor's steal
    if result["requests"]:
        busy = (machine_after[0] - machine_before[0]) / CLK_TCK
        result["machine_us_per_req"] = round(busy / result["requests"] * 1e6, 1)
    result["steal_cores"] = round((machine_after[1] - machine_before[1]) / CLK_TCK / window, 3)
    if pids:
        cpu_seconds = (procs.cpu_ticks(pids) - before) / CLK_TCK
        result["cpu_us_per_req"] = round(cpu_seconds / result["requests"] * 1e6, 1) if result["requests"] else None
        result["cpu_percent"] = round(100 * cpu_seconds / result["seconds"], 1)
        result["peak_rss_mb"] = sampler.peak_mb
    return result


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        return sha.strip() + ("+changes" if dirty.strip() else "")
    except OSError:
        return "?"


def replace_block(path: Path, start: str, end: str, body: str) -> None:
    """Rewrite what lies between the ``start`` and ``end`` markers of ``path``, if it has them."""
    doc = path.read_text() if path.exists() else ""
    if start in doc and end in doc:
        head, _, rest = doc.partition(start)
        _, _, tail = rest.partition(end)
        path.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}")


def stream_load(samples: list[tuple[float, int, int]], run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The gateway worker's memory and CPU over a stream run, from its /proc samples.

    ``rss_kb_per_stream``: the slope of RSS against the streams open during the ramp (what
    one more open stream costs); ``cpu_ramp_percent`` while streams start, ``cpu_open_percent``
    while all are open (from the end of the ramp to the first stream's end), and the busiest
    2 seconds, in % of one core; ``timeline``: one ``[seconds, RSS MB, CPU %]`` per second.
    """
    started = float(run.get("started_at") or (samples[0][0] if samples else 0.0))
    ramp, lasts = args.ramp, args.chunks * args.interval
    timeline = []
    previous = None
    for t, rss, ticks in samples:
        if previous is None or t - previous[0] >= 1.0:
            cpu = 100 * (ticks - previous[2]) / CLK_TCK / (t - previous[0]) if previous else None
            timeline.append([round(t - started, 1), round(rss / 1024, 1), None if cpu is None else round(cpu, 1)])
            previous = (t, rss, ticks)
    return {
        "rss_before_mb": round(samples[0][1] / 1024, 1) if samples else None,
        "rss_kb_per_stream": rss_slope_kb(samples, started=started, streams=args.streams, ramp=ramp),
        "cpu_ramp_percent": cpu_percent(samples, CLK_TCK, start=started, end=started + ramp),
        "cpu_open_percent": cpu_percent(samples, CLK_TCK, start=started + ramp, end=started + max(ramp, lasts)),
        "cpu_peak_percent": cpu_peak_percent(samples, CLK_TCK),
        "timeline": timeline,
    }


# --- phases -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(args.tmp)
        self.logs = self.tmp / "logs"
        self.env = dict(os.environ)
        self.gateway_url = f"http://127.0.0.1:{args.gateway_port}/v1/chat/completions"
        self.direct_url = f"http://127.0.0.1:{args.upstream_port}/v1/chat/completions"
        self.stream_direct_url = f"http://127.0.0.1:{args.stream_port}/v1/chat/completions"
        self.services: list[procs.Service] = []
        self.key = ""
        self.requests_recorded = 0
        self.in_flight_bound = 0
        self.recording = False
        self.results: dict[str, Any] = {
            "machine": machine(),
            "commit": commit(),
            "config": {
                "quick": args.quick,
                "duration": args.duration,
                "wrk_threads": 1,
                "usage_drain": "between phases, in the benchmark process (usage.consumer.drain)",
            },
            "runs": {"direct": {}, "strategies": {}},
        }

    def start(self, service: procs.Service) -> procs.Service:
        self.services.append(service)
        return service

    def stop(self, service: procs.Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def gateway(
        self,
        *,
        workers: int = 1,
        recording: bool = True,
        root: Path | None = None,
        upstream: bool = True,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> tuple[procs.Service, list[int]]:
        root = root or (Path(self.args.gateway_root).resolve() if self.args.gateway_root else ROOT)
        port = port or self.args.gateway_port
        service = self.start(
            procs.start_gateway(
                port,
                {**self.env, **(env or {})},
                workers=workers,
                recording=recording,
                log=self.logs / ("gateway.log" if port == self.args.gateway_port else f"gateway-{port}.log"),
                root=root,
            )
        )
        pids = procs.children(service.pid)
        self.recording = recording
        if not upstream:  # no upstream running: load the snapshot and key cache without a completion
            models = urllib.request.Request(
                self.gateway_url.replace("/chat/completions", "/models"),
                headers={"Authorization": f"Bearer {self.key}"},
            )
            with urllib.request.urlopen(models, timeout=30) as response:
                response.read()
            log(f"gateway up: {workers} worker(s) {pids}")
            return service, pids
        headers = probe(self.url(port), self.key, MODEL)  # loads the snapshot and key cache
        self.count(1)
        log(
            f"gateway up: {workers} worker(s) {pids}, recording {'on' if recording else 'off'}, "
            f"strategy {headers.get('x-gateway-strategy')}"
        )
        return service, pids

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    def count(self, requests: int, connections: int = 0) -> None:
        """Requests answered by a gateway that records usage (each must become a record).
        ``connections``: the wrk run's; when wrk stops it leaves up to one request per
        connection in flight, which the gateway still answers and records but wrk does not
        count. So the records must number at least the requests and at most the requests
        plus the sum of these."""
        if self.recording:
            self.requests_recorded += requests
            self.in_flight_bound += connections

    def records(self) -> dict[str, int]:
        """The records ingested so far against the requests counted (``count``)."""
        return {
            "ingested": usage_records(),
            "requests": self.requests_recorded,
            "in_flight_bound": self.in_flight_bound,
        }

    def warm(self, url: str, pids: list[int]) -> None:
        output = procs.run_wrk(url, connections=16, duration=self.args.warmup, key=self.key, model=MODEL)
        if pids:
            self.count(parse_wrk(output)["requests"], 16)

    def http_pair(self, url: str, pids: list[int]) -> dict[str, Any]:
        out = {}
        for conns in (1, 16):
            result = measure(url, connections=conns, duration=self.args.duration, key=self.key, pids=pids)
            out[f"c{conns}"] = result
            if pids:
                self.count(result["requests"], conns)
            log(
                f"  c{conns}: {result['rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
                f"errors {result['errors']}, CPU {result.get('cpu_us_per_req')} us/req"
            )
        return out

    def run_http(self) -> None:
        args = self.args
        runs = self.results["runs"]
        log("upstream direct")
        self.warm(self.direct_url, [])
        runs["direct"] = self.http_pair(self.direct_url, [])

        names = [n for n in (args.strategies.split(",") if args.strategies else strategy_names()) if n]
        default = "model" if "model" in names else names[0]
        self.results["default_strategy"] = default
        gateway, pids = self.gateway()
        for name in [default] + [n for n in names if n != default]:
            set_strategy(name)
            seen, probes = wait_for_strategy(self.gateway_url, self.key, name)
            self.count(probes)
            log(f"gateway, strategy {name} (in effect: {seen})")
            self.warm(self.gateway_url, pids)
            runs["strategies"][name] = self.http_pair(self.gateway_url, pids)
            runs["strategies"][name]["strategy_in_effect"] = seen
            drained = drain_usage()
            log(f"  drained {drained} usage events")
        set_strategy(default)
        self.count(wait_for_strategy(self.gateway_url, self.key, default)[1])
        self.stop(gateway)
        drain_usage()
        self.results["records"] = self.records()

        log("gateway, recording off")
        gateway, pids = self.gateway(recording=False)
        self.warm(self.gateway_url, pids)
        runs["recording_off"] = self.http_pair(self.gateway_url, pids)
        self.stop(gateway)

        if args.workers2:
            log("gateway, 1 process vs 2 processes at 16 connections per process")
            gateway, pids = self.gateway(workers=2)
            self.warm(self.gateway_url, pids)
            result = measure(
                self.gateway_url, connections=32, duration=args.duration, key=self.key, pids=pids, threads=2
            )
            self.count(result["requests"], 32)  # recorded: the side-by-side phase reads the records after it
            runs["workers2"] = {"c32": result}
            log(f"  2 processes, c32: {result['rps']} req/s, errors {result['errors']}")
            self.stop(gateway)
            drain_usage()
        if args.side_by_side:
            runs["side_by_side"] = self.side_by_side()
            self.results["records"] = self.records()

    def side_by_side(self) -> dict[str, Any]:
        """Recording on, recording off and (with ``--workers2``) two processes, served at once
        and measured in alternated rounds (the order reversed every other round): the machine's
        speed drifts by a tenth within minutes, which phases minutes apart cannot tell from
        the code. The targets on recording's cost and on two processes read the medians."""
        args = self.args
        base = args.gateway_port
        layout = [("on", 1, True, 16, base), ("off", 1, False, 16, base + 10)]  # the upstreams use base + 6, + 7
        if args.workers2:
            layout.append(("two", 2, True, 32, base + 11))
        log(f"side by side: {', '.join(label for label, *_ in layout)}; {args.side_rounds} alternated rounds")
        servers = {}
        for label, workers, recording, conns, port in layout:
            service, pids = self.gateway(workers=workers, recording=recording, port=port)
            servers[label] = (service, pids, recording, conns, port)
        found: dict[str, list[dict[str, Any]]] = {label: [] for label in servers}
        try:
            for _, pids, recording, _conns, port in servers.values():
                self.recording = recording
                self.warm(self.url(port), pids)
            order = list(servers)
            for number in range(args.side_rounds):
                for label in order if number % 2 == 0 else list(reversed(order)):
                    _, pids, recording, conns, port = servers[label]
                    threads = 2 if conns > 16 else 1
                    result = measure(
                        self.url(port),
                        connections=conns,
                        duration=args.side_duration,
                        key=self.key,
                        pids=pids,
                        threads=threads,
                    )
                    self.recording = recording
                    self.count(result["requests"], conns)
                    found[label].append(result)
                log(
                    "  round "
                    + str(number + 1)
                    + ": "
                    + ", ".join(
                        f"{label} {found[label][-1]['rps']} req/s ({found[label][-1].get('cpu_us_per_req')} us/req)"
                        for label in order
                    )
                )
                drain_usage()
        finally:
            for service, *_ in servers.values():
                self.stop(service)
            self.recording = False
        out: dict[str, Any] = {"rounds": args.side_rounds, "duration": args.side_duration}
        for label, results in found.items():
            out[label] = {
                "connections": servers[label][3],
                "rps": statistics.median(r["rps"] for r in results),
                "cpu_us_per_req": statistics.median(r.get("cpu_us_per_req") or 0 for r in results),
                "machine_us_per_req": statistics.median(r.get("machine_us_per_req") or 0 for r in results),
                "steal_cores": statistics.median(r["steal_cores"] for r in results),
                "rest_us_per_req": median_split([r.get("rest_us_per_req") or {} for r in results]),
                "rps_rounds": [r["rps"] for r in results],
                "errors": sum(r["errors"] for r in results),
            }
        log(
            f"  medians: { {label: (v['rps'], v['cpu_us_per_req']) for label, v in out.items() if isinstance(v, dict)} }"
        )
        return out

    def stream_client(self, url: str) -> dict[str, Any]:
        args = self.args
        cmd = [
            procs.PYTHON,
            "-m",
            "bench.stream_client",
            "--url",
            url,
            "--streams",
            str(args.streams),
            "--ramp",
            str(args.ramp),
            "--key",
            self.key,
            "--model",
            STREAM_MODEL,
        ]
        timeout = args.ramp + args.chunks * args.interval + 300
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"stream client failed: {done.stderr[-2000:]}")
        return parse_marked_json(done.stdout, STREAM_MARKER)

    def run_streams(self) -> None:
        args = self.args
        upstream = self.start(
            procs.start_stream_upstream(args.stream_port, args.chunks, args.interval, self.logs / "stream-upstream.log")
        )
        streams: dict[str, Any] = {
            "config": {"streams": args.streams, "ramp": args.ramp, "chunks": args.chunks, "interval": args.interval}
        }
        log(f"streams direct: {args.streams} over {args.ramp} s, {args.chunks} chunks x {args.interval} s")
        upstream_pid = [upstream.pid]
        before = procs.cpu_ticks(upstream_pid)
        direct = self.stream_client(self.stream_direct_url)
        direct["upstream_cpu_s"] = round((procs.cpu_ticks(upstream_pid) - before) / CLK_TCK, 2)
        streams["direct"] = direct
        log(f"  {direct}")
        gateway_log = self.logs / "gateway.log"
        log_from = gateway_log.stat().st_size if gateway_log.exists() else 0
        gateway, pids = self.gateway(env={"GUNICORN_GC_LOG": "1"})
        log("streams through the gateway")
        before = procs.cpu_ticks(pids)
        spy = self.start_spy(pids[0], "streams", args.ramp + args.chunks * args.interval) if args.profile else None
        upstream_before = procs.cpu_ticks(upstream_pid)
        with procs.RssSampler(pids, interval=0.2, timeline=True) as sampler:
            through = self.stream_client(self.gateway_url)
        through["upstream_cpu_s"] = round((procs.cpu_ticks(upstream_pid) - upstream_before) / CLK_TCK, 2)
        through.update(stream_load(sampler.samples, through, args))
        if spy is not None:
            spy.wait(60)
            raw = RESULTS / "profile-streams.txt"
            summary = summarize_collapsed(raw.read_text().splitlines()) if raw.exists() else {}
            (RESULTS / "profile-streams.json").write_text(json.dumps(summary, indent=2) + "\n")
            log(f"profile streams: {summary.get('samples')} samples; buckets {summary.get('buckets')}")
        through["gateway_cpu_s"] = round((procs.cpu_ticks(pids) - before) / CLK_TCK, 2)
        through["peak_rss_mb"] = sampler.peak_mb
        through["vm_hwm_mb"] = round(max(procs.rss_kb(p).get("VmHWM", 0) for p in pids) / 1024, 1)
        self.stop(gateway)
        with gateway_log.open("rb") as handle:
            handle.seek(log_from)
            through.update(parse_gc_pauses(handle.read().decode(errors="replace")))
        streams["gateway"] = through
        log(f"  { ({k: v for k, v in through.items() if k != 'timeline'}) }")
        self.stop(upstream)
        self.results["streams"] = streams
        drain_usage()

    def run_large(self) -> None:
        """Four 4 MB estimate-cost bodies at once against one process, GET /v1/models timed meanwhile."""
        gateway, _pids = self.gateway(upstream=False)
        base = self.gateway_url.rsplit("/v1/", 1)[0]
        seconds = 5.0 if self.args.quick else 10.0
        log(f"large bodies: {large_bodies.SENDERS} x {large_bodies.BODY_BYTES} bytes for {seconds} s")
        result = large_bodies.measure(base, self.key, LARGE_MODEL, seconds=seconds)
        log(f"  probe idle {result['probe_idle']}")
        log(f"  probe loaded {result['probe_loaded']}")
        log(f"  estimates {result['estimates']}")
        self.results["large_bodies"] = result
        self.stop(gateway)

    def run_compare(self) -> None:
        """The same load on other code trees and this one, alternated round by round.

        ``--compare-root before=/tmp/a,step1=/tmp/b``: each labelled tree is served in turn
        (``after`` is this tree); ratios are against the first.
        """
        args = self.args
        variants: list[tuple[str, Path]] = []
        for index, item in enumerate(x for x in args.compare_root.split(",") if x):
            label, _, path = item.rpartition("=")
            variants.append((label or f"tree{index + 1}", Path(path).resolve()))
        variants.append(("after", ROOT))
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in variants}
        direct: list[dict[str, Any]] = []
        for round_number in range(args.compare_rounds):
            direct.append(self.http_pair(self.direct_url, []))
            for label, root in variants:
                log(f"compare round {round_number + 1}: {label} ({root})")
                gateway, pids = self.gateway(root=root)
                self.warm(self.gateway_url, pids)
                rounds[label].append(self.http_pair(self.gateway_url, pids))
                self.stop(gateway)
                drain_usage()
        self.results["compare"] = summarize_compare(
            rounds, direct, roots={label: str(root) for label, root in variants}
        )

    def install_peers(self) -> dict[str, str]:
        log(f"peers: Portkey gateway {peers.PORTKEY_VERSION}, LiteLLM proxy {peers.LITELLM_VERSION} (bench/.peers/)")
        return {"portkey": peers.install_portkey(), "litellm": peers.install_litellm()}

    def peer_targets(self, versions: dict[str, str]) -> list[peers.Target]:
        """The gateway (one process, every record on), Portkey and LiteLLM, all running;
        each answers one completion with the upstream's reply before it is measured."""
        args = self.args
        workdir = self.tmp / "peers"
        _gateway, pids = self.gateway()
        targets = [peers.Target("gateway", self.gateway_url, self.key, pids=pids, version=self.results["commit"])]
        portkey = self.start(peers.start_portkey(args.portkey_port, workdir))
        targets.append(
            peers.Target(
                "portkey",
                f"http://127.0.0.1:{args.portkey_port}/v1/chat/completions",
                peers.UPSTREAM_KEY,
                headers=peers.portkey_headers(args.upstream_port),
                pids=[portkey.pid],
                version=versions["portkey"],
            )
        )
        master_key = "sk-litellm-" + secrets.token_hex(16)
        litellm = self.start(peers.start_litellm(args.litellm_port, args.upstream_port, MODEL, master_key, workdir))
        targets.append(
            peers.Target(
                "litellm",
                f"http://127.0.0.1:{args.litellm_port}/v1/chat/completions",
                master_key,
                pids=[litellm.pid],
                version=versions["litellm"],
            )
        )
        for target in targets:
            _headers, reply = probe_reply(target.url, target.key, MODEL, target.headers)
            content = (reply.get("choices") or [{}])[0].get("message", {}).get("content")
            if content != UPSTREAM_REPLY:
                raise RuntimeError(f"{target.label} did not answer with the upstream's reply: {reply}")
            if target.label == "gateway":
                self.count(1)
            log(f"  {target.label} {target.version} up, pids {target.pids}")
        return targets

    def run_peers(self, versions: dict[str, str]) -> None:
        """Gateway, Portkey and LiteLLM in alternated rounds on the same upstream: each round
        measures nginx directly at 1 connection, then each server at 1 and 16 connections."""
        args = self.args
        log("peers: starting the gateway, Portkey and LiteLLM")
        targets = self.peer_targets(versions)
        rounds: dict[str, list[dict[str, Any]]] = {t.label: [] for t in targets}
        direct: list[dict[str, Any]] = []
        for round_number in range(args.peer_rounds):
            result = measure(self.direct_url, connections=1, duration=args.duration, key=self.key, pids=[])
            direct.append({"c1": result})
            log(f"peers round {round_number + 1}: direct c1 p50 {result['p50_ms']} ms")
            for target in targets:
                log(f"peers round {round_number + 1}: {target.label}")
                warm = procs.run_wrk(
                    target.url,
                    connections=16,
                    duration=args.warmup,
                    key=target.key,
                    model=MODEL,
                    headers=target.headers,
                )
                out = {}
                for conns in (1, 16):
                    out[f"c{conns}"] = result = measure(
                        target.url,
                        connections=conns,
                        duration=args.duration,
                        key=target.key,
                        pids=target.pids,
                        headers=target.headers,
                    )
                    log(
                        f"  c{conns}: {result['rps']} req/s, p50 {result['p50_ms']} ms, errors {result['errors']}, "
                        f"CPU {result.get('cpu_us_per_req')} us/req"
                    )
                rounds[target.label].append(out)
                if target.label == "gateway":
                    self.count(
                        parse_wrk(warm)["requests"] + out["c1"]["requests"] + out["c16"]["requests"], 16 + 1 + 16
                    )
                    drain_usage()
        self.results["peers"] = summarize_peers(rounds, direct, versions={t.label: t.version for t in targets})
        for label, ratios in self.results["peers"]["ratios"].items():
            log(f"peers: gateway / {label}: req/s x{ratios['rps']}, added p50 x{ratios['added_p50']}")
        for service in reversed(list(self.services)):
            if service.name in ("portkey", "litellm") or service.name.startswith("gateway"):
                self.stop(service)
        drain_usage()

    def run_ratelimit(self) -> None:
        """One key without limits against one with RPM and TPM limits it never reaches, alternated."""
        from accounts.services import key_issue

        _key, limited = key_issue(name="bench-limited", rpm_limit=2_000_000_000, tpm_limit=2_000_000_000)
        gateway, pids = self.gateway()
        keys = {"no limits": self.key, "RPM + TPM limits": limited}
        rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in keys}
        for key in keys.values():  # warm both: key cache, tokenizer, scripts
            procs.run_wrk(self.gateway_url, connections=16, duration=self.args.warmup, key=key, model=MODEL)
        for round_number in range(self.args.compare_rounds):
            for label, key in keys.items():
                result = measure(self.gateway_url, connections=16, duration=self.args.duration, key=key, pids=pids)
                self.count(result["requests"], 16)
                rounds[label].append(result)
                log(f"rate limit round {round_number + 1}, {label}: {result['rps']} req/s, errors {result['errors']}")
        self.stop(gateway)
        drain_usage()
        best = {label: max(runs, key=lambda r: r["rps"]) for label, runs in rounds.items()}
        self.results["ratelimit"] = {
            "rounds": self.args.compare_rounds,
            "connections": 16,
            "runs": rounds,
            "best": best,
            "rps_ratio": round(best["RPM + TPM limits"]["rps"] / best["no limits"]["rps"], 3),
        }
        log(f"rate limiting: throughput ratio {self.results['ratelimit']['rps_ratio']}")

    def start_spy(self, pid: int, label: str, seconds: float) -> subprocess.Popen[bytes] | None:
        spy = str(ROOT / ".venv" / "bin" / "py-spy")
        if not os.path.exists(spy):
            log("py-spy is not installed (.venv/bin/pip install py-spy); no profile")
            return None
        RESULTS.mkdir(parents=True, exist_ok=True)
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200", "--nonblocking"]
        cmd += ["--format", "raw", "--output", str(RESULTS / f"profile-{label}.txt")]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_profile(self) -> None:
        """py-spy on the single worker under 16-connection load."""
        args = self.args
        profiles = {}
        for recording in (True, False):
            label = "recording_on" if recording else "recording_off"
            gateway, pids = self.gateway(recording=recording)
            self.warm(self.gateway_url, pids)
            spy_proc = self.start_spy(pids[0], label, args.profile_seconds)
            raw = RESULTS / f"profile-{label}.txt"
            time.sleep(0.5)
            load = measure(self.gateway_url, connections=16, duration=args.profile_seconds, key=self.key, pids=pids)
            if spy_proc is not None:
                spy_proc.wait(60)
            summary = summarize_collapsed(raw.read_text().splitlines()) if raw.exists() else {}
            summary["load"] = {k: load.get(k) for k in ("rps", "p50_ms", "cpu_us_per_req", "cpu_percent")}
            per_request = load.get("cpu_us_per_req") or 0
            for bucket in summary.get("buckets", []):  # the worker's CPU per request, split by bucket
                bucket["cpu_us_per_req"] = round(per_request * bucket["percent"] / 100, 1)
            profiles[label] = summary
            log(f"profile {label}: {summary.get('samples')} samples; buckets {summary.get('buckets')}")
            self.stop(gateway)
            drain_usage()
        (RESULTS / "profile.json").write_text(json.dumps(profiles, indent=2) + "\n")
        self.results["profile"] = {k: {"buckets": v.get("buckets"), "load": v.get("load")} for k, v in profiles.items()}

    def write(self) -> None:
        figures = headline(self.results)
        figures["stream_count"] = self.results.get("streams", {}).get("config", {}).get("streams", 0)
        self.results["headline"] = figures
        self.results["targets"] = check_targets(figures)
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.results, indent=2) + "\n"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (RESULTS / f"run-{stamp}.json").write_text(text)
        markdown = render_markdown(self.results)
        peer_results = self.results.get("peers")
        if peer_results:
            self.write_peers(peer_results)
        if not {"http", "streams"} & self.args.phases:  # a code comparison or peers only: keep the latest results
            print(markdown)
            return
        (RESULTS / "latest.json").write_text(text)
        (RESULTS / "latest.md").write_text(markdown)
        # the docs' latest block leaves the peers out: they have their own block
        body = render_markdown({k: v for k, v in self.results.items() if k != "peers"})
        body = body.split("\n", 2)[2] if body.startswith("# ") else body
        body = body.replace("\n## ", "\n### ")
        for path in DOCS if self.args.docs else ():
            replace_block(path, DOC_START, DOC_END, body)
        print(markdown)

    def write_peers(self, peer_results: dict[str, Any]) -> None:
        """bench/results/peers.{json,md} and the docs' peer block, whichever phases ran."""
        machine = self.results["machine"]
        info = (
            f"- date: {machine['date']}; {machine['nproc']} CPUs ({machine['cpu_model']}), "
            f"load average at start {', '.join(str(x) for x in machine['load_avg_at_start'])}; "
            f"{self.args.duration} s per wrk run"
        )
        table = "\n".join([info, "", *render_peers(peer_results, heading=None)])
        (RESULTS / "peers.json").write_text(
            json.dumps({"machine": machine, "commit": self.results["commit"], "peers": peer_results}, indent=2) + "\n"
        )
        (RESULTS / "peers.md").write_text("# Gateway benchmark: beside other gateways\n\n" + table + "\n")
        for path in DOCS if self.args.docs else ():
            replace_block(path, PEERS_START, PEERS_END, table)

    def run(self) -> None:
        django_setup()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            # installed first: a missing tool fails the run before the long phases
            versions = self.install_peers() if "peers" in self.args.phases else {}
            if (
                {"http", "streams", "peers", "ratelimit"} & self.args.phases
                or self.args.compare_root
                or self.args.profile
            ):
                self.start(procs.start_nginx(self.args.upstream_port, self.tmp / "nginx"))
            self.key = configure_gateway(self.args.upstream_port, self.args.stream_port)
            if "http" in self.args.phases:
                self.run_http()
            if "streams" in self.args.phases:
                self.run_streams()
            if "large" in self.args.phases:
                self.run_large()
            if "peers" in self.args.phases:
                self.run_peers(versions)
            if "ratelimit" in self.args.phases:
                self.run_ratelimit()
            if self.args.compare_root:
                self.run_compare()
            if self.args.profile:
                self.run_profile()
            self.write()
        finally:
            for service in reversed(list(self.services)):
                service.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gateway benchmark (see docs/benchmark.md).")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs: 3 s per HTTP run, 2,000 streams of 10 s started over 8 s",
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk run (10; quick 3)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--streams", type=int, help="concurrent streams (8,000; quick 2,000)")
    parser.add_argument("--chunks", type=int, help="chunks per stream (30; quick 20)")
    parser.add_argument("--interval", type=float, help="seconds between chunks (2; quick 0.5)")
    parser.add_argument("--ramp", type=float, help="seconds over which the streams start (20; quick 8)")
    parser.add_argument("--strategies", default="", help="comma-separated; default: every registered strategy")
    parser.add_argument(
        "--phases",
        default="http,streams,large",
        help="http, streams, large, ratelimit, peers (comma-separated; see docs/benchmark.md)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="add the peer phase: Portkey's gateway and LiteLLM's proxy beside the gateway (installs them once)",
    )
    parser.add_argument("--peer-rounds", type=int, default=3, help="alternated rounds of the peer phase")
    parser.add_argument("--portkey-port", type=int, default=18086)
    parser.add_argument("--litellm-port", type=int, default=18087)
    parser.add_argument("--no-workers2", dest="workers2", action="store_false")
    parser.add_argument(
        "--no-side-by-side",
        dest="side_by_side",
        action="store_false",
        help="leave out the alternated rounds of recording on/off and one/two processes",
    )
    parser.add_argument("--side-rounds", type=int, help="alternated rounds side by side (8; quick 4)")
    parser.add_argument("--side-duration", type=float, default=3.0, help="seconds per side-by-side wrk run")
    parser.add_argument("--profile", action="store_true", help="also profile the worker with py-spy")
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument("--compare-root", default="", help="a code tree to compare with (before/after)")
    parser.add_argument("--compare-rounds", type=int, default=3)
    parser.add_argument("--gateway-root", default="", help="serve the gateway from another code tree")
    parser.add_argument(
        "--no-docs", dest="docs", action="store_false", help="do not update docs/benchmark.md and README.md"
    )
    parser.add_argument("--upstream-port", type=int, default=18090)
    parser.add_argument("--stream-port", type=int, default=18091)
    parser.add_argument("--gateway-port", type=int, default=18084)
    parser.add_argument("--tmp", default="/tmp/gw-bench")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.side_rounds is None:
        args.side_rounds = 4 if args.quick else 8
    # The full run holds the stream target: 8,000 streams open together in one process,
    # 4,000 chunks per second in all (docs/benchmark.md, "Concurrent streams").
    if args.streams is None:
        args.streams = 2000 if args.quick else STREAM_TARGET
    if args.chunks is None:
        args.chunks = 20 if args.quick else 30
    if args.interval is None:
        args.interval = 0.5 if args.quick else 2.0
    if args.ramp is None:
        args.ramp = 8.0 if args.quick else 20.0
    args.phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if args.peers:
        args.phases.add("peers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = procs.raise_open_files()  # inherited by every process the benchmark starts
    needed = 2 * args.streams + 256 if "streams" in args.phases else 0  # the gateway's: client + upstream
    if limit < needed:
        log(f"open-file limit {limit} is below the {needed} one gateway process needs for {args.streams} streams")
    Bench(args).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
