"""The side-by-side comparison's tree specifications (bench/ab.py)."""

from __future__ import annotations

from pathlib import Path

from bench.ab import variant


def test_a_tree_with_and_without_environment() -> None:
    assert variant("before=/tmp/old") == ("before", Path("/tmp/old"), {})
    label, root, env = variant("off=.:GATEWAY_API_FAST_PATH~0,GUNICORN_WORKER_CLASS~gevent")
    assert (label, root) == ("off", Path(".").resolve())
    assert env == {"GATEWAY_API_FAST_PATH": "0", "GUNICORN_WORKER_CLASS": "gevent"}
