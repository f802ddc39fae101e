"""Fixtures of the provider tests: each test module talks to one fake provider.

A module names its fake with a module-scoped ``fake_provider`` fixture returning the
server, not yet started; ``server`` runs it for the whole module and ``fake`` hands it
to each test with nothing queued and nothing received.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.http_server import ScriptedServer


@pytest.fixture(scope="module")
def server(fake_provider: ScriptedServer) -> Iterator[ScriptedServer]:
    fake_provider.start()
    yield fake_provider
    fake_provider.stop()


@pytest.fixture
def fake(server: ScriptedServer) -> ScriptedServer:
    server.replies.clear()
    server.received.clear()
    return server
