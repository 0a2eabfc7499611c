"""Paired significance tests over users, from run folders' per-user metrics (one implementation, used by
the pipeline's comparisons and by the report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def per_user_values(folder: str | Path, metric: str, split: str = "test") -> np.ndarray | None:
    """(n_users,) per-user `metric` of one run folder (from its npz: the metric itself, or its ranks)."""
    path = Path(folder) / f"per_user_{split}.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        if metric in z.files:
            return np.asarray(z[metric], dtype=np.float64)
        if "ranks" in z.files:
            from ..evaluation import metrics_from_ranks

            k = int(metric.partition("@")[2])
            return metrics_from_ranks(z["ranks"], ks=(k,), mrr_k=k)[metric]
    return None


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(t, p) of scipy's two-sided paired t-test; nan when the differences are all equal (no variance)."""
    from scipy.stats import ttest_rel

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.all(a - b == (a - b)[0]):
        return float("nan"), float("nan")
    res = ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def paired_test(a_dirs: list, b_dirs: list, metric: str = "ndcg@10", split: str = "test") -> dict:
    """Paired t-test of a vs b over users (each user's value averaged over the seeds' run folders first).

    Returns the relative change of the mean (a - b) / b as `value`, and the two-sided `p_value`.
    """
    a = np.mean([per_user_values(d, metric, split) for d in a_dirs], axis=0)
    b = np.mean([per_user_values(d, metric, split) for d in b_dirs], axis=0)
    if a.shape != b.shape:
        raise ValueError(f"per-user arrays differ in length: {a.shape} vs {b.shape}")
    t, p = paired_ttest(a, b)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    return {"value": (mean_a - mean_b) / mean_b if mean_b else float("nan"), "p_value": p, "t": t,
            "mean_a": mean_a, "mean_b": mean_b, "n_users": int(len(a)),
            "detectable_change": detectable_change(a, b),
            "test": "paired t-test over users (scipy.stats.ttest_rel), per-user values averaged over seeds",
            "seeds_a": len(a_dirs), "seeds_b": len(b_dirs)}


def detectable_change(a: np.ndarray, b: np.ndarray, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest relative change of the mean, |a - b| / b, that the two-sided paired t-test at `alpha` finds
    with probability `power`, given these users and the spread of their differences (normal approximation:
    (z_{1-alpha/2} + z_power) * sd(a - b) / sqrt(n) / mean(b)). nan without spread or users."""
    from scipy.stats import norm

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean_b = float(np.mean(b)) if len(b) else 0.0
    if len(d) < 2 or not mean_b:
        return float("nan")
    sd = float(d.std(ddof=1))
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / np.sqrt(len(d)) / abs(mean_b))
