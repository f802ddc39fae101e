"""Screenshots of the operator pages in headless Chromium (docs/observability.md).

    .venv/bin/python scripts/screenshot_pages.py --base-url http://127.0.0.1:8084 --out var/screenshots

Run it beside a running gateway, with the same DATABASE_URL (and SECRET_KEY) as the
gateway. The admin pages need a staff session: the script renders them in process as the
first superuser (Django's test client), writes the HTML with ``<base href=BASE_URL>`` so
the stylesheets load from the gateway, and has Chromium screenshot the files. Public pages
(the API docs) are screenshot straight from the gateway. Needs ``chromium`` (Debian:
``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ADMIN_PAGES = {
    "admin-index": "/admin/",
    "overview": "/admin/overview/",
    "latency-chart": "/admin/usage/latencyrollup/chart/?range=6h",
}
PUBLIC_PAGES = {"api-docs": "/api/docs/"}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def shoot(browser: str, url: str, png: Path) -> None:
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
            "--window-size=1280,1800",
            f"--screenshot={png}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )


def screenshot_pages(*, base_url: str, out: Path, client: Any) -> list[Path]:
    """``client``: a Django test client logged in as staff. Returns the PNG files."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install -y chromium)")
    out.mkdir(parents=True, exist_ok=True)
    pngs = []
    for name, path in ADMIN_PAGES.items():
        response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")
        html = response.content.decode().replace("<head>", f'<head><base href="{base_url.rstrip("/")}/">', 1)
        page = out / f"{name}.html"
        page.write_text(html)
        pngs.append(out / f"{name}.png")
        shoot(browser, page.resolve().as_uri(), pngs[-1])
    for name, path in PUBLIC_PAGES.items():
        pngs.append(out / f"{name}.png")
        shoot(browser, base_url.rstrip("/") + path, pngs[-1])
    return pngs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8084")
    parser.add_argument("--out", default="var/screenshots")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        sys.exit("No superuser: create one with manage.py createsuperuser.")
    client = Client(SERVER_NAME="127.0.0.1")
    client.force_login(user)
    for png in screenshot_pages(base_url=args.base_url, out=Path(args.out), client=client):
        print(png)


if __name__ == "__main__":
    main()
