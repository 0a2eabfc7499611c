"""LightGCN (He et al., 2020) as a student: user and item embeddings propagated over the user-item graph of
the training interactions, E_{k+1} = D^-1/2 A D^-1/2 E_k, final embedding = mean of E_0..E_K, score = dot product.

The graph holds the training split only (`ds.train_interactions()`): validation and test items never enter it.
Repeated interactions count once. Own loss: BPR with one sampled negative per instance plus an L2 penalty on the
layer-0 embeddings involved (RecBole's defaults: 2 layers, 64-d, reg 1e-5); `loss = "softmax"` is cross-entropy
over all items. On Scientific_UniSRec (lr 1e-2, one seed; benchmarks/students_ctr_graph.py) the softmax gave a
somewhat better validation NDCG@10 (0.0570 against 0.0529; test 0.0385 against 0.0368): BPR stays the default, as
in RecBole and the paper's LightGCN baseline.

Evaluation propagates once and caches the result: the cache is used only in eval mode without autograd, is
dropped whenever the model changes mode, and is keyed by every parameter's version counter and storage, so an
optimizer step, `load_state_dict` or a device move can never be served stale embeddings. (Writing through
`param.data` bypasses version counters; call `model.train()` / `model.eval()` afterwards.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.batches import EvalBatch, SeqBatch
from .base import Encoded, Recommender
from .general import check_loss, instances, own_loss, sample_negatives


@dataclass
class LightGCNConfig:
    embedding_size: int = 64
    layers: int = 2
    reg_weight: float = 1e-5  # L2 on the layer-0 embeddings of each batch's users, positives and negatives
    loss: str = "bpr"  # bpr | softmax
    num_negatives: int = 1  # sampled negatives per instance (bpr)


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """Sparse (U + I, U + I) matrix D^-1/2 A D^-1/2 of the bipartite graph with an edge per distinct
    (user, item) pair. Node u < U is user u; node U + i - 1 is item i (1..n_items)."""
    n = n_users + n_items
    pairs = np.unique(np.stack([users, items - 1 + n_users]), axis=1)  # (2, E) distinct edges
    rows = np.concatenate([pairs[0], pairs[1]])  # both directions
    cols = np.concatenate([pairs[1], pairs[0]])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1.0)), 0.0)
    vals = inv_sqrt[rows] * inv_sqrt[cols]
    idx = torch.from_numpy(np.stack([rows, cols])).long()
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals).float(), (n, n),
                                   check_invariants=True).coalesce()


class LightGCN(Recommender):
    Config = LightGCNConfig
    keyed_by = "user"  # scores depend on the user id (and the item), not on a history

    def __init__(self, cfg: LightGCNConfig, n_users: int, n_items: int, adjacency: torch.Tensor):
        super().__init__()
        check_loss("lightgcn", cfg.loss, ("bpr", "softmax"), cfg.num_negatives, 0)
        self.cfg, self.n_users, self.n_items = cfg, n_users, n_items
        self.user_emb = nn.Embedding(n_users, cfg.embedding_size)
        self.item_emb = nn.Embedding(n_items, cfg.embedding_size)  # row i - 1 is item i
        nn.init.xavier_uniform_(self.user_emb.weight)
        nn.init.xavier_uniform_(self.item_emb.weight)
        self.register_buffer("adjacency", adjacency, persistent=False)  # rebuilt from the dataset
        self._cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def from_dataset(cls, cfg: LightGCNConfig, ds) -> "LightGCN":
        users, items = ds.train_interactions()
        return cls(cfg, ds.n_users, ds.n_items, normalized_adjacency(ds.n_users, ds.n_items, users, items))

    # ---- propagation
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user (U, d) and item (n_items + 1, d) embeddings; item row 0 (padding) is zero."""
        e = torch.cat([self.user_emb.weight, self.item_emb.weight])  # (U + I, d)
        layers = [e]
        for _ in range(self.cfg.layers):
            e = torch.sparse.mm(self.adjacency, e)  # (U + I, U + I) x (U + I, d)
            layers.append(e)
        final = torch.stack(layers).mean(0)  # (K + 1, U + I, d) -> (U + I, d)
        users, items = final[:self.n_users], final[self.n_users:]
        return users, torch.cat([items.new_zeros(1, items.shape[1]), items])

    def _state_key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.device) for p in self.parameters())

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`propagate()`, cached while in eval mode without autograd and the parameters unchanged."""
        if self.training or torch.is_grad_enabled():
            return self.propagate()
        key = self._state_key()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.propagate())
        return self._cache[1]

    def train(self, mode: bool = True) -> "LightGCN":
        self._cache = None
        return super().train(mode)

    # ---- contract
    def encode(self, batch: SeqBatch) -> Encoded:
        users, targets, ids = instances(batch)
        user_table, item_table = self.tables()
        return Encoded(user_table[users], targets, ids, users, item_table)

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        c = self.cfg
        if c.loss == "softmax":
            return own_loss(self, enc, "softmax")
        negs = sample_negatives(enc.targets, self.n_items, c.num_negatives)  # (N, k)
        loss = own_loss(self, enc, "bpr", negatives=negs)
        return loss + c.reg_weight * self.l2_penalty(enc.users, torch.cat([enc.targets[:, None], negs], 1))

    def l2_penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Squared L2 norm of the layer-0 embeddings of (N,) users and (N, m) items, per instance."""
        sq = self.user_emb(users).pow(2).sum() + self.item_emb(items - 1).pow(2).sum()
        return sq / len(users)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return enc.reps @ enc.extra.index_select(0, candidates).T  # (N, d) x (d, C)

    def pair_scores(self, enc: Encoded, items: torch.Tensor) -> torch.Tensor:
        return (enc.extra[items] * enc.reps[:, None, :]).sum(-1)  # (N, m, d) -> (N, m)

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        return self.tables()[0][batch.users]  # (B, d)

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return state @ self.tables()[1][lo:hi].T  # (B, d) x (d, hi-lo)

    def item_table(self) -> torch.Tensor:
        return self.tables()[1]
