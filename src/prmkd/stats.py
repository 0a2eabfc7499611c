"""Paired significance tests over users, from run folders' per-user metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def per_user(run_dirs: list[str | Path], metric: str, split: str = "test") -> np.ndarray:
    """(n_users,) per-user `metric`, averaged over the runs (seeds) given."""
    arrays = [np.load(Path(d) / f"per_user_{split}.npz")[metric] for d in run_dirs]
    return np.mean(arrays, axis=0)


def paired_test(a_dirs: list, b_dirs: list, metric: str = "ndcg@10", split: str = "test") -> dict:
    """Paired t-test of a vs b over users (each user's value averaged over seeds first).

    Returns the relative change of the mean (a - b) / b as `value`, and the two-sided `p_value`.
    """
    from scipy.stats import ttest_rel

    a, b = per_user(a_dirs, metric, split), per_user(b_dirs, metric, split)
    if a.shape != b.shape:
        raise ValueError(f"per-user arrays differ in length: {a.shape} vs {b.shape}")
    t, p = ttest_rel(a, b)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    return {"value": (mean_a - mean_b) / mean_b if mean_b else float("nan"), "p_value": float(p),
            "t": float(t), "mean_a": mean_a, "mean_b": mean_b, "n_users": int(len(a)),
            "test": "paired t-test over users (scipy.stats.ttest_rel), per-user values averaged over seeds",
            "seeds_a": len(a_dirs), "seeds_b": len(b_dirs)}
