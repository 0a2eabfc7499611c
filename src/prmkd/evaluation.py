"""Full-ranking evaluation: every user's held-out item ranked against every item of the catalogue.

- Ties never favour the target: rank = #items scored higher + #other items scored equal (0-based),
  so a model that scores everything the same gets rank n_items - 1, i.e. metrics of zero.
- History masking is an explicit option (default off, as UniSRec and RecBole's sequential models do);
  every item of the user's history before the target gets -inf (the whole history, not only the last
  max_len items a model sees), the target itself is never masked.
- Per-user values are kept, so paired significance tests are always possible.
- Vectorised over users (batches) and items (chunks); no per-user Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .config import EvalConfig, to_dict
from .data.batches import eval_batches
from .data.dataset import SeqDataset
from .errors import PrmkdError


@dataclass
class EvalResult:
    split: str
    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]  # metric -> (n_users,) values in user-id order
    ranks: np.ndarray  # (n_users,) 0-based pessimistic rank of each user's target
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"split": self.split, "metrics": self.metrics, "settings": self.settings}


def metrics_from_ranks(ranks: np.ndarray, ks=(5, 10, 20), mrr_k: int = 10) -> dict[str, np.ndarray]:
    """Per-user Recall@k (= Hit@k with one target), NDCG@k and MRR@k from 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    out[f"mrr@{mrr_k}"] = np.where(ranks < mrr_k, 1.0 / (ranks + 1.0), 0.0)
    return out


def history_mask(history: torch.Tensor, targets: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """(B, hi - lo) bool: True where the item is in the user's history (the target excepted)."""
    B = history.shape[0]
    mask = torch.zeros(B, hi - lo, dtype=torch.bool, device=history.device)
    keep = (history >= lo) & (history < hi) & (history != targets[:, None]) & (history > 0)
    rows = torch.arange(B, device=history.device)[:, None].expand_as(history)
    mask[rows[keep], history[keep] - lo] = True
    return mask


def full_histories(ds: SeqDataset, users: np.ndarray, split: str) -> torch.Tensor:
    """(B, L) every item before each user's `split` target (not cut to max_len), right padded with 0."""
    starts = ds.seq_offsets[users]
    lens = ds.seq_offsets[users + 1] - (1 if split == "test" else 2) - starts
    col = np.arange(int(lens.max()))
    valid = col[None, :] < lens[:, None]  # (B, L)
    out = np.zeros(valid.shape, dtype=np.int64)
    out[valid] = ds.seq_items[(starts[:, None] + col[None, :])[valid]]
    return torch.from_numpy(out)


def _count_at_least(scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
    """(B,) int64: how many of each row's scores are >= its target's score. On a CPU numpy counts the comparison's
    True values several times faster than torch's sum over a bool tensor; the counts are the same."""
    ge = scores >= target_scores.to(scores.dtype)  # exact: the target scores are some of these scores
    if ge.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(ge.numpy(), axis=1).astype(np.int64))
    return ge.sum(1)


def _chunk(scores: torch.Tensor, history, targets, lo, hi, mask_history: bool) -> torch.Tensor:
    # a row's sum is NaN or infinite when the row holds a NaN (or an infinity, or overflows): one fast reduction
    # decides, and only such rows are looked at closely
    if not bool(torch.isfinite(scores.sum(1, dtype=torch.float32)).all()) and bool(torch.isnan(scores).any()):
        raise PrmkdError("the model produced NaN scores; evaluation cannot rank them")
    if mask_history:
        scores = scores.masked_fill(history_mask(history, targets, lo, hi), float("-inf"))
    return scores


def rank_batch(model, batch, n_items: int, max_elements: int, mask_history: bool,
               history: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) pessimistic 0-based ranks of the batch's targets among items 1..n_items.

    `history` (B, L): the items masked when `mask_history` (default: the batch's model input)."""
    state = model.eval_state(batch)
    history = batch.items if history is None else history
    B = len(batch.targets)
    step = max(1, min(n_items, max_elements // max(B, 1)))
    chunks = [(lo, min(lo + step, n_items + 1)) for lo in range(1, n_items + 1, step)]
    t = batch.targets
    if len(chunks) == 1:
        s = _chunk(model.score_items(state, 1, n_items + 1), history, t, 1, n_items + 1, mask_history)
        ts = s.gather(1, (t - 1)[:, None])  # (B, 1)
        return _count_at_least(s, ts) - 1  # items scored higher + other items scored equal (one pass)
    # several chunks: first find each target's own score (in its chunk), then count
    ts = torch.empty(B, 1, dtype=torch.float64, device=t.device)  # holds any score dtype exactly
    for lo, hi in chunks:
        inside = (t >= lo) & (t < hi)
        if inside.any():
            s = model.score_items(state, lo, hi)
            ts[inside] = s[inside].gather(1, (t[inside] - lo)[:, None]).to(ts.dtype)
    at_least = torch.zeros(B, dtype=torch.long, device=t.device)
    for lo, hi in chunks:
        s = _chunk(model.score_items(state, lo, hi), history, t, lo, hi, mask_history)
        at_least += _count_at_least(s, ts)
    return at_least - 1


@torch.no_grad()
def evaluate(model, ds: SeqDataset, split: str = "test", cfg: EvalConfig | None = None,
             device: torch.device | str = "cpu", users: np.ndarray | None = None) -> EvalResult:
    """Rank every (selected) user's `split` target against the whole catalogue."""
    cfg = cfg or EvalConfig()
    was_training = model.training
    model.eval()
    if users is None:
        users = np.arange(ds.n_users)
        if 0 < cfg.users < ds.n_users:  # a fixed subset (same for every call), in user order
            users = np.sort(np.random.default_rng(0).choice(ds.n_users, cfg.users, replace=False))
    users = np.asarray(users)
    # users sorted by history length, so batches carry little padding; results go back in user order
    lens = np.minimum(ds.seq_lengths[users] - (1 if split == "test" else 2), ds.max_len)
    order = users[np.argsort(lens, kind="stable")]
    bs = max(1, min(cfg.batch_size, cfg.max_elements // max(ds.n_items, 1)))
    ranks = np.empty(ds.n_users, dtype=np.int64)
    for batch in eval_batches(ds, split, bs, order):
        hist = full_histories(ds, batch.users.numpy(), split).to(device) if cfg.mask_history else None
        r = rank_batch(model, batch.to(device), ds.n_items, cfg.max_elements, cfg.mask_history, hist)
        ranks[batch.users.numpy()] = r.cpu().numpy()
    model.train(was_training)
    ranks = ranks[users]
    per_user = metrics_from_ranks(ranks, cfg.ks, cfg.mrr_k)
    metrics = {k: float(v.mean()) for k, v in per_user.items()}
    settings = {**to_dict(cfg), "split": split, "n_users": int(len(users)), "n_items": ds.n_items,
                "ties": "pessimistic", "candidates": "all items"}
    return EvalResult(split, metrics, per_user, ranks, settings)

