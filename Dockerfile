# syntax=docker/dockerfile:1
# kubetune: one image, two processes.
#   operator (default):  kubetune-operator           (non-root, read-only root filesystem)
#   node agent:          kubetune-agent              (root + privileged, set by the Helm chart)
# Build: docker build -t kubetune/kubetune:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the pinned dependencies and kubetune itself ---------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/kubetune
# Dependencies first (their own layer, rebuilt only when the lock changes); hashes are required.
COPY requirements.lock ./
RUN /opt/kubetune/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator/kubetune operator/kubetune
COPY node-agent/kubetune_agent node-agent/kubetune_agent
# The build backend (setuptools, wheel) comes from the lock, so nothing unpinned is fetched.
RUN /opt/kubetune/bin/pip install --no-deps --no-build-isolation . \
 && /opt/kubetune/bin/pip check \
 && /opt/kubetune/bin/python -m compileall -q /opt/kubetune/lib

# --- runtime -----------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kubetune" \
      org.opencontainers.image.description="kubetune operator and node agent: bounded, reversible, explained performance tuning for Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
# 65532: the conventional "nonroot" uid; the chart's securityContext names the same ids.
RUN groupadd --system --gid 65532 kubetune \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin kubetune
COPY --from=build /opt/kubetune /opt/kubetune
# Read-only root filesystem: no .pyc writes at run time (compiled at build), temp files in /tmp (an emptyDir).
# MALLOC_ARENA_MAX=2: glibc gives threads their own malloc arenas (up to 8 per core), and the operator's
# threads (kopf, the pod watch, the API and Prometheus calls) kept ~30 MiB more resident at 1,000
# policies without the cap (tests/bench/bench_operator.py, docs/scaling.md).
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
USER 65532:65532
EXPOSE 8080 9464 9443
CMD ["kubetune-operator"]
