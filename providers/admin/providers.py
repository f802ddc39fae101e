"""Providers and deployments admin."""
