"""The model contract shared by every student, baseline and teacher.

A model turns a `SeqBatch` into its training instances (`encode`), has its own loss on them (`own_loss`),
scores them against given candidate items (`candidate_scores`, what distillation uses), and scores users
against item id ranges of the whole catalogue (`eval_state` + `score_items`, what evaluation uses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.batches import EvalBatch, SeqBatch


@dataclass
class Encoded:
    """A batch's N training instances as a model sees them."""

    reps: torch.Tensor  # (N, d) instance representations (or model-specific state rows)
    targets: torch.Tensor  # (N,) positive item of each instance
    instance_ids: torch.Tensor  # (N,) global training-instance id, -1 if not a cache-keyed instance
    users: torch.Tensor  # (N,)
    extra: Any = None
    cache: dict = field(default_factory=dict)  # tensors computed once per step (e.g. full logits)


class _Block(torch.autograd.Function):
    """logits[rows][:, cols] whose gradient is a sparse (N, V) tensor of the block's entries, which autograd adds
    into the full logits' dense gradient in place: no zero-filled (N, V) tensor per step, and the same sums
    (each entry is added once), so the same bits as the dense gather."""

    @staticmethod
    def forward(ctx, logits, rows, cols):
        ctx.shape = logits.shape
        ctx.save_for_backward(rows, cols)
        return logits[rows[:, None], cols[None, :]]  # never the (len(rows), V) rows whole

    @staticmethod
    def backward(ctx, grad):
        rows, cols = ctx.saved_tensors
        index = torch.stack([rows[:, None].expand(-1, len(cols)).reshape(-1),
                             cols[None, :].expand(len(rows), -1).reshape(-1)])
        with torch.sparse.check_sparse_tensor_invariants(False):
            g = torch.sparse_coo_tensor(index, grad.reshape(-1), ctx.shape, is_coalesced=True)
        return g, None, None


def logits_block(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(len(rows), len(cols)) = logits[rows][:, cols], values and gradients. For a block of at most an eighth of
    the logits with strictly increasing `rows` and `cols` (what capped distillation passes: sorted kept
    instances, `torch.unique` candidates) the gradient is sparse (`_Block`); otherwise the plain gather, whose
    backward fills an (N, V) tensor of zeros (cheaper than a sparse index when the block is most of the logits)."""
    small = len(rows) * len(cols) * 8 <= logits.numel()  # its index costs 16 bytes an entry: worth it when small
    if small and logits.requires_grad and torch.is_grad_enabled() and bool((rows[1:] > rows[:-1]).all()) \
            and bool((cols[1:] > cols[:-1]).all()):
        return _Block.apply(logits, rows, cols)
    return logits[rows].index_select(1, cols)


class Recommender(nn.Module):
    """Base class; subclasses implement encode / own_loss / candidate_scores / eval_state / score_items."""

    n_items: int
    keyed_by = "history"  # what a served model reads of a user: "history" (its items) or "user" (the trained user id)
    gathers_logits = False  # candidate_scores is gathered_scores: a gather from enc.cache["logits"] when present
    ddp_find_unused = False  # data-parallel training: some parameters get no gradient in a step (DDP must look)

    def encode(self, batch: SeqBatch) -> Encoded:
        raise NotImplementedError

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        raise NotImplementedError

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        """(N, C) scores of each instance against candidate item ids (C,)."""
        raise NotImplementedError

    def candidate_scores_of(self, enc: Encoded, candidates: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), C): `candidate_scores(enc, candidates)[rows]`, the same values and gradients. A model whose
        candidate scores are a gather from the full logits its own loss computed this step (`gathers_logits`)
        gathers those rows only, so a few rows never cost an N x C block."""
        if self.gathers_logits:
            logits = enc.cache.get("logits")
            if logits is not None:
                return logits_block(logits, rows, candidates - 1)
            # no full logits this step (a sampled own loss): a dot-product model scores the kept rows alone
            return self.candidate_scores(Encoded(enc.reps[rows], enc.targets[rows], enc.instance_ids[rows],
                                                 enc.users[rows]), candidates)
        return self.candidate_scores(enc, candidates)[rows]

    def eval_state(self, batch: EvalBatch) -> Any:
        raise NotImplementedError

    def score_items(self, state: Any, lo: int, hi: int) -> torch.Tensor:
        """(B, hi - lo) scores of the users in `state` against item ids lo..hi-1."""
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        """(n_items + 1, d) item representations, for models whose scores are instance . item dot products
        (what a teacher cache stores). Models that do not factorize this way do not implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not score by a dot product with an item table")

    # ---- serving (prmkd.serving.export): a score that is an inner product is served through an index
    def serving_items(self) -> torch.Tensor | None:
        """(n_items, d') rows of items 1..n_items with score_items(state, 1, n_items + 1) ==
        serving_user(state) @ serving_items().T (biases folded in), or None when the score is not an inner product."""
        try:
            return self.item_table()[1:]
        except NotImplementedError:
            return None

    def serving_user(self, state) -> torch.Tensor:
        """(B, d') user vectors matching `serving_items` (the eval state itself unless a bias is folded in)."""
        return state

    def serving_scorer(self) -> nn.Module:
        """A module users (B,) -> (B, n_items) scores, for models whose score is not an inner product (exported
        whole, ranked exactly)."""
        raise NotImplementedError(f"{type(self).__name__} scores by an inner product: use serving_items")

    # ---- derived
    def loss(self, batch: SeqBatch) -> torch.Tensor:
        return self.own_loss(self.encode(batch))

    def full_scores(self, batch: EvalBatch) -> torch.Tensor:
        """(B, n_items + 1) scores; column 0 (padding) is -inf."""
        s = self.score_items(self.eval_state(batch), 1, self.n_items + 1)
        return torch.cat([torch.full_like(s[:, :1], float("-inf")), s], dim=1)


def flatten_positions(hidden: torch.Tensor, batch: SeqBatch) -> Encoded:
    """Keep the counted positions of a (B, T, d) sequence output as (N, d) instances."""
    keep = batch.counted  # (B, T)
    users = batch.users[:, None].expand_as(keep)
    return Encoded(hidden[keep], batch.targets[keep], batch.instance_ids[keep], users[keep])


def full_logits(enc: Encoded, item_weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, n_items) scores of every instance against every real item (padding excluded), computed once per
    step and kept in `enc.cache`, so distillation's candidate scores are a gather from it, not a new matmul."""
    if "logits" not in enc.cache:
        logits = enc.reps @ item_weight[1:].T  # (N, d) x (d, n_items)
        enc.cache["logits"] = logits if bias is None else logits + bias[1:]
    return enc.cache["logits"]


def full_softmax_ce(enc: Encoded, item_weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the instances over every real item."""
    return nn.functional.cross_entropy(full_logits(enc, item_weight, bias), enc.targets - 1)


def draws_sample(negatives: int, n_items: int) -> bool:
    """Whether `negatives` uniform draws make a sampled softmax over `n_items` real items: with as many draws as
    an instance has other items, the exact full softmax costs no more than the estimate, and is used instead."""
    return 0 < negatives < n_items - 1


def sampled_ce(pos: torch.Tensor, neg_scores: torch.Tensor, neg: torch.Tensor, targets: torch.Tensor
               ) -> torch.Tensor:
    """Cross-entropy of each instance's target score `pos` (N, 1) against the drawn items' scores (N, K), already
    raised by their log(V / K) correction; a draw `neg` equal to an instance's own target is left out of its row."""
    neg_scores = neg_scores.masked_fill(neg[None, :] == targets[:, None], float("-inf"))
    return nn.functional.cross_entropy(torch.cat([pos, neg_scores], dim=1), torch.zeros_like(targets))


def sampled_softmax_ce(enc: Encoded, item_weight: torch.Tensor, bias: torch.Tensor | None, negatives: int
                       ) -> torch.Tensor:
    """Cross-entropy of each instance's target against `negatives` items drawn uniformly from the catalogue (one
    draw shared by the batch, from torch's RNG: seeded and resumable), for catalogues too large to score whole.
    A draw that hits an instance's own target is left out of that instance's row, and each negative's logit
    carries log(V / K), so the sampled sum is an unbiased estimate of the full softmax's sum over the other items.
    A step costs N x K products, not N x V."""
    v = item_weight.shape[0] - 1  # real items 1..v
    neg = torch.randint(1, v + 1, (negatives,), device=enc.reps.device)
    w = item_weight.index_select(0, neg)
    pos = (enc.reps * item_weight.index_select(0, enc.targets)).sum(-1, keepdim=True)  # (N, 1)
    s = enc.reps @ w.T + math.log(v / negatives)  # (N, K)
    if bias is not None:
        pos = pos + bias.index_select(0, enc.targets)[:, None]
        s = s + bias.index_select(0, neg)
    return sampled_ce(pos, s, neg, enc.targets)


def softmax_ce(enc: Encoded, item_weight: torch.Tensor, bias: torch.Tensor | None = None, negatives: int = 0
               ) -> torch.Tensor:
    """A sequential model's own loss: the full softmax over every real item, or, with `negatives` > 0 and below
    the catalogue's size, the sampled one (`sampled_softmax_ce`)."""
    if draws_sample(negatives, item_weight.shape[0] - 1):
        return sampled_softmax_ce(enc, item_weight, bias, negatives)
    return full_softmax_ce(enc, item_weight, bias)


def gathered_scores(enc: Encoded, candidates: torch.Tensor, item_weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C) candidate scores of a dot-product model: a gather from the full logits when this step already
    computed them (the own loss did), else the (N, d) x (d, C) product."""
    # index_select, not x[:, idx]: its backward adds into place (index_add) instead of the sort-based deterministic
    # index_put, and for distinct candidates (the default) the gradients are bit-identical
    if "logits" in enc.cache:
        return enc.cache["logits"].index_select(1, candidates - 1)
    scores = enc.reps @ item_weight.index_select(0, candidates).T
    return scores if bias is None else scores + bias.index_select(0, candidates)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) for linear and embedding weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
