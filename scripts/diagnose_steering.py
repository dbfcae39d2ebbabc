"""Why does steering lift the base policy, or not? Measurements on one online run.

    python scripts/diagnose_steering.py RUN_DIR [--step N] [-n 50] [--n_envs 2] [--max_steps N] [-d cpu]

e.g. ``python scripts/diagnose_steering.py data/runs/steering_lift/zprl/0 -n 50`` (3 x 50 held-out
episodes: minutes on a busy CPU; ``-n 10`` for a first look). RUN_DIR is an online run's output
directory (it holds ``checkpoints/latest.ckpt`` and ``checkpoints/step_*.ckpt``); it may still be
training. Three measurements, printed as plain-text tables and written to
``RUN_DIR/diagnostics_<agent_steps>.json`` (agent steps of the step checkpoint evaluated):

1. Q calibration (``checkpoints/latest.ckpt``: its critics and its replay buffer). The buffer is cut
   into one time-ordered stream per training env (the ring holds n_envs rows per vector step;
   n_envs from the checkpoint's config, where training.debug overrides are already applied); per
   stream the Monte-Carlo return G_t = r_t + gamma * (1 - terminal_t) * G_{t+1} is computed
   backwards with the SAC's per-chunk gamma. A row's return is known only if its episode ends
   inside the buffer: each stream's unfinished tail is dropped, and so is every row before a break
   in the stream (next_state_t != state_{t+1} without a terminal: a resumed run's fresh episodes,
   or a time-out under ``training.bootstrap=truncation``). On the most recent K rows with a known
   return: mean Q (over the ensemble, through the interface's critic view) vs mean G, their
   correlation, AUC of Q for "this episode succeeds" (G > 0), a calibration table by Q bin, and Q at
   the actor's deterministic action and at the interface's unsteered action vs at the stored one.
2. How much steering changes the executed chunk, during a held-out evaluation (the run's eval
   seeds). Each call computes the steered chunk and the chunk for the unsteered RL action
   (``steering.base_action``: zeros for zprl / action_residual / embedding_residual, i.e.
   z' = z, a = a_base, cond = obs_emb; for noise steering the base's own N(0, I) start, drawn from
   a per-call seeded generator) from the SAME encoding and the SAME flow noise: the global RNG
   state before the steered call is restored for the unsteered call inside ``torch.random.fork_rng``,
   and the steered call's RNG state continues the rollout, so the rollouts are exactly those of
   ``SteeredPolicy``. Reported: mean |delta| in normalized action units and in end-effector metres
   (first 3 dims of each 10-D arm block), the fraction of chunks whose commanded position moves by
   more than 1 mm / 5 mm (max over the chunk's steps and arms), RMS of the RL action, and the size
   of the perturbation against what it perturbs (zprl: RMS(lambda * dz) / RMS(z)). For scale, the
   same numbers for the base's own randomness: the unsteered chunk under other flow noise vs under
   the same (if steering moves the chunk far less than the flow noise does, the critic, which
   never sees that noise, can hardly credit it). Only calls for live episodes count (an ended env
   repeats its final observation; eval envs are chosen so that no batch is padded).
3. Success on the same seeds of the base (actor=None), the deterministic actor (the evaluation
   protocol: z = mu, tanh(mean)) and the stochastic actor as collected (posterior z sample, sampled
   RL action; the action residual's progressive exploration is not applied).

The composed policy comes from ``zprl.policy.steered.load_steered_policy`` on the step checkpoint
(the latest ``step_*.ckpt``, or ``--step``). ``--max_steps`` defaults to the run's own
``online_task.max_steps`` (the demo's lift runs: 200), so part 3 repeats the run's evaluations.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from zprl.common.errors import UserInputError, run_cli  # noqa: E402
from zprl.rl.smoothness import position_dims  # noqa: E402
from zprl.policy.steered import SteeredPolicy  # noqa: E402

POSITION_THRESHOLDS_M = (0.001, 0.005)


# ---- 1. Monte-Carlo returns on the replay ring ----------------------------------------------------
def chronological_rows(size: int, ptr: int, capacity: int) -> np.ndarray:
    """Buffer rows oldest first: 0..size-1 before the ring wraps, ptr..capacity-1, 0..ptr-1 after."""
    if size < capacity:
        return np.arange(size)
    return np.concatenate([np.arange(ptr, capacity), np.arange(0, ptr)])


def monte_carlo_returns(reward, terminal, state, next_state, n_envs: int, gamma: float,
                        check_continuity: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Discounted returns of chronologically ordered rows (n_envs rows per vector step).

    Rows k of the ordered buffer belong to env (k - N) % n_envs: every add() writes n_envs rows, so
    the number of rows ever written is a multiple of n_envs and the newest row is the last env's.
    Returns (G, known, info): G_t = r_t + gamma * (1 - terminal_t) * G_{t+1} along each env's
    stream, ``known`` False where the episode does not end inside the buffer (the unfinished tail,
    and rows before a break in the stream, next_state_t != state_{t+1} without a terminal).
    """
    reward = np.asarray(reward, dtype=np.float64)
    terminal = np.asarray(terminal, dtype=np.float64)
    n = len(reward)
    G = np.zeros(n)
    known = np.zeros(n, dtype=bool)
    links = breaks = 0
    env_of = (np.arange(n) - n) % n_envs
    for e in range(n_envs):
        rows = np.flatnonzero(env_of == e)
        if len(rows) == 0:
            continue
        if check_continuity and len(rows) > 1:
            a, b = rows[:-1], rows[1:]
            same = torch.eq(torch.as_tensor(next_state[a]), torch.as_tensor(state[b])).all(-1).numpy()
        else:
            same = np.ones(max(len(rows) - 1, 0), dtype=bool)
        following_known, following_g = False, 0.0  # the next row of this stream (none: unfinished)
        for i in range(len(rows) - 1, -1, -1):
            r = rows[i]
            if terminal[r] > 0:
                G[r], known[r] = reward[r], True
            elif i + 1 < len(rows) and same[i] and following_known:
                G[r], known[r] = reward[r] + gamma * following_g, True
            if i + 1 < len(rows) and terminal[r] == 0:
                links += 1
                breaks += int(not same[i])
            following_known, following_g = known[r], G[r]
    info = {"rows": int(n), "rows_with_return": int(known.sum()), "episode_ends": int((terminal > 0).sum()),
            "stream_breaks": int(breaks), "non_terminal_links": int(links)}
    return G, known, info


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties counted half; None without both classes."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks over ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def calibration_table(q: np.ndarray, g: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Rows (bin, count, mean Q, mean G): fixed bins over [0, 1] for the sigmoid head, else quantiles."""
    if len(q) == 0:
        return []
    if q.min() >= 0.0 and q.max() <= 1.0:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.unique(np.quantile(q, np.linspace(0.0, 1.0, n_bins + 1)))
    which = np.clip(np.searchsorted(edges, q, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        m = which == b
        if m.any():
            rows.append({"q_lo": float(edges[b]), "q_hi": float(edges[b + 1]), "count": int(m.sum()),
                         "mean_q": float(q[m].mean()), "mean_g": float(g[m].mean()),
                         "frac_success": float((g[m] > 0).mean())})
    return rows


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def reference_action(steering, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The unsteered RL action: ``steering.base_action`` where the interface has one, else zeros."""
    if hasattr(steering, "base_action"):
        return steering.base_action(batch_size, generator=generator).to(steering.device)
    return torch.zeros(batch_size, steering.action_dim, device=steering.device)


def build_critic(sac_state: dict, steering, device):
    """The run's critic ensemble and the view it scores (the interface's critic_input, or identity
    for checkpoints from before critic views), inferred from the saved weights."""
    from zprl.rl.sac import CriticEnsemble

    weights = sac_state["critic"]
    n_hidden = len([k for k in weights if re.fullmatch(r"hidden\.\d+\.weight", k)])
    n_critics, in_dim, _ = weights["hidden.0.weight"].shape
    hidden = tuple(int(weights[f"hidden.{i}.weight"].shape[-1]) for i in range(n_hidden))
    view = getattr(steering, "critic_input", None)
    if view is not None:
        with torch.no_grad():
            vs, va = view(torch.zeros(1, steering.state_dim, device=device),
                          torch.zeros(1, steering.action_dim, device=device))
        if vs.shape[-1] + va.shape[-1] != in_dim:
            view = None
    if view is None:
        if steering.state_dim + steering.action_dim != in_dim:
            raise UserInputError(f"the run's critic takes {in_dim} inputs, which matches neither the steering "
                                 f"interface's critic view nor (state, action) = {steering.state_dim} + "
                                 f"{steering.action_dim}")
        vs_dim, va_dim = steering.state_dim, steering.action_dim
        view_name = "identity (state, rl_action)"
    else:
        vs_dim, va_dim = vs.shape[-1], va.shape[-1]
        view_name = f"{type(steering).__name__}.critic_input"
    critic = CriticEnsemble(vs_dim, va_dim, int(n_critics), hidden)
    critic.load_state_dict(weights)
    critic.to(device).eval()
    return critic, (view if view is not None else (lambda s, a: (s, a))), view_name


def build_actor(sac_state: dict, steering, cfg, device):
    """The run's actor from its SAC state (the online workspace's log-std range)."""
    from zprl.rl.sac import TanhGaussianActor

    s = cfg["sac"]
    lo, hi = getattr(steering, "actor_log_std_range", (-10.0, 2.0))
    lo = lo if s.get("log_std_min") is None else s["log_std_min"]
    hi = hi if s.get("log_std_max") is None else s["log_std_max"]
    actor = TanhGaussianActor(steering.state_dim, steering.action_dim, tuple(s["actor_hidden"]), lo, hi)
    actor.load_state_dict(sac_state["actor"])
    return actor.to(device).eval()


@torch.no_grad()
def q_calibration(latest_state: dict, cfg: dict, steering, device, recent: int = 20000,
                  batch: int = 4096) -> dict:
    """Part 1: the critics' Q against observed discounted returns on the replay buffer."""
    from zprl.rl.chunk import chunk_gamma

    replay = latest_state.get("replay")
    if replay is None or int(replay["size"]) == 0:
        return {"skipped": "latest.ckpt holds no replay buffer"}
    n_envs = int(cfg["online_task"]["n_envs"])
    gamma = chunk_gamma(cfg["sac"]["gamma_step"], latest_state["n_action_steps"])
    size, ptr, capacity = int(replay["size"]), int(replay["ptr"]), int(replay["capacity"])
    order = chronological_rows(size, ptr, capacity)
    data = {k: v[order] for k, v in replay["data"].items()}
    G, known, info = monte_carlo_returns(data["reward"].numpy(), data["terminal"].numpy(), data["state"],
                                         data["next_state"], n_envs, gamma)
    agent_steps = int(latest_state["counters"]["agent_steps"])
    picked = np.flatnonzero(known)[-recent:] if recent > 0 else np.flatnonzero(known)
    out = {"latest_agent_steps": agent_steps, "gamma": gamma, "n_envs": n_envs, "buffer_size": size,
           "buffer_capacity": capacity, **info, "n_compared": int(len(picked)),
           "bootstrap": cfg["training"].get("bootstrap", "never")}
    if len(picked) == 0:
        out["skipped"] = "no transition in the buffer has a finished episode"
        return out
    first_step = agent_steps - size  # agent step of the oldest row (rows written = agent steps)
    warmup = int(cfg["training"].get("warmup_agent_steps", 0))
    row_steps = first_step + picked
    out.update(agent_step_range=[int(row_steps.min()), int(row_steps.max())],
               n_warmup_rows=int((row_steps < warmup).sum()))
    critic, view, view_name = build_critic(latest_state["sac"], steering, device)
    actor = build_actor(latest_state["sac"], steering, cfg, device)
    gen = torch.Generator().manual_seed(0)
    q_stored, q_std, q_det, q_ref = [], [], [], []
    for start in range(0, len(picked), batch):
        idx = torch.as_tensor(picked[start: start + batch])
        s = data["state"][idx].to(device=device, dtype=torch.float32)
        a = data["action"][idx].to(device=device, dtype=torch.float32)
        q = critic(*view(s, a))
        q_stored.append(q.mean(0).cpu())
        q_std.append(q.std(0).cpu() if q.shape[0] > 1 else torch.zeros(q.shape[1]))
        q_det.append(critic(*view(s, actor.act(s, deterministic=True))).mean(0).cpu())
        q_ref.append(critic(*view(s, reference_action(steering, len(idx), gen))).mean(0).cpu())
    q = torch.cat(q_stored).double().numpy()
    g = G[picked]
    qd, qr = torch.cat(q_det).double().numpy(), torch.cat(q_ref).double().numpy()
    success = g > 0
    out.update({
        "critic_view": view_name, "n_critics": int(critic.n_critics),
        "mean_q": float(q.mean()), "mean_g": float(g.mean()), "bias_q_minus_g": float((q - g).mean()),
        "rmse_q_g": float(np.sqrt(((q - g) ** 2).mean())), "corr_q_g": _pearson(q, g),
        "frac_success_bound": float(success.mean()), "auc_q_success": roc_auc(q, success),
        "mean_q_success_bound": float(q[success].mean()) if success.any() else None,
        "mean_q_failure_bound": float(q[~success].mean()) if (~success).any() else None,
        "mean_member_std": float(torch.cat(q_std).double().mean()),
        "mean_q_stored_action": float(q.mean()), "mean_q_actor_deterministic": float(qd.mean()),
        "mean_q_unsteered_action": float(qr.mean()),
        "frac_q_det_above_stored": float((qd > q).mean()), "frac_q_det_above_unsteered": float((qd > qr).mean()),
        "calibration": calibration_table(q, g),
    })
    return out


# ---- 2./3. the executed chunk, steered vs unsteered, during held-out rollouts --------------------
def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class ChunkDelta:
    """Running statistics of |chunk_a - chunk_b| over executed chunks (B, n_action_steps, Da)."""

    def __init__(self, normalizer, pos_dims: list[int]):
        self.normalizer, self.pos_dims = normalizer, pos_dims
        self.chunks = 0
        self.sums = {"norm": 0.0, "norm_n": 0, "pos": 0.0, "pos_n": 0, "step": 0.0, "step_n": 0, "chunk_max": 0.0}
        self.max_norm = self.max_pos = 0.0
        self.over = {t: 0 for t in POSITION_THRESHOLDS_M}

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        n = a.shape[0]
        if n == 0:
            return
        s = self.sums
        d_norm = (self.normalizer.normalize(a) - self.normalizer.normalize(b)).abs().double()
        s["norm"] += d_norm.sum().item()
        s["norm_n"] += d_norm.numel()
        self.max_norm = max(self.max_norm, d_norm.max().item())
        d_pos = (a[..., self.pos_dims] - b[..., self.pos_dims]).double()  # (n, T, arms * 3)
        s["pos"] += d_pos.abs().sum().item()
        s["pos_n"] += d_pos.numel()
        step_norm = d_pos.reshape(n, d_pos.shape[1], -1, 3).norm(dim=-1)  # (n, T, arms): metres per step
        s["step"] += step_norm.sum().item()
        s["step_n"] += step_norm.numel()
        chunk_max = step_norm.flatten(1).max(dim=1).values  # the chunk's largest position change
        s["chunk_max"] += chunk_max.sum().item()
        self.max_pos = max(self.max_pos, chunk_max.max().item())
        for t in POSITION_THRESHOLDS_M:
            self.over[t] += int((chunk_max > t).sum())
        self.chunks += n

    def summary(self) -> dict:
        if self.chunks == 0:
            return {"chunks": 0}
        s = self.sums
        return {"chunks": self.chunks, "mean_abs_delta_normalized": s["norm"] / s["norm_n"],
                "max_abs_delta_normalized": self.max_norm,
                "mean_abs_delta_pos_m": s["pos"] / s["pos_n"],
                "mean_step_pos_delta_m": s["step"] / s["step_n"],
                "mean_chunk_max_pos_delta_m": s["chunk_max"] / self.chunks,
                "max_chunk_pos_delta_m": self.max_pos,
                **{f"frac_chunks_pos_over_{t * 1000:g}mm": self.over[t] / self.chunks for t in POSITION_THRESHOLDS_M}}


class ChunkDeltaProbe(SteeredPolicy):
    """``predict_action`` as ``SteeredPolicy`` (same encode/actor/act calls, same RNG draws), plus,
    from the same encoding, the unsteered chunk with the SAME flow noise (what steering changed)
    and the unsteered chunk with OTHER flow noise (the base's own spread, for scale); both only
    over live rows (an ended env repeats its final observation)."""

    def __init__(self, steering, actor, deterministic: bool = True):
        super().__init__(steering, actor, deterministic)
        self.pos_dims = position_dims(steering.policy.action_dim).tolist()
        normalizer = steering.policy.normalizer["action"] if hasattr(steering.policy, "normalizer") else None
        self.steered = ChunkDelta(normalizer, self.pos_dims)
        self.flow_noise = ChunkDelta(normalizer, self.pos_dims)
        self.sq = {"rl": [0.0, 0], "perturbation": [0.0, 0], "perturbed": [0.0, 0]}
        self._prev_obs = None
        self._calls = 0

    def _live_rows(self, obs: dict) -> torch.Tensor:
        """Rows whose observation changed since the last call: an ended env repeats its final frame."""
        b = next(iter(obs.values())).shape[0]
        live = torch.ones(b, dtype=torch.bool)
        prev = self._prev_obs
        if prev is not None and next(iter(prev.values())).shape[0] == b:
            same = torch.ones(b, dtype=torch.bool)
            for k, v in obs.items():
                same &= torch.eq(v, prev[k]).reshape(b, -1).all(-1).cpu()
            live = ~same
        self._prev_obs = {k: v.clone() for k, v in obs.items()}
        return live

    def _perturbation(self, enc, rl_action):
        """(perturbation added, what it perturbs or None) for the RMS ratio, per interface."""
        name = getattr(self.steering, "name", "")
        if name == "zprl":
            return self.steering.res_scale * rl_action, enc.parts["z"]
        if name == "embedding_residual":
            return self.steering.res_scale * rl_action, enc.parts["emb"]
        if name == "action_residual":
            return self.steering.alpha_res * rl_action, enc.parts["base"].flatten(1)
        if name == "noise":
            return self.steering.noise_bound * rl_action, None
        return rl_action, None

    def _add_sq(self, key: str, x: torch.Tensor) -> None:
        self.sq[key][0] += x.double().pow(2).sum().item()
        self.sq[key][1] += x.numel()

    @torch.no_grad()
    def predict_action(self, obs: dict) -> dict:
        live = self._live_rows(obs)
        enc = self.steering.encode(obs, deterministic=self.deterministic)
        rl_action = self.actor.act(enc.state, deterministic=self.deterministic)
        before = _rng_state(self.device)
        chunk = self.steering.act(enc, rl_action)
        # fork: the RNG state after the steered call comes back on exit, so the rollout goes on
        # exactly as SteeredPolicy's would; inside, the unsteered chunk starts from the state the
        # steered call started from (same flow noise), then one more from a fresh seed
        devices = [self.device] if self.device.type == "cuda" else []
        b = rl_action.shape[0]
        with torch.random.fork_rng(devices=devices):
            _set_rng_state(before, self.device)
            ref = self.steering.act(enc, reference_action(self.steering, b, torch.Generator().manual_seed(self._calls)))
            torch.manual_seed(1_000_003 + self._calls)
            other = self.steering.act(enc, reference_action(
                self.steering, b, torch.Generator().manual_seed(1_000_003 + self._calls)))
        self._calls += 1
        if live.any():
            on = live.to(chunk.device)
            self.steered.add(chunk[on], ref[on])
            self.flow_noise.add(other[on], ref[on])
            rl_live = rl_action[live.to(rl_action.device)]
            self._add_sq("rl", rl_live)
            pert, base = self._perturbation(enc.index(live.to(enc.state.device)), rl_live)
            self._add_sq("perturbation", pert)
            if base is not None:
                self._add_sq("perturbed", base)
        return {"action": chunk, "rl_action": rl_action}

    def summary(self) -> dict:
        def rms(key):
            total, count = self.sq[key]
            return math.sqrt(total / count) if count else None

        out = self.steered.summary()
        out.update(rms_rl_action=rms("rl"), rms_perturbation=rms("perturbation"), rms_perturbed_quantity=rms("perturbed"))
        out["rms_ratio"] = (out["rms_perturbation"] / out["rms_perturbed_quantity"]
                            if out["rms_perturbed_quantity"] else None)
        out["base_flow_noise"] = self.flow_noise.summary()
        return out


PERTURBATION_LABEL = {"zprl": "RMS(lambda*dz) / RMS(z)", "embedding_residual": "RMS(res_scale*d) / RMS(obs_emb)",
                      "action_residual": "RMS(alpha_res*da) / RMS(a_base, normalized)",
                      "noise": "RMS(noise) (no ratio)"}
REFERENCE_LABEL = {"zprl": "rl_action = 0 (z' = z)", "embedding_residual": "rl_action = 0 (cond = obs_emb)",
                   "action_residual": "rl_action = 0 (a = a_base)",
                   "noise": "base_action: noise ~ N(0, I), unclipped (the base sampler's own start)"}


def eval_divisor(n_episodes: int, n_envs: int) -> int:
    """The largest env count <= n_envs that divides n_episodes: no padded batch, so every
    policy call with an unchanged observation is an ended episode."""
    for k in range(max(1, min(n_envs, n_episodes)), 0, -1):
        if n_episodes % k == 0:
            return k
    return 1


# ---- loading ------------------------------------------------------------------------------------
def find_step_checkpoint(run_dir: str, step: int | None) -> str:
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if step is not None:
        path = os.path.join(ckpt_dir, f"step_{step:06d}.ckpt")
        if not os.path.isfile(path):
            found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ckpt_dir, "step_*.ckpt")))
            raise UserInputError(f"{path} not found; this run has {found or 'no step checkpoints'}")
        return path
    paths = glob.glob(os.path.join(ckpt_dir, "step_*.ckpt"))
    if not paths:
        raise UserInputError(f"no checkpoints/step_*.ckpt in {run_dir}: pass an online run's output directory")
    return max(paths, key=lambda p: int(re.search(r"step_(\d+)\.ckpt$", p).group(1)))


def load_composed(step_ckpt: str, device: str, base_ckpt: str | None):
    """(steering, actor, base_cfg, state, cfg) of the composed policy, via load_steered_policy."""
    from zprl.policy.checkpoint import read_checkpoint
    from zprl.policy.steered import load_steered_policy

    cfg = read_checkpoint(step_ckpt)["cfg"]
    policy, base_cfg, state = load_steered_policy(step_ckpt, device=device, base_ckpt=base_ckpt)
    return policy.steering, policy.actor, base_cfg, state, cfg


def logged_eval(run_dir: str, agent_steps: int) -> float | None:
    path = os.path.join(run_dir, "logs.json.txt")
    if not os.path.isfile(path):
        return None
    value = None
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("agent_steps") == agent_steps and "eval/success_rate" in rec and not rec.get("eval/base_only"):
                value = float(rec["eval/success_rate"])
    return value


# ---- report -------------------------------------------------------------------------------------
def _f(x, fmt="{:.3f}"):
    return "n/a" if x is None else fmt.format(x)


def format_report(r: dict) -> str:
    lines = [f"steering diagnostics: {r['run_dir']}",
             f"  interface {r['steering']['name']} {json.dumps({k: v for k, v in r['steering'].items() if k != 'name'})}, "
             f"step checkpoint {os.path.basename(r['step_checkpoint'])} (agent steps {r['agent_steps']}, "
             f"env steps {r['env_steps']})"]
    q = r["q_calibration"]
    lines.append("")
    lines.append(f"1. Q calibration (latest.ckpt, agent steps {q.get('latest_agent_steps')}; gamma per chunk "
                 f"{_f(q.get('gamma'), '{:.4f}')}, {q.get('n_envs')} env streams, bootstrap={q.get('bootstrap')})")
    if "skipped" in q:
        lines.append(f"  skipped: {q['skipped']}")
    else:
        lines.append(f"  buffer {q['buffer_size']} rows, {q['rows_with_return']} with a finished episode "
                     f"({q['episode_ends']} episode ends, {q['stream_breaks']} stream breaks); compared: "
                     f"the most recent {q['n_compared']} (agent steps {q['agent_step_range'][0]}-"
                     f"{q['agent_step_range'][1]}, {q['n_warmup_rows']} from warm-up)")
        lines.append(f"  critic: {q['n_critics']} members, view {q['critic_view']}, mean member std "
                     f"{_f(q['mean_member_std'], '{:.4f}')}")
        lines.append("  | mean Q | mean G | Q-G bias | RMSE | corr(Q,G) | frac G>0 | AUC(Q; G>0) | Q if G>0 | Q if G=0 |")
        lines.append(f"  | {_f(q['mean_q'])} | {_f(q['mean_g'])} | {_f(q['bias_q_minus_g'], '{:+.3f}')} | "
                     f"{_f(q['rmse_q_g'])} | {_f(q['corr_q_g'])} | {_f(q['frac_success_bound'])} | "
                     f"{_f(q['auc_q_success'])} | {_f(q['mean_q_success_bound'])} | {_f(q['mean_q_failure_bound'])} |")
        lines.append("  | Q bin | count | mean Q | mean G | frac G>0 |")
        for row in q["calibration"]:
            lines.append(f"  | {row['q_lo']:.2f}-{row['q_hi']:.2f} | {row['count']} | {row['mean_q']:.3f} | "
                         f"{row['mean_g']:.3f} | {row['frac_success']:.3f} |")
        lines.append(f"  Q at the stored action {_f(q['mean_q_stored_action'])}, at the actor's deterministic action "
                     f"{_f(q['mean_q_actor_deterministic'])}, at the unsteered action {_f(q['mean_q_unsteered_action'])}; "
                     f"Q(det) > Q(stored) on {_f(q['frac_q_det_above_stored'])}, Q(det) > Q(unsteered) on "
                     f"{_f(q['frac_q_det_above_unsteered'])} of the states")
    e = r["evaluation"]
    lines.append("")
    lines.append(f"2. Executed chunk, steered vs unsteered ({e['n_episodes']} held-out seeds from {e['start_seed']}, "
                 f"max_steps {e['max_steps']}, {e['n_envs']} envs; unsteered = {r['reference_action']})")
    lines.append(f"  | chunks compared | n | mean |d| norm | max |d| norm | mean |d| pos mm | mean step |dpos| mm | "
                 f"frac chunks >1 mm | >5 mm | RMS rl_action | {r['perturbation_label']} |")

    def row(label, d, rl="", ratio=""):
        if not d.get("chunks"):
            return f"  | {label} | 0 | - | - | - | - | - | - | {rl} | {ratio} |"
        return (f"  | {label} | {d['chunks']} | {d['mean_abs_delta_normalized']:.4f} | "
                f"{d['max_abs_delta_normalized']:.4f} | {1000 * d['mean_abs_delta_pos_m']:.3f} | "
                f"{1000 * d['mean_step_pos_delta_m']:.3f} | {d['frac_chunks_pos_over_1mm']:.3f} | "
                f"{d['frac_chunks_pos_over_5mm']:.3f} | {rl} | {ratio} |")

    for mode in ("deterministic", "stochastic"):
        d = e[mode]["chunk_delta"]
        ratio = d.get("rms_ratio") if d.get("rms_ratio") is not None else d.get("rms_perturbation")
        lines.append(row(f"{mode}: steering", d,
                         _f(d.get("rms_rl_action"), "{:.4f}"), _f(ratio, "{:.4f}")))
        lines.append(row(f"{mode}: flow noise", d.get("base_flow_noise", {})))
    lines.append("  steering: steered vs unsteered chunk, same encoding and flow noise; flow noise: the unsteered "
                 "chunk under other vs the same flow noise (the base's own spread, for scale)")
    lines.append("")
    lines.append("3. Success on the same seeds")
    lines.append("  | policy | success | mean length | seeds won vs base | seeds lost vs base |")
    for mode in ("base", "deterministic", "stochastic"):
        m = e[mode]
        lines.append(f"  | {mode} | {m['success_rate']:.3f} | {m['mean_length']:.1f} | "
                     f"{m.get('won_vs_base', '-')} | {m.get('lost_vs_base', '-')} |")
    if e.get("logged_eval_success") is not None:
        lines.append(f"  the run's own log at agent steps {r['agent_steps']}: eval success {e['logged_eval_success']:.3f}")
    lines.append(f"  ({r['wall_s']:.0f} s)")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="the online run's output directory (holds checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="agent steps of the step checkpoint (default: the latest)")
    p.add_argument("-n", "--n_episodes", type=int, default=50, help="held-out episodes per policy (the run's eval seeds)")
    p.add_argument("--n_envs", type=int, default=2, help="parallel eval envs (lowered to a divisor of -n)")
    p.add_argument("--max_steps", type=int, default=None, help="env steps per episode (default: the run's online_task.max_steps)")
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("-k", "--recent", type=int, default=20000, help="most recent transitions (with a return) for part 1")
    p.add_argument("--base_ckpt", default=None, help="the base checkpoint, if it moved since training")
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy CPU)")
    p.add_argument("-o", "--output", default=None, help="JSON path (default: RUN_DIR/diagnostics_<agent_steps>.json)")
    args = p.parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    t0 = time.monotonic()

    from omegaconf import OmegaConf

    from zprl.env.runner import RobomimicEnvRunner
    from zprl.policy.checkpoint import read_checkpoint
    from zprl.policy.steered import SteeredPolicy

    run_dir = os.path.abspath(args.run_dir)
    step_ckpt = find_step_checkpoint(run_dir, args.step)
    latest_path = os.path.join(run_dir, "checkpoints", "latest.ckpt")
    steering, actor, base_cfg, state, cfg = load_composed(step_ckpt, args.device, args.base_ckpt)
    agent_steps = int(state["counters"]["agent_steps"])
    n_action_steps = int(state["n_action_steps"])
    name = getattr(steering, "name", type(steering).__name__)
    print(f"composed policy from {step_ckpt}", flush=True)

    # 1. Q calibration on latest.ckpt's buffer
    if os.path.isfile(latest_path):
        latest = read_checkpoint(latest_path)
        q = q_calibration(latest["state"], latest["cfg"], steering, steering.device, recent=args.recent)
        del latest
    else:
        q = {"skipped": f"{latest_path} not found"}
    print("Q calibration done", flush=True)

    # 2./3. held-out rollouts: base, deterministic and stochastic actor
    o = cfg["online_task"]
    max_steps = int(args.max_steps or o["max_steps"])
    n_envs = eval_divisor(args.n_episodes, args.n_envs)
    start_seed = int(o.get("eval_start_seed", 100000))
    shape_meta = OmegaConf.to_container(base_cfg.shape_meta, resolve=True)
    runner = RobomimicEnvRunner(run_dir, state["env_meta"], shape_meta, n_train=0, n_test=args.n_episodes,
                                test_start_seed=start_seed, max_steps=max_steps,
                                n_obs_steps=steering.policy.n_obs_steps, n_action_steps=n_action_steps,
                                n_envs=n_envs, n_train_vis=0, n_test_vis=0, render_size=None, tqdm=False)
    evaluation = {"n_episodes": args.n_episodes, "start_seed": start_seed, "max_steps": max_steps, "n_envs": n_envs}
    try:
        for mode, policy in (("base", SteeredPolicy(steering, None, deterministic=True)),
                             ("deterministic", ChunkDeltaProbe(steering, actor, deterministic=True)),
                             ("stochastic", ChunkDeltaProbe(steering, actor, deterministic=False))):
            result = runner.run(policy)
            episodes = [ep for ep in result["episodes"] if ep["prefix"] == "test"]
            evaluation[mode] = {"success_rate": float(result["test/mean_score"]),
                                "mean_length": float(result["test/mean_length"]),
                                "success_by_seed": {str(ep["seed"]): bool(ep["success"]) for ep in episodes}}
            if isinstance(policy, ChunkDeltaProbe):
                evaluation[mode]["chunk_delta"] = policy.summary()
            print(f"{mode}: success {evaluation[mode]['success_rate']:.3f}", flush=True)
    finally:
        runner.close()
    base_wins = evaluation["base"]["success_by_seed"]
    for mode in ("deterministic", "stochastic"):
        mine = evaluation[mode]["success_by_seed"]
        evaluation[mode]["won_vs_base"] = sum(mine[s] and not base_wins[s] for s in mine)
        evaluation[mode]["lost_vs_base"] = sum(base_wins[s] and not mine[s] for s in mine)
    evaluation["logged_eval_success"] = logged_eval(run_dir, agent_steps)

    report = {"run_dir": run_dir, "step_checkpoint": step_ckpt, "latest_checkpoint": latest_path,
              "agent_steps": agent_steps, "env_steps": agent_steps * n_action_steps,
              "n_action_steps": n_action_steps, "steering": {"name": name, **state["steering"]},
              "device": args.device,
              "reference_action": REFERENCE_LABEL.get(name, "steering.base_action"),
              "perturbation_label": PERTURBATION_LABEL.get(name, "RMS(rl_action)"),
              "position_dims": position_dims(steering.policy.action_dim).tolist(),
              "q_calibration": q, "evaluation": evaluation, "wall_s": time.monotonic() - t0}
    text = format_report(report)
    print(text)
    out_path = args.output or os.path.join(run_dir, f"diagnostics_{agent_steps}.json")
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, out_path)
    print(f"-> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
