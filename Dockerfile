# deepfleet on a CUDA runtime base: `docker run IMAGE train JOB ...`, `... serve BUNDLE ...`.
# Build with `make image` (needs a Docker engine). Python dependencies are pinned by
# docker/constraints.txt; torch comes from PyTorch's CUDA wheel index at the tested version.
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_BASE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/deepfleet/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/deepfleet
COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install --constraint /tmp/constraints.txt /src

FROM ${CUDA_BASE}
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/deepfleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 deepfleet \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin deepfleet \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=build /opt/deepfleet /opt/deepfleet
# The same user id the Kubernetes manifests run as (runAsUser 10001).
USER 10001:10001
WORKDIR /workspace
# 8000: `deepfleet serve`; 29500: the c10d rendezvous of multi-node training.
EXPOSE 8000 29500
ENTRYPOINT ["deepfleet"]
CMD ["--help"]
