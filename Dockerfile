# The gateway image: web (gunicorn), Celery worker and beat all run from it.
#   docker compose build            (see docker-compose.yml and docs/configuration.md)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_VAR_DIR=/app/var \
    TIKTOKEN_CACHE_DIR=/app/tiktoken \
    PORT=8084

WORKDIR /app

# Dependencies first, so this layer is rebuilt only when they change; constraints.txt pins
# the versions the test suite passed with.
COPY pyproject.toml constraints.txt ./
RUN pip install -c constraints.txt .

# tiktoken's encodings, so token counts need no download at run time. Without network at
# build time the gateway falls back to its documented approximation for estimates.
RUN python -c "import tiktoken; [tiktoken.get_encoding(n) for n in ('cl100k_base', 'o200k_base')]" \
    || echo "tiktoken encodings not fetched; token estimates will use the approximation"

COPY . .

# Static files for the admin (hashed and compressed, served by WhiteNoise). The secrets
# here only let settings load for collectstatic; the real ones come from the environment.
RUN SECRET_KEY=collectstatic JWT_SIGNING_KEY=collectstatic KEY_PEPPER=collectstatic \
        python manage.py collectstatic --no-input -v 0 \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
    && chown -R gateway /app/var

USER gateway
EXPOSE 8084
CMD ["gunicorn", "-c", "gatewaysite/gunicorn.conf.py", "gatewaysite.wsgi:application"]
