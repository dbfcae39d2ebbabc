"""Rotation conversions in pure torch, and the absolute-action <-> rot6d action mapping.

Conventions (all functions accept any leading batch dims, float32 or float64):
- axis-angle: a 3-vector ``angle * unit_axis`` (robosuite's OSC_POSE absolute orientation).
- quaternion: ``(x, y, z, w)``, scalar last, like ``robosuite.utils.transform_utils``; outputs
  are unit and canonical (``w >= 0``).
- rot6d: the first two *columns* of the rotation matrix, ``[R[:, 0], R[:, 1]]`` (Zhou et al.,
  "On the continuity of rotation representations"); decoding re-orthonormalises with
  Gram-Schmidt, so any 6-vector with two independent halves maps to a valid rotation.
"""

from __future__ import annotations

import numpy as np
import torch

# Below this angle (radians) the closed forms lose precision and Taylor series take over.
_SMALL_ANGLE = 1e-3


def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula ``I + a K + b K^2`` with K = skew(v) and series coefficients at small angles."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < _SMALL_ANGLE**2
    # Substitute a harmless angle in the small branch (before the sqrt) so neither the values
    # nor the gradients of the unused branch become NaN/inf at zero rotation.
    safe = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def quat_to_matrix(quat: torch.Tensor) -> torch.Tensor:
    """Unit (or unnormalised) xyzw quaternion -> rotation matrix."""
    q = quat / quat.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(*quat.shape[:-1], 3, 3)


def matrix_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix -> canonical xyzw quaternion (``w >= 0``).

    Each of the four classic solutions divides by one quaternion component; taking the one whose
    component is largest keeps the division well conditioned for every rotation, including
    angles near pi where the trace-based solution alone breaks down.
    """
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * component^2 for w, x, y, z respectively.
    four_sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1
    )
    big = 0.5 * four_sq.clamp_min(0.0).sqrt()  # |component| for each candidate
    denom = (4.0 * big).clamp_min(1e-12)
    s21, s02, s10 = m21 - m12, m02 - m20, m10 - m01  # antisymmetric parts: 4 w x, 4 w y, 4 w z
    a01, a02, a12 = m01 + m10, m02 + m20, m12 + m21  # symmetric parts: 4 x y, 4 x z, 4 y z
    cands = torch.stack(
        [
            torch.stack([s21 / denom[..., 0], s02 / denom[..., 0], s10 / denom[..., 0], big[..., 0]], -1),
            torch.stack([big[..., 1], a01 / denom[..., 1], a02 / denom[..., 1], s21 / denom[..., 1]], -1),
            torch.stack([a01 / denom[..., 2], big[..., 2], a12 / denom[..., 2], s02 / denom[..., 2]], -1),
            torch.stack([a02 / denom[..., 3], a12 / denom[..., 3], big[..., 3], s10 / denom[..., 3]], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, xyzw)
    best = four_sq.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:4] < 0, -q, q)


def quat_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """xyzw quaternion -> axis-angle with angle in [0, pi]."""
    q = quat / quat.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., 3:4] < 0, -q, q)
    xyz, w = q[..., :3], q[..., 3:4]
    s = xyz.norm(dim=-1, keepdim=True)  # sin(angle / 2)
    half = torch.atan2(s, w)
    small = half < 0.5 * _SMALL_ANGLE
    safe_s = torch.where(small, torch.ones_like(s), s)
    # angle / sin(angle/2) = 2 half / sin(half) -> 2 (1 + half^2 / 6) as half -> 0.
    factor = torch.where(small, 2.0 + half * half / 3.0, 2.0 * half / safe_s)
    return xyz * factor


def axis_angle_to_quat(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle -> xyzw quaternion."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < _SMALL_ANGLE**2
    safe = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    # sin(theta/2)/theta -> 1/2 - theta^2/48 and cos(theta/2) -> 1 - theta^2/8 as theta -> 0.
    k = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(0.5 * safe) / safe)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(0.5 * safe))
    return torch.cat([axis_angle * k, w], dim=-1)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix -> axis-angle (angle in [0, pi]); goes through the quaternion for stability."""
    return quat_to_axis_angle(matrix_to_quat(matrix))


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """First two columns, concatenated: ``[R00, R10, R20, R01, R11, R21]``."""
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on the two stored columns; the third column is their cross product."""
    a1, a2 = rot6d[..., :3], rot6d[..., 3:6]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def axis_angle_to_rot6d(axis_angle: torch.Tensor) -> torch.Tensor:
    return matrix_to_rot6d(axis_angle_to_matrix(axis_angle))


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))


# --- actions: per arm pos(3) + axis-angle(3) + gripper(1)  <->  pos(3) + rot6d(6) + gripper(1) ---

ABS_ARM_DIM = 7
ROT6D_ARM_DIM = 10


def _as_torch(x):
    """Return (tensor, restore) where restore maps a result back to the caller's array type.

    numpy inputs are computed in float64 and cast back, so float32 files lose nothing extra.
    """
    if isinstance(x, torch.Tensor):
        return x, lambda t: t
    arr = np.asarray(x)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    return torch.from_numpy(arr.astype(np.float64)), lambda t: t.numpy().astype(dtype, copy=False)


def _split_arms(x: torch.Tensor, arm_dim: int, what: str) -> torch.Tensor:
    if x.shape[-1] % arm_dim != 0 or x.shape[-1] == 0:
        raise ValueError(f"{what} actions must have a multiple of {arm_dim} dims per arm, got last dim {x.shape[-1]}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // arm_dim, arm_dim)


def abs_action_to_rot6d(actions):
    """(..., 7 * n_arms) absolute actions -> (..., 10 * n_arms); numpy in, numpy out (same for torch)."""
    t, restore = _as_torch(actions)
    arms = _split_arms(t, ABS_ARM_DIM, "absolute")
    out = torch.cat([arms[..., :3], axis_angle_to_rot6d(arms[..., 3:6]), arms[..., 6:7]], dim=-1)
    return restore(out.reshape(*t.shape[:-1], -1))


def rot6d_action_to_abs(actions):
    """(..., 10 * n_arms) rot6d actions -> (..., 7 * n_arms) absolute pos + axis-angle + gripper."""
    t, restore = _as_torch(actions)
    arms = _split_arms(t, ROT6D_ARM_DIM, "rot6d")
    out = torch.cat([arms[..., :3], rot6d_to_axis_angle(arms[..., 3:9]), arms[..., 9:10]], dim=-1)
    return restore(out.reshape(*t.shape[:-1], -1))
