# syntax=docker/dockerfile:1
# One image for every component; the chart picks the entry point:
#   python -m kubenova.operator      non-root
#   python -m kubenova.webhooks      non-root
#   python -m kubenova.node_agent    root: libvirtd's socket and the host's disk images
# Dependencies are pinned by hack/requirements-image.txt.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# libvirt-python compiles against libvirt's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY hack/requirements-image.txt ./
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r requirements-image.txt
COPY pyproject.toml README.md ./
COPY crds/kubenova ./crds/kubenova
COPY operator/kubenova ./operator/kubenova
COPY node_agent/kubenova ./node_agent/kubenova
COPY webhooks/kubenova ./webhooks/kubenova
COPY hack/kubenova ./hack/kubenova
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# libvirt0: the client library the agent's libvirt-python binds to (qemu:///system over the
# host's socket, or the in-process test:/// driver).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin kubenova
COPY hack/requirements-image.txt /tmp/requirements-image.txt
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels \
      -c /tmp/requirements-image.txt 'kubenova[agent]' \
 && rm /tmp/requirements-image.txt
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
CMD ["python", "-m", "kubenova.operator"]
