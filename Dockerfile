# stabilize: the Slack incident bot. Runtime dependencies only; tests and the demo sandbox
# (moto) stay out of the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STABILIZE_DB=/data/stabilize.db

RUN groupadd --system --gid 10001 stabilize \
    && useradd --system --uid 10001 --gid stabilize --create-home stabilize \
    && mkdir /data \
    && chown stabilize:stabilize /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
COPY runbooks ./runbooks
RUN pip install --no-cache-dir .

USER 10001:10001
# The audit log and state (SQLite, WAL) live here; keep it on a volume.
VOLUME /data
EXPOSE 3000

# No curl in slim images: ask /healthz with the Python that is already there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4).status == 200 else 1)"]

CMD ["stabilize", "serve", "--host", "0.0.0.0", "--port", "3000"]
