"""The benchmark's pure logic: parsing tool output, percentiles, targets, the tables.

Nothing here starts processes or reads the clock, so it is tested directly
(tests/bench/). ``bench/bench.py`` runs the processes and calls these.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WRK_MARKER = "WRK_JSON "
STREAM_MARKER = "STREAM_JSON "


# --- parsing ----------------------------------------------------------------------------


def parse_marked_json(output: str, marker: str) -> dict[str, Any]:
    """The JSON object on the last line of ``output`` that starts with ``marker``."""
    for line in reversed(output.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    raise ValueError(f"no {marker.strip()} line in output")


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's summary (printed by bench/post.lua's ``done``) with derived figures.

    wrk counts a response with status >= 400 as a status error; socket errors are
    connect/read/write/timeout. Latencies are converted to milliseconds.
    """
    raw = parse_marked_json(output, WRK_MARKER)
    seconds = raw["duration_us"] / 1_000_000
    socket_errors = raw["errors_connect"] + raw["errors_read"] + raw["errors_write"] + raw["errors_timeout"]
    result: dict[str, Any] = {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "rps": round(raw["requests"] / seconds, 1) if seconds > 0 else 0.0,
        "errors_status": raw["errors_status"],
        "errors_socket": socket_errors,
        "errors": raw["errors_status"] + socket_errors,
        "mean_ms": round(raw["latency_mean_us"] / 1000, 3),
        "max_ms": round(raw["latency_max_us"] / 1000, 3),
    }
    for key, value in raw.items():
        match = re.fullmatch(r"latency_p(\d+(?:_\d+)?)_us", key)
        if match:
            result[f"p{match.group(1)}_ms"] = round(value / 1000, 3)
    return result


def parse_proc_status(text: str) -> dict[str, int]:
    """``VmRSS`` / ``VmHWM`` (and other ``Vm*`` lines) of /proc/<pid>/status, in kB."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.startswith("Vm"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[name] = int(parts[0])
    return values


def parse_proc_stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from /proc/<pid>/stat; the command may contain spaces."""
    after = text[text.rindex(")") + 2 :].split()
    # after[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(after[11]) + int(after[12])


def parse_machine_ticks(text: str) -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine from /proc/stat's first line: busy is
    every state but idle, iowait and steal (user, nice, system, irq, softirq); steal is the
    time the hypervisor gave the virtual CPUs to others."""
    fields = [int(v) for v in text.splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
    return user + nice + system + irq + softirq, steal


def parse_interrupt_ticks(text: str) -> int:
    """irq + softirq clock ticks of the whole machine from /proc/stat's first line: kernel
    work no process is charged for (on loopback, much of the receiving side of TCP)."""
    fields = [int(v) for v in text.splitlines()[0].split()[1:8]] + [0] * 7
    return fields[5] + fields[6]


def parse_proc_stat_name_ticks(text: str) -> tuple[str, int]:
    """(command name, utime + stime) from /proc/<pid>/stat."""
    return text[text.index("(") + 1 : text.rindex(")")], parse_proc_stat_cpu_ticks(text)


def split_rest(
    before: dict[int, tuple[str, int]],
    after: dict[int, tuple[str, int]],
    *,
    exclude: list[int],
    extra_ticks: dict[str, int],
    requests: int,
    clk_tck: int,
    floor_us: float = 1.0,
) -> dict[str, float]:
    """What the processes other than ``exclude`` (the measured workers) spent per request
    between two /proc snapshots (``pid -> (name, ticks)``), summed by command name, in µs,
    largest first. ``extra_ticks``: CPU no snapshot holds, by label (the load generator,
    which has exited by the second snapshot; the kernel's interrupts). Processes that
    started in between count from zero; names under ``floor_us`` are summed as "other"."""
    if not requests:
        return {}
    ticks: dict[str, int] = dict(extra_ticks)
    skip = set(exclude)
    for pid, (name, now) in after.items():
        if pid in skip:
            continue
        # a kernel worker's name says what it is doing now (kworker/u8:0-writeback): one label
        name = name.partition("-")[0].partition("/")[0] if name.startswith("kworker/") else name
        spent = now - before[pid][1] if pid in before else now
        if spent > 0:
            ticks[name] = ticks.get(name, 0) + spent
    per_req = {name: t / clk_tck / requests * 1e6 for name, t in ticks.items()}
    out: dict[str, float] = {}
    other = 0.0
    for name, us in sorted(per_req.items(), key=lambda item: -item[1]):
        if us >= floor_us:
            out[name] = round(us, 1)
        else:
            other += us
    if other:
        out["other"] = round(other, 1)
    return out


def median_split(splits: list[dict[str, float]]) -> dict[str, float]:
    """The median of each name over rounds' ``split_rest`` (a name missing from a round
    counts as 0 there), largest first."""
    names = {name for split in splits for name in split}
    medians = {name: round(statistics.median(split.get(name, 0.0) for split in splits), 1) for name in names}
    return dict(sorted(((n, us) for n, us in medians.items() if us > 0), key=lambda item: -item[1]))


def two_process_bound(one: dict[str, Any], two: dict[str, Any], cores: int = 2) -> float | None:
    """The two-process ratio the machine allows. With every core busy, two workers serve at
    most ``cores`` seconds of CPU divided by the whole machine's CPU per request (the workers'
    and everything else's: the load generator, nginx, Redis, the kernel) a second, where one
    worker serves one second divided by its own CPU per request."""
    try:
        return round(cores * one["cpu_us_per_req"] / two["machine_us_per_req"], 2)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def parse_cpuinfo(text: str) -> str:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return "unknown"


def parse_meminfo_gib(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


# --- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (``p`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def summarize_streams(
    *,
    ok: Sequence[bool],
    errors: Iterable[str],
    ttft_ms: Sequence[float],
    duration_ms: Sequence[float],
    events: Sequence[int],
    max_gap_ms: Sequence[float] = (),
) -> dict[str, Any]:
    """One run of the stream client. ``max_gap_ms``: each stream's longest wait between
    two events; above the upstream's interval, the difference is how long a proxy held
    a chunk back (an event loop busy elsewhere, a garbage-collection pause)."""
    return {
        "streams": len(ok),
        "ok": sum(1 for o in ok if o),
        "errors": len(ok) - sum(1 for o in ok if o),
        "error_kinds": dict(Counter(errors)),
        "ttft_p50_ms": _r(percentile(ttft_ms, 50)),
        "ttft_p99_ms": _r(percentile(ttft_ms, 99)),
        "ttft_max_ms": _r(max(ttft_ms) if ttft_ms else None),
        "duration_p50_s": _r(p / 1000 if (p := percentile(duration_ms, 50)) is not None else None, 3),
        "duration_p99_s": _r(p / 1000 if (p := percentile(duration_ms, 99)) is not None else None, 3),
        "events_min": min(events) if events else 0,
        "gap_max_p50_ms": _r(percentile(max_gap_ms, 50)),
        "gap_max_p99_ms": _r(percentile(max_gap_ms, 99)),
        "gap_max_ms": _r(max(max_gap_ms) if max_gap_ms else None),
    }


def rss_slope_kb(
    samples: Sequence[tuple[float, int, int]], *, started: float, streams: int, ramp: float
) -> float | None:
    """Memory per open stream: the least-squares slope of RSS (kB) against the streams open.

    ``samples`` are ``(time, RSS kB, CPU ticks)``; the client starts ``streams`` streams
    evenly from ``started`` over ``ramp`` seconds, so ``streams * (t - started) / ramp`` are
    open at ``t`` during the ramp (each lasts longer than the ramp). Only the ramp's
    samples are used: after it the count stays put while garbage comes and goes.
    """
    if ramp <= 0:
        return None
    points = [
        (streams * (t - started) / ramp, float(rss)) for t, rss, _ticks in samples if started <= t <= started + ramp
    ]
    if len(points) < 3:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        return None
    return round(sum((x - mean_x) * (y - mean_y) for x, y in points) / spread, 2)


def cpu_percent(samples: Sequence[tuple[float, int, int]], clk_tck: int, *, start: float, end: float) -> float | None:
    """CPU of the sampled processes between ``start`` and ``end`` (wall-clock times), in % of one core."""
    inside = [(t, ticks) for t, _rss, ticks in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return round(100 * (inside[-1][1] - inside[0][1]) / clk_tck / (inside[-1][0] - inside[0][0]), 1)


def cpu_peak_percent(samples: Sequence[tuple[float, int, int]], clk_tck: int, *, window: float = 2.0) -> float | None:
    """The busiest ``window`` seconds of the sampled processes, in % of one core."""
    best: float | None = None
    j = 0
    for i, (t, _rss, ticks) in enumerate(samples):
        while j < len(samples) and samples[j][0] < t + window:
            j += 1
        if j - 1 <= i or samples[j - 1][0] - t < window / 2:
            continue
        value = 100 * (samples[j - 1][2] - ticks) / clk_tck / (samples[j - 1][0] - t)
        best = value if best is None else max(best, value)
    return None if best is None else round(best, 1)


GC_PAUSE = re.compile(
    r"gc pause: generation (\d), ([\d.]+) ms(?:, ([\d.]+) ms CPU)?(?:, \d+ collected, (\d+) objects)?"
)


def parse_gc_pauses(text: str) -> dict[str, Any]:
    """The ``gc pause`` lines of a gateway log (``GUNICORN_GC_LOG=1``): full collections
    (generation 2), wall-clock and CPU milliseconds, and the slowest younger one."""
    full: list[float] = []
    full_cpu: list[float] = []
    young: list[float] = []
    young_cpu: list[float] = []
    objects = 0
    for match in GC_PAUSE.finditer(text):
        if match.group(4):
            objects = max(objects, int(match.group(4)))
        wall, cpu = (full, full_cpu) if match.group(1) == "2" else (young, young_cpu)
        wall.append(float(match.group(2)))
        if match.group(3):
            cpu.append(float(match.group(3)))
    return {
        "gc_full": len(full),
        "gc_full_max_ms": max(full) if full else None,
        "gc_full_total_ms": round(sum(full), 1),
        "gc_full_max_cpu_ms": max(full_cpu) if full_cpu else None,
        "gc_full_max_objects": objects or None,
        "gc_young_logged": len(young),
        "gc_young_max_ms": max(young) if young else None,
        "gc_young_max_cpu_ms": max(young_cpu) if young_cpu else None,
    }


def added(gateway: float | None, direct: float | None) -> float | None:
    """What the gateway adds on top of the direct figure."""
    if gateway is None or direct is None:
        return None
    return round(gateway - direct, 3)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def _best(values: list[float], pick: Callable[[list[float]], float]) -> float | None:
    return pick(values) if values else None


def summarize_compare(
    rounds: dict[str, list[dict[str, Any]]], direct: list[dict[str, Any]], *, roots: dict[str, str]
) -> dict[str, Any]:
    """Best of the alternated rounds per code tree (highest req/s, lowest CPU per request:
    the round least disturbed by other load on the machine), and ratios against the first."""
    labels = list(rounds)
    out: dict[str, Any] = {"roots": roots, "labels": labels, "rounds": len(rounds[labels[0]]) if labels else 0}
    for conns in ("c1", "c16"):
        row: dict[str, Any] = {}
        base_p50 = _best([d[conns]["p50_ms"] for d in direct if conns in d], min)
        for label in labels:
            runs = [r[conns] for r in rounds[label] if conns in r]
            p50 = _best([r["p50_ms"] for r in runs], min)
            row[label] = {
                "rps": _r(_best([r["rps"] for r in runs], max), 1),
                "p50_ms": _r(p50, 3),
                "added_p50_ms": added(p50, base_p50),
                "cpu_us_per_req": _r(
                    _best([r["cpu_us_per_req"] for r in runs if r.get("cpu_us_per_req") is not None], min), 1
                ),
            }
        first = row[labels[0]] if labels else {}
        for label in labels:
            row[label]["rps_ratio"] = ratio(row[label]["rps"], first.get("rps"))
            row[label]["cpu_ratio"] = ratio(row[label]["cpu_us_per_req"], first.get("cpu_us_per_req"))
        out[conns] = row
    return out


PEER_NAMES = {
    "gateway": "this gateway, every record on",
    "portkey": "Portkey gateway (`@portkey-ai/gateway`, node)",
    "litellm": "LiteLLM proxy (`litellm[proxy]`)",
}


def summarize_peers(
    rounds: dict[str, list[dict[str, Any]]], direct: list[dict[str, Any]], *, versions: dict[str, str]
) -> dict[str, Any]:
    """The peer phase: best of the alternated rounds per server (highest req/s at 16
    connections, lowest p50 at 1 connection and CPU per request: the rounds least disturbed
    by other load), the added p50 against the best direct p50, and the first server's
    ratios to each other one (req/s: above 1 is faster; added p50: below 1 adds less)."""
    labels = list(rounds)
    base_p50 = _best([d["c1"]["p50_ms"] for d in direct if "c1" in d], min)
    out: dict[str, Any] = {
        "labels": labels,
        "versions": versions,
        "rounds": len(rounds[labels[0]]) if labels else 0,
        "direct_p50_c1_ms": _r(base_p50, 3),
        "servers": {},
        "ratios": {},
    }
    for label in labels:
        c16 = [r["c16"] for r in rounds[label] if "c16" in r]
        c1 = [r["c1"] for r in rounds[label] if "c1" in r]
        p50 = _best([r["p50_ms"] for r in c1], min)
        out["servers"][label] = {
            "rps_c16": _r(_best([r["rps"] for r in c16], max), 1),
            "rps_c16_rounds": [r["rps"] for r in c16],
            "p50_c1_ms": _r(p50, 3),
            "added_p50_c1_ms": added(p50, base_p50),
            "p99_c1_ms": _r(_best([r["p99_ms"] for r in c1 if "p99_ms" in r], min), 3),
            "cpu_us_per_req_c16": _r(
                _best([r["cpu_us_per_req"] for r in c16 if r.get("cpu_us_per_req") is not None], min), 1
            ),
            "peak_rss_mb": _best([r["peak_rss_mb"] for r in c1 + c16 if r.get("peak_rss_mb") is not None], max),
            "errors": sum(r.get("errors", 0) for r in c1 + c16),
        }
    if labels:
        first = out["servers"][labels[0]]
        for label in labels[1:]:
            other = out["servers"][label]
            out["ratios"][label] = {
                "rps": ratio(first["rps_c16"], other["rps_c16"]),
                "added_p50": ratio(first["added_p50_c1_ms"], other["added_p50_c1_ms"]),
                "cpu": ratio(first["cpu_us_per_req_c16"], other["cpu_us_per_req_c16"]),
            }
    return out


# --- summary and targets ----------------------------------------------------------------

STREAM_TARGET = 8000  # streams one gateway process holds open together (the full run's default)

TARGETS = [
    # key, description, comparison, goal
    ("rps_c16", "throughput at 16 connections, every record on (req/s, 1 process)", ">=", 600.0),
    ("added_p50_c1_ms", "added latency p50 at 1 connection (ms)", "<=", 1.5),
    ("recording_cost", "usage+latency recording cost vs recording off (throughput share)", "<=", 0.10),
    ("stream_errors", f"{STREAM_TARGET:,} concurrent streams: errors", "==", 0),
    ("stream_added_ttft_p99_ms", f"{STREAM_TARGET:,} concurrent streams: added TTFT p99 (ms)", "<", 50.0),
    ("stream_peak_rss_mb", f"{STREAM_TARGET:,} concurrent streams: peak worker RSS (MB)", "<", 2048.0),
    ("two_process_ratio", "two processes vs one (throughput ratio)", ">=", 1.8),
    ("large_bodies_probe_p99_ms", "other requests during four 4 MB estimate-cost bodies: p99 (ms)", "<", 50.0),
]


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are about, computed from the raw runs."""
    runs = results.get("runs", {})
    direct = runs.get("direct", {})
    default = results.get("default_strategy", "model")
    gateway = runs.get("strategies", {}).get(default, {})
    off = runs.get("recording_off", {})
    one = gateway.get("c16", {}).get("rps")
    out: dict[str, Any] = {
        "rps_c16": one,
        "added_p50_c1_ms": added(gateway.get("c1", {}).get("p50_ms"), direct.get("c1", {}).get("p50_ms")),
        "added_p99_c1_ms": added(gateway.get("c1", {}).get("p99_ms"), direct.get("c1", {}).get("p99_ms")),
        "gateway_share_of_direct_c16": ratio(one, direct.get("c16", {}).get("rps")),
    }
    off_rps = off.get("c16", {}).get("rps")
    out["recording_cost"] = round(1 - one / off_rps, 3) if one and off_rps else None
    cpu_on = gateway.get("c16", {}).get("cpu_us_per_req")
    cpu_off = off.get("c16", {}).get("cpu_us_per_req")
    out["recording_cost_cpu"] = round(1 - cpu_off / cpu_on, 3) if cpu_on and cpu_off else None
    two = runs.get("workers2", {}).get("c32", {}).get("rps")
    out["two_process_ratio"] = ratio(two, one)
    side = runs.get("side_by_side") or {}
    side_on, side_off, side_two = (side.get(k, {}).get("rps") for k in ("on", "off", "two"))
    if side_on and side_off:  # alternated rounds: what the targets read when the run has them
        out["recording_cost_phases"] = out["recording_cost"]
        out["recording_cost"] = round(1 - side_on / side_off, 3)
        cpu_side_on, cpu_side_off = (side[k].get("cpu_us_per_req") for k in ("on", "off"))
        if cpu_side_on and cpu_side_off:
            out["recording_cost_cpu"] = round(1 - cpu_side_off / cpu_side_on, 3)
    if side_on and side_two:
        out["two_process_ratio_phases"] = out["two_process_ratio"]
        out["two_process_ratio"] = ratio(side_two, side_on)
    streams = results.get("streams", {})
    gw_streams, direct_streams = streams.get("gateway"), streams.get("direct")
    if gw_streams:
        out["stream_errors"] = gw_streams.get("errors")
        out["stream_added_ttft_p50_ms"] = added(
            gw_streams.get("ttft_p50_ms"), (direct_streams or {}).get("ttft_p50_ms")
        )
        out["stream_added_ttft_p99_ms"] = added(
            gw_streams.get("ttft_p99_ms"), (direct_streams or {}).get("ttft_p99_ms")
        )
        out["stream_peak_rss_mb"] = gw_streams.get("peak_rss_mb")
    large = results.get("large_bodies")
    if large:
        out["large_bodies_probe_p99_ms"] = large.get("probe_loaded", {}).get("p99_ms")
    for label, ratios in results.get("peers", {}).get("ratios", {}).items():
        out[f"rps_ratio_vs_{label}"] = ratios.get("rps")
        out[f"added_p50_ratio_vs_{label}"] = ratios.get("added_p50")
    return out


def check_targets(figures: dict[str, Any], *, streams_expected: int = STREAM_TARGET) -> list[dict[str, Any]]:
    checks = []
    for key, description, op, goal in TARGETS:
        value = figures.get(key)
        if key.startswith("stream_") and figures.get("stream_count", streams_expected) < STREAM_TARGET:
            description += f" (only {_fmt(figures.get('stream_count'))} streams in this run)"
        if value is None:
            met = None
        elif op == ">=":
            met = value >= goal
        elif op == "<=":
            met = value <= goal
        elif op == "<":
            met = value < goal
        else:
            met = value == goal
        checks.append({"key": key, "target": description, "goal": f"{op} {goal:g}", "value": value, "met": met})
    return checks


# --- tables -----------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def stream_load_sentence(gw: dict[str, Any]) -> str:
    """Memory per stream, CPU and garbage collection of the gateway worker over a stream run."""
    text = (
        f"Gateway worker: {_fmt(gw.get('rss_kb_per_stream'), 1)} kB per open stream (RSS against the streams "
        f"open during the ramp; {_fmt(gw.get('rss_before_mb'), 1)} MB before the run); CPU "
        f"{_fmt(gw.get('cpu_ramp_percent'), 1)}% of a core while the streams start, "
        f"{_fmt(gw.get('cpu_open_percent'), 1)}% while all are open, {_fmt(gw.get('cpu_peak_percent'), 1)}% "
        f"in the busiest 2 s; longest gap between two events of a stream (p99) "
        f"{_fmt(gw.get('gap_max_p99_ms'), 0)} ms."
    )
    if gw.get("gc_full") == 0:
        text += " No full garbage collection during the run."
    elif gw.get("gc_full") is not None:
        text += (
            f" Full garbage collections: {_fmt(gw.get('gc_full'))}, the longest "
            f"{_fmt(gw.get('gc_full_max_ms'), 0)} ms ({_fmt(gw.get('gc_full_max_cpu_ms'), 0)} ms of CPU)."
        )
    return text


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(cell) if not isinstance(cell, str) else cell for cell in row) + " |")
    return lines


def http_rows(results: dict[str, Any]) -> list[list[Any]]:
    runs = results.get("runs", {})
    direct = runs.get("direct", {})
    rows: list[list[Any]] = []

    def row(label: str, conns: str, run: dict[str, Any], processes: int = 1, compare: bool = True) -> None:
        base = direct.get(conns, {}) if compare else {}
        rows.append(
            [
                label,
                conns[1:],
                run.get("rps"),
                _r(run["rps"] / processes, 1) if run.get("rps") is not None else None,
                run.get("p50_ms"),
                run.get("p99_ms"),
                added(run.get("p50_ms"), base.get("p50_ms")) if compare else None,
                added(run.get("p99_ms"), base.get("p99_ms")) if compare else None,
                run.get("cpu_us_per_req"),
                run.get("peak_rss_mb"),
                run.get("errors"),
            ]
        )

    for conns in ("c1", "c16"):
        if conns in direct:
            row("upstream direct (nginx)", conns, direct[conns], compare=False)
    for name, by_conns in runs.get("strategies", {}).items():
        for conns in ("c1", "c16"):
            if conns in by_conns:
                row(f"gateway, strategy `{name}`", conns, by_conns[conns])
    for conns in ("c1", "c16"):
        if conns in runs.get("recording_off", {}):
            row("gateway, recording off", conns, runs["recording_off"][conns])
    if "c32" in runs.get("workers2", {}):
        row("gateway, 2 processes", "c32", runs["workers2"]["c32"], processes=2, compare=False)
    return rows


def records_lines(records: dict[str, Any] | None) -> list[str]:
    """The run's records against its requests: none lost (at least one record per counted
    request), none doubled (at most one more per request left in flight when a wrk run stopped)."""
    if not records:
        return []
    ingested, requests = records.get("ingested"), records.get("requests")
    bound = records.get("in_flight_bound")
    line = (
        f"Usage records ingested from the stream: {_fmt(ingested)} for {_fmt(requests)} completed requests "
        "with recording on"
    )
    if bound is None or not isinstance(ingested, int) or not isinstance(requests, int):
        return ["", line + " (fewer records than requests would mean lost records)."]
    verdict = "as it must" if requests <= ingested <= requests + bound else "A RECORD IS LOST OR DOUBLED"
    return [
        "",
        f"{line}, and at most {_fmt(bound)} more answered after a wrk run stopped counting (one per "
        f"connection in flight): {verdict} (fewer records than requests would be a lost record, more "
        "than both together a doubled one).",
    ]


def side_by_side_lines(results: dict[str, Any]) -> list[str]:
    """The alternated rounds of recording on/off and one/two processes, as a paragraph."""
    side = results.get("runs", {}).get("side_by_side") or {}
    on, off, two = side.get("on"), side.get("off"), side.get("two")
    if not on or not off:
        return []
    head = results.get("headline") or headline(results)
    text = (
        f"Side by side (served at once, {_fmt(side.get('rounds'))} alternated rounds of "
        f"{_fmt(side.get('duration'), 0)} s, medians): recording on {_fmt(on['rps'])} req/s at "
        f"{_fmt(on['cpu_us_per_req'])} µs/req, off {_fmt(off['rps'])} req/s at {_fmt(off['cpu_us_per_req'])} µs/req "
        f"(recording costs {_fmt(100 * (head.get('recording_cost') or 0), 1)}% of throughput)"
    )
    if two:
        text += (
            f"; two processes at 32 connections {_fmt(two['rps'])} req/s, {_fmt(head.get('two_process_ratio'), 2)}x one"
        )
        bound = two_process_bound(on, two)
        if bound is not None:
            rest = two["machine_us_per_req"] - two["cpu_us_per_req"]
            text += (
                f" (the whole machine spent {_fmt(two['machine_us_per_req'], 0)} µs of CPU per request: the two "
                f"workers {_fmt(two['cpu_us_per_req'], 0)}, everything else, the load generator, nginx, Redis and "
                f"the kernel, {_fmt(rest, 0)}; with one worker at {_fmt(on['cpu_us_per_req'], 0)} µs per request "
                f"these two cores allow at most {_fmt(bound, 2)}x; hypervisor steal "
                f"{_fmt(100 * (two.get('steal_cores') or 0), 1)}% of a core)"
            )
            split = two.get("rest_us_per_req") or {}
            if split:
                text += "; everything else by command, µs per request: " + ", ".join(
                    f"{name} {_fmt(us, 1)}" for name, us in list(split.items())[:6]
                )
    return ["", text + ". The targets on recording's cost and on two processes read these medians."]


def render_peers(peers: dict[str, Any], *, heading: str | None = "##") -> list[str]:
    """The peer table: each server's figures and the gateway's ratio to each peer
    (``heading=None``: no heading, for a document that has its own)."""
    labels = peers.get("labels", [])
    if not labels:
        return []
    servers, ratios, versions = peers.get("servers", {}), peers.get("ratios", {}), peers.get("versions", {})
    lines = [f"{heading} Beside other gateways", ""] if heading else []
    lines += [
        f"One process each on the same nginx upstream, {_fmt(peers.get('rounds'))} alternated rounds "
        f"({', '.join(labels)}); best round of each (highest req/s, lowest p50 and CPU). "
        f"Upstream direct p50 at 1 connection: {_fmt(peers.get('direct_p50_c1_ms'), 3)} ms. "
        f"Ratios are {labels[0]} ÷ peer: req/s above 1 is faster, added p50 below 1 adds less.",
        "",
    ]
    rows = []
    for label in labels:
        s = servers.get(label, {})
        r = ratios.get(label, {})
        rows.append(
            [
                PEER_NAMES.get(label, label),
                f"`{versions.get(label, '?')}`",
                s.get("rps_c16"),
                r.get("rps") if r else "–",
                s.get("p50_c1_ms"),
                s.get("added_p50_c1_ms"),
                r.get("added_p50") if r else "–",
                s.get("cpu_us_per_req_c16"),
                s.get("peak_rss_mb"),
                s.get("errors"),
            ]
        )
    lines += _table(
        [
            "server",
            "version",
            "req/s, 16 conns",
            "req/s ratio",
            "p50 ms, 1 conn",
            "added p50 ms",
            "added p50 ratio",
            "CPU µs/req",
            "peak RSS MB",
            "errors",
        ],
        rows,
    )
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    config = results.get("config", {})
    lines = [
        "# Gateway benchmark: latest run",
        "",
        f"- date: {machine.get('date', '?')}",
        f"- machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('mem_gib', '?')} GiB memory, {machine.get('kernel', '?')}",
        f"- mode: {'quick' if config.get('quick') else 'full'}; {config.get('duration', '?')} s per HTTP run, "
        f"gateway commit {results.get('commit', '?')}",
        "",
        "## Requests (`POST /v1/chat/completions`, non-streaming)",
        "",
    ]
    header = [
        "run",
        "conns",
        "req/s",
        "req/s per process",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        "CPU µs/req",
        "peak RSS MB",
        "errors",
    ]
    lines += _table(header, http_rows(results))
    lines += side_by_side_lines(results)
    lines += records_lines(results.get("records"))
    streams = results.get("streams", {})
    if streams:
        lines += ["", "## Concurrent streams", ""]
        sc = streams.get("config", {})
        lines.append(
            f"{_fmt(sc.get('streams'))} streams started over {_fmt(sc.get('ramp'))} s, each "
            f"{_fmt(sc.get('chunks'))} chunks {_fmt(sc.get('interval'))} s apart, one gateway process."
        )
        lines.append("")
        srows = []
        for label, key in (("upstream direct", "direct"), ("gateway", "gateway")):
            s = streams.get(key)
            if not s:
                continue
            base = streams.get("direct", {}) if key == "gateway" else {}
            srows.append(
                [
                    label,
                    s.get("streams"),
                    s.get("ok"),
                    s.get("errors"),
                    s.get("ttft_p50_ms"),
                    s.get("ttft_p99_ms"),
                    added(s.get("ttft_p50_ms"), base.get("ttft_p50_ms")) if base else None,
                    added(s.get("ttft_p99_ms"), base.get("ttft_p99_ms")) if base else None,
                    s.get("duration_p99_s"),
                    s.get("peak_rss_mb"),
                ]
            )
        lines += _table(
            [
                "target",
                "streams",
                "ok",
                "errors",
                "TTFT p50 ms",
                "TTFT p99 ms",
                "added TTFT p50 ms",
                "added TTFT p99 ms",
                "duration p99 s",
                "peak RSS MB",
            ],
            srows,
        )
        gw = streams.get("gateway") or {}
        if gw.get("rss_kb_per_stream") is not None:
            lines += ["", stream_load_sentence(gw)]
    large = results.get("large_bodies")
    if large:
        lc = large.get("config", {})
        lines += ["", "## Large bodies", ""]
        lines.append(
            f"{_fmt(lc.get('senders'))} clients send `POST /v1/routing/estimate-cost` bodies of "
            f"{_fmt(lc.get('body_bytes'))} bytes back to back to one gateway process for {_fmt(lc.get('seconds'))} s "
            f"while another times `GET /v1/models` every {_fmt(lc.get('probe_interval_s'))} s (target: p99 under 50 ms)."
        )
        lines.append("")
        lrows = [
            [label, r.get("count"), r.get("p50_ms"), r.get("p99_ms"), r.get("max_ms"), r.get("errors")]
            for label, r in (
                ("GET /v1/models, idle process", large.get("probe_idle", {})),
                ("GET /v1/models, during the large bodies", large.get("probe_loaded", {})),
            )
        ]
        estimates = large.get("estimates", {})
        lrows.append(
            [
                "estimate-cost, 4 MB body",
                estimates.get("count"),
                estimates.get("p50_ms"),
                estimates.get("p99_ms"),
                estimates.get("max_ms"),
                sum(v for k, v in (estimates.get("statuses") or {}).items() if k != "200"),
            ]
        )
        lines += _table(["requests", "count", "p50 ms", "p99 ms", "max ms", "errors"], lrows)
    compare = results.get("compare")
    if compare:
        labels = compare.get("labels", [])
        lines += ["", "## Code comparison", ""]
        lines += [f"- `{label}`: `{compare['roots'].get(label)}`" for label in labels]
        lines += [
            f"- best of {compare.get('rounds')} alternated rounds (highest req/s, lowest p50 and CPU); "
            f"ratios against `{labels[0]}`",
            "",
        ]
        crows = []
        for conns in ("c1", "c16"):
            for label in labels:
                r = compare.get(conns, {}).get(label, {})
                crows.append(
                    [
                        label,
                        conns[1:],
                        r.get("rps"),
                        r.get("rps_ratio"),
                        r.get("p50_ms"),
                        r.get("added_p50_ms"),
                        r.get("cpu_us_per_req"),
                        r.get("cpu_ratio"),
                    ]
                )
        lines += _table(
            ["code", "conns", "req/s", "req/s ratio", "p50 ms", "added p50 ms", "CPU µs/req", "CPU ratio"], crows
        )
    limited = results.get("ratelimit")
    if limited:
        lines += ["", "## Rate limiting on a key", ""]
        lines += [
            f"- the same gateway and strategy, {limited['rounds']} alternated rounds of "
            f"{limited['connections']} connections; one key without limits, one with RPM and TPM limits it never "
            "reaches (every request pays the check); best round of each",
            "",
        ]
        lines += _table(
            ["key", "req/s", "p50 ms", "CPU µs/req"],
            [[label, r.get("rps"), r.get("p50_ms"), r.get("cpu_us_per_req")] for label, r in limited["best"].items()],
        )
        lines += ["", f"Throughput with limits / without: **{limited['rps_ratio']}** (target: at least 0.9)."]
    peers = results.get("peers")
    if peers:
        lines += ["", *render_peers(peers)]
    checks = results.get("targets", [])
    if checks:
        lines += ["", "## Targets", ""]
        lines += _table(
            ["target", "goal", "measured", "met"],
            [[c["target"], c["goal"], c["value"], c["met"]] for c in checks],
        )
    return "\n".join(lines) + "\n"


# --- profiles ---------------------------------------------------------------------------

# Buckets for a py-spy collapsed profile (active samples only), in priority order: a
# sample goes to the first bucket any of whose needles appears in any frame of its
# stack. A sample whose innermost frame is the gevent hub's loop is the event loop's own
# work (epoll, timers, switching to greenlets whose I/O is ready).
HUB_FRAMES = ("Hub.run (gevent/hub.py", "run (gevent/hub.py")
HUB_BUCKET = "gevent hub loop (epoll, timers, switches)"
PROFILE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("gevent threadpool (DNS lookups for new connections)", ("gevent/threadpool.py",)),
    ("usage recording (recorder, event payload)", ("usage/recorder.py", "usage/events.py")),
    ("cost and counters", ("providers/pricing/cost.py", "usage/budgets.py")),
    ("token counting", ("usage/tokens.py",)),
    ("upstream HTTP call (providers/http.py, http1.py)", ("providers/", "urllib3/", "http/client.py")),
    (
        "routing (plan, strategy, snapshot, health)",
        (
            "routing/services/planning.py",
            "routing/strategies/",
            "routing/config/",
            "routing/cooldowns.py",
            "usage/latency/",
        ),
    ),
    ("body parsing and validation", ("gatewaysite/api/parsers.py", "routing/services/validation.py")),
    ("key check", ("accounts/",)),
    ("completion path (other)", ("routing/services/completion.py",)),
    ("view (DRF dispatch, response)", ("rest_framework/", "routing/views/")),
    (
        "Django middleware and handler",
        (
            "django/",
            "whitenoise/",
            "gatewaysite/middleware.py",
            "gatewaysite/api/handler.py",
            "monitoring/middleware.py",
        ),
    ),
    ("server: HTTP/1.1 handler, gunicorn worker", ("gatewaysite/http_server.py", "gunicorn/")),
    ("gevent (scheduling, sockets)", ("gevent/", "greenlet")),
]


def bucket_of(frames: Sequence[str]) -> str:
    if frames and frames[-1].startswith(HUB_FRAMES):
        return HUB_BUCKET
    for name, needles in PROFILE_BUCKETS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return "other"


def summarize_collapsed(lines: Iterable[str], *, top: int = 25) -> dict[str, Any]:
    """Self-time by function and by bucket from py-spy's ``--format raw`` output.

    Each line is ``frame;frame;...;frame count`` (outermost first).
    """
    total = 0
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        buckets[bucket_of(frames)] += count

    def share(count: int) -> float:
        return round(100 * count / total, 1) if total else 0.0

    return {
        "samples": total,
        "buckets": [{"bucket": b, "percent": share(c)} for b, c in buckets.most_common()],
        "self": [{"frame": f, "percent": share(c)} for f, c in self_counts.most_common(top)],
        "inclusive": [{"frame": f, "percent": share(c)} for f, c in inclusive.most_common(top)],
    }


def machine() -> dict[str, Any]:
    """The machine a run was measured on (kept with every result)."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": parse_cpuinfo(read("/proc/cpuinfo")),
        "mem_gib": parse_meminfo_gib(read("/proc/meminfo")),
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
