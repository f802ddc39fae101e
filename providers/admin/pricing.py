"""Pricing rows admin: history, CSV import and export, unpriced deployments."""
