"""The group commit under gevent (as in a served worker) takes its batch at the process's idle
moment: a request that finishes later in the same turn of the loop joins the batch, and a
process that never idles still has its batch written, after ``GATHER_SECONDS``.

A process of its own, gevent-patched before anything else is imported (as gunicorn's gevent
worker is); the test process itself runs the writer on a thread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT, gateway_env

SCRIPT = """
from gevent import monkey

monkey.patch_all()

import json
import sys
import time

import django

django.setup()

import gevent

from usage.recorder import GroupCommitWriter

if len(sys.argv) > 1:
    GroupCommitWriter.GATHER_SECONDS = float(sys.argv[1])
batches = []


def flush(events):
    batches.append(list(events))
    return events


writer = GroupCommitWriter(flush, "check")
writer.submit("warm")  # the writer greenlet started and waiting


def later():
    gevent.sleep(0)  # ready again only after the writer was woken by "a"
    gevent.sleep(0)
    writer.submit("b")


gevent.joinall([gevent.spawn(writer.submit, "a"), gevent.spawn(later)])
stop = False


def busy():  # a loop that never idles: something is always ready to run
    while not stop:
        gevent.sleep(0)


spinner = gevent.spawn(busy)
gevent.sleep(0.01)
written = True
try:
    with gevent.Timeout(3):
        writer.submit("c")
except gevent.Timeout:
    written = False
stop = True
spinner.join()
print(json.dumps({"batches": batches, "written_while_busy": written}))
"""


def _run(tmp_path: Path, *args: str) -> dict[str, object]:
    env = gateway_env(var_dir=tmp_path / "var")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_request_ready_later_in_the_same_turn_joins_the_batch_and_a_busy_loop_is_bounded(tmp_path: Path) -> None:
    result = _run(tmp_path)
    # taken when the writer was woken, "b" would have gone in a batch of its own
    assert result["batches"] == [["warm"], ["a", "b"], ["c"]]
    assert result["written_while_busy"] is True


def test_without_the_bound_a_loop_that_never_idles_would_hold_the_batch(tmp_path: Path) -> None:
    """What the bound is for: the idle moment alone never comes while something is always ready."""
    result = _run(tmp_path, "1000")
    assert result["batches"][:2] == [["warm"], ["a", "b"]]  # type: ignore[index]
    assert result["written_while_busy"] is False
