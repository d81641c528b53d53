# syntax=docker/dockerfile:1
#
# One image recipe for every deployable of the uv workspace. SERVICE is the workspace member (folder, package and
# console-script name, which are the same): auth-svc, ksef-gateway, buffer-svc, approval-svc, notify-svc, ksef-sim.
#
#   docker build --build-arg SERVICE=auth-svc -t ksef-hub/auth-svc:dev .
#   docker run --rm ksef-hub/auth-svc:dev migrate        # Alembic upgrade head of the service's schema
#   docker run --rm -p 8001:8000 ksef-hub/auth-svc:dev   # serve --host 0.0.0.0 --port 8000 (the default CMD)
#
# ksef-sim has no subcommands: run it with `--host 0.0.0.0 --port 8090` and HEALTHCHECK_PORT=8090.

ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==${UV_VERSION}"

# Compile bytecode at build time (the runtime file system is read-only), copy out of the cache mount rather than
# hard-link, never download an interpreter (the base image's 3.11 is the one), and put the venv at a fixed path.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Declared only now, so the layers above are shared by every service's build.
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<workspace member, e.g. auth-svc>" >&2; exit 1; }

# Layer 1, third-party dependencies only: needs just the root pyproject.toml and uv.lock (with --frozen uv takes the
# lock as it is and does not need the members' pyproject.toml), so it is cached until the lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --package "${SERVICE}" --no-install-workspace

# Layer 2, the workspace members. Every member must be present for uv to resolve the workspace, although only
# ${SERVICE} and what it depends on (libs/common) are installed. --no-editable installs them as wheels into the
# venv, so the runtime stage needs the venv and nothing of /src.
COPY pyproject.toml uv.lock ./
COPY libs/ libs/
COPY services/ services/
COPY tools/ tools/
COPY runner/ runner/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "${SERVICE}" --no-editable \
    && test -x "/app/.venv/bin/${SERVICE}" \
    && ln -s "/app/.venv/bin/${SERVICE}" /app/service

# --------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Fixed numeric ids so Kubernetes' runAsNonRoot can verify them without resolving names.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app

ARG SERVICE
LABEL org.opencontainers.image.title="ksef-hub/${SERVICE}"

# The venv and the /app/service link to the console script; owned by root, so the app cannot modify itself.
COPY --from=build /app /app

ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KSEF_HUB_SERVICE=${SERVICE} \
    HEALTHCHECK_PORT=8000

# Relative paths (the SQLite default ./.data, refused in production anyway) resolve under /tmp, the one place that
# is writable when the root file system is read-only (Kubernetes mounts an emptyDir there).
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000

# slim has no curl: the interpreter does the liveness request. Compose uses this; Kubernetes uses its own probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTHCHECK_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["/app/service"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
