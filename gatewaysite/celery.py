"""The Celery application and its schedule (docs/latency.md).

Worker: ``.venv/bin/celery -A gatewaysite worker -Q default,usage,latency -c 2 --loglevel INFO``
Beat:   ``.venv/bin/celery -A gatewaysite beat --loglevel INFO`` (``make worker`` / ``make beat``)
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

app = Celery("gatewaysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Options repeat each task's own queue and expiry so beat routes right even before it
# has imported the task modules.
app.conf.beat_schedule = {
    "usage-drain-stream": {
        "task": "usage.drain_stream",
        "schedule": 1.0,
        "options": {"queue": "usage", "expires": 10},
    },
    "usage-replay-spool": {
        "task": "usage.replay_spool",
        "schedule": 10.0,
        "options": {"queue": "usage", "expires": 25},
    },
    "latency-rollup-recent": {
        "task": "routing.rollup_recent",
        "schedule": 30.0,
        "options": {"queue": "latency", "expires": 25},
    },
    "usage-maintain-partitions": {
        "task": "usage.maintain_partitions",
        "schedule": 60.0 * 60,
        "options": {"queue": "default", "expires": 50 * 60},
    },
    "latency-prune-samples": {
        "task": "routing.prune_samples",
        "schedule": 60.0 * 60,
        "options": {"queue": "latency", "expires": 50 * 60},
    },
}
