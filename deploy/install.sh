#!/usr/bin/env bash
# Create .venv with everything the demo, the tests and the training job need.
#
# Why each step:
# - Python 3.11: mediapipe 0.10.21 (the last with the bundled BlazeFace detector and the
#   `solutions` API) has wheels up to 3.12; 3.11 is what the CI image ships.
# - torch + torchvision come from the registry as a matched pair (CUDA builds, which run
#   on CPU too). A CPU-only torch wheel beside PyPI's CUDA torchvision breaks
#   `import timm` ("operator torchvision::nms does not exist"), so never mix the two.
# - insightface pulls opencv-python and mediapipe pulls opencv-contrib-python; with the
#   headless build that makes three distributions writing one `cv2` package. We keep only
#   opencv-python-headless (workers have no display).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
EXTRAS="${FACEAUTH_EXTRAS:-cpu,gateway,facemesh,training,devstack,dev}"

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"

CV2_VERSION="$(.venv/bin/python -m pip show opencv-python-headless 2>/dev/null | sed -n 's/^Version: //p')"
if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1 \
   || .venv/bin/python -m pip show -q opencv-contrib-python >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y opencv-python opencv-contrib-python
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "opencv-python-headless==${CV2_VERSION}"
fi
.venv/bin/python - <<'PY'
import importlib.metadata as md
names = ("opencv-python", "opencv-contrib-python", "opencv-python-headless")
present = [n for n in names if any(d.metadata["Name"] == n for d in md.distributions())]
assert present == ["opencv-python-headless"], f"expected only the headless cv2, found {present}"
PY
.venv/bin/python -c "import cv2, onnxruntime, insightface; print('cv2', cv2.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
