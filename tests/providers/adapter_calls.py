"""Calling an adapter in tests the way the completion path does."""

from __future__ import annotations

from typing import Any

import pytest

from providers.adapters.base import ProviderAdapter, Target, UpstreamError


def upstream_error(adapter: ProviderAdapter, target: Target, body: dict[str, Any], *, stream: bool) -> UpstreamError:
    """The ``UpstreamError`` from ``complete``, or from the first chunk of ``stream``: it must raise one."""
    with pytest.raises(UpstreamError) as info:
        if stream:
            next(adapter.stream(target, body))
        else:
            adapter.complete(target, body)
    return info.value
