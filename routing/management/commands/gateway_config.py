"""Export and import the whole gateway configuration as YAML or JSON.

    python manage.py gateway_config export gateway.yaml
    python manage.py gateway_config import gateway.yaml [--dry-run] [--prune]

The format follows the file name (.yaml/.yml or .json); ``-`` reads stdin or writes
stdout (YAML unless ``--format json``). See docs/configuration.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gatewaysite.config.propagation import wait_for_propagation
from routing.services.config_io import (
    ConfigImportError,
    config_document_dump,
    config_document_parse,
    format_for_path,
    gateway_config_export,
    gateway_config_import,
)


class Command(BaseCommand):
    help = "Export or import providers, deployments, pricing, routing rules and settings (not client keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Write the configuration to FILE.")
        export.add_argument("file", help="Path ending in .yaml, .yml or .json; - for stdout.")
        export.add_argument("--format", choices=["yaml", "json"], help="Override the format chosen by the file name.")
        imp = sub.add_parser("import", help="Apply the configuration in FILE (idempotent).")
        imp.add_argument("file", help="Path ending in .yaml, .yml or .json; - for stdin.")
        imp.add_argument("--format", choices=["yaml", "json"], help="Override the format chosen by the file name.")
        imp.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")
        imp.add_argument(
            "--prune",
            action="store_true",
            help="Also delete providers, deployments and rules that the file does not list "
            "(only for the sections it contains; pricing rows are never deleted).",
        )

    def _format(self, path: str, chosen: str | None) -> str:
        if chosen:
            return chosen
        if path == "-":
            return "yaml"
        try:
            return format_for_path(path)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def handle(self, *args: Any, **options: Any) -> None:
        path: str = options["file"]
        fmt = self._format(path, options.get("format"))
        if options["action"] == "export":
            text = config_document_dump(gateway_config_export(), fmt=fmt)
            if path == "-":
                self.stdout.write(text, ending="")
            else:
                Path(path).write_text(text, encoding="utf-8")
                self.stderr.write(f"Wrote the gateway configuration to {path}.")
            return

        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from None
        try:
            report = gateway_config_import(
                document=config_document_parse(text, fmt=fmt), dry_run=options["dry_run"], prune=options["prune"]
            )
        except ConfigImportError as exc:
            raise CommandError(f"{path}: {exc}. Nothing was changed.") from None
        for line in report.changes:
            self.stdout.write(("(dry run) " if report.dry_run else "") + line)
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        if not report.changed:
            self.stdout.write(f"No changes ({report.unchanged} entries already up to date).")
        elif report.dry_run:
            self.stdout.write(f"Dry run: {len(report.changes)} change(s) not applied.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Applied {len(report.changes)} change(s)."))
            propagation = wait_for_propagation()
            if propagation is not None:
                if propagation.complete:
                    self.stdout.write(propagation.message())
                else:
                    self.stderr.write(self.style.WARNING(propagation.message()))
