"""Instructions per request of code trees, counted by callgrind: a figure that does not move
with the machine's load (CPU time here drifts by tens of percent within minutes).

``bash bench/instructions.sh before=/path/to/tree after=.`` runs bench/inproc.py (the WSGI
application in process, no HTTP server, one request at a time by default) under
``valgrind --tool=callgrind`` twice per tree, with ``--small`` and ``--large`` measured
requests after the same warm-up; (large total - small total) / (large - small) is the
instructions of one request, the start-up and warm-up cancelled out. Repeated runs of one
tree agree within about 2%. It counts user-space instructions only (no kernel time, no
waiting) and leaves out the HTTP server: bench/ab.sh measures those.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from bench import procs
from bench.bench import MODEL, configure_gateway, django_setup

UPSTREAM_PORT = 19_280
TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def instructions(root: Path, requests: int, args: argparse.Namespace, log: Path) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "WARM": str(args.warm),
        "N": str(requests),
        "CONC": str(args.concurrency),
        "INPROC_MODEL": MODEL,
    }
    # this tree's harness, the measured tree's code (an older tree has no bench/inproc.py)
    harness = str(Path(__file__).with_name("inproc.py"))
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, harness]
    with log.open("wb") as out:
        subprocess.run(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=1800)
    found = TOTAL.findall(log.read_text(errors="replace"))
    if not found:
        raise SystemExit(f"instructions: no callgrind total in {log}")
    return int(found[-1].replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="label=path")
    parser.add_argument("--small", type=int, default=160)
    parser.add_argument("--large", type=int, default=800)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--tmp", default="/tmp/gw-bench-instructions")
    args = parser.parse_args()
    django_setup()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    configure_gateway(UPSTREAM_PORT, UPSTREAM_PORT)
    nginx = procs.start_nginx(UPSTREAM_PORT, tmp / "nginx")
    try:
        results = []
        for spec in args.trees:
            label, _, path = spec.partition("=")
            root = Path(path or ".").resolve()
            small = instructions(root, args.small, args, tmp / f"{label}-small.log")
            large = instructions(root, args.large, args, tmp / f"{label}-large.log")
            per_request = (large - small) / (args.large - args.small)
            results.append((label, per_request))
            print(f"  {label}: {per_request:,.0f} instructions per request", flush=True)
        base = results[0][1]
        print(f"{args.concurrency} at a time, {args.large - args.small} requests counted:")
        for label, value in results:
            print(f"  {label}: {value:,.0f} instructions per request (x{value / base:.3f})")
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
