"""docker-compose.yml and the Dockerfile describe the full stack (checked without a Docker engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"SECRET_KEY": "a", "JWT_SIGNING_KEY": "b", "KEY_PEPPER": "c", "POSTGRES_PASSWORD": "d"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_stack(services: dict[str, Any]) -> None:
    core = {name for name, service in services.items() if not service.get("profiles")}
    assert core == {"postgres", "redis", "migrate", "web", "worker", "beat"}
    assert services["web"]["command"] == [
        "gunicorn",
        "-c",
        "gatewaysite/gunicorn.conf.py",
        "gatewaysite.wsgi:application",
    ]
    assert services["worker"]["command"][:7] == [
        "celery",
        "-A",
        "gatewaysite",
        "worker",
        "-Q",
        "default,usage,latency",
        "--loglevel",
    ]
    assert services["beat"]["command"][:4] == ["celery", "-A", "gatewaysite", "beat"]
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--no-input"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    for name in ("migrate", "web", "worker", "beat"):
        env = services[name]["environment"]
        for variable in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "JWT_SIGNING_KEY", "KEY_PEPPER"):
            assert env.get(variable), (name, variable)


def test_health_checks(services: dict[str, Any]) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    web = services["web"]["healthcheck"]["test"]
    assert web[:3] == ["CMD", "python", "-c"] and "/readyz" in web[3]
    compile(web[3], "healthcheck", "exec")


def test_monitoring_profile(services: dict[str, Any]) -> None:
    """Prometheus scrapes the gateway over a network the gateway trusts; Grafana is provisioned."""
    import ipaddress
    import json

    from monitoring import catalog

    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    subnet = ipaddress.ip_network(compose["networks"]["metrics"]["ipam"]["config"][0]["subnet"])
    allowed = services["web"]["environment"]["GATEWAY_METRICS_NETWORKS"].split(",")
    assert subnet in {ipaddress.ip_network(n) for n in allowed}
    assert "metrics" in services["web"]["networks"] and "metrics" in services["prometheus"]["networks"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["web:8084"]
    for mount in services["prometheus"]["volumes"][:1] + services["grafana"]["volumes"][:2]:
        assert (ROOT / mount.split(":")[0]).exists(), mount
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/gateway.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    known = {m.name for m in catalog.ALL}
    used = set(re.findall(r"gateway_[a-z_]+", exprs))
    used = {name.removesuffix("_bucket") for name in used}
    assert used <= known, used - known
    # the dashboard shows every family of the list
    for metric in catalog.ALL:
        if metric not in (
            catalog.CONFIG_VERSION,
            catalog.PROCESSES,
            catalog.UNPRICED,
            catalog.ATTEMPTS,
            catalog.HTTP_DURATION,
        ):
            assert metric.name in used, metric.name


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 1 and "FROM python:3.11-slim" in text
    assert "RUN pip install -c constraints.txt ." in text and "collectstatic --no-input" in text
    assert "USER gateway" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".env", "var", ".git"} <= set(ignored)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    ok = subprocess.run(
        ["docker-compose", "config", "-q"], cwd=ROOT, env={**env, **SECRETS}, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    if (ROOT / ".env").exists():
        return  # a local .env provides the secrets
    # the required secrets are required: a missing one is named
    missing = subprocess.run(
        ["docker-compose", "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "in .env" in missing.stderr
