"""Other gateways run beside this one in the benchmark's peer phase (``--peers``).

Each peer is installed from its package registry at a pinned version into a git-ignored
cache under ``bench/.peers/`` (once; later runs reuse it) and runs as one process on the
same nginx fixed-response upstream as the gateway:

- Portkey's open-source gateway (``@portkey-ai/gateway`` on npm): ``node
  build/start-server.js --port=N --headless``; the OpenAI provider with a custom host
  (``x-portkey-provider: openai``, ``x-portkey-custom-host: http://127.0.0.1:PORT/v1``)
  sends each request to nginx. It keeps no records.
- LiteLLM's proxy (``litellm[proxy]`` on PyPI, in its own virtualenv): ``litellm --config
  FILE --num_workers 1`` with one ``model_list`` entry whose ``api_base`` is nginx, a
  master key (the proxy refuses to start without one) and no database.

Nothing here is imported by the gateway itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BENCH_DIR, Service, port_free, wait_port

PORTKEY_PACKAGE = "@portkey-ai/gateway"
PORTKEY_VERSION = "1.15.2"
LITELLM_VERSION = "1.106.12"
# LiteLLM releases published from a compromised account; never install these.
LITELLM_COMPROMISED = frozenset({"1.82.7", "1.82.8", "1.107.0"})

PEERS_DIR = BENCH_DIR / ".peers"
PORTKEY_DIR = PEERS_DIR / "portkey"
LITELLM_VENV = PEERS_DIR / "litellm-venv"
UPSTREAM_KEY = "sk-upstream"  # what nginx receives as the provider key (it ignores it)


@dataclass
class Target:
    """One server under load in the peer phase: where to send requests and with what."""

    label: str
    url: str
    key: str
    headers: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    version: str = ""


def _run(cmd: list[str], what: str, timeout: float = 900) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")


def portkey_entry() -> Path:
    return PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def installed_portkey_version() -> str | None:
    manifest = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def install_portkey(version: str = PORTKEY_VERSION) -> str:
    """``npm install --prefix bench/.peers/portkey`` the pinned version unless it is there."""
    if installed_portkey_version() == version and portkey_entry().exists():
        return version
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"the peer phase needs {tool} (Node.js and npm, e.g. apt-get install nodejs npm)")
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    # --ignore-scripts: the package's only install script is patch-package, and it ships no patches
    cmd = ["npm", "install", "--prefix", str(PORTKEY_DIR), "--save-exact", "--no-audit", "--no-fund"]
    _run([*cmd, "--ignore-scripts", f"{PORTKEY_PACKAGE}@{version}"], f"npm install {PORTKEY_PACKAGE}@{version}")
    found = installed_portkey_version()
    if found != version:
        raise RuntimeError(f"{PORTKEY_PACKAGE}: installed {found}, expected {version}")
    return version


def installed_litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _made_with_this_interpreter(venv: Path) -> bool:
    """The virtualenv at ``venv`` was made by the interpreter running this (its ``pyvenv.cfg``)."""
    try:
        config = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return False
    fields = dict(line.split("=", 1) for line in config.splitlines() if "=" in line)
    home = fields.get("home", "").strip()
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    return bool(home) and Path(home).resolve() == base.parent


def install_litellm(version: str = LITELLM_VERSION) -> str:
    """A virtualenv at bench/.peers/litellm-venv with ``litellm[proxy]==version``."""
    if version in LITELLM_COMPROMISED:
        raise RuntimeError(f"litellm {version} is a compromised release; pick another version")
    same = _made_with_this_interpreter(LITELLM_VENV)
    if same and installed_litellm_version() == version and (LITELLM_VENV / "bin" / "litellm").exists():
        return version
    if not same:  # the proxy runs on the gateway's interpreter, whichever build that is
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)
    if not (LITELLM_VENV / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(LITELLM_VENV)], "python -m venv")
    pip = str(LITELLM_VENV / "bin" / "pip")
    _run([pip, "install", "-q", f"litellm[proxy]=={version}"], f"pip install litellm[proxy]=={version}")
    found = installed_litellm_version()
    if found != version:
        raise RuntimeError(f"litellm: installed {found}, expected {version}")
    return version


def litellm_config(upstream_port: int, model: str, master_key: str) -> str:
    """The proxy's config: ``model`` goes to the nginx upstream through the OpenAI client."""
    return "\n".join(
        [
            "model_list:",
            f"  - model_name: {model}",
            "    litellm_params:",
            "      model: openai/bench-upstream",
            f"      api_base: http://127.0.0.1:{upstream_port}/v1",
            f"      api_key: {UPSTREAM_KEY}",
            "general_settings:",
            f"  master_key: {master_key}",
            "",
        ]
    )


def peer_env(home: Path) -> dict[str, str]:
    """A clean environment: none of the benchmark's DATABASE_URL / REDIS_URL leaks into a peer
    (LiteLLM would try to use a database it finds there)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "NODE_ENV": "production",
        # no download of the model price map at start (LiteLLM)
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }


def start_portkey(port: int, workdir: Path) -> Service:
    if not port_free(port):
        raise RuntimeError(f"port {port} is taken; pass --portkey-port")
    cmd = ["node", str(portkey_entry()), f"--port={port}", "--headless"]
    service = Service("portkey", cmd, env=peer_env(workdir / "portkey-home"), log=workdir / "portkey.log").start()
    wait_port(port, timeout=60)
    return service


def start_litellm(port: int, upstream_port: int, model: str, master_key: str, workdir: Path) -> Service:
    if not port_free(port):
        raise RuntimeError(f"port {port} is taken; pass --litellm-port")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream_port, model, master_key))
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--num_workers", "1", "--telemetry", "False"]
    service = Service("litellm", cmd, env=peer_env(workdir / "litellm-home"), log=workdir / "litellm.log").start()
    try:
        wait_port(port, timeout=180)  # imports and router set-up take 10-30 s
    except RuntimeError:
        service.stop()
        tail = (workdir / "litellm.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"LiteLLM did not start: {tail}") from None
    return service


def portkey_headers(upstream_port: int) -> dict[str, str]:
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1"}
