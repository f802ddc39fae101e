"""scripts/make_venv.sh, make's first step: the virtualenv is made with the first candidate
that is a Python 3.11 with its venv module (the distribution's optimized build first, by
default); candidates that are missing or another version are passed over, and with none left
it says what it tried."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.procs import ROOT

SCRIPT = str(ROOT / "scripts" / "make_venv.sh")
BASE = getattr(sys, "_base_executable", sys.executable)  # a Python 3.11 that has made a virtualenv


def test_the_first_usable_python_makes_the_virtualenv(tmp_path: Path) -> None:
    other = tmp_path / "python-3.10"
    other.write_text("#!/bin/sh\nexec python3 -c 'import sys; sys.exit(1)' \"$@\"\n")  # answers as another version
    other.chmod(0o755)
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", SCRIPT, str(venv), str(tmp_path / "missing"), str(other), BASE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (venv / "bin" / "python").exists()
    made_with = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys._base_executable)"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert Path(made_with).resolve() == Path(BASE).resolve()


def test_without_a_usable_python_it_says_what_it_tried(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", SCRIPT, str(tmp_path / "venv"), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Python 3.11 with its venv module is required" in done.stderr and "missing" in done.stderr
    assert not (tmp_path / "venv").exists()
