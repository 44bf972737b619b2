# taskdash in a container: `taskdash metrics` (the default), `taskdash watch`, or the dashboard with -it.
#
#   docker build -t taskdash .
#   docker run --rm -p 9808:9808 -e TASKDASH_BROKER=redis://:pw@redis:6379/0 taskdash          # metrics
#   docker run --rm -e TASKDASH_BROKER=... taskdash watch --notify https://hooks.example/T0   # alerts
#   docker run --rm -it -e TASKDASH_BROKER=... taskdash --read-only                          # the TUI
#
# The user's Celery app is not in the image: pass the key layout with TASKDASH_* variables or flags
# (README, "Configuration": TASKDASH_GLOBAL_KEYPREFIX, TASKDASH_PRIORITY_STEPS, TASKDASH_SSL_CA_CERTS,
# ...), or mount the project and use --app-path /app -A proj.celery (its imports must be installed).
# Build arguments: BASE (any Debian-like image with python3 >= 3.10 and its venv module, e.g.
# python:3.10-slim), CELERY (a pip specifier matching your workers, e.g. "==5.3.6"), EXTRAS (e.g. "hiredis").

ARG BASE=python:3.12-slim

# ---- build: a venv with taskdash and its dependencies (byte-compiled by pip), no pip cache ----------
FROM ${BASE} AS build
ARG CELERY=""
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/taskdash
# the venv is made on the same base as the runtime stage, so its python symlink is valid there too
COPY pyproject.toml README.md ./
COPY taskdash/ taskdash/
COPY collectors/ collectors/
COPY tui/ tui/
COPY demo_tasks/ demo_tasks/
RUN /opt/taskdash/bin/pip install ".${EXTRAS:+[$EXTRAS]}" ${CELERY:+"celery[redis]$CELERY"} \
    && /opt/taskdash/bin/pip uninstall -y pip \
    && /opt/taskdash/bin/taskdash --version

# ---- runtime: the venv only, as an unprivileged user ----------------------------------------------
FROM ${BASE}
LABEL org.opencontainers.image.title="taskdash" \
      org.opencontainers.image.description="A terminal dashboard, Prometheus endpoint and alert watcher for Celery on Redis" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 taskdash \
    && useradd --system --uid 10001 --gid taskdash --home-dir /home/taskdash --create-home \
       --shell /usr/sbin/nologin taskdash
COPY --from=build /opt/taskdash /opt/taskdash
ENV PATH=/opt/taskdash/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TERM=xterm-256color \
    TASKDASH_CONFIG=/etc/taskdash/config.toml
USER 10001:10001
WORKDIR /home/taskdash
EXPOSE 9808
# taskdash handles SIGTERM itself (metrics and watch exit 0), so it can be PID 1 without an init
ENTRYPOINT ["taskdash"]
CMD ["metrics", "--host", "0.0.0.0", "--port", "9808"]
