# syntax=docker/dockerfile:1
# One image for every component; the chart picks the entry point:
#   python -m kubenova.operator      non-root
#   python -m kubenova.webhooks      non-root
#   python -m kubenova.node_agent    root: libvirtd's socket and the host's disk images
# Dependencies are pinned by hack/requirements-image.txt. hack/image builds it with buildah
# (no Docker needed); `docker build .` works the same.
#
# Lean by construction: compilers, headers and pip stay in the build stages; the image gets
# libvirt's client library, a virtualenv of the dependencies (/opt/kubenova) and kubenova.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# libvirt-python compiles against libvirt's headers. python:3.11-slim has Python's headers and
# venv already; a Debian base (the one hack/image makes without a registry) gets them here.
RUN extra=$(python3 -c 'import os, sysconfig; print("" if os.path.exists(sysconfig.get_path("include") + "/Python.h") else "python3-dev python3-venv")') \
 && apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libvirt-dev pkg-config $extra \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/kubenova
ENV PATH=/opt/kubenova/bin:$PATH
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the pins change, not the sources.
COPY hack/requirements-image.txt ./
RUN pip install --no-cache-dir -r requirements-image.txt

# The dependencies as the image gets them, without pip. kubernetes 37 ships an asyncio copy
# of its whole client (kubernetes.aio: 68 MB with its bytecode, a sixth of the image) that
# kubenova never imports (kopf speaks aiohttp itself). kubenova itself lives beside the
# virtualenv (/opt/kubenova-app, on its path by a .pth), so a source change rebuilds only
# that small layer.
FROM build AS deps
RUN pip uninstall -y -q pip setuptools \
 && rm -rf /opt/kubenova/lib/python3*/site-packages/kubernetes/aio \
 && python -c 'import site; open(site.getsitepackages()[0] + "/kubenova-app.pth", "w").write("/opt/kubenova-app\n")'

FROM build AS app
COPY pyproject.toml README.md ./
COPY crds/kubenova ./crds/kubenova
COPY common/kubenova ./common/kubenova
COPY operator/kubenova ./operator/kubenova
COPY node_agent/kubenova ./node_agent/kubenova
COPY webhooks/kubenova ./webhooks/kubenova
COPY hack/kubenova ./hack/kubenova
# --no-deps: everything kubenova[agent] needs is pinned above.
RUN pip install --no-cache-dir --no-deps --target /opt/kubenova-app .

FROM ${PYTHON_IMAGE}
# libvirt0: the client library the agent's libvirt-python binds to (qemu:///system over the
# host's socket, or the in-process test:/// driver). qemu-utils: qemu-img, which the agent runs
# for every overlay (storage: files, the chart's default) and to check and convert images.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 qemu-utils \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/* \
 && useradd --system --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin kubenova
COPY --from=deps /opt/kubenova /opt/kubenova
COPY --from=app /opt/kubenova-app /opt/kubenova-app
ENV PATH=/opt/kubenova/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# Every entry point loads in the image as shipped (without pip and kubernetes.aio).
RUN python -c 'import kopf, kubernetes.client, libvirt, kubenova.operator, kubenova.webhooks, kubenova.node_agent'
USER 65532:65532
CMD ["python", "-m", "kubenova.operator"]
