# asen-search HTTP service, CPU only.
#   docker compose up --build       the demo from nothing (docker-compose.yml: an init job, then the service)
#   docker build -t asen-search .
#   docker run -p 8000:8000 -v asen-data:/data asen-search
# `docker run` needs /data to hold model/best.pt and index/ (e.g. `asen demo --workdir /data --no-serve`
# in the container, or files copied in); see docs/service.md.
#
# Where packages come from (README, "Docker"):
#   torch from the CPU-only wheel index (TORCH_INDEX_URL): PyPI's Linux torch wheel is the CUDA build,
#   gigabytes of GPU libraries a CPU image never uses; everything else from PyPI (or PIP_INDEX_URL).
#   Behind a proxy: --build-arg HTTPS_PROXY=http://proxy:3128 (pip uses it).
#   Offline: `make wheelhouse` on a connected machine, then --build-arg WHEELHOUSE=1: every package
#   from ./wheelhouse, no index at all.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELHOUSE=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # glibc malloc settings (model/tuning.py, PROCESS_ENV): without them torch inference spends
    # most of its time in page faults.
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=4294967296 \
    MALLOC_TOP_PAD_=1073741824 \
    # torch and faiss each have an OpenMP runtime, numpy an OpenBLAS: idle threads must sleep, not spin.
    OMP_WAIT_POLICY=PASSIVE \
    OPENBLAS_THREAD_TIMEOUT=10

WORKDIR /app

# CPU-only torch first (the default wheel index would pull the multi-GB CUDA build). ./wheelhouse is
# mounted for the install only (no layer keeps it).
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if [ -n "$WHEELHOUSE" ]; then set -- --no-index --find-links /wheelhouse; \
    else set -- --index-url "$TORCH_INDEX_URL"; fi; \
    pip install "$@" torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml requirements.lock ./
COPY model ./model
COPY index ./index
COPY service ./service
# the import package: asen_search/{model,index,service} are links to the three folders above
COPY asen_search ./asen_search
# Every version from the lock (the CPU torch build above satisfies its torch pin); with the Milvus
# client, so one image serves either catalogue backend (docker compose --profile cluster); for the
# Ray encoding job (deploy/kubernetes/encode-rayjob.yaml): --build-arg EXTRAS=milvus,ray.
ARG EXTRAS=milvus
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if [ -n "$WHEELHOUSE" ]; then set -- --no-index --find-links /wheelhouse; fi; \
    pip install "$@" -c requirements.lock ".[$EXTRAS]" \
    && useradd --create-home --uid 10001 asen \
    && mkdir -p /data \
    && chown asen:asen /data

# Runs unprivileged; the root filesystem may be read-only (docker run --read-only --tmpfs /tmp): only
# /data is written.
USER asen

ENV ASEN_CHECKPOINT=/data/model/best.pt \
    ASEN_INDEX=/data/index \
    ASEN_HOST=0.0.0.0 \
    ASEN_PORT=8000

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ASEN_PORT', '8000'), timeout=4)"]

CMD ["asen", "serve"]
