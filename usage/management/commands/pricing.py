"""``manage.py pricing import FILE`` / ``export FILE`` / ``unpriced`` / ``reprice FILE --reason TEXT``.

FILE is JSON or CSV by its extension. Import also reads LiteLLM's
``model_prices_and_context_window.json``. Re-importing the same file creates nothing.
Import refuses rows dated before now (backdating); ``reprice`` is the explicit, audited
way to do that (``usage/reprice.py``). After a change, the command waits
until every gateway process serves it and prints whether they all do.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gatewaysite.config.propagation import wait_for_propagation
from providers.pricing.formats import PricingFormatError, dump_file, parse_file
from providers.pricing.selectors import deployments_unpriced, pricing_rows
from providers.pricing.services import ImportResult, pricing_import_file
from usage.reprice import pricing_reprice


class Command(BaseCommand):
    help = (
        "Import or export pricing rows (JSON or CSV; import also reads LiteLLM's price map), list unpriced deployments."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="Add the prices of FILE (.json or .csv).")
        imp.add_argument("file")
        exp = sub.add_parser("export", help="Write every pricing row to FILE (.json or .csv).")
        exp.add_argument("file")
        sub.add_parser("unpriced", help="List enabled deployments with no price in effect.")
        rep = sub.add_parser(
            "reprice",
            help="Add the prices of FILE even with a past effective_from, re-cost the usage records they apply to, "
            "and keep an audit entry.",
        )
        rep.add_argument("file")
        rep.add_argument("--reason", required=True, help="Why (kept in the audit entry).")
        rep.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "unpriced":
            rows = deployments_unpriced()
            for d in rows:
                self.stdout.write(f"{d.name}\t{d.model_name}\t{d.provider.pricing_vendor}/{d.provider_model}")
            self.stdout.write(f"{len(rows)} deployment(s) without a price.")
            return
        path = Path(options["file"])
        try:
            if action == "import":
                if not path.is_file():
                    raise CommandError(f"{path}: no such file")
                result = pricing_import_file(name=path.name, content=path.read_bytes())
                self._report(result)
                self.stdout.write(f"{path}: {result.summary()}")
                self._propagation()
                if result.conflicts:
                    raise CommandError(f"{path}: {len(result.conflicts)} row(s) refused (see above)")
            elif action == "reprice":
                if not path.is_file():
                    raise CommandError(f"{path}: no such file")
                parsed = parse_file(path.name, path.read_bytes())
                try:
                    repriced = pricing_reprice(
                        entries=parsed.entries,
                        skipped=parsed.skipped,
                        reason=options["reason"],
                        actor=f"{getpass.getuser()} (manage.py pricing reprice)",
                        dry_run=options["dry_run"],
                    )
                except ValueError as exc:
                    raise CommandError(str(exc))
                self._report(repriced.imported)
                self.stdout.write(f"{path}: {repriced.summary()}")
                if not repriced.dry_run:
                    self._propagation()
            else:
                rows = list(pricing_rows())
                path.write_bytes(dump_file(path.name, rows))
                self.stdout.write(f"{path}: {len(rows)} pricing rows written")
        except PricingFormatError as exc:
            raise CommandError(str(exc))

    def _report(self, result: ImportResult) -> None:
        for line in result.conflicts:
            self.stderr.write(f"refused: {line}")
        for line in result.skipped[:50]:
            self.stderr.write(f"skipped: {line}")
        if len(result.skipped) > 50:
            self.stderr.write(f"... and {len(result.skipped) - 50} more skipped")

    def _propagation(self) -> None:
        propagation = wait_for_propagation()
        if propagation is None:
            return
        if propagation.complete:
            self.stdout.write(propagation.message())
        else:
            self.stderr.write(self.style.WARNING(propagation.message()))
