"""Routing rules and routing settings admin."""
