# The Grassroots image: one image for every service; the service is chosen by the arguments
# (`run <service>`, `migrate <service>`: services/launch.py), see k8s/base/<service>/deployment.yaml.
#
#   docker build -t registry.example.org/grassroots/suite:0.1.0 .
#
# Base: the official python image, pinned by exact version tag and by the digest of that tag's
# multi-platform index as published in docker-library/repo-info (repos/python/remote/
# 3.11.15-slim-bookworm.md, build of 2026-08-05). The digest could not be checked against a registry
# from the machine this was written on (no Docker engine): if a pull refuses it, take the tag's
# current digest from `docker buildx imagetools inspect python:3.11.15-slim-bookworm` and update
# both stages. Python 3.11, as the pins in requirements.txt are tested on.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

# --- builder: wheels for the runtime pins only (requirements.txt; requirements-dev.txt never enters
# the image). Every pin has a binary or pure-Python wheel for CPython 3.11 on Linux, so no compiler.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY requirements.txt .
RUN pip wheel --wheel-dir /wheels -r requirements.txt

# --- runtime: the wheels installed (offline, from the builder), the code, a non-root user.
# RUN --mount needs BuildKit (the default builder of current Docker and of buildx).
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/app
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.txt,target=/tmp/requirements.txt \
    pip install --no-index --find-links /wheels -r /tmp/requirements.txt
# A numeric uid/gid so Kubernetes can check runAsNonRoot without reading /etc/passwd; no login shell,
# no home. The code stays root-owned and read-only to it (the pods also mount the root filesystem
# read-only; /tmp is an emptyDir).
RUN groupadd --system --gid 10001 grassroots \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin grassroots
WORKDIR /app
COPY shared/ shared/
COPY services/ services/
# Bytecode compiled at build time: with a read-only root filesystem nothing could be written later.
RUN python -m compileall -q shared services
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "services.launch"]
CMD ["--help"]
