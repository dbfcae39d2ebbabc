"""The statistics of a results page (the Student-t interval every "mean ± CI" uses) and its plain
reading, computed from the runs so that it regenerates with them: is each ZPRL variant ahead of,
behind, or indistinguishable from each other interface (and each interface from its base) at this
budget, and about how many seeds per method would tell.

The rule is stated on the page: a difference counts only when its 95% interval over seeds excludes 0
(Welch's interval between two methods; a one-sample t interval of the per-run gains over the base).
"How many seeds would tell" is the normal-approximation sample size for a two-sided 5% test at 80%
power, with the observed difference and the seeds' pooled standard deviation: a planning figure that
is itself uncertain with 2-3 seeds, not a promise.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA, POWER = 0.05, 0.8


def t_interval(values, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval over independent seeds; half-width NaN for n < 2."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def welch_interval(a, b, confidence: float = 1 - ALPHA) -> tuple[float, float] | None:
    """(mean(a) - mean(b), half-width of the Welch t interval); None when either side has < 2 seeds."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return diff, float(stats.t.ppf(0.5 + confidence / 2, df) * se)


def seeds_to_tell(a, b) -> int | None:
    """Seeds per method for a two-sided 5% test at 80% power to see the observed difference of means,
    normal approximation with the pooled sd; None when there is no difference or no spread to size it."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return None
    d = abs(a.mean() - b.mean())
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if d == 0.0 or sd == 0.0:
        return None
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    return max(2, math.ceil(2 * (z * sd / d) ** 2))


def verdict(interval: tuple[float, float] | None, ahead: str = "ahead", behind: str = "behind") -> str:
    if interval is None:
        return "too few seeds for an interval"
    diff, half = interval
    if diff - half > 0:
        return ahead
    if diff + half < 0:
        return behind
    return "indistinguishable"


def _cell(interval) -> str:
    return "–" if interval is None else f"{interval[0]:+.3f} ± {interval[1]:.3f}"


def _raw_diff(a, b) -> str:
    return f"{np.mean(a) - np.mean(b):+.3f} (no interval)"


def reading_lines(groups: dict) -> list[str]:
    """Markdown lines for ``groups`` (method -> runs, in page order)."""
    lines = ["## Reading", "",
             "Computed from the runs above (`zprl/report_reading.py`): a difference counts only when its 95% "
             "interval over seeds excludes 0 (Welch's interval between two methods, a one-sample t interval of "
             "the runs' gains over their base). 'Seeds per method to tell': the normal-approximation sample "
             f"size for a two-sided {ALPHA:.0%} test at {POWER:.0%} power, with the observed difference and the "
             "seeds' pooled sd; a planning figure, itself uncertain with few seeds.", ""]
    zprl = [m for m in groups if m.split(" (")[0] == "zprl"]
    others = [m for m in groups if m not in zprl]
    pairs = [(z, o) for z in zprl for o in others]
    if pairs:
        lines += ["| comparison | seeds | final success difference | verdict | AUC difference | verdict | "
                  "seeds per method to tell (final success) |", "|---|---|---|---|---|---|---|"]
        for z, o in pairs:
            fz, fo = [r.final_success for r in groups[z]], [r.final_success for r in groups[o]]
            az, ao = [r.auc for r in groups[z]], [r.auc for r in groups[o]]
            fi, ai = welch_interval(fz, fo), welch_interval(az, ao)
            n = seeds_to_tell(fz, fo)
            lines.append(f"| {z} − {o} | {len(fz)} vs {len(fo)} | {_cell(fi) if fi else _raw_diff(fz, fo)} | "
                         f"{verdict(fi)} | {_cell(ai) if ai else _raw_diff(az, ao)} | {verdict(ai)} | "
                         f"{'–' if n is None else n} |")
        lines.append("")
    lines += ["| method | runs | final success − base success | against the base |", "|---|---|---|---|"]
    for method, runs in groups.items():
        gains = [r.final_success - r.base_success for r in runs if r.base_success is not None]
        if not gains:
            lines.append(f"| {method} | {len(runs)} | – | no base evaluation logged |")
            continue
        gi = t_interval(gains) if len(gains) > 1 else None
        cell = _cell(gi) if gi else f"{np.mean(gains):+.3f} (no interval)"
        lines.append(f"| {method} | {len(gains)} | {cell} | {verdict(gi, 'above', 'below')} |")
    return lines
