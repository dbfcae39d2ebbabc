import math

import numpy as np
import pytest
import torch

from zprl.data import rotation as R


def random_axis_angle(n, gen, dtype=torch.float64):
    """Random axes with angles spread over (0, pi) plus the awkward ends: ~0 and ~pi."""
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=dtype), dim=-1)
    angle = torch.rand(n, 1, generator=gen, dtype=dtype) * math.pi
    angle[: n // 8] = torch.rand(n // 8, 1, generator=gen, dtype=dtype) * 1e-5
    angle[n // 8 : n // 4] = math.pi - torch.rand(n // 8, 1, generator=gen, dtype=dtype) * 1e-5
    angle[n // 4] = 0.0
    angle[n // 4 + 1] = math.pi
    return axis * angle


def is_rotation(m, atol):
    eye = torch.eye(3, dtype=m.dtype).expand_as(m)
    assert torch.allclose(m @ m.transpose(-1, -2), eye, atol=atol)
    assert torch.allclose(torch.linalg.det(m), torch.ones(m.shape[:-2], dtype=m.dtype), atol=atol)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_axis_angle_matrix_round_trip(dtype, atol):
    gen = torch.Generator().manual_seed(0)
    aa = random_axis_angle(512, gen).to(dtype)
    m = R.axis_angle_to_matrix(aa)
    assert m.dtype == dtype and m.shape == (512, 3, 3)
    is_rotation(m, atol)
    back = R.matrix_to_axis_angle(m)
    assert back.dtype == dtype
    # Near pi, v and -v are the same rotation, so compare matrices; elsewhere the vector itself.
    assert torch.allclose(R.axis_angle_to_matrix(back), m, atol=atol * 10)
    angle = aa.norm(dim=-1)
    away = angle < math.pi - 1e-3
    assert torch.allclose(back[away], aa[away], atol=atol * 10)
    assert torch.all(back.norm(dim=-1) <= math.pi + atol)


def test_zero_and_pi_exact_values():
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.allclose(R.axis_angle_to_matrix(zero), torch.eye(3, dtype=torch.float64))
    assert torch.equal(R.matrix_to_axis_angle(torch.eye(3, dtype=torch.float64)), zero)
    # 180 degrees about z: diag(-1, -1, 1); the recovered vector is +-pi z.
    m = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    aa = R.matrix_to_axis_angle(m)
    assert torch.allclose(aa.abs(), torch.tensor([0, 0, math.pi], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(R.axis_angle_to_matrix(torch.tensor([0, 0, math.pi], dtype=torch.float64)), m, atol=1e-12)


def test_rot6d_round_trip_and_layout():
    gen = torch.Generator().manual_seed(1)
    m = R.axis_angle_to_matrix(random_axis_angle(256, gen))
    r6 = R.matrix_to_rot6d(m)
    assert r6.shape == (256, 6)
    # Documented convention: first column then second column.
    assert torch.equal(r6[:, :3], m[:, :, 0]) and torch.equal(r6[:, 3:], m[:, :, 1])
    assert torch.allclose(R.rot6d_to_matrix(r6), m, atol=1e-12)


def test_rot6d_gram_schmidt_makes_rotation_from_any_6_vector():
    gen = torch.Generator().manual_seed(2)
    raw = torch.randn(4, 5, 6, generator=gen, dtype=torch.float64) * 3
    m = R.rot6d_to_matrix(raw)
    assert m.shape == (4, 5, 3, 3)
    is_rotation(m.reshape(-1, 3, 3), 1e-10)
    # The first column keeps the first input vector's direction.
    assert torch.allclose(m[..., :, 0], torch.nn.functional.normalize(raw[..., :3], dim=-1))
    # Scaling either half does not change the rotation.
    assert torch.allclose(R.rot6d_to_matrix(torch.cat([raw[..., :3] * 2, raw[..., 3:] * 0.5], -1)), m, atol=1e-12)


def test_axis_angle_rot6d_round_trip_batched():
    gen = torch.Generator().manual_seed(3)
    aa = random_axis_angle(64, gen).reshape(4, 16, 3)
    back = R.rot6d_to_axis_angle(R.axis_angle_to_rot6d(aa))
    assert back.shape == (4, 16, 3)
    assert torch.allclose(R.axis_angle_to_matrix(back), R.axis_angle_to_matrix(aa), atol=1e-10)


def test_quat_round_trip_and_canonical():
    gen = torch.Generator().manual_seed(4)
    aa = random_axis_angle(256, gen)
    q = R.axis_angle_to_quat(aa)
    assert torch.allclose(q.norm(dim=-1), torch.ones(256, dtype=torch.float64))
    m = R.quat_to_matrix(q)
    assert torch.allclose(m, R.axis_angle_to_matrix(aa), atol=1e-12)
    q2 = R.matrix_to_quat(m)
    assert torch.all(q2[:, 3] >= 0)
    # q and -q are the same rotation.
    assert torch.allclose(torch.minimum((q2 - q).abs(), (q2 + q).abs()).amax(-1), torch.zeros(256, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(R.quat_to_axis_angle(-q), R.quat_to_axis_angle(q), atol=1e-12)


def test_gradients_finite_at_zero_rotation():
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    R.axis_angle_to_rot6d(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_matches_robosuite_transform_utils():
    from robosuite.utils import transform_utils as T

    rng = np.random.default_rng(5)
    for _ in range(100):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        aa = axis * rng.uniform(0.01, math.pi - 0.01)
        q_rs = T.axisangle2quat(aa)
        q_ours = R.axis_angle_to_quat(torch.from_numpy(aa)).numpy()
        assert np.allclose(np.minimum(np.abs(q_rs - q_ours), np.abs(q_rs + q_ours)), 0, atol=1e-6)
        assert np.allclose(R.quat_to_matrix(torch.from_numpy(q_rs)).numpy(), T.quat2mat(q_rs), atol=1e-6)
        assert np.allclose(R.axis_angle_to_matrix(torch.from_numpy(aa)).numpy(), T.quat2mat(q_rs), atol=1e-6)
        # robosuite's quat2axisangle may return angles above pi; compare the rotations they denote.
        aa_rs = T.quat2axisangle(q_rs)
        aa_ours = R.quat_to_axis_angle(torch.from_numpy(q_rs)).numpy()
        assert np.allclose(T.quat2mat(T.axisangle2quat(aa_rs)), R.axis_angle_to_matrix(torch.from_numpy(aa_ours)).numpy(), atol=1e-6)
        mat = T.quat2mat(q_rs)
        q_back = R.matrix_to_quat(torch.from_numpy(mat)).numpy()
        q_rs_back = T.mat2quat(mat)
        assert np.allclose(np.minimum(np.abs(q_back - q_rs_back), np.abs(q_back + q_rs_back)), 0, atol=1e-5)


@pytest.mark.parametrize("n_arms", [1, 2])
def test_action_helpers_numpy_and_torch(n_arms):
    rng = np.random.default_rng(6)
    T_ = 20
    arms = []
    for _ in range(n_arms):
        pos = rng.uniform(-0.5, 0.5, size=(T_, 3))
        axis = rng.normal(size=(T_, 3))
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        aa = axis * rng.uniform(0, math.pi - 1e-3, size=(T_, 1))
        grip = rng.choice([-1.0, 1.0], size=(T_, 1))
        arms.append(np.concatenate([pos, aa, grip], -1))
    act = np.concatenate(arms, -1).astype(np.float32)

    r6 = R.abs_action_to_rot6d(act)
    assert isinstance(r6, np.ndarray) and r6.dtype == np.float32 and r6.shape == (T_, 10 * n_arms)
    for a in range(n_arms):
        assert np.array_equal(r6[:, 10 * a : 10 * a + 3], act[:, 7 * a : 7 * a + 3])
        assert np.array_equal(r6[:, 10 * a + 9], act[:, 7 * a + 6])
    back = R.rot6d_action_to_abs(r6)
    assert isinstance(back, np.ndarray) and back.shape == act.shape
    assert np.allclose(back, act, atol=2e-5)

    r6_t = R.abs_action_to_rot6d(torch.from_numpy(act).double())
    assert isinstance(r6_t, torch.Tensor) and r6_t.dtype == torch.float64
    assert np.allclose(r6_t.numpy(), r6, atol=1e-6)
    back_t = R.rot6d_action_to_abs(r6_t[None])
    assert back_t.shape == (1, T_, 7 * n_arms)
    assert torch.allclose(back_t[0], torch.from_numpy(act).double(), atol=1e-6)


def test_action_helpers_reject_bad_width():
    with pytest.raises(ValueError, match="multiple of 7"):
        R.abs_action_to_rot6d(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="multiple of 10"):
        R.rot6d_action_to_abs(torch.zeros(3, 7))
