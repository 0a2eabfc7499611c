"""GRU4Rec (Hidasi et al., 2016) in its sequential-recommendation form: a GRU over the item sequence,
projected to the item embedding space, cross-entropy over all items at every position."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batches import EvalBatch, SeqBatch
from .base import Encoded, Recommender, flatten_positions, gathered_scores, init_weights, softmax_ce


@dataclass
class GRU4RecConfig:
    hidden_size: int = 64  # item embedding size (scores are dot products in this space)
    gru_size: int = 128
    layers: int = 1
    dropout: float = 0.3
    negatives: int = 0  # > 0: sampled softmax over this many uniform negatives a batch (large catalogues)


class GRU4Rec(Recommender):
    Config = GRU4RecConfig
    gathers_logits = True

    def __init__(self, cfg: GRU4RecConfig, n_items: int):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden_size, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.hidden_size, cfg.gru_size, cfg.layers, batch_first=True, bias=False)
        self.out = nn.Linear(cfg.gru_size, cfg.hidden_size)
        init_weights(self)
        for name, p in self.gru.named_parameters():
            nn.init.xavier_uniform_(p)

    @classmethod
    def from_dataset(cls, cfg: GRU4RecConfig, ds) -> "GRU4Rec":
        return cls(cfg, ds.n_items)

    def hidden(self, items: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.drop(self.item_emb(items)))  # (B, T, gru_size); right padding never leaks left
        return self.out(h)  # (B, T, d)

    def encode(self, batch: SeqBatch) -> Encoded:
        return flatten_positions(self.hidden(batch.items), batch)

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        return softmax_ce(enc, self.item_emb.weight, negatives=self.cfg.negatives)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return gathered_scores(enc, candidates, self.item_emb.weight)

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        h = self.hidden(batch.items)
        return h[torch.arange(h.shape[0], device=h.device), batch.lengths - 1]

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return state @ self.item_emb.weight[lo:hi].T

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight
