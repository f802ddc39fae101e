"""Processes the benchmark runs: nginx, the stream upstream, gunicorn, wrk; /proc sampling."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

from bench.report import (
    parse_interrupt_ticks,
    parse_machine_ticks,
    parse_proc_stat_cpu_ticks,
    parse_proc_stat_name_ticks,
    parse_proc_status,
)

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")


def raise_open_files() -> int:
    """Raise this process's open-file limit (``RLIMIT_NOFILE``) to its hard limit; returns the
    new soft limit. Children inherit it: the benchmark calls this before starting anything.
    Each stream holds a descriptor in the client, two in the gateway (client and upstream)
    and one in the upstream."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


class Service:
    """A foreground child process with its output in a log file; stopped with SIGTERM."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, log: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.cmd, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("nginx is not installed (bench/run.sh installs nginx-light)")


def start_nginx(port: int, prefix: Path) -> Service:
    if prefix.exists():
        shutil.rmtree(prefix)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = (BENCH_DIR / "nginx.conf").read_text()
    conf = conf.replace("{{PREFIX}}", str(prefix)).replace("{{PORT}}", str(port)).replace("{{USER}}", user)
    (prefix / "nginx.conf").write_text(conf)
    cmd = [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    service = Service("nginx", cmd, log=prefix / "nginx.out").start()
    wait_port(port)
    return service


def start_stream_upstream(port: int, chunks: int, interval: float, log: Path) -> Service:
    cmd = [
        PYTHON,
        "-m",
        "bench.stream_upstream",
        "--port",
        str(port),
        "--chunks",
        str(chunks),
        "--interval",
        str(interval),
    ]
    service = Service("stream-upstream", cmd, log=log).start()
    wait_port(port)
    return service


def start_gateway(
    port: int, env: dict[str, str], *, workers: int, recording: bool, log: Path, root: Path = ROOT
) -> Service:
    if not port_free(port):
        raise RuntimeError(f"port {port} is taken; pass --gateway-port")
    child_env = dict(env)
    child_env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "GATEWAY_RECORDING_ENABLED": "1" if recording else "0",
            "GUNICORN_LOG_LEVEL": "warning",
            "LOG_LEVEL": "WARNING",
            # one set of local secrets (key pepper) whichever code tree serves
            "GATEWAY_VAR_DIR": env.get("GATEWAY_VAR_DIR", str(ROOT / "var")),
        }
    )
    child_env.pop("GUNICORN_ACCESS_LOG", None)
    conf = root / "gatewaysite" / "gunicorn.conf.py"
    if not conf.exists():
        conf = ROOT / "gatewaysite" / "gunicorn.conf.py"
    # a tree with a virtualenv of its own is served by it (its interpreter and packages)
    own = root / ".venv" / "bin" / "gunicorn"
    cmd = [str(own) if own.exists() else GUNICORN, "-c", str(conf), "--chdir", str(root)]
    service = Service(f"gateway-{workers}w", cmd, env=child_env, log=log).start()
    wait_port(port)
    deadline = time.monotonic() + 30
    while len(children(service.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return service


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_kb(pid: int) -> dict[str, int]:
    try:
        return parse_proc_status(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return {}


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += parse_proc_stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    return total


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, irq + softirq) clock ticks of the whole machine, from one read of
    /proc/stat (``parse_machine_ticks``, ``parse_interrupt_ticks``)."""
    text = Path("/proc/stat").read_text()
    busy, steal = parse_machine_ticks(text)
    return busy, steal, parse_interrupt_ticks(text)


def process_ticks() -> dict[int, tuple[str, int]]:
    """Every process's command name and CPU ticks (utime + stime, all its threads)."""
    out: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                out[int(entry.name)] = parse_proc_stat_name_ticks(Path(f"/proc/{entry.name}/stat").read_text())
    return out


def children_ticks(clk_tck: int) -> int:
    """CPU ticks of this process's waited-for children (the wrk runs), from getrusage."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * clk_tck)


class Sampler:
    """A background thread that calls ``sample()`` every ``interval`` seconds while the ``with`` block runs."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class RssSampler(Sampler):
    """Samples VmRSS of the given processes every ``interval`` seconds; keeps the peak.

    With ``timeline`` it also keeps every sample as ``(wall-clock time, RSS kB summed over
    the processes, CPU ticks summed)``: memory against the streams open, CPU per second
    (``bench.report.rss_slope_kb`` and ``cpu_percent``).
    """

    def __init__(self, pids: list[int], interval: float = 0.1, *, timeline: bool = False) -> None:
        super().__init__(interval)
        self.pids = pids
        self.peak_kb = 0
        self.timeline = timeline
        self.samples: list[tuple[float, int, int]] = []

    def sample(self) -> None:
        total = 0
        for pid in self.pids:
            rss = rss_kb(pid).get("VmRSS", 0)
            self.peak_kb = max(self.peak_kb, rss)
            total += rss
        if self.timeline:
            self.samples.append((time.time(), total, cpu_ticks(self.pids)))

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)


def run_wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    key: str,
    model: str,
    threads: int = 1,
    headers: dict[str, str] | None = None,
) -> str:
    extra = "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())
    env = dict(os.environ, BENCH_KEY=key, BENCH_MODEL=model, BENCH_HEADERS=extra)
    cmd = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH_DIR / "post.lua"),
        url,
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done.stdout
