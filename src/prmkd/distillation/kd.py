"""PRM-KD as pure tensor functions (paper section 3.2-3.4), each testable alone.

Shapes: K teachers, N instances, C candidate items.
  candidate_set      in-batch candidates (the batch's target items) or all items ("w/o IN")
  teacher_probs      Eq. 1: s_ijk = softmax_j(logit_ijk / tau)
  normalize          s~ from s, comparable across teachers and non-negative (a named option)
  consistency        Eq. 2: conf_ik = sum_{k' != k} sum_j (s~_ijk - s~_ijk')^2
  adjusted_weights   the epsilon rule: keep w_k if every conf_ik < epsilon, else drop the teacher with the
                     highest conf_ik for instance i and share its weight equally among the others
  fuse               Eq. 3: s^_ij = sum_k w^_ik s~_ijk
  target_distribution  q_ij = s^_ij / sum_j s^_ij
  kd_loss            Eq. 5: sum_j p log(p / q) (reverse KL, as the paper writes it) or forward KL
Eq. 6 (L = L_S + lambda L_KD) is assembled in `distill.trainer`.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

Q_FLOOR = 1e-12  # q is clamped here inside log q, so a zero target probability never gives an infinite loss


def candidate_set(targets: torch.Tensor, mode: str = "in_batch", n_items: int | None = None,
                  unique: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(C,) candidate item ids and (N,) the column of each instance's own target among them.

    in_batch: the batch's target items (its own positive + the other instances' positives), distinct
    when `unique` (an item that is the target of several instances is one candidate), else one column
    per instance. all: every item 1..n_items (the "w/o IN" ablation).
    """
    if mode == "all":
        if n_items is None:
            raise ValueError("candidate_set(mode='all') needs n_items")
        return torch.arange(1, n_items + 1, device=targets.device), targets - 1
    if mode != "in_batch":
        raise ValueError(f"unknown candidate mode '{mode}' (expected in_batch or all)")
    if unique:
        cands, pos = torch.unique(targets, return_inverse=True)
        return cands, pos
    return targets, torch.arange(len(targets), device=targets.device)


def teacher_probs(logits: torch.Tensor, tau: float, inplace: bool = False) -> torch.Tensor:
    """Eq. 1: (..., C) teacher logits -> softmax over the candidates at temperature tau (`inplace`: computed
    in the logits' own memory, which saves two (K, N, C) passes and allocations per step)."""
    if not inplace:
        return torch.softmax(logits / tau, dim=-1)
    x = logits.mul_(1.0 / tau)
    x.sub_(x.amax(-1, keepdim=True)).exp_()
    return x.div_(x.sum(-1, keepdim=True))


def normalize(s: torch.Tensor, method: str = "softmax") -> torch.Tensor:
    """(K, N, C) teacher distributions -> normalized scores s~ (non-negative, comparable across teachers).

    softmax: s itself (already non-negative and summing to one per instance for every teacher);
    minmax: per teacher and instance, rescaled to [0, 1];
    rank:   per teacher and instance, (C - 1 - rank) / (C - 1), the candidate's rank position in [0, 1].
    """
    if method == "softmax":
        return s
    if method == "minmax":
        lo = s.amin(-1, keepdim=True)
        hi = s.amax(-1, keepdim=True)
        return (s - lo) / (hi - lo).clamp(min=1e-12)
    if method == "rank":
        C = s.shape[-1]
        ranks = s.argsort(-1, descending=True).argsort(-1).to(s.dtype)  # 0 = best
        return (C - 1 - ranks) / max(C - 1, 1)
    raise ValueError(f"unknown normalization '{method}' (expected softmax, minmax or rank)")


def consistency(s_tilde: torch.Tensor) -> torch.Tensor:
    """Eq. 2: (K, N, C) -> (K, N) conf_ik = sum_{k' != k} sum_j (s~_ijk - s~_ijk')^2 (high = disagrees)."""
    # ||a_k - a_k'||^2 = G_kk + G_k'k' - 2 G_kk' with G the (K, K) Gram matrix of each instance's teacher rows:
    # one batched product over the data (the k' = k term is 0)
    K = s_tilde.shape[0]
    per = s_tilde.transpose(0, 1)  # (N, K, C)
    gram = torch.bmm(per, per.transpose(1, 2))  # (N, K, K)
    sq = torch.diagonal(gram, dim1=1, dim2=2)  # (N, K)
    return (K * sq - 2 * gram.sum(2) + sq.sum(1, keepdim=True)).T.clamp(min=0)


def adjusted_weights(conf: torch.Tensor, w: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The consistency rule: (K, N) conf, (K,) default weights -> (K, N) weights w^ (columns sum to 1).

    If every conf_ik < epsilon, instance i keeps the default weights. Otherwise the teacher with the
    highest conf_ik is excluded and its weight is shared equally among the other K - 1 teachers.
    With fewer than three teachers conf is symmetric (no teacher can be singled out as the one that
    disagrees), so the default weights are always kept.
    """
    K, N = conf.shape
    w = (w / w.sum()).to(conf.dtype)
    out = w[:, None].expand(K, N).clone()
    if K < 3:
        return out
    drop = conf.argmax(0)  # (N,) the least consistent teacher
    act = (conf >= epsilon).any(0)  # (N,) instances where the rule fires
    dropped_w = w[drop]  # (N,)
    out = out + (dropped_w / (K - 1))[None, :]
    out[drop, torch.arange(N, device=conf.device)] = 0.0
    return torch.where(act[None, :], out, w[:, None].expand(K, N))


def fuse(s_tilde: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Eq. 3: (K, N, C), (K, N) -> (N, C) s^_ij = sum_k w^_ik s~_ijk."""
    return torch.einsum("kn,knc->nc", weights.to(s_tilde.dtype), s_tilde)


def target_distribution(s_hat: torch.Tensor) -> torch.Tensor:
    """q_ij = s^_ij / sum_j s^_ij (N, C)."""
    return s_hat / s_hat.sum(-1, keepdim=True).clamp(min=1e-30)


def kd_loss(student_logits: torch.Tensor, q: torch.Tensor, direction: str = "reverse") -> torch.Tensor:
    """Eq. 5, averaged over instances. p = softmax(student_logits) over the same candidates.

    reverse: sum_j p log(p / q)  (as the paper writes it);  forward: sum_j q log(q / p).
    The gradient with respect to the logits is written out (`_KL`): for instance i, reverse
    p_ij (log p_ij - log q_ij - KL_i), forward p_ij - q_ij, each / N; one fused pass instead of autograd's chain of
    softmax, log, product and sum over the (N, C) scores.
    """
    if direction not in ("reverse", "forward"):
        raise ValueError(f"unknown KL direction '{direction}' (expected reverse or forward)")
    return _KL.apply(student_logits, q, direction == "reverse")


class _KL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, q: torch.Tensor, reverse: bool) -> torch.Tensor:
        log_p = F.log_softmax(z, dim=-1)  # (N, C)
        log_q = q.clamp(min=Q_FLOOR).log()
        p = log_p.exp()
        if reverse:
            diff = log_p.sub_(log_q)  # log p - log q, in place (log_p is not needed again)
            kl = (p * diff).sum(-1)  # (N,)
            ctx.save_for_backward(p, diff, kl)
        else:
            kl = (q * (log_q - log_p)).sum(-1)
            ctx.save_for_backward(p, q)
        ctx.reverse = reverse
        return kl.mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n = None
        if ctx.reverse:
            p, diff, kl = ctx.saved_tensors
            n = p.shape[0]
            g = p * (diff - kl[:, None])  # p (log p - log q - KL)
        else:
            p, q = ctx.saved_tensors
            n = p.shape[0]
            g = p - q
        return g.mul_(grad / n), None, None


def fused_targets(teacher_logits: torch.Tensor, w: torch.Tensor, tau: float, epsilon: float,
                  normalization: str = "softmax", fusion: str = "consistency",
                  inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-4 end to end: (K, N, C) teacher logits -> (q (N, C), weights used (K, N)). `inplace`: the logits'
    memory may be overwritten (the distillation loop owns that buffer)."""
    s = teacher_probs(teacher_logits, tau, inplace)
    s_tilde = normalize(s, normalization)
    if fusion == "consistency" and s.shape[0] < 3:  # conf is symmetric: the default weights are kept (no need
        fusion = "weighted"  # to compute it)
    if fusion == "weighted":
        K, N = s.shape[:2]
        weights = (w / w.sum()).to(s.dtype)[:, None].expand(K, N)
    elif fusion == "consistency":
        weights = adjusted_weights(consistency(s_tilde), w, epsilon)
    elif fusion == "average":  # the "w/o WA" ablation: plain average of the teachers
        K, N = s.shape[:2]
        weights = torch.full((K, N), 1.0 / K, dtype=s.dtype, device=s.device)
    else:
        raise ValueError(f"unknown fusion '{fusion}' (expected consistency or average)")
    return target_distribution(fuse(s_tilde, weights)), weights
