"""FM (Rendle, 2010) as a student: fields user id, item id and the item's metadata tokens (brand, category
words; see `fields`), score = w0 + sum_f w_f + sum_{f<g} <v_f, v_g>.

The user side has one field, so the pairwise sum splits into user-item and within-item terms, and the whole
score is one inner product of augmented vectors:
    user  u~ = [sum of user-field vectors, w0 + user linear + within-user pairs, 1]
    item  i~ = [sum of item-field vectors, 1, item linear + within-item pairs]
    score(u, i) = <u~, i~>
so full-catalogue scoring is a single matmul, and `item_table()` exports FM like any dot-product model.

Defaults, chosen on validation NDCG@10 on Scientific_UniSRec (batch 512, lr 1e-2, patience 5, one seed;
benchmarks/students_ctr_graph.py):
- own loss: softmax cross-entropy over all items, 0.0436 against 0.0338 for RecBole's binary cross-entropy with one
  sampled negative (embedding 10 for both), which stays available as `loss = "bce"` (with `num_negatives`);
- embedding size 64 rather than RecBole's 10: 0.0514 against 0.0436 (test NDCG@10 0.0312 against 0.0275), for
  1.0M parameters instead of 0.17M.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.batches import EvalBatch, SeqBatch
from .base import Encoded, Recommender
from .fields import FieldEmbeddings, item_token_fields, pairwise_interactions
from .general import check_loss, instances, own_loss


@dataclass
class FMConfig:
    embedding_size: int = 64  # RecBole's is 10: 64 gave a better validation NDCG@10 (module docstring)
    item_fields: list[str] = field(default_factory=lambda: ["brand", "categories"])  # absent ones are skipped
    loss: str = "softmax"  # softmax | bce
    num_negatives: int = 1  # sampled negatives per instance (bce)
    softmax_items: int = 0  # softmax over all items (0) or the target + this many shared sampled negatives


class FM(Recommender):
    Config = FMConfig
    keyed_by = "user"  # scores depend on the user id (and the item), not on a history

    def __init__(self, cfg: FMConfig, n_users: int, n_items: int, tokens: dict[str, torch.Tensor]):
        super().__init__()
        check_loss("fm", cfg.loss, ("softmax", "bce"), cfg.num_negatives, cfg.softmax_items)
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        self.fields = FieldEmbeddings(n_users, n_items, tokens, cfg.embedding_size)

    @classmethod
    def from_dataset(cls, cfg: FMConfig, ds) -> "FM":
        return cls(cfg, ds.n_users, ds.n_items, item_token_fields(ds, cfg.item_fields))

    # ---- the two sides of the decomposed score
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """(N,) users -> (N, d + 2) augmented user vectors."""
        vecs, lin = self.fields.users(users)  # (N, 1, d), (N,)
        bias = self.fields.bias + lin + pairwise_interactions(vecs)  # (N,)
        return torch.cat([vecs.sum(1), bias[:, None], torch.ones_like(bias)[:, None]], 1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """(C,) items -> (C, d + 2) augmented item vectors."""
        vecs, lin = self.fields.items(items)  # (C, F_item, d), (C,)
        bias = lin + pairwise_interactions(vecs)  # (C,)
        return torch.cat([vecs.sum(1), torch.ones_like(bias)[:, None], bias[:, None]], 1)

    # ---- contract
    def encode(self, batch: SeqBatch) -> Encoded:
        users, targets, ids = instances(batch)
        return Encoded(self.user_vectors(users), targets, ids, users)

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        c = self.cfg
        return own_loss(self, enc, c.loss, c.num_negatives, c.softmax_items)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return enc.reps @ self.item_vectors(candidates).T  # (N, d+2) x (d+2, C)

    def pair_scores(self, enc: Encoded, items: torch.Tensor) -> torch.Tensor:
        """(N, m) scores of each instance against its own m items."""
        n, m = items.shape
        table = self.item_vectors(items.reshape(-1)).view(n, m, -1)  # (N, m, d+2)
        return (table * enc.reps[:, None, :]).sum(-1)

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        return self.user_vectors(batch.users)  # (B, d+2)

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        items = torch.arange(lo, hi, device=state.device)
        return state @ self.item_vectors(items).T  # (B, d+2) x (d+2, hi-lo)

    def item_table(self) -> torch.Tensor:
        return self.item_vectors(torch.arange(self.n_items + 1, device=self.fields.bias.device))
