"""A small post-LayerNorm transformer encoder (the SASRec / BERT4Rec block), causal or bidirectional."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, d: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        assert d % heads == 0, f"hidden size {d} is not divisible by {heads} heads"
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(d, inner), nn.GELU(), nn.Linear(inner, d))
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, h: torch.Tensor, causal: bool, key_pad: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d_h)
        mask = None
        if key_pad is not None:  # (B, T) True at padding keys -> additive mask (B, 1, 1, T)
            mask = torch.zeros(B, 1, 1, T, dtype=h.dtype, device=h.device).masked_fill(key_pad[:, None, None, :],
                                                                                         float("-inf"))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        h = self.ln1(h + self.drop(self.proj(a)))
        return self.ln2(h + self.drop(self.ff(h)))


class Encoder(nn.Module):
    """Stack of blocks. Causal attention needs no padding mask when sequences are right padded:
    a real position only ever attends to earlier (real) positions."""

    def __init__(self, d: int, layers: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d, heads, inner, dropout, attn_dropout) for _ in range(layers))

    def forward(self, h: torch.Tensor, causal: bool = True, key_pad: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            h = blk(h, causal, key_pad)
        return h
