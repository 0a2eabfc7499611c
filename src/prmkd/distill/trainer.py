"""PRM-KD training: the ordinary training loop with a loss that reads teacher caches per batch.

L = L_S + lambda * L_KD (Eq. 6). No teacher runs during distillation: each teacher's instance and item
representations are gathered from its cache and multiplied (one small matmul per teacher per batch).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import DistillConfig, to_dict
from ..data.batches import SeqBatch
from ..data.dataset import SeqDataset
from ..errors import ConfigError
from ..teachers.cache import TeacherCache
from .kd import candidate_set, fused_targets, kd_loss


def default_weights(caches: list[TeacherCache], spec) -> torch.Tensor:
    """(K,) teacher weights w_k: from each cache's validation NDCG@10, uniform, or given."""
    K = len(caches)
    if spec == "uniform":
        w = np.ones(K)
    elif spec == "valid_ndcg":
        try:
            w = np.array([c.metrics["valid"]["ndcg@10"] for c in caches], dtype=np.float64)
        except KeyError:
            missing = next(c.folder for c in caches if "ndcg@10" not in c.metrics.get("valid", {}))
            raise ConfigError(f"{missing}: the cache records no validation NDCG@10; set distill.teacher_weights "
                              f"= \"uniform\" or a list of weights") from None
    elif isinstance(spec, list):
        if len(spec) != K or any((not isinstance(x, (int, float))) or x < 0 for x in spec):
            raise ConfigError(f"distill.teacher_weights: expected {K} non-negative numbers, got {spec}")
        w = np.array(spec, dtype=np.float64)
    else:
        raise ConfigError(f"distill.teacher_weights: expected valid_ndcg, uniform or a list, got {spec!r}")
    if w.sum() <= 0:
        raise ConfigError("distill.teacher_weights: the weights sum to zero")
    return torch.tensor(w / w.sum(), dtype=torch.float32)


def make_kd_loss(cfg: DistillConfig, ds: SeqDataset, model, device=None):
    """(loss_fn for `train.fit`, info dict recorded with the results; its `stats` fill during training)."""
    caches = [TeacherCache(p, ds) for p in cfg.teachers]
    w = default_weights(caches, cfg.teacher_weights)
    info = {**to_dict(cfg), "teacher_names": [c.name for c in caches],
            "teacher_fingerprints": [c.manifest.get("teacher_fingerprint") for c in caches],
            "weights": [round(float(x), 6) for x in w],
            "stats": {"batches": 0, "instances": 0, "rule_fired": 0,
                      "dropped": {c.name: 0 for c in caches}, "kd_loss_sum": 0.0, "own_loss_sum": 0.0}}
    placed = {"device": None}

    def loss_fn(model, batch: SeqBatch):
        dev = batch.items.device
        if placed["device"] != dev:
            for c in caches:
                c.to(dev)
            placed["device"] = dev
        enc = model.encode(batch)
        own = model.own_loss(enc)
        keep = enc.instance_ids >= 0
        ids, targets = enc.instance_ids[keep], enc.targets[keep]
        cands, _ = candidate_set(targets, cfg.candidates, ds.n_items, cfg.unique_candidates)
        with torch.no_grad():
            t_logits = torch.empty(len(caches), len(ids), len(cands), device=dev)  # (K, N, C)
            for k, c in enumerate(caches):
                c.logits("train", ids, cands, out=t_logits[k])
            q, weights = fused_targets(t_logits, w.to(dev), cfg.temperature, cfg.epsilon, cfg.normalization,
                                       cfg.fusion, inplace=True)
        s_logits = model.candidate_scores(enc, cands)[keep] / cfg.student_temperature  # (N, C)
        kd = kd_loss(s_logits, q, cfg.kl)
        loss = own + cfg.kd_weight * kd
        _update_stats(info["stats"], weights, w.to(dev), caches, own, kd)
        return loss, {"loss": loss.item(), "own": own.item(), "kd": kd.item()}

    return loss_fn, info


def _update_stats(st: dict, weights: torch.Tensor, w: torch.Tensor, caches, own, kd) -> None:
    K, N = weights.shape
    st["batches"] += 1
    st["instances"] += N
    st["own_loss_sum"] += own.item()
    st["kd_loss_sum"] += kd.item()
    dropped = (weights == 0) & (w[:, None] > 0)  # (K, N) teacher excluded by the rule
    st["rule_fired"] += int(dropped.any(0).sum())
    for k, c in enumerate(caches):
        st["dropped"][c.name] += int(dropped[k].sum())
