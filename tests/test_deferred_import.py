"""zprl.env.deferred_import: env workers import robosuite without loading OpenCV, which still works when used."""

import subprocess
import sys

CHECK = """
import sys
from zprl.env.deferred_import import DeferredModule, defer_import
assert defer_import("cv2")
import robosuite  # imports cv2 for its on-screen viewer
assert isinstance(sys.modules["cv2"], DeferredModule), "robosuite's import loaded OpenCV"
assert not [m for m in sys.modules if m.startswith("cv2.")], "OpenCV's submodules were loaded"
import numpy as np
from robosuite.utils import opencv_renderer
# the first use loads the real module, through the stand-in robosuite holds as well as through a new import
assert opencv_renderer.cv2.resize(np.zeros((4, 4, 3), np.uint8), (2, 2)).shape == (2, 2, 3)
import cv2
assert not isinstance(cv2, DeferredModule) and cv2.__version__
assert not defer_import("cv2")  # loaded: nothing to defer
assert not defer_import("zprl_no_such_module")
print("ok")
"""


def test_a_deferred_opencv_loads_only_when_used():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
