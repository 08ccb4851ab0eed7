# syntax=docker/dockerfile:1.7
#
# faceauth Celery worker (and Flower, the HTTP gateway and `faceauth db migrate`): one
# Dockerfile, two ONNX Runtime flavours. The CPU image also carries the gateway extra. Build from the repository root:
#
#   docker build -f deploy/docker/worker.Dockerfile --build-arg ORT_FLAVOUR=gpu -t faceauth-worker:gpu .
#   docker build -f deploy/docker/worker.Dockerfile --build-arg ORT_FLAVOUR=cpu -t faceauth-worker:cpu .
#
# The build context is filtered by worker.Dockerfile.dockerignore next to this file (an
# allow-list, so .venv, .git and local data never reach the daemon).

ARG ORT_FLAVOUR=gpu
# The CUDA major of the base image must match the one onnxruntime-gpu was built against:
# the PyPI wheels of onnxruntime-gpu 1.31 link libcudart.so.13 / libcublas.so.13 and load
# cuDNN 9. Change the two together (the build fails below if they disagree). CUDA 13 needs
# an NVIDIA driver >= 580 on the host.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG CPU_IMAGE=python:3.11-slim-bookworm
ARG PYTHON_VERSION=3.11

# --- GPU base: CUDA + cuDNN runtime, Python 3.11 -------------------------------------------
FROM ${CUDA_IMAGE} AS base-gpu
ARG PYTHON_VERSION
# Ubuntu 24.04 ships Python 3.12 only; uv installs a standalone CPython 3.11 build
# (python-build-standalone) instead of pulling a third-party PPA.
COPY --from=ghcr.io/astral-sh/uv:0.9.26 /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python "${PYTHON_VERSION}" /opt/venv \
    && rm /usr/local/bin/uv

# --- CPU base: Debian slim with the official Python 3.11 ------------------------------------
FROM ${CPU_IMAGE} AS base-cpu
# libgomp: OpenMP runtime used by the CPU builds of ONNX Runtime and scikit-learn/scipy.
# apt packages are not version-pinned on purpose: take the suite's current security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# --- the worker image -------------------------------------------------------------------------
# base-gpu or base-cpu is a stage of this file, not a registry image: nothing to tag.
# hadolint ignore=DL3006
FROM base-${ORT_FLAVOUR} AS worker
ARG ORT_FLAVOUR
# pipefail: a failing `pip show` in a pipeline must fail the step, not yield an empty version.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG ONNXRUNTIME_GPU_VERSION
LABEL org.opencontainers.image.title="faceauth-worker" \
      io.faceauth.ort-flavour="${ORT_FLAVOUR}"
# MPLCONFIGDIR: matplotlib (imported by insightface) needs a writable config directory and
# the runtime user has no home.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

# Install the project (not editable) with the flavour's extra, from a bind mount of the
# filtered context so no source layer stays in the image (`rw`: build files are discarded).
# The GPU extra is pinned to the version that matches CUDA_IMAGE, so an onnxruntime-gpu
# built for another CUDA major is never picked up.
RUN --mount=type=bind,target=/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    if [ "${ORT_FLAVOUR}" = gpu ]; then \
        pip install "/src[gpu,facemesh]" "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"; \
    elif [ "${ORT_FLAVOUR}" = cpu ]; then \
        pip install "/src[cpu,gateway,facemesh]"; \
    else \
        echo "ORT_FLAVOUR must be gpu or cpu, not '${ORT_FLAVOUR}'" >&2; exit 1; \
    fi

# Why this step exists: insightface declares `onnxruntime` (the CPU build) and
# `opencv-python` (the GUI build) as dependencies, and mediapipe pulls opencv-contrib-python.
# onnxruntime and onnxruntime-gpu both install the `onnxruntime` module, and all three OpenCV
# distributions install `cv2`, into the same directories: whichever pip installed last wins
# file by file, leaving a mix (a CPU-only ONNX Runtime in the GPU image, or a cv2 that needs
# libGL, which the image does not have). Uninstalling the unwanted distributions also deletes
# files the wanted ones share, so those are force-reinstalled afterwards, at the version pip
# resolved, without touching their dependencies.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    dist_version() { pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }; \
    headless="$(dist_version opencv-python-headless)"; \
    pip uninstall -y opencv-python opencv-contrib-python; \
    pip install --no-deps --force-reinstall "opencv-python-headless==${headless}"; \
    if [ "${ORT_FLAVOUR}" = gpu ]; then \
        ort_gpu="$(dist_version onnxruntime-gpu)"; \
        pip uninstall -y onnxruntime; \
        pip install --no-deps --force-reinstall "onnxruntime-gpu==${ort_gpu}"; \
    fi

# Fail the build, not the first task, when the environment is wrong: exactly one cv2 and one
# ONNX Runtime distribution, a CUDA provider whose libraries all resolve in this image (the
# driver's libcuda arrives at run time through the NVIDIA container toolkit), and a worker
# package that imports. `pip check` is not used: it would flag insightface's unmet
# `onnxruntime` / `opencv-python` requirements, which are removed on purpose above.
RUN python - <<'EOF'
import importlib.metadata as md
import os
import pathlib
import re
import subprocess

flavour = os.environ["ORT_FLAVOUR"]  # build args are in the environment of RUN
names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in md.distributions()}
wanted_ort = "onnxruntime-gpu" if flavour == "gpu" else "onnxruntime"
unwanted = {"opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"}
unwanted |= {"onnxruntime", "onnxruntime-gpu"} - {wanted_ort}
assert not names & unwanted, f"unwanted distributions installed: {sorted(names & unwanted)}"
assert {"opencv-python-headless", wanted_ort} <= names, "cv2 or ONNX Runtime missing"

import cv2
import onnxruntime as ort

print("cv2", cv2.__version__, "onnxruntime", ort.__version__, ort.get_available_providers())
if flavour == "gpu":
    assert "CUDAExecutionProvider" in ort.get_available_providers()
    lib = pathlib.Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    ldd = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True).stdout
    missing = [
        line.split()[0]
        for line in ldd.splitlines()
        if "not found" in line and not line.strip().startswith("libcuda.so")
    ]
    assert not missing, f"CUDA libraries missing for onnxruntime-gpu: {missing}"

import insightface.app
import workers.celery_app
from workers.inference.face_mesh import get_face_mesh

# The quality gate's face mesh (head pose, eyes closed) must load from the wheel's model.
assert get_face_mesh() is not None, "MediaPipe face mesh does not load"

if flavour == "cpu":  # the gateway service runs from this image
    import gateway.app
EOF

# Unprivileged runtime user (the same uid as the training image). /models is created owned
# by it so a fresh `models` volume gets that owner whichever image mounts it first; the
# workers themselves mount it read-only.
RUN groupadd --system --gid 10001 faceauth \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent faceauth \
    && mkdir -p /models \
    && chown faceauth /models
# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp

CMD ["celery", "-A", "workers.celery_app:app", "worker", "--loglevel=INFO"]
