"""The ceiling of distillation: the fused teacher distribution itself (Eq. 1-4, over every item instead of the
in-batch candidates) used as a ranker, for the test (or validation) users.

For every user, each teacher's logits against the whole catalogue are turned into s_ijk (Eq. 1, tau), normalized,
weighted by the consistency rule (Eq. 2, epsilon) and fused (Eq. 3-4) into q_ij; items are ranked by q with the
evaluator's ties (pessimistic). Done for all teachers together and for every subset of two or more (each teacher
alone is its own teacher cache's ranking, which `evaluate_cache` gives). If the fused teachers rank better than any
one teacher, that is the number the student is chasing.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from ..config import DistillConfig, EvalConfig
from ..data.dataset import SeqDataset
from ..evaluation import metrics_from_ranks
from ..teachers.cache import TeacherCache
from .kd import fused_targets
from .trainer import default_weights


@torch.no_grad()
def fused_ranks(caches: list[TeacherCache], ds: SeqDataset, cfg: DistillConfig, split: str = "test",
                batch: int = 256) -> np.ndarray:
    """(n_users,) 0-based pessimistic rank of each user's `split` target under the fused distribution q."""
    w = default_weights(caches, cfg.teacher_weights)
    items = torch.arange(1, ds.n_items + 1)
    targets = torch.from_numpy(ds.split_targets(split))
    ranks = np.empty(ds.n_users, dtype=np.int64)
    for lo in range(0, ds.n_users, batch):
        users = torch.arange(lo, min(lo + batch, ds.n_users))
        logits = torch.stack([c.logits(split, users, items) for c in caches])  # (K, B, n_items)
        q, _ = fused_targets(logits, w, cfg.temperature, cfg.epsilon, cfg.normalization, cfg.fusion, inplace=True)
        tq = q.gather(1, (targets[users] - 1)[:, None])  # (B, 1)
        ranks[lo:lo + len(users)] = ((q > tq).sum(1) + (q == tq).sum(1) - 1).numpy()
    return ranks


def ceiling(caches: list[TeacherCache], ds: SeqDataset, cfg: DistillConfig, eval_cfg: EvalConfig,
            split: str = "test") -> list[dict]:
    """One entry per subset of two or more teachers: {teachers, metrics, ranks}."""
    out = []
    for size in range(len(caches), 1, -1):
        for subset in combinations(range(len(caches)), size):
            chosen = [caches[k] for k in subset]
            ranks = fused_ranks(chosen, ds, cfg, split)
            per_user = metrics_from_ranks(ranks, eval_cfg.ks, eval_cfg.mrr_k)
            out.append({"teachers": [c.name for c in chosen], "ranks": ranks, "per_user": per_user,
                        "metrics": {k: float(v.mean()) for k, v in per_user.items()}})
    return out
