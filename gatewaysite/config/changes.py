"""Configuration change notification: the bottom layer every app's writes go through.

Every write to a configuration model (keys, teams, providers, deployments, pricing,
rules, routing settings) bumps ``ConfigVersion`` in the same transaction and tells this
process's listeners (``on_change``). Once the transaction commits the new version is
announced over Redis, so the other processes reload at once (or on their next poll), and
the writer can wait until they all serve it (``gatewaysite/config/propagation.py``).

Notifications flow up, never imports: each app hands its configuration models to
``watch()`` from its ``AppConfig.ready``, and the apps that keep something derived from
the configuration in memory register a listener here (routing's snapshot cache, the
accounts key cache). So ``accounts`` and ``providers`` know nothing of ``routing``.

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

from collections.abc import Callable
from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from gatewaysite.config.propagation import announce_on_commit
from gatewaysite.models import ConfigVersion

_listeners: list[Callable[[], None]] = []
_refreshers: list[Callable[[], object]] = []


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever this process learns the configuration changed.

    That is: this process wrote it (at once, and again on commit), or its poller saw a
    new version. Listeners only mark or drop what they cached; they must be cheap.
    """
    if listener not in _listeners:
        _listeners.append(listener)


def changed_here() -> None:
    """Tell every listener of this process that the configuration changed."""
    for listener in _listeners:
        listener()


def on_refresh(refresher: Callable[[], object]) -> None:
    """Register what brings this process's configuration up to date (routing's snapshot cache:
    reload when stale, start the poller that notices other processes' writes)."""
    if refresher not in _refreshers:
        _refreshers.append(refresher)


def refresh() -> None:
    """Bring this process's configuration up to date: a cache derived from it (the key cache)
    calls this before it answers, so a change seen by the poller has reached its listeners."""
    for refresher in _refreshers:
        refresher()


def config_changed() -> None:
    if not ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1):
        ConfigVersion.objects.update_or_create(pk=1, defaults={"version": 1})
    changed_here()
    transaction.on_commit(changed_here)
    announce_on_commit()


def _on_change(sender: type[models.Model], **kwargs: Any) -> None:
    config_changed()


def watch(*model_classes: type[models.Model]) -> None:
    for model in model_classes:
        post_save.connect(_on_change, sender=model, weak=False, dispatch_uid=f"config-{model.__name__}-save")
        post_delete.connect(_on_change, sender=model, weak=False, dispatch_uid=f"config-{model.__name__}-delete")
