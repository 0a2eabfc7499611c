"""DeepFM (Guo et al., 2017) as a student: the FM of `fm` plus an MLP over the concatenated field embeddings
(shared with the FM part), score = FM(u, i) + MLP([v_user; v_item; v_brand; v_categories]).

The MLP does not factorize, but its first layer does: W1 [u; i] + b1 = W1_u u + (W1_i i + b1). The user part
(N, H) is computed once per instance and the item part (C, H) once per candidate, so scoring N users against C
items costs one broadcast add plus the layers after the first on N x C rows, run in blocks of `pair_block`
pairs (bounded memory, cache-sized matmuls). Full-catalogue evaluation is still N x n_items MLP passes: 37M of
them for the 8.4k users x 4.4k items of Scientific_UniSRec, 1 to 1.5 minutes on one CPU thread.

Distilling DeepFM: in-batch candidate scores are N x C MLP passes whose activations are kept for backward,
about 5 KB per (instance, candidate) pair. N and C both grow with the batch, so the cost is quadratic in it.
Measured on Scientific_UniSRec, one CPU thread (forward + backward of the candidate scores and the own loss):
    train.batch_size   64: N ~ 260,   C ~ 240,  +0.3 GB, ~0.7 s per step
    train.batch_size  128: N ~ 520,   C ~ 450,  +1.2 GB, ~2.5 s per step
    train.batch_size  256: N ~ 1,040, C ~ 810,  +4.2 GB, ~8 s per step
    train.batch_size  512: N ~ 2,050, C ~ 1,420 (~16 GB, extrapolated)
so distil DeepFM with `train.batch_size = 64` on a CPU (the cheapest epoch too); 512 fits a GPU.

Own loss: binary cross-entropy with one sampled negative per instance (RecBole's setting) by default. On
Scientific_UniSRec (embedding 10, lr 1e-2; benchmarks/students_ctr_graph.py) it reached validation NDCG@10
0.0252 after 8 epochs and 0.0304 at its best (epoch 15, counted from 0), while the sampled softmax
(`loss = "softmax"`, the target + 128 shared negatives) was at 0.0147 after 8 epochs and about 30x slower per
epoch on a CPU, so it was stopped there. A full softmax over all items (`softmax_items = 0`) costs N x n_items
MLP passes per step: for a GPU only (untried).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.batches import EvalBatch, SeqBatch
from .base import Encoded, Recommender
from .fields import FieldEmbeddings, item_token_fields, pairwise_interactions
from .general import check_loss, instances, own_loss


@dataclass
class DeepFMConfig:
    embedding_size: int = 10  # RecBole's default
    mlp: list[int] = field(default_factory=lambda: [128, 128, 128])
    dropout: float = 0.2  # before every MLP layer (RecBole's MLPLayers)
    item_fields: list[str] = field(default_factory=lambda: ["brand", "categories"])  # absent ones are skipped
    loss: str = "bce"  # bce | softmax
    num_negatives: int = 1  # sampled negatives per instance (bce)
    softmax_items: int = 128  # softmax over the target + this many shared sampled negatives (0 = all items)
    pair_block: int = 16384  # (user, item) pairs per MLP block when scoring grids (CPU-cache sized; ~1e6 on a GPU)


@dataclass
class UserSide:
    """What DeepFM needs of a user to score it against any item."""

    fm: torch.Tensor  # (N, d) the user's field vector
    bias: torch.Tensor  # (N,) w0 + user linear weight
    deep: torch.Tensor  # (N, H) the user's share of the MLP's first layer, W1_u v_user


@dataclass
class ItemSide:
    fm: torch.Tensor  # (C, d) sum of the item's field vectors
    bias: torch.Tensor  # (C,) item linear weights + within-item pairwise terms
    deep: torch.Tensor  # (C, H) W1_i [v_item; tokens...] + b1


class DeepFM(Recommender):
    Config = DeepFMConfig
    keyed_by = "user"  # scores depend on the user id (and the item), not on a history

    def __init__(self, cfg: DeepFMConfig, n_users: int, n_items: int, tokens: dict[str, torch.Tensor]):
        super().__init__()
        check_loss("deepfm", cfg.loss, ("bce", "softmax"), cfg.num_negatives, cfg.softmax_items)
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        d = cfg.embedding_size
        self.fields = FieldEmbeddings(n_users, n_items, tokens, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.first = nn.Linear((1 + self.fields.n_item_fields) * d, cfg.mlp[0])  # input [v_user; item fields]
        rest: list[nn.Module] = []
        for h_in, h_out in zip(cfg.mlp[:-1], cfg.mlp[1:]):
            rest += [nn.Dropout(cfg.dropout), nn.Linear(h_in, h_out), nn.ReLU()]
        self.rest = nn.Sequential(*rest, nn.Linear(cfg.mlp[-1], 1))  # (.., H) -> (.., 1) deep logit
        for m in [self.first, *self.rest]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    @classmethod
    def from_dataset(cls, cfg: DeepFMConfig, ds) -> "DeepFM":
        return cls(cfg, ds.n_users, ds.n_items, item_token_fields(ds, cfg.item_fields))

    # ---- the two sides
    def user_side(self, users: torch.Tensor) -> UserSide:
        vecs, lin = self.fields.users(users)  # (N, 1, d), (N,)
        d = vecs.shape[-1]
        w_user = self.first.weight[:, :d]  # (H, d): the user's columns of W1
        deep = self.drop(vecs[:, 0]) @ w_user.T  # (N, d) x (d, H)
        return UserSide(vecs[:, 0], self.fields.bias + lin + pairwise_interactions(vecs), deep)

    def item_side(self, items: torch.Tensor) -> ItemSide:
        vecs, lin = self.fields.items(items)  # (C, F_item, d), (C,)
        d = vecs.shape[-1]
        w_item = self.first.weight[:, d:]  # (H, F_item * d): the item fields' columns of W1
        deep = self.drop(vecs.flatten(1)) @ w_item.T + self.first.bias  # (C, F_item*d) x (F_item*d, H)
        return ItemSide(vecs.sum(1), lin + pairwise_interactions(vecs), deep)

    def deep_grid(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """MLP logits of every (user, item) pair from first-layer shares (N, H) and (C, H) -> (N, C)."""
        n, c = len(user), len(item)
        ic = min(c, self.cfg.pair_block)
        uc = max(1, self.cfg.pair_block // ic)
        rows = []
        for u0 in range(0, n, uc):
            cols = []
            for i0 in range(0, c, ic):
                h = torch.relu(user[u0:u0 + uc, None, :] + item[None, i0:i0 + ic, :])  # (n', c', H)
                cols.append(self.rest(h.flatten(0, 1)).view(h.shape[:2]))  # (n' c', H) -> (n', c')
            rows.append(torch.cat(cols, 1))
        return torch.cat(rows, 0)

    def grid_scores(self, u: UserSide, i: ItemSide) -> torch.Tensor:
        """(N, C) DeepFM logits of every user against every item."""
        fm = u.bias[:, None] + i.bias[None, :] + u.fm @ i.fm.T  # (N, d) x (d, C)
        return fm + self.deep_grid(u.deep, i.deep)

    # ---- contract
    def encode(self, batch: SeqBatch) -> Encoded:
        users, targets, ids = instances(batch)
        side = self.user_side(users)
        return Encoded(side.fm, targets, ids, users, side)

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        c = self.cfg
        return own_loss(self, enc, c.loss, c.num_negatives, c.softmax_items)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        """(N, C). DeepFM's inputs are the user's fields only, so every instance (position) of one user has the
        same scores: each distinct user of the batch is scored once (through its first instance's dropout mask)
        and the rows are shared, which makes in-batch KD about as cheap per step as on a sequence model."""
        u: UserSide = enc.extra
        uniq, inv = torch.unique(enc.users, return_inverse=True)
        n = len(inv)
        first = torch.full((len(uniq),), n, device=inv.device).scatter_reduce_(
            0, inv, torch.arange(n, device=inv.device), reduce="amin")
        one = UserSide(u.fm[first], u.bias[first], u.deep[first])
        return self.grid_scores(one, self.item_side(candidates))[inv]

    def pair_scores(self, enc: Encoded, items: torch.Tensor) -> torch.Tensor:
        """(N, m) scores of each instance against its own m items."""
        u: UserSide = enc.extra
        n, m = items.shape
        i = self.item_side(items.reshape(-1))
        fm = u.bias[:, None] + i.bias.view(n, m) + (u.fm[:, None, :] * i.fm.view(n, m, -1)).sum(-1)  # (N, m)
        h = torch.relu(u.deep[:, None, :] + i.deep.view(n, m, -1))  # (N, m, H)
        return fm + self.rest(h)[..., 0]

    def eval_state(self, batch: EvalBatch) -> UserSide:
        return self.user_side(batch.users)

    def score_items(self, state: UserSide, lo: int, hi: int) -> torch.Tensor:
        return self.grid_scores(state, self.item_side(torch.arange(lo, hi, device=state.fm.device)))

    def serving_items(self) -> None:
        return None  # the MLP does not factorize: served whole (serving_scorer)

    def serving_scorer(self) -> nn.Module:
        return DeepFMScorer(self)


class DeepFMScorer(nn.Module):
    """users (B,) -> (B, n_items) DeepFM logits against every item, the item side computed once (buffers), with no
    Python loop over blocks, so that it exports to ONNX with a dynamic batch axis. Memory: B x n_items x H floats."""

    def __init__(self, model: DeepFM):
        super().__init__()
        self.model = model
        with torch.no_grad():
            side = model.item_side(torch.arange(1, model.n_items + 1))
        self.register_buffer("item_fm", side.fm.clone())  # (n, d)
        self.register_buffer("item_bias", side.bias.clone())  # (n,)
        self.register_buffer("item_deep", side.deep.clone())  # (n, H)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        u = self.model.user_side(users)
        fm = u.bias[:, None] + self.item_bias[None, :] + u.fm @ self.item_fm.T  # (B, n)
        h = torch.relu(u.deep[:, None, :] + self.item_deep[None, :, :])  # (B, n, H)
        return fm + self.model.rest(h.flatten(0, 1)).view(h.shape[0], h.shape[1])
