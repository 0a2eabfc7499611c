"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence, dot-product scores
against the (shared) item embedding table, cross-entropy over all items at every position at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batches import EvalBatch, SeqBatch
from .base import Encoded, Recommender, flatten_positions, gathered_scores, init_weights, softmax_ce
from .transformer import Encoder


@dataclass
class SASRecConfig:
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.5
    negatives: int = 0  # > 0: sampled softmax over this many uniform negatives a batch (large catalogues)


class SASRec(Recommender):
    Config = SASRecConfig
    gathers_logits = True

    def __init__(self, cfg: SASRecConfig, n_items: int, max_len: int):
        super().__init__()
        self.cfg, self.n_items, self.max_len = cfg, n_items, max_len
        d = cfg.hidden_size
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(d, cfg.layers, cfg.heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout)
        init_weights(self)

    @classmethod
    def from_dataset(cls, cfg: SASRecConfig, ds) -> "SASRec":
        return cls(cfg, ds.n_items, ds.max_len)

    def hidden(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded item ids -> (B, T, d) causal states."""
        pos = torch.arange(items.shape[1], device=items.device)
        h = self.drop(self.ln(self.item_emb(items) + self.pos_emb(pos)[None]))
        return self.encoder(h, causal=True)

    def encode(self, batch: SeqBatch) -> Encoded:
        return flatten_positions(self.hidden(batch.items), batch)

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        return softmax_ce(enc, self.item_emb.weight, negatives=self.cfg.negatives)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return gathered_scores(enc, candidates, self.item_emb.weight)

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        h = self.hidden(batch.items)  # (B, T, d)
        return h[torch.arange(h.shape[0], device=h.device), batch.lengths - 1]  # (B, d) at the last real position

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return state @ self.item_emb.weight[lo:hi].T

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight
