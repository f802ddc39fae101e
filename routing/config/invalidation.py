"""Configuration change detection.

Every write to a configuration model (keys, teams, providers, deployments, pricing,
rules, routing settings) bumps ``ConfigVersion`` in the same transaction and marks this
process's snapshot stale. Once the transaction commits the new version is announced
over Redis, so the other processes reload at once (or on their next poll), and the
writer can wait until they all serve it (``routing/config/propagation.py``).

This is the one place signals are used: a cache must be invalidated by *every* write
path (admin, services, shell), and forgetting one would serve stale keys. Bulk writes
(``bulk_create``, ``update``) send no signals, so code doing them calls
``config_changed()`` itself.

Writers that bypass Django altogether (raw SQL, another service) are caught by the
database: triggers on every configuration table bump the same row (migration
``routing/0003_sec_config_triggers``), and each process's poll sees it.

The writing process invalidates twice: at once (its own next read sees its own write)
and again when the transaction commits, because a request served by another thread of
the same process in between may have reloaded from the not yet committed state.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save


def config_changed() -> None:
    from routing.config.cache import config_cache
    from routing.config.propagation import announce_on_commit
    from routing.models import ConfigVersion

    if not ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1):
        ConfigVersion.objects.update_or_create(pk=1, defaults={"version": 1})
    config_cache.invalidate_local()
    transaction.on_commit(config_cache.invalidate_local)
    announce_on_commit()


def _on_change(sender: type[models.Model], **kwargs: Any) -> None:
    config_changed()


def watch(*model_classes: type[models.Model]) -> None:
    for model in model_classes:
        post_save.connect(_on_change, sender=model, weak=False, dispatch_uid=f"config-{model.__name__}-save")
        post_delete.connect(_on_change, sender=model, weak=False, dispatch_uid=f"config-{model.__name__}-delete")
