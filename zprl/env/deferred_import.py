"""Import OpenCV in an env worker only if something there uses it.

robosuite imports ``cv2`` for its on-screen viewer (``robosuite.utils.OpenCVRenderer``), which a rollout
worker never opens (``has_renderer=False``); loading OpenCV and the Qt and codec libraries it links costs
~26 MB of resident memory per process, 45 of them at the paper's 20 + 25 workers
(``benchmarks/env_worker_memory.py``). ``defer_import("cv2")`` puts a stand-in module in its place: the
import statement succeeds, and the first attribute anyone reads from it imports the real module and
forwards to it from then on, so code that does use OpenCV in the worker still works.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is read."""

    def __getattr__(self, attr: str):  # only for attributes the stand-in does not have itself
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # the import system's own probes (__path__, __file__, ...)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        return getattr(real, attr)


def defer_import(name: str) -> bool:
    """Make ``import name`` cheap in this process until the module is used; True if a stand-in was put in."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return False
    sys.modules[name] = DeferredModule(name)
    return True
