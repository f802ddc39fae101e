"""Pricing data: the shipped price list, import and export (JSON, CSV, LiteLLM), selectors."""
