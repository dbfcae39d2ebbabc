"""How rollout envs compile robosuite's model: holding ~40% less memory, stepping the same.

Two things make a worker's MuJoCo model expensive to keep:

1. ``mujoco.MjModel.from_xml_string`` (robosuite's path) keeps the parsed XML of the last model
   loaded, for ``mj_saveLastXML``; with the Panda's meshes that is ~160 MB per process. Compiling
   through ``mujoco.MjSpec`` and dropping the spec gives the same model and frees it.
2. A robosuite model carries two copies of each robot link: a coarse collision mesh (group 0) and
   a detailed visual mesh (group 1, no contacts). The Panda's visual meshes alone hold ~350k
   vertices; compiled with their bounding-volume trees they are the largest part of the model
   (70 MB of arrays for lift, 22 MB without them). A visual geom takes part in the physics only
   through the inertia the compiler infers from geoms, and robosuite's compiler setting
   ``inertiagrouprange="0 0"`` leaves group 1 out of that. So an env that never renders gets each
   such geom as a tiny sphere (same name, body, group and no-contact flags: robosuite's id lookups
   still find it) and the meshes nothing else uses are dropped.

``tests/test_model_compile.py`` checks that scripted grasps step bit for bit as with the full model;
``tests/test_robosuite_env.py`` that the env steps and renders as robomimic's ``EnvRobosuite``.
"""

from __future__ import annotations

import contextlib
import ctypes
import xml.etree.ElementTree as ET


def _inertia_groups(root: ET.Element) -> range | None:
    """The geom groups the compiler infers inertia from (MuJoCo's default "0 5")."""
    compiler = root.find("compiler")
    text = compiler.get("inertiagrouprange", "0 5") if compiler is not None else "0 5"
    try:
        lo, hi = (int(v) for v in text.split())
    except ValueError:
        return None
    return range(lo, hi + 1)


def strip_visual_meshes(xml: str) -> tuple[str, int]:
    """``xml`` with each mesh geom that is visual only replaced by a 1 mm sphere, and the meshes no
    geom uses any more dropped; returns the new XML and how many geoms changed. A geom stays as it
    is if it collides (contype or conaffinity not 0) or its group counts for inertia."""
    root = ET.fromstring(xml)
    inertia_groups = _inertia_groups(root)
    if inertia_groups is None:
        return xml, 0
    changed = 0
    for geom in root.iter("geom"):
        if geom.get("mesh") is None or geom.get("contype", "1") != "0" or geom.get("conaffinity", "1") != "0":
            continue
        if int(geom.get("group", "0")) in inertia_groups:
            continue
        del geom.attrib["mesh"]
        geom.set("type", "sphere")
        geom.set("size", "0.001")
        changed += 1
    if not changed:
        return xml, 0
    used = {g.get("mesh") for g in root.iter("geom")}
    for asset in root.iter("asset"):
        for mesh in list(asset.findall("mesh")):
            if mesh.get("name") not in used:
                asset.remove(mesh)
    return ET.tostring(root, encoding="unicode"), changed


def _return_free_memory() -> None:
    """Hand freed heap back to the OS (glibc's malloc_trim; elsewhere nothing to do), so the
    process's resident memory shows what it still uses."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def compile_model(xml: str, visual_meshes: bool = True, keep_mesh_cache: bool = True):
    """The ``mujoco.MjModel`` of ``xml`` and its XML as MuJoCo writes it, without the parsed XML
    MuJoCo would keep (point 1 above). ``visual_meshes=False`` strips them first (point 2).
    ``keep_mesh_cache=False`` also empties MuJoCo's process-wide cache of decoded meshes (~100 MB
    for the Panda's), which only speeds up compiling the same model again (hard resets)."""
    import mujoco

    spec = mujoco.MjSpec.from_string(xml if visual_meshes else strip_visual_meshes(xml)[0])
    model = spec.compile()
    written = spec.to_xml()
    del spec
    if not keep_mesh_cache:
        mujoco.mj_clearCache(mujoco.mj_getCache())
    _return_free_memory()
    return model, written


@contextlib.contextmanager
def robosuite_compiling(visual_meshes: bool = True, keep_mesh_cache: bool = True):
    """Within the block, robosuite compiles its models with ``compile_model`` (at env construction
    and at the rebuild of a hard reset). The sim's ``model.get_xml()`` (robosuite reads it through
    ``mj_saveLastXML``, which has nothing to save now) returns the compiled model's XML."""
    from robosuite.utils.binding_utils import MjSim

    original = MjSim.__dict__["from_xml_string"]

    def from_xml_string(cls, xml):
        model, written = compile_model(xml, visual_meshes, keep_mesh_cache)
        sim = cls(model)
        sim.model.get_xml = lambda: written
        return sim

    MjSim.from_xml_string = classmethod(from_xml_string)
    try:
        yield
    finally:
        MjSim.from_xml_string = original
