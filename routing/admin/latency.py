"""Latency samples, rollups and the latency chart admin."""
