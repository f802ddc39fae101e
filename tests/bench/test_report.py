"""The benchmark's own logic: parsing tool output, percentiles, targets, tables."""

from __future__ import annotations

import pytest

from bench.report import (
    STREAM_TARGET,
    added,
    bucket_of,
    check_targets,
    cpu_peak_percent,
    cpu_percent,
    headline,
    parse_cpuinfo,
    parse_gc_pauses,
    parse_machine_ticks,
    parse_marked_json,
    parse_meminfo_gib,
    parse_proc_stat_cpu_ticks,
    parse_proc_status,
    parse_wrk,
    percentile,
    records_lines,
    render_markdown,
    rss_slope_kb,
    summarize_collapsed,
    summarize_streams,
    two_process_bound,
)

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:18084/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.04ms   10.11ms  72.19ms   85.40%
    Req/Sec     1.15k   100.00     1.30k    70.00%
  3432 requests in 3.00s, 2.10MB read
Requests/sec:   1144.10
Transfer/sec:    716.00KB
WRK_JSON {"requests":3432,"duration_us":3000000,"bytes":2200000,"errors_connect":1,"errors_read":2,\
"errors_write":0,"errors_status":4,"errors_timeout":3,"latency_mean_us":13040.7,"latency_max_us":72190,\
"latency_p50_us":12950,"latency_p90_us":20100,"latency_p99_us":72100,"latency_p99_9_us":72190}
"""


def test_parse_wrk_derives_rate_errors_and_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result["requests"] == 3432
    assert result["rps"] == 1144.0
    assert result["errors_status"] == 4
    assert result["errors_socket"] == 6  # connect + read + write + timeout
    assert result["errors"] == 10
    assert result["p50_ms"] == 12.95
    assert result["p99_ms"] == 72.1
    assert result["p99_9_ms"] == 72.19
    assert result["mean_ms"] == 13.041  # 13040.7 us, rounded to the microsecond


def test_parse_wrk_without_summary_line_fails_loudly() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        parse_wrk("Requests/sec: 10\n")


def test_parse_marked_json_takes_the_last_marked_line() -> None:
    output = 'noise\nSTREAM_JSON {"a": 1}\nmore\nSTREAM_JSON {"a": 2}\n'
    assert parse_marked_json(output, "STREAM_JSON ") == {"a": 2}


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 1.0, 4.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 90) == pytest.approx(7.6)  # rank 3.6 between 4 and 10
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None


def test_summarize_streams_counts_errors_by_kind() -> None:
    summary = summarize_streams(
        ok=[True, True, False, False, False],
        errors=["timeout", "cut_short", "timeout"],
        ttft_ms=[1.0, 2.0, 3.0],
        duration_ms=[30_000.0, 30_500.0],
        events=[62, 61],
    )
    assert summary["streams"] == 5
    assert summary["ok"] == 2
    assert summary["errors"] == 3
    assert summary["error_kinds"] == {"timeout": 2, "cut_short": 1}
    assert summary["ttft_p50_ms"] == 2.0
    assert summary["duration_p50_s"] == 30.25
    assert summary["events_min"] == 61


def test_proc_parsers() -> None:
    status = "Name:\tpython3\nVmPeak:\t  300000 kB\nVmHWM:\t   90000 kB\nVmRSS:\t   85000 kB\nThreads:\t3\n"
    assert parse_proc_status(status) == {"VmPeak": 300000, "VmHWM": 90000, "VmRSS": 85000}
    # the command may contain spaces and parentheses; utime=700 stime=300
    stat = "1234 (gunicorn: worker (x)) S 1 1234 1234 0 -1 4194560 1000 0 0 0 700 300 0 0 20 0 1 0 100 0 0"
    assert parse_proc_stat_cpu_ticks(stat) == 1000
    assert parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert parse_meminfo_gib("MemTotal:       24684132 kB\nMemFree: 1 kB\n") == 23.5


def _results(**overrides: object) -> dict:
    results = {
        "default_strategy": "model",
        "runs": {
            "direct": {"c1": {"rps": 16000.0, "p50_ms": 0.06, "p99_ms": 0.1}, "c16": {"rps": 150000.0}},
            "strategies": {
                "model": {
                    "c1": {"rps": 1000.0, "p50_ms": 0.96, "p99_ms": 2.0},
                    "c16": {"rps": 1100.0, "p50_ms": 13.0, "p99_ms": 70.0},
                }
            },
            "recording_off": {"c16": {"rps": 1250.0}},
            "workers2": {"c32": {"rps": 2090.0}},
        },
        "streams": {
            "direct": {"ttft_p50_ms": 0.2, "ttft_p99_ms": 3.0},
            "gateway": {"errors": 0, "ttft_p50_ms": 2.2, "ttft_p99_ms": 40.0, "peak_rss_mb": 200.0},
        },
    }
    results.update(overrides)
    return results


def test_headline_compares_gateway_with_direct_and_recording_off() -> None:
    figures = headline(_results())
    assert figures["rps_c16"] == 1100.0
    assert figures["added_p50_c1_ms"] == 0.9
    assert figures["recording_cost"] == 0.12  # 1 - 1100/1250
    assert figures["two_process_ratio"] == 1.9
    assert figures["stream_added_ttft_p99_ms"] == 37.0
    assert figures["stream_peak_rss_mb"] == 200.0


def test_targets_are_judged_against_their_goals() -> None:
    figures = headline(_results())
    figures["two_process_ratio"] = 1.5
    checks = {c["key"]: c for c in check_targets(figures)}
    assert checks["rps_c16"]["met"] is True
    assert checks["added_p50_c1_ms"]["met"] is True
    assert checks["recording_cost"]["met"] is False  # 0.12 > 0.10
    assert checks["stream_errors"]["met"] is True
    assert checks["stream_added_ttft_p99_ms"]["met"] is True
    assert checks["two_process_ratio"]["met"] is False


def test_missing_runs_leave_targets_unjudged() -> None:
    checks = {c["key"]: c for c in check_targets(headline({"runs": {}}))}
    assert all(c["met"] is None for c in checks.values())


def test_added_needs_both_figures() -> None:
    assert added(2.5, 1.0) == 1.5
    assert added(None, 1.0) is None
    assert added(1.0, None) is None


def test_markdown_table_shows_added_latency_per_run() -> None:
    text = render_markdown(
        _results(machine={"date": "2026-01-01 00:00 UTC", "nproc": 2, "cpu_model": "AMD EPYC", "mem_gib": 23.5})
    )
    assert "2 CPUs (AMD EPYC), 23.5 GiB memory" in text
    rows = [line for line in text.splitlines() if line.startswith("| gateway, strategy `model` | 1 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == "1,000.00"  # req/s
    assert cells[6] == "0.90"  # added p50: 0.96 - 0.06
    assert "| gateway, 2 processes | 32 | 2,090.00 | 1,045.00 |" in text
    assert "## Concurrent streams" in text


def test_collapsed_profile_is_bucketed_by_the_layers_of_the_request_path() -> None:
    lines = [
        "run (gevent/hub.py:647) 50",
        "handle (gunicorn/workers/ggevent.py:120);post (routing/views/completions.py:60);"
        "post_json (providers/http.py:75);read_response (providers/http1.py:143) 30",
        "handle (gunicorn/workers/ggevent.py:120);record (usage/recorder.py:300);wait (gevent/event.py:1) 15",
        "handle (gunicorn/workers/ggevent.py:120);parse (gunicorn/http/parser.py:10) 5",
        "garbage line",
    ]
    summary = summarize_collapsed(lines)
    assert summary["samples"] == 100
    buckets = {b["bucket"]: b["percent"] for b in summary["buckets"]}
    assert buckets["gevent hub loop (epoll, timers, switches)"] == 50.0
    assert buckets["upstream HTTP call (providers/http.py, http1.py)"] == 30.0
    assert buckets["usage recording (recorder, event payload)"] == 15.0
    assert buckets["server: HTTP/1.1 handler, gunicorn worker"] == 5.0
    assert summary["self"][0] == {"frame": "run (gevent/hub.py:647)", "percent": 50.0}
    inclusive = {f["frame"]: f["percent"] for f in summary["inclusive"]}
    assert inclusive["handle (gunicorn/workers/ggevent.py:120)"] == 50.0


def test_bucket_of_puts_the_hub_loop_and_threadpool_apart() -> None:
    hub = bucket_of(["handle (gunicorn/workers/ggevent.py:1)", "Hub.run (gevent/hub.py:647)"])
    assert hub == "gevent hub loop (epoll, timers, switches)"
    pool = bucket_of(["_WorkerGreenlet.run (gevent/threadpool.py:216)", "getaddrinfo (<frozen>:1)"])
    assert pool == "gevent threadpool (DNS lookups for new connections)"
    assert bucket_of(["something (elsewhere.py:1)"]) == "other"


def test_compare_takes_the_best_round_of_each_tree_and_ratios_against_the_first() -> None:
    from bench.report import summarize_compare

    def run(rps: float, p50: float, cpu: float) -> dict:
        return {"c1": {"rps": rps, "p50_ms": p50, "cpu_us_per_req": cpu}}

    rounds = {
        "before": [run(600.0, 1.2, 1000.0), run(500.0, 1.5, 1100.0)],
        "after": [run(400.0, 2.0, 1300.0), run(900.0, 0.9, 800.0)],  # round 1 disturbed
    }
    direct = [{"c1": {"p50_ms": 0.05}}, {"c1": {"p50_ms": 0.04}}]
    out = summarize_compare(rounds, direct, roots={"before": "/a", "after": "/b"})
    assert out["rounds"] == 2
    assert out["c1"]["before"]["rps"] == 600.0
    assert out["c1"]["after"]["rps_ratio"] == 1.5
    assert out["c1"]["after"]["cpu_ratio"] == 0.8
    assert out["c1"]["after"]["added_p50_ms"] == 0.86  # 0.9 - 0.04


def test_recording_cost_is_also_given_in_cpu_per_request() -> None:
    results = _results()
    results["runs"]["strategies"]["model"]["c16"]["cpu_us_per_req"] = 700.0
    results["runs"]["recording_off"]["c16"]["cpu_us_per_req"] = 595.0
    assert headline(results)["recording_cost_cpu"] == 0.15


def _with_side_by_side(on: tuple[float, float], off: tuple[float, float], two: dict) -> dict:
    """A run with 8 alternated side-by-side rounds: (req/s, CPU µs per request) on and off, and the two-process run."""
    results = _results()
    results["runs"]["side_by_side"] = {
        "rounds": 8,
        "duration": 3.0,
        "on": {"connections": 16, "rps": on[0], "cpu_us_per_req": on[1], "rps_rounds": [], "errors": 0},
        "off": {"connections": 16, "rps": off[0], "cpu_us_per_req": off[1], "rps_rounds": [], "errors": 0},
        "two": {"connections": 32, "rps_rounds": [], "errors": 0, **two},
    }
    return results


def test_side_by_side_rounds_decide_recording_cost_and_two_processes() -> None:
    """When the run has alternated rounds, the targets read their medians; the phases'
    figures stay in the headline beside them, and the report says which is which."""
    results = _with_side_by_side((2600.0, 380.0), (2860.0, 342.0), {"rps": 4160.0, "cpu_us_per_req": 450.0})
    figures = headline(results)
    assert figures["recording_cost"] == 0.091  # 1 - 2600/2860
    assert figures["recording_cost_phases"] == 0.12  # the phases' 1 - 1100/1250
    assert figures["recording_cost_cpu"] == 0.1  # 1 - 342/380
    assert figures["two_process_ratio"] == 1.6  # 4160/2600
    assert figures["two_process_ratio_phases"] == 1.9
    text = render_markdown({**results, "headline": figures})
    assert "Side by side (served at once, 8 alternated rounds of 3 s, medians)" in text
    assert "recording costs 9.1% of throughput" in text and "1.60x one" in text


def _peer_round(rps: float, p50: float, cpu: float, rss: float = 100.0, errors: int = 0) -> dict:
    return {
        "c1": {"rps": 1000 / p50, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0, "peak_rss_mb": rss},
        "c16": {"rps": rps, "p50_ms": 10.0, "cpu_us_per_req": cpu, "errors": errors, "peak_rss_mb": rss + 10},
    }


def _peer_summary() -> dict:
    from bench.report import summarize_peers

    rounds = {
        "gateway": [_peer_round(1400.0, 0.80, 700.0), _peer_round(1500.0, 0.90, 650.0)],
        "portkey": [_peer_round(1450.0, 0.70, 690.0, rss=150.0), _peer_round(1000.0, 0.75, 900.0)],
        "litellm": [_peer_round(90.0, 9.0, 11000.0, rss=300.0, errors=2), _peer_round(91.0, 10.0, 10500.0)],
    }
    direct = [{"c1": {"p50_ms": 0.05}}, {"c1": {"p50_ms": 0.04}}]
    versions = {"gateway": "abc1234", "portkey": "1.15.2", "litellm": "1.106.12"}
    return summarize_peers(rounds, direct, versions=versions)


def test_peers_take_the_best_round_of_each_server_and_ratio_the_gateway_to_each_peer() -> None:
    out = _peer_summary()
    assert out["labels"] == ["gateway", "portkey", "litellm"]
    assert out["rounds"] == 2
    assert out["direct_p50_c1_ms"] == 0.04
    gateway, portkey, litellm = (out["servers"][k] for k in out["labels"])
    assert gateway["rps_c16"] == 1500.0  # highest of the rounds
    assert gateway["rps_c16_rounds"] == [1400.0, 1500.0]
    assert gateway["p50_c1_ms"] == 0.8  # lowest of the rounds
    assert gateway["added_p50_c1_ms"] == 0.76  # 0.80 - 0.04
    assert gateway["cpu_us_per_req_c16"] == 650.0
    assert portkey["added_p50_c1_ms"] == 0.66
    assert portkey["peak_rss_mb"] == 160.0  # highest over every run
    assert litellm["errors"] == 2
    assert "gateway" not in out["ratios"]
    assert out["ratios"]["portkey"]["rps"] == 1.034  # 1500 / 1450
    assert out["ratios"]["portkey"]["added_p50"] == 1.152  # 0.76 / 0.66: the gateway adds more
    assert out["ratios"]["litellm"]["rps"] == 16.484  # 1500 / 91
    assert out["ratios"]["litellm"]["cpu"] == 0.062  # 650 / 10500


def test_peer_ratios_reach_the_headline_and_the_table() -> None:
    results = _results(peers=_peer_summary())
    figures = headline(results)
    assert figures["rps_ratio_vs_portkey"] == 1.034
    assert figures["added_p50_ratio_vs_litellm"] == 0.085  # 0.76 / 8.96
    text = render_markdown(results)
    assert "## Beside other gateways" in text
    rows = [line for line in text.splitlines() if line.startswith("| Portkey gateway")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1] == "`1.15.2`"
    assert cells[2] == "1,450.00"  # req/s at 16 connections
    assert cells[3] == "1.03"  # gateway / Portkey req/s
    assert cells[6] == "1.15"  # gateway / Portkey added p50
    assert "| this gateway, every record on | `abc1234` | 1,500.00 | – |" in text


def test_peer_table_without_heading_for_the_docs_block() -> None:
    from bench.report import render_peers

    lines = render_peers(_peer_summary(), heading=None)
    assert lines[0].startswith("One process each on the same nginx upstream, 2 alternated rounds")
    assert not any(line.startswith("#") for line in lines)
    assert render_peers({"labels": []}) == []


def test_litellm_config_points_the_model_at_the_upstream_with_a_master_key() -> None:
    import yaml

    from bench.peers import LITELLM_COMPROMISED, LITELLM_VERSION, litellm_config

    config = yaml.safe_load(litellm_config(18090, "bench-model", "sk-litellm-x"))
    (entry,) = config["model_list"]
    assert entry["model_name"] == "bench-model"
    assert entry["litellm_params"]["api_base"] == "http://127.0.0.1:18090/v1"
    assert entry["litellm_params"]["model"].startswith("openai/")
    assert config["general_settings"] == {"master_key": "sk-litellm-x"}
    assert LITELLM_VERSION not in LITELLM_COMPROMISED


def test_wrk_script_sends_the_extra_headers(tmp_path) -> None:
    """post.lua under wrk against a loopback server that echoes what it received."""
    import json
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from bench.procs import run_wrk

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (bench/run.sh installs it)")
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["content-length"]))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
        headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": "http://127.0.0.1:1/v1"}
        output = run_wrk(url, connections=1, duration=1, key="sk-peer", model="bench-model", headers=headers)
    finally:
        server.shutdown()
        server.server_close()
    assert parse_wrk(output)["requests"] >= 1
    assert seen
    assert seen[0]["x-portkey-provider"] == "openai"
    assert seen[0]["x-portkey-custom-host"] == "http://127.0.0.1:1/v1"
    assert seen[0]["authorization"] == "Bearer sk-peer"


def test_replace_block_rewrites_only_between_its_markers(tmp_path) -> None:
    from bench.bench import DOC_END, DOC_START, PEERS_END, PEERS_START, replace_block

    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{DOC_START}\nold latest\n{DOC_END}\nmiddle\n{PEERS_START}\nold peers\n{PEERS_END}\nend\n")
    replace_block(doc, PEERS_START, PEERS_END, "new peers table\n")
    assert doc.read_text() == (
        f"intro\n{DOC_START}\nold latest\n{DOC_END}\nmiddle\n{PEERS_START}\nnew peers table\n{PEERS_END}\nend\n"
    )
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    replace_block(bare, PEERS_START, PEERS_END, "table")
    assert bare.read_text() == "no markers\n"


def test_memory_per_stream_is_the_rss_slope_over_the_ramp() -> None:
    # 1,000 streams over 10 s from t=100: 50 kB per stream on top of 100 MB, then flat
    samples = [(100.0 + t, 102_400 + int(50 * 100 * t), 0) for t in range(11)]
    samples += [(112.0, 160_000, 0), (130.0, 90_000, 0)]  # after the ramp: not counted
    assert rss_slope_kb(samples, started=100.0, streams=1000, ramp=10.0) == 50.0
    assert rss_slope_kb(samples[:2], started=100.0, streams=1000, ramp=10.0) is None  # too few samples
    assert rss_slope_kb(samples, started=100.0, streams=1000, ramp=0.0) is None


def test_cpu_of_the_sampled_process_per_window_and_at_its_busiest() -> None:
    # 100 ticks per second; 20% of a core for 10 s, then 80% for 4 s (samples every 0.5 s)
    samples, ticks = [], 0
    for step in range(29):
        t = step * 0.5
        samples.append((t, 0, ticks))
        ticks += 10 if t < 10 else 40
    assert cpu_percent(samples, 100, start=0.0, end=10.0) == 20.0
    assert cpu_percent(samples, 100, start=10.0, end=14.0) == 80.0
    assert cpu_percent(samples, 100, start=20.0, end=30.0) is None  # no samples there
    assert cpu_peak_percent(samples, 100, window=2.0) == 80.0


def test_gc_pauses_are_read_from_the_gateway_log() -> None:
    log = (
        "[x] [1] [WARNING] gc pause: generation 2, 812.5 ms, 640.0 ms CPU, 12 collected, 4000000 objects\n"
        "[x] [1] [WARNING] gc pause: generation 1, 7.5 ms, 6.0 ms CPU, 0 collected\n"
        "[x] [1] [WARNING] gc pause: generation 2, 300.0 ms, 290.5 ms CPU, 3 collected\n"
        "noise\n"
    )
    pauses = parse_gc_pauses(log)
    assert pauses["gc_full"] == 2
    assert pauses["gc_full_max_ms"] == 812.5
    assert pauses["gc_full_max_cpu_ms"] == 640.0
    assert pauses["gc_full_total_ms"] == 1112.5
    assert pauses["gc_full_max_objects"] == 4_000_000
    assert (pauses["gc_young_logged"], pauses["gc_young_max_ms"], pauses["gc_young_max_cpu_ms"]) == (1, 7.5, 6.0)
    assert parse_gc_pauses("")["gc_full"] == 0


def test_stream_targets_name_the_stream_count_and_flag_smaller_runs() -> None:
    figures = headline(_results())
    figures["stream_count"] = 2000
    checks = {c["key"]: c for c in check_targets(figures)}
    assert checks["stream_peak_rss_mb"]["target"].startswith(f"{STREAM_TARGET:,} concurrent streams")
    assert checks["stream_peak_rss_mb"]["goal"] == "< 2048"
    assert "(only 2,000 streams in this run)" in checks["stream_errors"]["target"]
    figures["stream_count"] = STREAM_TARGET
    assert "only" not in {c["key"]: c for c in check_targets(figures)}["stream_errors"]["target"]


def test_the_full_run_holds_the_stream_target_and_the_quick_run_fewer() -> None:
    from bench.bench import parse_args

    full = parse_args([])
    assert (full.streams, full.chunks, full.interval, full.ramp) == (STREAM_TARGET, 30, 2.0, 20.0)
    quick = parse_args(["--quick"])
    assert (quick.streams, quick.chunks, quick.interval, quick.ramp) == (2000, 20, 0.5, 8.0)
    assert parse_args(["--streams", "500", "--interval", "1"]).streams == 500


def test_stream_section_reports_memory_per_stream_and_gc() -> None:
    results = _results()
    results["streams"]["gateway"].update(
        rss_kb_per_stream=55.5, rss_before_mb=100.0, cpu_ramp_percent=40.0, cpu_open_percent=25.0,
        cpu_peak_percent=60.0, gap_max_p99_ms=2100.0, gc_full=2, gc_full_max_ms=800.0, gc_full_max_cpu_ms=700.0,
    )  # fmt: skip
    text = render_markdown(results)
    assert "Gateway worker: 55.5 kB per open stream" in text
    assert "Full garbage collections: 2, the longest 800 ms (700 ms of CPU)." in text


@pytest.mark.parametrize(
    ("ingested", "verdict"),
    [(1000, "as it must"), (1032, "as it must"), (999, "LOST OR DOUBLED"), (1033, "LOST OR DOUBLED")],
)
def test_records_are_judged_against_the_requests_and_those_left_in_flight(ingested: int, verdict: str) -> None:
    (_, line) = records_lines({"ingested": ingested, "requests": 1000, "in_flight_bound": 32})
    assert verdict in line
    assert "1,000 completed requests" in line and "at most 32 more" in line


def test_records_of_an_older_run_keep_the_plain_line() -> None:
    (_, line) = records_lines({"ingested": 5, "requests": 5})
    assert line.endswith("(fewer records than requests would mean lost records).")
    assert records_lines(None) == []


def test_machine_ticks_are_busy_and_steal_from_proc_stat() -> None:
    text = "cpu  100 5 40 900 7 2 3 11 0 0\ncpu0 50 2 20 450 3 1 1 5 0 0\n"
    assert parse_machine_ticks(text) == (100 + 5 + 40 + 2 + 3, 11)


def test_the_two_process_bound_is_two_cores_over_the_machines_cpu_per_request() -> None:
    one = {"cpu_us_per_req": 240.0}
    two = {"cpu_us_per_req": 235.0, "machine_us_per_req": 300.0, "steal_cores": 0.02}
    assert two_process_bound(one, two) == 1.6  # 2 x 240 / 300
    assert two_process_bound(one, {"cpu_us_per_req": 235.0}) is None  # an older run: not measured
    results = _with_side_by_side((4000.0, 240.0), (4200.0, 230.0), {"rps": 6400.0, **two})
    text = render_markdown({**results, "headline": headline(results)})
    assert "the whole machine spent 300 µs of CPU per request" in text
    assert "everything else, the load generator, nginx, Redis and the kernel, 65;" in text
    assert "these two cores allow at most 1.60x" in text and "steal 2.0% of a core" in text


def test_the_rest_is_split_by_command_between_two_snapshots() -> None:
    from bench.report import median_split, parse_interrupt_ticks, parse_proc_stat_name_ticks, split_rest

    stat = "4242 (redis-server) S 1 2 3 0 -1 4194560 10 0 0 0 30 12 0 0 20 0 4 0 100 0 0"
    assert parse_proc_stat_name_ticks(stat) == ("redis-server", 42)
    assert parse_proc_stat_name_ticks("7 (kworker/u8:0-ext4 x) R " + "0 " * 10 + "5 6") == ("kworker/u8:0-ext4 x", 11)
    assert parse_interrupt_ticks("cpu  100 5 40 900 7 2 3 11 0 0\n") == 5  # irq + softirq
    before = {1: ("gunicorn", 500), 2: ("nginx", 100), 3: ("kworker/u8:0-events", 10), 4: ("redis-server", 40)}
    after = {
        1: ("gunicorn", 900),  # the measured worker: left out
        2: ("nginx", 300),
        3: ("kworker/u8:0-writeback", 30),  # renamed as its work changed: one process still
        4: ("redis-server", 40),  # idle: not listed
        5: ("kworker/1:1-mm", 1),  # started in between: counted from zero; under the floor
    }
    split = split_rest(
        before, after, exclude=[1], extra_ticks={"wrk": 150, "irq+softirq": 50}, requests=10_000, clk_tck=100
    )
    # per request: ticks / 100 / 10,000 requests, in µs
    assert split == {"nginx": 200.0, "wrk": 150.0, "irq+softirq": 50.0, "kworker": 21.0}
    assert split_rest(before, after, exclude=[1], extra_ticks={}, requests=0, clk_tck=100) == {}
    tiny = split_rest({}, {9: ("cron", 1)}, exclude=[], extra_ticks={}, requests=20_000, clk_tck=100)
    assert tiny == {"other": 0.5}  # one tick spread over 20,000 requests: under the 1 µs floor
    assert median_split([{"nginx": 40.0, "wrk": 30.0}, {"nginx": 44.0}, {"nginx": 42.0, "wrk": 34.0}]) == {
        "nginx": 42.0,
        "wrk": 30.0,
    }


def test_the_side_by_side_paragraph_names_what_else_spent_the_cpu() -> None:
    two = {
        "cpu_us_per_req": 235.0,
        "machine_us_per_req": 300.0,
        "steal_cores": 0.0,
        "rest_us_per_req": {"nginx": 20.0, "wrk": 18.0, "irq+softirq": 15.0, "redis-server": 9.0},
    }
    results = _with_side_by_side((4000.0, 240.0), (4200.0, 230.0), {"rps": 6400.0, **two})
    text = render_markdown({**results, "headline": headline(results)})
    assert (
        "everything else by command, µs per request: nginx 20.0, wrk 18.0, irq+softirq 15.0, redis-server 9.0" in text
    )
