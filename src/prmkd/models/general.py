"""Shared pieces of the non-sequential students (FM, DeepFM, LightGCN).

They read the standard `SeqBatch` but ignore histories: each counted position is one (user, target item)
instance. Their own losses are pointwise BCE with sampled negatives, pairwise BPR with sampled negatives, or
softmax cross-entropy over all items (or over the target plus shared sampled negatives).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.nn import functional as F

from ..data.batches import SeqBatch
from ..errors import ConfigError
from .base import Encoded

LOSSES = ("bce", "bpr", "softmax")


def instances(batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(users, targets, instance ids), each (N,), of the batch's counted positions."""
    keep = batch.counted  # (B, T)
    users = batch.users[:, None].expand_as(keep)  # (B, T)
    return users[keep], batch.targets[keep], batch.instance_ids[keep]


def check_loss(model: str, loss: str, allowed: tuple[str, ...], num_negatives: int, softmax_items: int) -> None:
    """Raise a ConfigError naming the option when a loss setting is not usable."""
    if loss not in allowed:
        raise ConfigError(f"model.loss: {model} supports {', '.join(allowed)}, got '{loss}'")
    if num_negatives < 1:
        raise ConfigError(f"model.num_negatives must be at least 1, got {num_negatives}")
    if softmax_items < 0:
        raise ConfigError(f"model.softmax_items must be 0 (all items) or positive, got {softmax_items}")


def sample_negatives(targets: torch.Tensor, n_items: int, k: int) -> torch.Tensor:
    """(N, k) items drawn uniformly from 1..n_items except each row's own target (torch's global RNG)."""
    draw = torch.randint(1, n_items, (len(targets), k), device=targets.device)  # 1..n_items-1
    return draw + (draw >= targets[:, None]).long()  # skip the target: uniform over the n_items-1 others


class PairScorer(Protocol):
    n_items: int

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor: ...

    def pair_scores(self, enc: Encoded, items: torch.Tensor) -> torch.Tensor: ...


def own_loss(model: PairScorer, enc: Encoded, loss: str, num_negatives: int = 1, softmax_items: int = 0,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
    """The student's own loss on its N instances.

    bce: binary cross-entropy, the target labelled 1 and `num_negatives` sampled items per instance labelled 0,
         averaged over all (1 + k) N pairs (RecBole's FM / DeepFM with negative sampling).
    bpr: -log sigmoid(s_pos - s_neg) with `num_negatives` sampled items per instance (RecBole's LightGCN: 1).
    softmax: cross-entropy over all items (softmax_items = 0), or over the target plus `softmax_items` uniform
         negatives shared by the batch (a sampled softmax, for models whose every score costs an MLP pass).
    `negatives` (N, k) replaces the sampled negatives of bce / bpr (a caller that regularises them samples them).
    """
    t = enc.targets
    if loss == "softmax" and softmax_items == 0:
        logits = model.candidate_scores(enc, torch.arange(1, model.n_items + 1, device=t.device))  # (N, n_items)
        return F.cross_entropy(logits, t - 1)
    if loss == "softmax":
        negs = torch.randint(1, model.n_items + 1, (softmax_items,), device=t.device)  # (k,) shared
        neg = model.candidate_scores(enc, negs).masked_fill(negs[None, :] == t[:, None], float("-inf"))  # (N, k)
        pos = model.pair_scores(enc, t[:, None])  # (N, 1)
        return F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros_like(t))
    negs = sample_negatives(t, model.n_items, num_negatives) if negatives is None else negatives  # (N, k)
    s = model.pair_scores(enc, torch.cat([t[:, None], negs], 1))  # (N, 1 + k)
    if loss == "bpr":
        return -F.logsigmoid(s[:, :1] - s[:, 1:]).mean()
    labels = torch.zeros_like(s)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(s, labels)
