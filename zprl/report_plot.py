"""The comparison figure: eval success vs env steps, mean and 95% band (Student-t over seeds) per
steering method. Deterministic: the same runs give a byte-identical PNG."""

from __future__ import annotations

import numpy as np


def mean_curve(runs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, 95% t half-width) on the union of the runs' evaluation steps, up to the
    shortest run (linear interpolation between evaluations; half-width NaN for one run)."""
    from zprl.report_reading import t_interval

    end = min(r.steps[-1] for r in runs)
    steps = np.unique(np.concatenate([r.steps[r.steps <= end] for r in runs]))
    values = np.stack([np.interp(steps, r.steps, r.success) for r in runs])
    stats = [t_interval(values[:, i]) for i in range(len(steps))]
    return steps, np.array([m for m, _ in stats]), np.array([h for _, h in stats])


def plot_success_curves(groups: dict, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, runs in groups.items():
        steps, mean, half = mean_curve(runs)
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=f"{method} (n={len(runs)})")
        if not np.isnan(half).all():
            ax.fill_between(steps, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1),
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title + "\nmean over seeds, band: 95% t-interval", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    # no "Software" (matplotlib's version) nor any date in the PNG: the same logs give the same bytes
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
    return path
