"""A real 3-node Redis Cluster and a Sentinel-watched master/replica, started on loopback by the test."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from pathlib import Path

from tests.procs import free_port, wait_until


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return out.stdout


def _wait(predicate, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    wait_until(predicate, timeout, what)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class RedisCluster:
    """Three masters (no replicas), slots spread by ``redis-cli --cluster create``."""

    def __init__(self, tmp_path: Path) -> None:
        self.ports = [cluster_port() for _ in range(3)]
        self.dir = tmp_path / "cluster"
        self.dir.mkdir()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> RedisCluster:
        for port in self.ports:
            self.processes.append(
                _start(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    self.dir,
                )
            )
        for port in self.ports:
            _wait(lambda p=port: "PONG" in _cli(p, "ping"), "a cluster node")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        _wait(lambda: all("cluster_state:ok" in _cli(p, "cluster", "info") for p in self.ports), "cluster_state:ok", 30)
        return self

    def stop(self) -> None:
        for process in self.processes:
            _stop(process)


class RedisSentinel:
    """A master, a replica and one Sentinel (quorum 1) that fails over within a few seconds."""

    service = "gwmaster"

    def __init__(self, tmp_path: Path) -> None:
        self.master_port, self.replica_port, self.sentinel_port = free_port(), free_port(), free_port()
        self.dir = tmp_path / "sentinel"
        self.dir.mkdir()
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}/0"
        self.master: subprocess.Popen[bytes] | None = None
        self.replica: subprocess.Popen[bytes] | None = None
        self.sentinel: subprocess.Popen[bytes] | None = None

    def _server(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        return _start(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra],
            self.dir,
        )

    def start(self) -> RedisSentinel:
        self.master = self._server(self.master_port)
        self.replica = self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        _wait(lambda: "master_link_status:up" in _cli(self.replica_port, "info", "replication"), "the replica")
        config = self.dir / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 10000\n"
        )
        binary = shutil.which("redis-sentinel")
        args = [binary, str(config)] if binary else ["redis-server", str(config), "--sentinel"]
        self.sentinel = _start(args, self.dir)
        _wait(
            lambda: (
                str(self.master_port) in _cli(self.sentinel_port, "sentinel", "get-master-addr-by-name", self.service)
            ),
            "the sentinel",
        )
        _wait(lambda: "slaves=1" in _cli(self.sentinel_port, "info", "sentinel"), "the sentinel to see the replica")
        return self

    def master_addr(self) -> str:
        return _cli(self.sentinel_port, "sentinel", "get-master-addr-by-name", self.service).split()[-1]

    def _replication(self) -> tuple[int, int]:
        """(the master's replication offset, the offset the replica has acknowledged)."""
        info = dict(
            line.split(":", 1) for line in _cli(self.master_port, "info", "replication").splitlines() if ":" in line
        )
        replica = dict(part.split("=", 1) for part in info.get("slave0", "").split(",") if "=" in part)
        return int(info.get("master_repl_offset", "0").strip()), int(replica.get("offset", "-1"))

    def kill_master(self) -> None:
        """Wait until the replica has every write, then kill the master; returns once failed over.

        (``WAIT`` from another connection would not do: it waits for that connection's own writes.)
        """
        # every write made until now: the gateway keeps writing (the latency sync), so the
        # offsets are rarely equal; the replica must reach the master's offset of this moment
        written, _ = self._replication()
        _wait(lambda: self._replication()[1] >= written, "the replica to catch up", 10)
        assert self.master is not None
        self.master.kill()
        self.master.wait(timeout=5)
        _wait(lambda: self.master_addr() == str(self.replica_port), "the failover", 30)
        _wait(lambda: "role:master" in _cli(self.replica_port, "info", "replication"), "the promoted replica", 30)
        # and Sentinel reports it as a healthy master (flags "master" only), as clients check
        _wait(self._master_healthy, "the sentinel to report the new master healthy", 30)

    def _master_healthy(self) -> bool:
        reply = _cli(self.sentinel_port, "sentinel", "master", self.service).splitlines()
        fields = dict(zip(reply[::2], reply[1::2], strict=False))
        return fields.get("flags") == "master" and fields.get("port") == str(self.replica_port)

    def stop(self) -> None:
        for process in (self.sentinel, self.replica, self.master):
            if process is not None:
                _stop(process)
