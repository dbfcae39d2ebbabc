"""Envs that never draw compile without visual meshes and step bit for bit as with them."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from zprl.data.experts import make_expert
from zprl.data.generate_demos import MAX_STEPS
from zprl.env.robomimic_env import LOW_DIM_KEYS, make_env_meta
from zprl.env.robosuite_env import RobosuiteEnv
from zprl.env.model_compile import compile_model, strip_visual_meshes
from zprl.env.wrappers import numpy_global_rng


def _env(task, visual_meshes):
    with numpy_global_rng(np.random.RandomState(0)):  # the same model draw for both
        return RobosuiteEnv(make_env_meta(task, obs="low_dim"), list(LOW_DIM_KEYS), abs_action=False,
                            hard_reset=False, visual_meshes=visual_meshes)


def _geom_names(model):
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) for i in range(model.ngeom)]


@pytest.mark.parametrize("task,seed", [("lift", 3), pytest.param("can", 11, marks=pytest.mark.slow)])
def test_scripted_grasp_steps_identically_without_visual_meshes(task, seed):
    full, slim = _env(task, True), _env(task, False)
    try:
        m_full, m_slim = full.env.sim.model._model, slim.env.sim.model._model
        # the same geoms under the same names (robosuite looks visual geoms up by name), far fewer vertices
        assert _geom_names(m_slim) == _geom_names(m_full)
        assert m_slim.nmeshvert < m_full.nmeshvert / 4
        # the model robosuite reports is the one that was compiled, not another env's from this process
        assert mujoco.MjModel.from_xml_string(slim.env.sim.model.get_xml()).nmeshvert == m_slim.nmeshvert
        np.testing.assert_array_equal(m_slim.body_mass, m_full.body_mass)
        np.testing.assert_array_equal(m_slim.body_inertia, m_full.body_inertia)
        with numpy_global_rng(np.random.RandomState(seed)):
            obs_full = full.reset()
        with numpy_global_rng(np.random.RandomState(seed)):
            obs_slim = slim.reset()
        expert = make_expert(task, full, np.random.default_rng(seed))
        contacts = 0
        for step in range(MAX_STEPS[task]):
            for key in obs_full:
                np.testing.assert_array_equal(obs_slim[key], obs_full[key], err_msg=f"{key} at step {step}")
            np.testing.assert_array_equal(slim.env.sim.get_state().flatten(), full.env.sim.get_state().flatten())
            action = expert.act()
            obs_full, r_full, _, _ = full.step(action)
            obs_slim, r_slim, _, _ = slim.step(action)
            assert r_slim == r_full
            contacts = max(contacts, full.env.sim.data.ncon)
            assert slim.env.sim.data.ncon == full.env.sim.data.ncon
            if full.is_success()["task"]:
                break
        # the episode exercised the contact physics the visual meshes could have touched
        assert full.is_success()["task"] and slim.is_success()["task"] and contacts > 0
    finally:
        full.env.close()
        slim.env.close()


def test_only_non_colliding_geoms_outside_the_inertia_groups_change():
    xml = """<mujoco><compiler inertiagrouprange="0 0"/>
      <asset><mesh name="m" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/><mesh name="c" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/></asset>
      <worldbody><body name="b"><freejoint/>
        <geom name="vis" type="mesh" mesh="m" group="1" contype="0" conaffinity="0"/>
        <geom name="col" type="mesh" mesh="c" group="0"/>
        <geom name="vis_colliding" type="mesh" mesh="c" group="1"/>
        <geom name="vis_inertial" type="mesh" mesh="c" group="0" contype="0" conaffinity="0"/>
      </body></worldbody></mujoco>"""
    out, changed = strip_visual_meshes(xml)
    assert changed == 1
    model = mujoco.MjModel.from_xml_string(out)
    kinds = {name: model.geom_type[i] for i, name in enumerate(_geom_names(model))}
    assert kinds["vis"] == mujoco.mjtGeom.mjGEOM_SPHERE
    assert all(kinds[n] == mujoco.mjtGeom.mjGEOM_MESH for n in ("col", "vis_colliding", "vis_inertial"))
    assert model.nmesh == 1  # "m" was used by the stripped geom only
    # MuJoCo's default inertia groups (0-5) cover group 1: nothing may change then
    assert strip_visual_meshes(xml.replace('<compiler inertiagrouprange="0 0"/>', ""))[1] == 0


def test_compiling_through_a_spec_gives_the_model_from_xml_string():
    """compile_model drops the parsed XML MuJoCo would keep; the model itself is the same. An env
    that renders keeps its visual meshes by default."""
    env = RobosuiteEnv(make_env_meta("lift", obs="low_dim"), list(LOW_DIM_KEYS), render_offscreen=True,
                       hard_reset=False)
    try:
        assert env.visual_meshes and env.env.sim.model._model.nmeshvert > 300_000  # the Panda's detailed meshes
        xml = env.env.model.get_xml()
    finally:
        env.env.close()
    (ours, written), reference = compile_model(xml), mujoco.MjModel.from_xml_string(xml)
    compared = 0
    for name in dir(reference):
        value = getattr(reference, name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(ours, name), value, err_msg=name)
            compared += 1
    assert compared > 100 and ours.nmeshvert == reference.nmeshvert
    assert compile_model(xml, visual_meshes=False)[0].nmeshvert < reference.nmeshvert / 4
    # the XML robosuite would read back (sim.model.get_xml) compiles to the same model
    assert mujoco.MjModel.from_xml_string(written).nmeshvert == reference.nmeshvert
