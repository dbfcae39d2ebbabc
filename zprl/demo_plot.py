"""The demo's learning curve: online eval success vs env steps, with the base policy's level."""

from __future__ import annotations

from zprl.common.logging import read_json_lines


def eval_curve(logs_path: str) -> tuple[list[int], list[float]]:
    """(env_steps, eval success) of every evaluation in an online run's logs.json.txt, in order."""
    points = {}
    for r in read_json_lines(logs_path):
        if "eval/success_rate" in r:
            points[int(r["env_steps"])] = float(r["eval/success_rate"])  # a resumed run may repeat a step
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def plot_learning_curve(logs_path: str, base_success: float, path: str,
                        final: tuple[int, float] | None = None) -> str:
    """``final``: (env_steps, success) of an evaluation made after the run (eval_sum.py), added to
    the curve where the run did not evaluate its end itself (training.eval_at_end=false)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, success = eval_curve(logs_path)
    if final is not None and final[0] not in steps:
        steps, success = steps + [int(final[0])], success + [float(final[1])]
    if not steps:
        raise ValueError(f"{logs_path} holds no evaluation records (eval/success_rate)")
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(steps, success, marker="o", label="ZPRL (online evaluation)")
    ax.axhline(base_success, color="gray", linestyle="--", label=f"base policy (eval_base): {base_success:.2f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
