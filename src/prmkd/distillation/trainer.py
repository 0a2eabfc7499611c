"""PRM-KD training: the ordinary training loop with a loss that reads teacher caches per batch.

L = L_S + lambda * L_KD (Eq. 6). No teacher runs during distillation: each teacher's instance and item
representations are gathered from its cache and multiplied (one small matmul per teacher per batch).
`KDLoss.stats` counts, over every session of a (resumed) run, the instances seen, how often the consistency rule
fired and which teacher it dropped; they are accumulated on the device (no synchronisation per step) and are part
of the run's checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import parallel
from ..config import DistillConfig, to_dict
from ..data.batches import SeqBatch
from ..data.dataset import SeqDataset
from ..errors import ConfigError
from ..teachers.cache import TeacherCache
from ..training import Loss
from .kd import candidate_set, fused_targets, kd_loss


def default_weights(caches: list[TeacherCache], spec) -> torch.Tensor:
    """(K,) teacher weights w_k: from each cache's validation NDCG@10, uniform, or given."""
    K = len(caches)
    if spec == "uniform":
        w = np.ones(K)
    elif spec == "valid_ndcg":
        try:
            w = np.array([c.metrics["valid"]["ndcg@10"] for c in caches], dtype=np.float64)
        except (KeyError, TypeError):
            missing = next(c.folder for c in caches if "ndcg@10" not in (c.metrics.get("valid") or {}))
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


def teacher_labels(names: list[str]) -> list[str]:
    """One label per teacher: its name, with `#k` (its position) added where two teachers share a name."""
    return [n if names.count(n) == 1 else f"{n}#{k}" for k, n in enumerate(names)]


class KDLoss(Loss):
    """The PRM-KD objective of one run; `info` is recorded with its results."""

    def __init__(self, cfg: DistillConfig, ds: SeqDataset):
        self.cfg, self.ds = cfg, ds
        self.caches = [TeacherCache(p, ds) for p in cfg.teachers]
        self.w = default_weights(self.caches, cfg.teacher_weights)
        self.labels = teacher_labels([c.name for c in self.caches])
        self.info = {**to_dict(cfg), "teacher_names": [c.name for c in self.caches],
                     "teacher_fingerprints": [c.manifest.get("teacher_fingerprint") for c in self.caches],
                     "weights": [round(float(x), 6) for x in self.w]}
        self.device = None
        self._acc = torch.zeros(5 + len(self.caches), dtype=torch.float64)  # see `state`

    def _place(self, dev) -> None:
        if self.device != dev:
            for c in self.caches:
                c.to(dev)
            self._acc = self._acc.to(dev)
            self.w_dev = self.w.to(dev)
            self.device = dev

    def __call__(self, model, batch: SeqBatch) -> torch.Tensor:
        cfg = self.cfg
        dev = batch.items.device
        self._place(dev)
        enc = model.encode(batch)
        own = model.own_loss(enc)
        keep = self.kd_instances(enc)
        ids, targets = enc.instance_ids[keep], enc.targets[keep]
        # with several ranks, the in-batch candidates are the whole global batch's targets, as in one process
        cands, _ = candidate_set(parallel.all_cat(targets), cfg.candidates, self.ds.n_items, cfg.unique_candidates)
        with torch.no_grad():
            t_logits = torch.empty(len(self.caches), len(ids), len(cands), device=dev)  # (K, N, C)
            for k, c in enumerate(self.caches):
                c.logits("train", ids, cands, out=t_logits[k])
            q, weights = fused_targets(t_logits, self.w_dev, cfg.temperature, cfg.epsilon, cfg.normalization,
                                       cfg.fusion, inplace=True)
        # only the kept rows are scored: candidate_scores(enc, cands)[keep], the same values and gradients
        s_logits = model.candidate_scores_of(enc, cands, keep) / cfg.student_temperature  # (N, C)
        kd = kd_loss(s_logits, q, cfg.kl)
        self._count(weights, own, kd)
        return own + cfg.kd_weight * kd

    def kd_instances(self, enc) -> torch.Tensor:
        """(N,) positions of the batch's instances that carry L_KD: those the caches have rows for, at most this
        rank's share of `max_instances` of them (a random subset, drawn from torch's RNG: resumable)."""
        cfg = self.cfg
        keep = (enc.instance_ids >= 0).nonzero()[:, 0]
        cap = -(-cfg.max_instances // parallel.env().world) if cfg.max_instances else 0
        if cap and len(keep) > cap:
            keep = keep[torch.randperm(len(keep), device=keep.device)[:cap].sort().values]
        return keep

    @torch.no_grad()
    def _count(self, weights: torch.Tensor, own: torch.Tensor, kd: torch.Tensor) -> None:
        K, N = weights.shape
        dropped = (weights == 0) & (self.w_dev[:, None] > 0)  # (K, N) teacher excluded by the rule
        row = torch.cat([torch.stack([torch.ones((), device=self.device, dtype=torch.float64),
                                      torch.tensor(float(N), device=self.device, dtype=torch.float64),
                                      dropped.any(0).sum().double(), own.detach().double(), kd.detach().double()]),
                         dropped.sum(1).double()])
        self._acc += row

    def state(self) -> dict:
        """{"stats": {batches, instances, rule_fired, dropped: {teacher: n}, own_loss_sum, kd_loss_sum}}."""
        a = self._acc.cpu().tolist()
        return {"stats": {"batches": int(a[0]), "instances": int(a[1]), "rule_fired": int(a[2]),
                          "dropped": {lab: int(x) for lab, x in zip(self.labels, a[5:])},
                          "own_loss_sum": a[3], "kd_loss_sum": a[4]}}

    def load_state(self, state: dict) -> None:
        st = state["stats"]
        vals = [st["batches"], st["instances"], st["rule_fired"], st["own_loss_sum"], st["kd_loss_sum"],
                *(st["dropped"][lab] for lab in self.labels)]
        self._acc = torch.tensor(vals, dtype=torch.float64, device=self._acc.device)
