"""The gateway configuration as one document: export it, import it (YAML or JSON).

The document holds providers, deployments, pricing rows, routing rules (with their
ordered targets) and the routing settings; never client keys, never a stored provider
key (providers name an environment variable instead). Import matches entries by natural
key (provider name, deployment name, pricing (vendor, model, effective_from), rule name),
writes only what differs, and runs in one transaction: an invalid entry raises
``ConfigImportError`` naming it and nothing is applied. Importing the same document twice
changes nothing. The format is documented in docs/configuration.md.

This module only puts the sections together; each app owns its own
(``providers/config_sections.py``, ``routing/config_sections.py``), and the shared
machinery is ``gatewaysite/config/document.py``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from gatewaysite.config import document as doc
from gatewaysite.config.changes import config_changed
from gatewaysite.config.document import ConfigImportError, ImportReport, format_for_path, section_items
from providers import config_sections as providers_sections
from routing import config_sections as routing_sections

__all__ = [
    "ConfigImportError",
    "ImportReport",
    "config_document_dump",
    "config_document_parse",
    "format_for_path",
    "gateway_config_export",
    "gateway_config_import",
]

FORMAT_VERSION = doc.FORMAT_VERSION
SECTIONS = ("routing", "providers", "deployments", "pricing", "rules")
YAML_HEADER = (
    "# LLM gateway configuration: python manage.py gateway_config import FILE\n"
    "# Format: docs/configuration.md. Client keys are not part of it; provider keys are given\n"
    "# as environment variable names (api_key_env), never written here.\n"
)


def gateway_config_export() -> dict[str, Any]:
    """The whole configuration as plain data (str, int, float, bool, list, dict)."""
    return {
        "version": FORMAT_VERSION,
        "routing": routing_sections.routing_settings_export(),
        "providers": providers_sections.providers_export(),
        "deployments": providers_sections.deployments_export(),
        "pricing": providers_sections.pricing_export(),
        "rules": routing_sections.rules_export(),
    }


def config_document_dump(document: dict[str, Any], *, fmt: str) -> str:
    return doc.config_document_dump(document, fmt=fmt, header=YAML_HEADER)


def config_document_parse(text: str, *, fmt: str) -> dict[str, Any]:
    return doc.config_document_parse(text, fmt=fmt, sections=SECTIONS)


def gateway_config_import(*, document: dict[str, Any], dry_run: bool = False, prune: bool = False) -> ImportReport:
    """Apply ``document``; sections it leaves out are left alone.

    ``prune`` also deletes the providers, deployments and rules that a present section
    does not list (pricing rows are history and are never pruned). ``dry_run`` reports
    what would change and rolls everything back.
    """
    if not isinstance(document, dict):
        raise ConfigImportError("the document must be a mapping with the sections " + ", ".join(SECTIONS))
    unknown = sorted(set(document) - {"version", *SECTIONS})
    if unknown:
        raise ConfigImportError(f"unknown section(s) {', '.join(unknown)}; valid: version, {', '.join(SECTIONS)}")
    version = document.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ConfigImportError(f"version {version!r} is not supported (this gateway reads version {FORMAT_VERSION})")

    report = ImportReport(dry_run=dry_run)
    with transaction.atomic():
        provider_items = section_items(document, "providers")
        deployment_items = section_items(document, "deployments")
        pricing_items = section_items(document, "pricing")
        rule_items = section_items(document, "rules")
        provider_names = None
        deployment_names = None
        if provider_items is not None:
            provider_names = providers_sections.providers_import(items=provider_items, report=report)
        if deployment_items is not None:
            deployment_names = providers_sections.deployments_import(items=deployment_items, report=report)
        if pricing_items is not None:
            providers_sections.pricing_rows_import(items=pricing_items, report=report)
        if rule_items is not None:
            routing_sections.rules_import(items=rule_items, report=report, prune=prune)
        if prune:
            if deployment_names is not None:
                providers_sections.deployments_prune(keep=deployment_names, report=report)
            if provider_names is not None:
                providers_sections.providers_prune(keep=provider_names, report=report)
        if document.get("routing") is not None:
            routing_sections.routing_settings_import(entry=document["routing"], report=report)
        if dry_run:
            transaction.set_rollback(True)
        elif report.changed:
            config_changed()  # bulk writes (targets, parked priorities) send no signals
    return report
