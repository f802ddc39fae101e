"""The WSGI application called in process, no HTTP server: ``POST /v1/chat/completions`` to
the benchmark's upstream, ``CONC`` greenlets at once (gevent patched, as in a worker).

Run by bench/instructions.py under callgrind, from the code tree to measure (its own
``gatewaysite``): ``WARM`` requests first, then ``N``. Environment: the benchmark's
``DATABASE_URL``/``REDIS_URL`` (configured by bench/instructions.py), ``INPROC_MODEL``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import io  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402


def main() -> None:
    from gatewaysite.wsgi import application  # django.setup() first

    logging.disable(logging.INFO)
    from accounts.services import key_issue

    _key, secret = key_issue(name="inproc")
    body = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % os.environ["INPROC_MODEL"].encode()
    statuses: list[str] = []

    def environ() -> dict[str, Any]:
        return {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/v1/chat/completions",
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "HTTP_HOST": "localhost",
            "HTTP_AUTHORIZATION": f"Bearer {secret}",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "REMOTE_ADDR": "127.0.0.1",
        }

    def worker(count: int) -> None:
        for _ in range(count):
            response = application(environ(), lambda status, headers: statuses.append(status))
            b"".join(response)
            response.close()

    def run(total: int) -> None:
        concurrency = int(os.environ.get("CONC", "1"))
        gevent.joinall([gevent.spawn(worker, total // concurrency) for _ in range(concurrency)])

    run(int(os.environ.get("WARM", "100")))
    run(int(os.environ.get("N", "160")))
    failed = [s for s in statuses if not s.startswith("200")]
    if failed:
        raise SystemExit(f"inproc: {len(failed)} requests failed: {sorted(set(failed))}")


if __name__ == "__main__":
    main()
