"""``manage.py pricing import FILE`` / ``pricing export FILE`` / ``pricing unpriced``.

FILE is JSON or CSV by its extension. Import also reads LiteLLM's
``model_prices_and_context_window.json``. Re-importing the same file creates nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from providers.pricing.formats import PricingFormatError, dump_file
from providers.pricing.selectors import pricing_rows, unpriced_deployments
from providers.pricing.services import pricing_import_file


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

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "unpriced":
            rows = unpriced_deployments()
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
                for line in result.conflicts:
                    self.stderr.write(f"refused: {line}")
                for line in result.skipped[:50]:
                    self.stderr.write(f"skipped: {line}")
                if len(result.skipped) > 50:
                    self.stderr.write(f"... and {len(result.skipped) - 50} more skipped")
                self.stdout.write(f"{path}: {result.summary()}")
            else:
                rows = list(pricing_rows())
                path.write_bytes(dump_file(path.name, rows))
                self.stdout.write(f"{path}: {len(rows)} pricing rows written")
        except PricingFormatError as exc:
            raise CommandError(str(exc))
