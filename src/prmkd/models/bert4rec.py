"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained with the cloze task (random items
masked, predicted from both sides); at inference a mask token is appended after the history."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batches import EvalBatch, SeqBatch
from .base import Encoded, Recommender, gathered_scores, init_weights, softmax_ce
from .transformer import Encoder


@dataclass
class BERT4RecConfig:
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    inner_size: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    mask_ratio: float = 0.2
    negatives: int = 0  # > 0: sampled softmax over this many uniform negatives a batch (large catalogues)


class BERT4Rec(Recommender):
    Config = BERT4RecConfig
    gathers_logits = True

    def __init__(self, cfg: BERT4RecConfig, n_items: int, max_len: int):
        super().__init__()
        self.cfg, self.n_items, self.max_len = cfg, n_items, max_len
        d = cfg.hidden_size
        self.mask_id = n_items + 1
        self.item_emb = nn.Embedding(n_items + 2, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len + 1, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(d, cfg.layers, cfg.heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.out_bias = nn.Parameter(torch.zeros(n_items + 2))
        init_weights(self)

    @classmethod
    def from_dataset(cls, cfg: BERT4RecConfig, ds) -> "BERT4Rec":
        return cls(cfg, ds.n_items, ds.max_len)

    def hidden(self, items: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(items.shape[1], device=items.device)
        h = self.drop(self.ln(self.item_emb(items) + self.pos_emb(pos)[None]))
        return self.head(self.encoder(h, causal=False, key_pad=items == 0))

    def encode(self, batch: SeqBatch) -> Encoded:
        full = torch.cat([batch.items[:, :1], batch.targets], dim=1)  # (B, T+1): the window's whole item run
        inst = torch.cat([torch.full_like(batch.instance_ids[:, :1], -1), batch.instance_ids], dim=1)
        real = full > 0
        masked = (torch.rand(full.shape, device=full.device) < self.cfg.mask_ratio) & real
        h = self.hidden(full.masked_fill(masked, self.mask_id))
        users = batch.users[:, None].expand_as(full)
        return Encoded(h[masked], full[masked], inst[masked], users[masked])

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        n = self.n_items + 1  # the mask token's row is never a candidate
        return softmax_ce(enc, self.item_emb.weight[:n], self.out_bias[:n], negatives=self.cfg.negatives)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return gathered_scores(enc, candidates, self.item_emb.weight, self.out_bias)

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        B = batch.items.shape[0]  # a traced size (ONNX export), not a constant
        items = torch.cat([batch.items, torch.zeros_like(batch.items[:, :1])], dim=1)
        items[torch.arange(B, device=items.device), batch.lengths] = self.mask_id  # mask after the history
        h = self.hidden(items)
        return h[torch.arange(B, device=h.device), batch.lengths]

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return state @ self.item_emb.weight[lo:hi].T + self.out_bias[lo:hi]

    def serving_items(self) -> torch.Tensor:
        """[e_i, b_i]: the output bias folded into the inner product with [u, 1]."""
        n = self.n_items + 1
        return torch.cat([self.item_emb.weight[1:n], self.out_bias[1:n, None]], 1)  # (n_items, d + 1)

    def serving_user(self, state: torch.Tensor) -> torch.Tensor:
        return torch.cat([state, torch.ones_like(state[:, :1])], 1)  # (B, d + 1)
