import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")
django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application

from gatewaysite.api.handler import GatewayWSGIHandler  # noqa: E402 - needs the apps loaded

# Django's WSGIHandler with a shorter road for the key-authenticated API (gatewaysite/api/handler.py).
application = GatewayWSGIHandler()
