#!/usr/bin/env bash
# Put what the bare GPU host needs into git-ignored folders of this checkout, to be carried
# along with the working tree: .whl/ (the onnx2torch wheel, 81 kB) and out/gpu-carry/
# (the two test-pack ONNX models, 6.5 MB, and the 12 identity photos, 3.2 MB).
# Run from the repository root on a machine that reaches PyPI (the GPU host does not).
set -euo pipefail
SHARED="${FACEAUTH_SHARED_DIR:-../shared}"
PIP="${PIP:-.venv/bin/pip}"
mkdir -p .whl out/gpu-carry/models out/gpu-carry/faces
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 \
  "onnx2torch==1.5.15" -d .whl
cp -f "$SHARED/models/facepack-test/det_500m.onnx" \
  "$SHARED/models/facepack-test/w128_mobilefacenet.onnx" out/gpu-carry/models/
cp -rf "$SHARED/faces/identities/." out/gpu-carry/faces/
chmod -R u+w out/gpu-carry
du -sh .whl out/gpu-carry
