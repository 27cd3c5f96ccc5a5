# syntax=docker/dockerfile:1
# The insightloop image: the daemon, the CLI and the retraining job (`insightloop retrain --spec`).
#
#   CPU (default):  docker build -t insightloop:0.1.0 .
#   CUDA:           docker build -t insightloop:0.1.0-cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   CUDA base:      add --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
#                   (only needed for tools from the CUDA toolkit: torch's CUDA wheels bring their own
#                   runtime libraries, the node's driver comes from the NVIDIA container toolkit)
#
# Both stages use BASE_IMAGE, so the virtual environment built in the first runs in the second.
# Not built in this repository's CI (no container engine there): build and smoke-test it in yours
# (`docker run --rm insightloop:0.1.0 --help`).

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# A base image without Python (a CUDA image) gets the distribution's; it must be 3.11 or newer.
# The base image decides the distribution, so its package versions are not pinned here.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    && python3 -m venv /opt/insightloop
ENV PATH=/opt/insightloop/bin:$PATH
# torch first, from the index that decides CPU or CUDA; the project's own range accepts it.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY . .
RUN pip install .

FROM ${BASE_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 insightloop \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/insightloop --create-home \
        --shell /usr/sbin/nologin insightloop \
    && mkdir -p /var/lib/insightloop/registry /var/lib/insightloop/state \
    && chown -R 10001:10001 /var/lib/insightloop
COPY --from=build /opt/insightloop /opt/insightloop
ENV PATH=/opt/insightloop/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/insightloop \
    HF_HOME=/home/insightloop/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    DO_NOT_TRACK=1
USER 10001:10001
WORKDIR /home/insightloop
EXPOSE 8080
# The chart passes its own arguments (`run --config … --role … --http-port …`).
ENTRYPOINT ["insightloop"]
CMD ["run", "--http-port", "8080"]
