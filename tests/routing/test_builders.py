"""The in-memory builders give the same ids in every process (``hash()`` is salted per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = (
    "import django; django.setup()\n"
    "from tests.routing.builders import deployment\n"
    "print(deployment('eu-gpt-4o').id, deployment('us-gpt-4o').id)\n"
)


def _ids(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_deployment_ids_do_not_depend_on_the_hash_seed() -> None:
    first, second = _ids("1"), _ids("2")
    assert first == second
    assert len(set(first.split())) == 2  # two names, two ids
