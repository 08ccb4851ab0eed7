"""Code shared by the workers, the training job and the command line."""

import os

# OpenCV reads its decoder's pixel limit from the environment once, when cv2 is
# first imported (insightface imports it), so it must be set before that: every
# module of ours imports `shared` first. A second fence behind shared.imaging's
# header checks, for any image that reaches cv2.imdecode some other way.
os.environ.setdefault(
    "OPENCV_IO_MAX_IMAGE_PIXELS", os.environ.get("FACEAUTH_MAX_IMAGE_PIXELS", "40000000")
)
