"""bench/capacity.py's pure parts: INFO deltas and the arithmetic of docs/scaling.md."""

from __future__ import annotations

import pytest

from bench.capacity import Measured, capacity_figures, commandstats_delta, per_unit, redis_cpu_seconds, render


def test_commandstats_delta_keeps_commands_that_ran_and_drops_the_measurements_own() -> None:
    before = {"cmdstat_evalsha": {"calls": 10, "usec": 400}, "cmdstat_info": {"calls": 2, "usec": 50}}
    after = {
        "cmdstat_evalsha": {"calls": 110, "usec": 4400},
        "cmdstat_xadd": {"calls": 100, "usec": 300},
        "cmdstat_info": {"calls": 4, "usec": 100},
        "cmdstat_get": {"calls": 0, "usec": 0},
    }
    assert commandstats_delta(before, after) == {"evalsha": (100, 4000), "xadd": (100, 300)}


def test_per_unit_orders_by_time_and_divides_by_the_unit() -> None:
    rows = per_unit({"xadd": (100, 300), "evalsha": (120, 4800)}, 100)
    assert [row["command"] for row in rows] == ["evalsha", "xadd"]
    assert rows[0] == {"command": "evalsha", "calls_per_unit": 1.2, "us_per_call": 40.0, "us_per_unit": 48.0}


def test_redis_cpu_is_user_plus_system() -> None:
    assert redis_cpu_seconds({"used_cpu_user": "1.5", "used_cpu_sys": "0.25"}) == 1.75


MEASURED = Measured(
    rps_per_process=500.0,
    redis_us_per_request=60.0,
    redis_us_per_event_drained=4.0,
    pg_us_per_event=40.0,
    redis_idle_us_per_process_s=200.0,
    pg_idle_us_per_process_s=500.0,
    pg_xacts_per_process_min=120.0,
    pg_connections_per_process=1.0,
    max_connections=100,
    reserved_connections=3,
)


def test_capacity_arithmetic() -> None:
    figures = capacity_figures(MEASURED)
    assert figures["redis_rps_per_core"] == 15_625  # 1e6 / (60 + 4)
    assert figures["redis_processes_busy"] == pytest.approx(1e6 / (500 * 64 + 200), abs=0.05)  # 31.1
    assert figures["redis_processes_idle"] == 5_000
    assert figures["pg_events_per_core"] == 25_000
    assert figures["pg_processes_busy"] == pytest.approx(1e6 / (500 * 40 + 500), abs=0.05)  # 48.8
    assert figures["pg_processes_idle"] == 2_000
    assert figures["pg_processes_by_connections"] == 97
    half = capacity_figures(MEASURED, utilisation=0.5)
    assert half["redis_rps_per_core"] == 7_812


def test_render_names_every_figure() -> None:
    command = [{"command": "evalsha", "calls_per_unit": 1.2, "us_per_call": 40.0, "us_per_unit": 48.0}]
    results = {
        "measured": vars(MEASURED),
        "figures": capacity_figures(MEASURED),
        "load": {
            "plain": {"rps": 600.0, "redis_us_per_request": 20.0, "commands": command},
            "limited": {"commands": command},
        },
        "drain": {"commands": []},
        "idle": {"commands": command},
    }
    table = render(results)
    assert "| Redis: requests/s (budget + RPM/TPM key, drain included) | 15,625 |" in table
    assert "| Postgres: processes within max_connections = 100 | 97 |" in table
    assert "| evalsha | 1.20 | 40 | 48 |" in table
