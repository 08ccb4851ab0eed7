# syntax=docker/dockerfile:1.7
#
# faceauth liveness training job (EfficientNet-B2 via torch + timm, face crops via mediapipe,
# ONNX export checked with ONNX Runtime on the CPU). Build from the repository root:
#
#   docker build -f deploy/docker/training.Dockerfile -t faceauth-training .
#
# No CUDA base image is needed: the PyPI torch wheels for Linux bundle their CUDA and cuDNN
# runtime as nvidia-* wheels; only the driver comes from the host (NVIDIA container toolkit).
# On a GPU: `docker run --gpus all --shm-size=8g ...`: on CUDA the job uses mixed precision and
# several DataLoader worker processes, which hand batches over through /dev/shm (Docker's
# default 64 MiB is too small). `--resume` continues from <out>/checkpoints/last.pt.
# The build context is filtered by training.Dockerfile.dockerignore next to this file.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS training
LABEL org.opencontainers.image.title="faceauth-training"
# pipefail: a failing `pip show` in a pipeline must fail the step, not yield an empty version.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# MPLCONFIGDIR: matplotlib needs a writable config directory and the job user has no home.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

# libgomp: OpenMP runtime of the CPU ONNX Runtime and scikit-learn.
# apt packages are not version-pinned on purpose: take the suite's current security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# Install the project (not editable) from a bind mount of the filtered context; the CPU
# ONNX Runtime is enough here, it only checks the exported model.
RUN --mount=type=bind,target=/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install "/src[training,cpu]"

# insightface pulls opencv-python and mediapipe opencv-contrib-python; with
# opencv-python-headless that makes three distributions writing the same `cv2` package, file
# by file. Keep only the headless build (no libGL in this image): uninstall the other two,
# then force-reinstall headless at the resolved version because the uninstalls deleted files
# it shares with them.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    headless="$(pip show opencv-python-headless | sed -n 's/^Version: //p')"; \
    pip uninstall -y opencv-python opencv-contrib-python; \
    pip install --no-deps --force-reinstall "opencv-python-headless==${headless}"

# Fail the build when the training stack cannot import (`pip check` would flag the cv2
# requirements removed on purpose above).
RUN python - <<'EOF'
import importlib.metadata as md
import re

names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in md.distributions()}
unwanted = names & {"opencv-python", "opencv-contrib-python", "onnxruntime-gpu"}
assert not unwanted, f"unwanted distributions installed: {sorted(unwanted)}"

import cv2
import mediapipe
import onnxruntime
import timm
import torch

import training.gpu.prepare_bundle
import training.gpu.train_on_gpu_host
import training.liveness

print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__)
print("mediapipe", mediapipe.__version__, "cv2", cv2.__version__, "ort", onnxruntime.__version__)
EOF

# The job writes its candidate model into the shared `models` volume. Creating the mount
# points owned by the job user means a fresh named volume is initialised with that owner.
RUN groupadd --system --gid 10001 faceauth \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent faceauth \
    && mkdir -p /models /data \
    && chown faceauth /models
# Numeric, so orchestrators can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp

CMD ["faceauth", "train", "liveness", "--help"]
