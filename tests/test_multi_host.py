"""Three gateway hosts behind nginx, one Redis, one Postgres: what holds across hosts.

Each "host" is an independent gunicorn master (the production config, two gevent
workers, a var directory of its own) on a loopback port; nginx (a private config in the
test's directory) balances over the three by round robin. They share the test's Redis
database and the test's Postgres database, as separate machines would share one Redis
and one Postgres. nginx adds ``x-upstream`` (the host that answered) to every response,
so each check can also say that every host took part.

Checked across the hosts, in one boot (booting three masters is the expensive part):

- ``balanced`` over three deployments stays within 1% per deployment over 3,000
  requests (each of the six processes keeps its own round-robin position, off by at most
  one per deployment);
- a strategy switch through nginx is read-your-writes: the very next 40 requests all
  carry the new strategy, whichever host serves them;
- a price import is read-your-writes: the next requests are priced by the new row;
- a key revoked over the key API is refused by the very next requests on every host;
- a 300 RPM key admits 300 to 303 of 600 concurrent requests;
- a budget is overshot by at most one request;
- live latency statistics (``GET /v1/routing/latency``) agree on every host once each
  has synced (once a second).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import call_command

from tests.fakes.http_server import Reply
from tests.fakes.openai_server import FakeOpenAI, completion_json
from tests.procs import LiveGateway, free_port, start_gateway

pytestmark = pytest.mark.django_db(transaction=True)

HOSTS = 3
MOCK = "gpt-4o"  # three mock deployments
PRICED = "gpt-4o-mini"  # one deployment on the fake OpenAI upstream
HELLO = [{"role": "user", "content": "Hi"}]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

NGINX_CONF = """\
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream gateway {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateway;
            proxy_set_header Host $http_host;
            proxy_next_upstream off;
            proxy_read_timeout 60s;
            add_header x-upstream $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground, with a config, pid file, logs and temp files in ``directory``."""

    def __init__(self, directory: Path, upstreams: list[int]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = directory / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                user="user root;" if os.geteuid() == 0 else "",  # the worker reaches the root-only temp dir
                dir=directory,
                port=self.port,
                servers="\n".join(f"        server 127.0.0.1:{port};" for port in upstreams),
            )
        )
        self.log = directory / "error.log"
        self.process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(directory / "stderr.log").open("wb"),
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, (directory / "stderr.log").read_text()
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.server.socket.listen(512)
    server.start()
    yield server
    threading.Thread(target=server.stop, daemon=True).start()


@pytest.fixture
def hosts(
    tmp_path: Path,
    upstream: FakeOpenAI,
    make_provider: Any,
    make_deployment: Any,
    make_price: Any,
    staff_groups: dict[str, Any],
    redis_client: Any,
) -> Iterator[dict[str, Any]]:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import User

    from routing.models import RoutingSettings

    mock = make_provider("mockp", kind="mock")
    for name in ("mock-a", "mock-b", "mock-c"):
        make_deployment(mock, MOCK, name=name)
    fake = make_provider("up", base_url=upstream.url + "/v1", vendor="openai")
    make_deployment(fake, PRICED, max_output_tokens=8192)
    make_price("openai", PRICED, "1", "1")  # $1 per million tokens either way
    RoutingSettings.objects.update_or_create(pk=1, defaults={"strategy": "balanced"})
    User.objects.create(  # the servers verify with the production hashers
        username="ops",
        is_staff=True,
        is_superuser=True,
        password=PBKDF2PasswordHasher().encode("ops-password-1", "fixedsalt1234", iterations=1000),
    )
    servers: list[LiveGateway] = []
    nginx: Nginx | None = None
    try:
        for n in range(HOSTS):  # all three boot together
            home = tmp_path / f"host{n}"
            home.mkdir()
            servers.append(start_gateway(home, workers=2))
        for server in servers:
            server.wait_healthy(timeout=90)
        nginx = Nginx(tmp_path / "nginx", [server.port for server in servers])
        yield {"nginx": nginx, "servers": servers, "upstream": upstream}
    finally:
        if nginx is not None:
            nginx.stop()
        for server in servers:
            server.stop()


_SESSION = threading.local()


def _concurrently(count: int, threads: int, call: Callable[[int], requests.Response]) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(call, range(count)))


def _post(url: str, secret: str, model: str = MOCK, **body: Any) -> requests.Response:
    session = getattr(_SESSION, "session", None)
    if session is None:
        session = _SESSION.session = requests.Session()
    return session.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": HELLO, "max_tokens": 5, **body},
        headers={"Authorization": f"Bearer {secret}", "Connection": "close"},  # spread over each host's workers
        timeout=60,
    )


def _host_of(response: requests.Response) -> str:
    return response.headers["x-upstream"].rsplit(":", 1)[-1]


def _token(url: str) -> str:
    answer = requests.post(url + "/api/token/", json={"username": "ops", "password": "ops-password-1"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["access"]


def _latency(url: str, secret: str) -> dict[str, tuple[int, int]]:
    """Deployment -> (requests in the rollups, live samples) as the host at ``url`` reports them."""
    answer = requests.get(
        url + "/v1/routing/latency?window=15m",
        headers={"Authorization": f"Bearer {secret}", "Connection": "close"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    found = {}
    for provider in answer.json()["providers"]:
        for item in provider["deployments"]:
            found[item["deployment"]] = (item["samples"], (item["live"] or {}).get("samples", 0))
    return found


def _issued(issue_key: Any, name: str, **fields: Any) -> Any:
    """A key issued here and served by every host before the test goes on (read-your-writes:
    without the wait, a host that has not yet reloaded its prefixes refuses the new key)."""
    from gatewaysite.config.propagation import wait_for_propagation

    issued = issue_key(name, **fields)
    propagation = wait_for_propagation()
    assert propagation is not None and propagation.complete, propagation
    return issued


def test_three_hosts_behind_nginx_share_routing_config_limits_and_money(hosts: dict[str, Any], issue_key: Any) -> None:
    nginx: Nginx = hosts["nginx"]
    servers: list[LiveGateway] = hosts["servers"]
    upstream: FakeOpenAI = hosts["upstream"]
    ports = {str(server.port) for server in servers}
    _, secret = _issued(issue_key, "everyday")

    # --- balanced: 3,000 requests over three deployments, within 1% each ------------------------
    responses = _concurrently(3000, 24, lambda _: _post(nginx.url, secret))
    assert Counter(r.status_code for r in responses) == {200: 3000}, [r.text for r in responses if r.ok is False][:3]
    assert {r.headers["x-gateway-strategy"] for r in responses} == {"balanced"}
    per_deployment = Counter(r.headers["x-gateway-deployment"] for r in responses)
    assert set(per_deployment) == {"mock-a", "mock-b", "mock-c"}
    assert all(abs(count - 1000) <= 10 for count in per_deployment.values()), per_deployment
    per_host = Counter(_host_of(r) for r in responses)
    assert set(per_host) == ports and all(abs(count - 1000) <= 10 for count in per_host.values()), per_host

    # --- latency statistics agree on every host once each has synced ---------------------------
    # The report lists deployments with rollups (the consumer writes them); its "live" part is
    # each process's view of the shared window in Redis, read back once a second.
    from usage.consumer import drain

    while drain(claim_idle_ms=0, batch_size=1000):
        pass
    deadline = time.monotonic() + 10
    while True:
        seen = [_latency(server.url, secret) for server in servers for _ in range(3)]  # both workers of each
        if all(s == seen[0] for s in seen) and sum(live for _, live in seen[0].values()) >= 3000:
            break
        assert time.monotonic() < deadline, f"the hosts disagree on latency statistics: {seen}"
        time.sleep(0.3)
    assert {name: rolled for name, (rolled, _) in seen[0].items()} == dict(per_deployment)
    assert all(abs(per_deployment[name] - live) <= 20 for name, (_, live) in seen[0].items()), seen[0]

    # --- a strategy switch through nginx is read-your-writes on every host -----------------------
    token = _token(nginx.url)
    for strategy in ("model", "balanced", "model"):
        switched = requests.post(
            nginx.url + "/admin/routing/strategy",
            json={"strategy": strategy},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert switched.status_code == 200, switched.text
        propagation = switched.json()["propagation"]
        assert propagation["complete"] is True and propagation["processes"] == 2 * HOSTS, propagation
        after = _concurrently(40, 8, lambda _: _post(nginx.url, secret))
        assert [r.headers["x-gateway-strategy"] for r in after] == [strategy] * 40
        assert {_host_of(r) for r in after} == ports

    # --- a price import is read-your-writes ------------------------------------------------------
    before = _post(nginx.url, secret, PRICED)
    assert before.status_code == 200, before.text
    assert Decimal(before.headers["x-gateway-cost-usd"]) == Decimal("0.000019")  # 12 + 7 tokens at $1/M
    prices = nginx.log.parent / "prices.csv"
    prices.write_text(
        "vendor,model,input_per_mtok,output_per_mtok,cached_input_per_mtok,cache_write_per_mtok,cache_write_1h_per_mtok\n"
        f"openai,{PRICED},2.000001,3.000003,,,\n"
    )
    # Without a date the new row takes effect at a stated instant just ahead (once every process
    # can serve it); the command returns once every process of every host serves the new version.
    call_command("pricing", "import", str(prices))
    from providers.models import PricingRow

    effective = PricingRow.objects.filter(vendor="openai", model=PRICED).latest("effective_from").effective_from
    new_cost = (12 * Decimal("2.000001") + 7 * Decimal("3.000003")) / Decimal(1_000_000)
    wait = (effective - datetime.now(UTC)).total_seconds()
    assert wait < 30, effective
    time.sleep(max(0.0, wait) + 0.05)
    priced = _concurrently(30, 6, lambda _: _post(nginx.url, secret, PRICED))
    assert {r.status_code for r in priced} == {200}
    assert {Decimal(r.headers["x-gateway-cost-usd"]) for r in priced} == {new_cost}
    assert {_host_of(r) for r in priced} == ports

    # --- a key revoked over the key API is refused at once on every host -------------------------
    doomed, doomed_secret = _issued(issue_key, "doomed")
    warm = [_post(server.url, doomed_secret) for server in servers for _ in range(4)]
    assert {r.status_code for r in warm} == {200}  # now in every host's key cache
    revoked = requests.post(
        f"{nginx.url}/v1/admin/keys/{doomed.prefix}/revoke", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.headers["x-gateway-config-propagation"] == "complete"
    refused = _concurrently(30, 6, lambda _: _post(nginx.url, doomed_secret))
    refused += [_post(server.url, doomed_secret) for server in servers for _ in range(4)]
    assert {r.status_code for r in refused} == {401}, [r.text for r in refused if r.status_code != 401][:3]
    assert {r.json()["error"]["code"] for r in refused} == {"key_revoked"}

    # --- 300 RPM across the hosts: 300 to 303 of 600 -----------------------------------------------
    _, limited = _issued(issue_key, "limited", rpm_limit=300)
    burst = _concurrently(600, 48, lambda _: _post(nginx.url, limited))
    statuses = Counter(r.status_code for r in burst)
    assert 300 <= statuses[200] <= 303 and statuses[429] == 600 - statuses[200], statuses
    assert all(int(r.headers["retry-after"]) >= 1 for r in burst if r.status_code == 429)
    assert {_host_of(r) for r in burst if r.status_code == 200} == ports

    # --- a budget overshot by at most one request ------------------------------------------------
    _, budgeted = _issued(issue_key, "budgeted", budget_usd=Decimal("0.05"), budget_period="day")
    upstream.queue(*[Reply(json=completion_json(completion_tokens=5000), delay=0.3) for _ in range(60)])
    start = threading.Barrier(60)

    def spend(_: int) -> requests.Response:
        start.wait(timeout=30)
        return requests.post(
            nginx.url + "/v1/chat/completions",
            json={"model": PRICED, "messages": HELLO},
            headers={"Authorization": f"Bearer {budgeted}", "Connection": "close"},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=60) as pool:
        spent_responses = list(pool.map(spend, range(60)))
    assert {r.status_code for r in spent_responses} <= {200, 429}
    admitted = [r for r in spent_responses if r.status_code == 200]
    assert admitted, "no request was admitted"
    assert {r.json()["error"]["code"] for r in spent_responses if r.status_code == 429} == {"budget_exceeded"}
    one_request = (12 * Decimal("2.000001") + 5000 * Decimal("3.000003")) / Decimal(1_000_000)
    assert {Decimal(r.headers["x-gateway-cost-usd"]) for r in admitted} == {one_request}
    assert len(admitted) * one_request <= Decimal("0.05") + one_request, len(admitted)
    assert len({_host_of(r) for r in spent_responses}) == HOSTS
