# streamproc daemon image.
#   docker build -t streamproc .
#   docker run --rm streamproc --help
# BASE_IMAGE: any Debian-based image; Python >= 3.11 is taken from it, or installed from
# Debian's packages when it has none (as on a bare Debian 12 root).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
RUN python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
 || (apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
     && rm -rf /var/lib/apt/lists/*)
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY streamproc ./streamproc
RUN python3 -m venv /opt/streamproc \
 && /opt/streamproc/bin/pip wheel --no-cache-dir --disable-pip-version-check -q --no-deps -w /wheels . \
 && /opt/streamproc/bin/pip install --no-cache-dir --disable-pip-version-check -q /wheels/streamproc-*.whl \
 && /opt/streamproc/bin/pip uninstall -q -y pip setuptools

FROM ${BASE_IMAGE}
RUN python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
 || (apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
     && rm -rf /var/lib/apt/lists/*)
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin streamproc
COPY --from=build /opt/streamproc /opt/streamproc
# Metrics listen on every address of the container; publish 9464 to scrape them.
# The consumer name defaults to the hostname, which differs per container.
ENV PATH=/opt/streamproc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAMPROC_METRICS_ADDR=0.0.0.0 \
    STREAMPROC_METRICS_PORT=9464
USER streamproc
EXPOSE 9464
# Healthy while the daemon answers on its metrics port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['STREAMPROC_METRICS_PORT'], timeout=4).read()"]
ENTRYPOINT ["streamproc"]
CMD ["run"]
