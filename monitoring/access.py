"""Who may read ``/metrics``: a bearer token, or a client address in the allowed networks.

- ``GATEWAY_METRICS_TOKEN``: a request with ``Authorization: Bearer <token>`` is let in
  from anywhere (compared in constant time).
- ``GATEWAY_METRICS_NETWORKS`` (default ``127.0.0.1/32,::1/128``): requests from these
  addresses need no token; empty: the token is always required.

The address is the connection's peer (``REMOTE_ADDR``), never ``X-Forwarded-For``, which
a client can write.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.GATEWAY["METRICS_TOKEN"]
    if token:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.GATEWAY["METRICS_NETWORKS"])))
