"""Live latency statistics for the latency strategy (placeholder: filled in by the latency work)."""

from __future__ import annotations


class LiveLatency:
    def observe(self, deployment: str, upstream_ms: float, ok: bool) -> None:
        return None

    def stats(self) -> dict[str, tuple[float, int]]:
        """deployment name -> (recent mean upstream ms, recent sample count)."""
        return {}


live_latency = LiveLatency()
