"""The process's Redis client, or None in the embedded default (no REDIS_URL).

``REDIS_URL`` takes three forms (docs/scaling.md, "Redis"):

- ``redis://[:password@]host:port/db`` (also ``rediss://``, ``unix://``): one Redis.
- ``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``: the master
  of ``service_name`` as the Sentinels name it; after a failover the client reconnects
  to the new master (the Sentinels are asked again on the next connection error).
- ``redis+cluster://[:password@]host:port[,host:port...]``: a Redis Cluster, the listed
  nodes used to discover the others (database 0 only, as Cluster has no others).

Every Lua script touches keys of one hash slot: the keys written together with usage
events (the stream, the writers' batch numbers, spend and budget counters) all start
with the hash tag ``{gw}`` (``SLOT``). Other keys are used one at a time or in
non-transactional pipelines, which the cluster client splits by node.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from django.conf import settings

# The hash tag of every key a usage script touches together (one slot on Redis Cluster).
SLOT = "{gw}"

_client: Any = None
_client_url = ""
_lock = threading.Lock()

_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
    "health_check_interval": 30,
}


@dataclass(frozen=True)
class RedisTarget:
    kind: str  # plain, sentinel or cluster
    url: str = ""
    nodes: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """Which Redis ``url`` names; ``ValueError`` with a reason when it is malformed."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis+sentinel", "redis+cluster"):
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"REDIS_URL scheme {scheme or '(none)'!r}: use redis://, rediss://, unix://, "
                "redis+sentinel:// or redis+cluster://"
            )
        return RedisTarget("plain", url=url)
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        user, _, secret = credentials.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) or None)
    nodes = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL node {item!r}: use host:port")
        nodes.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if scheme == "redis+cluster":
        if path and path != ["0"]:
            raise ValueError("REDIS_URL: a Redis Cluster has database 0 only")
        return RedisTarget("cluster", nodes=nodes, username=username, password=password)
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("REDIS_URL: redis+sentinel://host:port[,host:port]/service_name[/db]")
    db = int(path[1]) if len(path) == 2 else 0
    return RedisTarget("sentinel", nodes=nodes, service=path[0], db=db, username=username, password=password)


def build_client(url: str) -> Any:
    target = parse_redis_url(url)
    if target.kind == "plain":
        return redis.Redis.from_url(url, max_connections=256, **_OPTIONS)
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            max_connections=256,
            **_OPTIONS,
        )
    from redis.sentinel import Sentinel

    sentinel = Sentinel(
        target.nodes,
        sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2},
        socket_timeout=_OPTIONS["socket_timeout"],
        socket_connect_timeout=_OPTIONS["socket_connect_timeout"],
    )
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        health_check_interval=_OPTIONS["health_check_interval"],
        max_connections=256,
    )


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """The Celery broker URL and transport options that reach the Redis of ``url``.

    Sentinel: kombu's ``sentinel://`` transport with the service as ``master_name``.
    Cluster: kombu has no Redis Cluster transport, so ``CELERY_BROKER_URL`` must name a
    broker of its own (a plain Redis or a Sentinel service); ``ValueError`` otherwise.
    """
    if not url:
        return "memory://", {}
    target = parse_redis_url(url)
    if target.kind == "plain":
        return url, {}
    if target.kind == "cluster":
        raise ValueError(
            "REDIS_URL names a Redis Cluster, which Celery cannot use as a broker: "
            "set CELERY_BROKER_URL to a plain Redis or a Sentinel service (docs/scaling.md)"
        )
    auth = f":{target.password}@" if target.password else ""
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.nodes)
    return broker, {"master_name": target.service}


def get_redis() -> Any:
    """The process's client for ``settings.REDIS_URL`` (rebuilt if the setting changes, as tests do)."""
    global _client, _client_url
    url = settings.REDIS_URL
    if not url:
        return None
    if _client is None or _client_url != url:
        with _lock:
            if _client is None or _client_url != url:
                _client = build_client(url)
                _client_url = url
    return _client


def reset_redis() -> None:
    """Drop the client (tests that switch REDIS_URL)."""
    global _client
    _client = None


def slot_client(client: Any) -> Any:
    """A client for pipelines of scripts on ``{gw}`` keys: on Cluster, the node owning that slot.

    redis-py's cluster pipelines refuse EVALSHA; every key of those scripts lies in the
    ``{gw}`` slot, so the pipeline goes to that slot's node as a plain pipeline. After a
    resharding moves the slot, the cluster client's map is refreshed and the next call
    goes to the new owner.
    """
    from redis.cluster import RedisCluster

    if not isinstance(client, RedisCluster):
        return client
    node = client.get_node_from_key(f"{SLOT}:usage")
    if node.redis_connection is None:
        client.nodes_manager.initialize()
        node = client.get_node_from_key(f"{SLOT}:usage")
    return node.redis_connection
