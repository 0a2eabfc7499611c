"""Recformer-style teacher: a language model over the text tokens of a user's history (no item ids).

An item is its key-value text (title / brand / categories tokens, see `recformer_text`). A history is the tokens
of its items, most recent item first, after a leading CLS vector; every token carries a token type (field x
key/value) and the position of its item in the history. A transformer initialised from MiniLM reads it and the
CLS output represents the sequence; an item is encoded by the same model as a one-item sequence. Score =
cosine / temperature (Recformer: 0.05).

Two configurations (`preset("cpu")`, the default values, and `preset("full")`):
- cpu: the lower `frozen_layers` MiniLM layers read each item alone, once, and their token states are cached
  (n_items + 1, tokens_per_item, 384); only the upper layer(s), the token-type / item-position embeddings and
  the CLS / mask vectors train, over short histories with few tokens per item.
- full: every layer (and the word embeddings) trains, with 32-token key-value pairs and 1,024-token histories
  of up to 50 items: meant for a GPU.

Losses: pre-training = in-batch item-item contrastive (sequence vs its next item's text encoding) + 0.1 x
masked-LM; fine-tuning = cross-entropy over all items against an item table re-encoded from text at every epoch
start and frozen within the epoch (Recformer's stage 1). See docs/recformer.md for how this differs from the
original.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import TrainConfig, to_dict
from ..data.batches import EvalBatch, SeqBatch, eval_batches
from ..data.dataset import SeqDataset
from ..errors import CacheMismatchError, ConfigError, PrmkdError
from ..models.base import Encoded, Recommender
from ..models.transformer import Block
from .base import TeacherFamily
from .recformer_text import ItemTokens, item_states, log_stderr, state_cache_path, tokenize_items

SIMILARITY = "cos"
TEMPERATURE = 0.05
FAMILY = "recformer"


@dataclass
class RecformerConfig:
    """Defaults = the CPU configuration; `preset("full")` gives the GPU one."""

    fields: dict[str, int] = field(default_factory=lambda: {"title": 8, "brand": 2, "categories": 4})
    tail_fields: list[str] = field(default_factory=lambda: ["categories"])  # keep their last tokens
    key_tokens: bool = False  # also feed each key's own tokens ("title", "brand", "category")
    context_tokens: int = 32  # value tokens per field the frozen layers read (kept tokens see this context)
    summary_token: bool = True  # one more token per item: the mean of its frozen-layer states (needs frozen_layers)
    frozen_layers: int = 5  # lower PLM layers cached once; 0 = train everything (full)
    max_items: int = 10  # most recent history items read
    max_tokens: int = 160  # history tokens after CLS; the oldest are cut first
    temperature: float = TEMPERATURE
    attention: str = "item_local"  # "item_local": a token attends within its item, the CLS to every token of the
    # history (Longformer's local + global pattern, the window = the item); "full": every token to every token
    dropout: float = 0.1
    embedding_scale: float = 1.0  # multiplies the new (zero-initialised) item-position and token-type embeddings:
    # with Adam this is a learning-rate multiplier for them
    positions_per_window: int = 2  # training instances encoded per window (the last + random); 0 = all
    finetune_loss: str = "table"  # "table": CE over all items vs the item table re-encoded at each epoch start,
    # frozen within the epoch (Recformer's stage 1); "live": every item re-encoded with gradients at every step
    mlm_weight: float = 0.1
    mlm_prob: float = 0.15
    mlm_max_tokens: int = 256  # masked tokens per step at most
    pretrain_steps: int = 1500
    pretrain_batch_size: int = 64
    pretrain_lr: float = 1e-4
    pretrain_minutes: float = 0.0  # > 0: also stop pre-training after this much time (0 = `pretrain_steps` only)
    bf16: bool = False  # bfloat16 autocast of the transformer (CPUs with AVX512-BF16, GPUs)
    plm_path: str = ""  # default: the all-MiniLM-L6-v2 package (see prmkd.teachers.plm)


Config = RecformerConfig
# options that only fine-tuning reads: pre-training runs differing only in these are the same computation
FINETUNE_ONLY = ("positions_per_window", "finetune_loss")

PRESETS: dict[str, dict] = {
    "cpu": {},
    "full": {"fields": {"title": 30, "brand": 30, "categories": 30}, "key_tokens": True, "context_tokens": 0,
             "summary_token": False, "attention": "full", "frozen_layers": 0, "max_items": 50, "max_tokens": 1023,
             "positions_per_window": 0,
             "pretrain_steps": 20000, "pretrain_batch_size": 64, "pretrain_lr": 5e-5, "pretrain_minutes": 0.0},
}


def preset(name: str = "cpu", **overrides) -> RecformerConfig:
    """The named configuration with `overrides` on top."""
    if name not in PRESETS:
        raise ConfigError(f"unknown Recformer preset '{name}' (known: {', '.join(PRESETS)})")
    return replace(RecformerConfig(), **{**PRESETS[name], **overrides})


def check_config(cfg: RecformerConfig, n_layers: int) -> None:
    if not 0 <= cfg.frozen_layers < n_layers:
        raise ConfigError(f"recformer.frozen_layers = {cfg.frozen_layers}: must be 0..{n_layers - 1} "
                          f"(the PLM has {n_layers} layers and at least one must train)")
    if cfg.summary_token and cfg.frozen_layers == 0:
        raise ConfigError("recformer.summary_token needs frozen_layers > 0 (it is a mean of frozen-layer states)")
    if cfg.attention not in ("item_local", "full"):
        raise ConfigError(f"recformer.attention = '{cfg.attention}': expected 'item_local' or 'full'")
    if cfg.finetune_loss not in ("table", "live"):
        raise ConfigError(f"recformer.finetune_loss = '{cfg.finetune_loss}': expected 'table' or 'live'")
    if not cfg.fields or min(cfg.fields.values()) < 1:
        raise ConfigError("recformer.fields: give at least one field with at least one token")
    if cfg.max_items < 1 or cfg.max_tokens < 1 or cfg.temperature <= 0:
        raise ConfigError("recformer: max_items, max_tokens and temperature must be positive")


# --------------------------------------------------------------------------------------------------
# building blocks


class ItemBank(nn.Module):
    """One dataset's items as the model reads them: kept tokens (+ their frozen states). Buffers only, never
    saved with the weights (they are rebuilt from the dataset's text)."""

    def __init__(self, tokens: ItemTokens, states: np.ndarray | None, ds: SeqDataset):
        super().__init__()
        self.dataset, self.fingerprint, self.n_items = ds.name, ds.fingerprint, ds.n_items
        for k in ("ids", "types", "pos", "mask"):
            self.register_buffer(k, torch.from_numpy(np.ascontiguousarray(getattr(tokens, k))), persistent=False)
        st = torch.from_numpy(np.array(states, dtype=np.float16)) if states is not None else None
        self.register_buffer("states", st, persistent=False)  # (n_items + 1, P, d) float16 or None


def block_from_bert(layer, heads: int, dropout: float) -> Block:
    """A `Block` (post-LN, fused qkv) holding the weights of one HF BertLayer."""
    a, d = layer.attention, layer.attention.self.query.in_features
    blk = Block(d, heads, layer.intermediate.dense.out_features, dropout, dropout)
    sa = a.self
    with torch.no_grad():
        blk.qkv.weight.copy_(torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]))  # (3d, d)
        blk.qkv.bias.copy_(torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]))
        for dst, src in ((blk.proj, a.output.dense), (blk.ln1, a.output.LayerNorm),
                         (blk.ff[0], layer.intermediate.dense), (blk.ff[2], layer.output.dense),
                         (blk.ln2, layer.output.LayerNorm)):
            dst.load_state_dict(src.state_dict())
    return blk


class TokenEmbeddings(nn.Module):
    """Trainable MiniLM input embeddings (full configuration): word + in-item position + type 0, LayerNorm."""

    def __init__(self, emb, dropout: float):
        super().__init__()
        self.word = nn.Embedding.from_pretrained(emb.word_embeddings.weight.detach().clone(), freeze=False)
        self.pos = nn.Embedding.from_pretrained(emb.position_embeddings.weight.detach().clone(), freeze=False)
        self.type0 = nn.Parameter(emb.token_type_embeddings.weight.detach()[0].clone())
        self.ln = nn.LayerNorm(self.type0.shape[0], eps=emb.LayerNorm.eps)
        self.ln.load_state_dict(emb.LayerNorm.state_dict())
        self.drop = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.drop(self.ln(self.word(ids) + self.pos(pos) + self.type0))  # (M, d)


def packed_block(blk: Block, x: torch.Tensor, seq: torch.Tensor, dest: torch.Tensor, N: int, T: int,
                 attend: torch.Tensor) -> torch.Tensor:
    """One post-LN block over M packed tokens (token m is at position dest[m] of sequence seq[m]). Only the
    attention is computed on the padded (N, T) layout; projections and feed-forward touch real tokens only."""
    D = x.shape[1]
    H = blk.heads
    qkv = blk.qkv(x)  # (M, 3D)
    pad = qkv.new_zeros(N, T, 3 * D).index_put((seq, dest), qkv)  # (N, T, 3D)
    q, k, v = pad.view(N, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x (N, H, T, D/H)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=blk.attn_dropout if blk.training else 0.0)
    a = a.transpose(1, 2).reshape(N, T, D)[seq, dest]  # (M, D)
    h = blk.ln1(x + blk.drop(blk.proj(a)))
    return blk.ln2(h + blk.drop(blk.ff(h)))


def local_block(blk: Block, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """One block over (U, P, d) item tokens, each attending to the tokens of its own item only."""
    attend = present.clone()
    attend[:, 0] = True  # an item without tokens (padding) attends to its empty slot 0: no all-masked row
    return blk(x, causal=False, key_pad=None if attend.all() else ~attend)


def cls_block(blk: Block, c: torch.Tensor, x: torch.Tensor, inv: torch.Tensor, pos: torch.Tensor,
              sees: torch.Tensor) -> torch.Tensor:
    """One block for the N CLS vectors only: each attends to itself and to the tokens of its history's items.
    c (N, d) CLS inputs; x (U, P, d) item token inputs; inv (N, H) row of each history item in x; pos (H, d)
    item-position embeddings (added to a token's input, so linear in its keys and values); sees (N, H * P)."""
    N, D = c.shape
    H, dh = blk.heads, c.shape[1] // blk.heads
    w, b = blk.qkv.weight, blk.qkv.bias  # (3D, D), (3D,): query, key, value rows
    q = F.linear(c, w[:D], b[:D])  # (N, D)
    kv_items = F.linear(x, w[D:], b[D:])  # (U, P, 2D) keys and values of every item's tokens
    kv_pos = F.linear(pos, w[D:])  # (H, 2D): the item-position part
    kv = (kv_items[inv] + kv_pos[None, :, None, :]).flatten(1, 2)  # (N, H * P, 2D)
    kv = torch.cat([F.linear(c, w[D:], b[D:])[:, None], kv], 1)  # (N, 1 + H * P, 2D): the CLS itself first
    k, v = kv.view(N, -1, 2, H, dh).permute(2, 0, 3, 1, 4)  # 2 x (N, heads, T, dh)
    attend = torch.cat([sees.new_ones(N, 1), sees], 1)[:, None, None, :]  # (N, 1, 1, T)
    a = F.scaled_dot_product_attention(q.view(N, H, 1, dh), k, v, attn_mask=attend,
                                       dropout_p=blk.attn_dropout if blk.training else 0.0)
    h = blk.ln1(c + blk.drop(blk.proj(a.reshape(N, D))))
    return blk.ln2(h + blk.drop(blk.ff(h)))


_BF16_NOTICE: set = set()


def use_bf16(device: torch.device) -> bool:
    """Whether `bf16 = true` really runs in bfloat16 here: only where the device computes it natively (a GPU that
    supports it; a CPU with AVX512-BF16 or AMX). Elsewhere bfloat16 autocast is emulated and several times slower,
    so the model runs in float32 and says so once."""
    from ..env import bf16_native

    ok = bf16_native(device)
    if not ok and device.type not in _BF16_NOTICE:
        _BF16_NOTICE.add(device.type)
        log_stderr(f"recformer: bf16 = true, but this {device.type.upper()} has no native bfloat16 "
                   f"(AVX512-BF16 / AMX): running in float32 instead")
    return ok


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def bucketed(x: torch.Tensor, seq: torch.Tensor, dest: torch.Tensor, N: int, T: int, tokens: int = 512,
             rows: int = 16, length: int = 16):
    """Pad the packed tokens (R, d), the rows N and the length T to multiples of (tokens, rows, length), so that
    a few tensor shapes recur: with a new shape every batch glibc's heap fragments and the process grows without
    bound (8 GB within an epoch). The padding tokens sit in a last, extra row that nothing reads; every row may
    attend to its slot 0, so no row is all masked.
    Returns (x (R', d), seq (R',), dest (R',), rows N', length T', attend (N', 1, 1, T') bool)."""
    R, T2, N2 = len(x), _round_up(T, length), _round_up(N + 1, rows)
    pad = _round_up(R, tokens) - R
    x = torch.cat([x, x.new_zeros(pad, x.shape[1])])
    seq = torch.cat([seq, seq.new_full((pad,), N2 - 1)])
    dest = torch.cat([dest, torch.arange(pad, device=dest.device) % T2])
    lengths = torch.zeros(N2, dtype=torch.long, device=x.device).index_add_(0, seq, torch.ones_like(seq))
    pos = torch.arange(T2, device=x.device)[None]
    attend = (pos < lengths[:, None]) | (pos == 0)  # (N', T')
    return x, seq, dest, N2, T2, attend[:, None, None, :]


@dataclass
class Packed:
    """The tokens of N histories, flattened (sequence-major, most recent item first)."""

    n_idx: torch.Tensor  # (M,) history of each token
    h_idx: torch.Tensor  # (M,) item position in the history (0 = most recent)
    items: torch.Tensor  # (M,) item id
    p_idx: torch.Tensor  # (M,) token slot inside the item
    dest: torch.Tensor  # (M,) position in the sequence (1.. ; 0 is CLS)
    N: int
    T: int  # padded sequence length, CLS included


# --------------------------------------------------------------------------------------------------
# the model


class RecformerTeacher(Recommender):
    Config = RecformerConfig
    ddp_find_unused = True  # the masked-LM head trains only in pre-training

    def __init__(self, cfg: RecformerConfig, bert, tok, bank: ItemBank, plm_id: str = ""):
        super().__init__()
        bc = bert.config
        check_config(cfg, bc.num_hidden_layers)
        self.cfg, self.plm_id, d = cfg, plm_id, bc.hidden_size
        self.embed = None if cfg.frozen_layers else TokenEmbeddings(bert.embeddings, cfg.dropout)
        self.blocks = nn.ModuleList(block_from_bert(layer, bc.num_attention_heads, cfg.dropout)
                                    for layer in bert.encoder.layer[cfg.frozen_layers:])
        self.type_emb = nn.Embedding(2 * len(cfg.fields) + 1, d)  # key / value per field, + the summary token
        self.item_pos = nn.Embedding(cfg.max_items, d)
        nn.init.zeros_(self.type_emb.weight)  # zero: at the start the upper layers see exactly the PLM's states
        nn.init.zeros_(self.item_pos.weight)
        cls, mask = special_states(bert, tok, cfg.frozen_layers)
        self.cls = nn.Parameter(cls)  # (d,) the sequence's leading CLS input
        self.mask_vec = nn.Parameter(mask)  # (d,) replaces a masked token's input state (masked LM)
        self.mlm_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.mlm_bias = nn.Parameter(torch.zeros(bc.vocab_size))
        if self.embed is None:  # frozen word embeddings: the masked-LM decoder (tied, not trained)
            self.register_buffer("word_weight", bert.embeddings.word_embeddings.weight.detach().clone(),
                                 persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.frozen_parameters = frozen_parameter_count(bert, cfg.frozen_layers)
        self.bind(bank)

    # ---- dataset binding and item tables
    def bind(self, bank: ItemBank) -> None:
        """Read the items of another dataset (pre-training switches sources this way)."""
        self.bank, self.n_items = bank, bank.n_items
        self._train_table = self._eval_table = None

    def train(self, mode: bool = True):
        # fit calls train() at every epoch start and evaluate calls eval(): the item tables are re-encoded
        # (lazily) after each, as Recformer's stage 1 re-encodes all items every epoch.
        self._train_table = self._eval_table = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._train_table = self._eval_table = None
        return super().load_state_dict(state_dict, strict, assign)

    @contextlib.contextmanager
    def _no_dropout(self):
        modes = [(m, m.training) for m in self.modules()]
        for m, _ in modes:
            m.training = False
        try:
            yield
        finally:
            for m, t in modes:
                m.training = t

    def _autocast(self):
        dev = self.cls.device
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cfg.bf16 and use_bf16(dev))

    def item_reps(self, items: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """(n, d) CLS output of each item read alone (a one-item history)."""
        out = [self.encode_histories(items[lo:lo + chunk, None])[0] for lo in range(0, len(items), chunk)]
        return torch.cat(out)

    @torch.no_grad()
    def encode_table(self) -> torch.Tensor:
        """(n_items + 1, d) unit-norm item table without dropout; row 0 (padding) = 0."""
        with self._no_dropout():
            ids = torch.arange(1, self.n_items + 1, device=self.cls.device)
            t = F.normalize(self.item_reps(ids), dim=1)
        return torch.cat([t.new_zeros(1, t.shape[1]), t])

    def _table(self) -> torch.Tensor:
        if self.training:
            if self._train_table is None:
                self._train_table = self.encode_table()
            return self._train_table
        if self._eval_table is None:
            self._eval_table = self.encode_table()
        return self._eval_table

    def item_table(self) -> torch.Tensor:
        return self._table()

    # ---- the history encoder
    def pack(self, hist: torch.Tensor) -> Packed:
        """(N, H) item ids, most recent first (0 = none) -> their tokens, flattened."""
        N = hist.shape[0]
        present = self.bank.mask[hist]  # (N, H, P)
        n_idx, h_idx, p_idx = present.nonzero(as_tuple=True)  # sequence-major, then recent item first
        counts = present.flatten(1).sum(1)  # (N,)
        rank = torch.arange(len(n_idx), device=hist.device) - (counts.cumsum(0) - counts)[n_idx]
        keep = rank < self.cfg.max_tokens  # oldest tokens cut first
        n_idx, h_idx, p_idx, rank = n_idx[keep], h_idx[keep], p_idx[keep], rank[keep]
        T = int(counts.clamp(max=self.cfg.max_tokens).max().item()) + 1 if N else 1
        return Packed(n_idx, h_idx, hist[n_idx, h_idx], p_idx, rank + 1, N, T)

    def token_inputs(self, pk: Packed) -> torch.Tensor:
        """(M, d) input state of each token: the frozen layers' cached state, or the live embeddings."""
        if self.embed is None:
            return self.bank.states[pk.items, pk.p_idx].to(self.cls.dtype)
        return self.embed(self.bank.ids[pk.items, pk.p_idx], self.bank.pos[pk.items, pk.p_idx])

    def encode_histories(self, hist: torch.Tensor, mlm: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, H) histories, most recent item first (0 = none) -> ((N, d) CLS outputs, masked-LM loss if `mlm`)."""
        if self.cfg.attention == "item_local":
            return self._encode_item_local(hist, mlm)
        return self._encode_full(hist, mlm)

    def _mask_tokens(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked-LM input: `mlm_prob` of the real word tokens (not the summary token), at most `mlm_max_tokens`
        of them (each costs a vocabulary-wide softmax), -> the mask vector."""
        r = torch.rand(ids.shape, device=x.device)
        masked = (r < self.cfg.mlm_prob) & (ids > 0)
        if int(masked.sum()) > self.cfg.mlm_max_tokens:  # keep the lowest draws: a uniform subset
            masked &= r <= r[masked].kthvalue(self.cfg.mlm_max_tokens).values
        return torch.where(masked[..., None], self.mask_vec.to(x.dtype), x), masked

    def _encode_full(self, hist: torch.Tensor, mlm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every token attends to every token of its history (tokens packed, see `packed_block`)."""
        pk = self.pack(hist)
        x = self.token_inputs(pk)  # (M, d)
        ids = self.bank.ids[pk.items, pk.p_idx]  # (M,)
        if mlm:
            x, masked = self._mask_tokens(x, ids)
        extra = self.type_emb(self.bank.types[pk.items, pk.p_idx]) + self.item_pos(pk.h_idx)  # (M, d)
        x = x + self.cfg.embedding_scale * extra
        ar = torch.arange(pk.N, device=x.device)
        x = torch.cat([self.cls.expand(pk.N, -1), x])  # (N + M, d): the N CLS tokens first
        seq, dest = torch.cat([ar, pk.n_idx]), torch.cat([torch.zeros_like(ar), pk.dest])
        x, seq, dest, rows, T, attend = bucketed(x, seq, dest, pk.N, pk.T)
        with self._autocast():
            h = self.drop(x)
            for blk in self.blocks:
                h = packed_block(blk, h, seq, dest, rows, T, attend)
        h = h.float()
        M = len(pk.n_idx)
        loss = self._mlm_loss(h[pk.N:pk.N + M][masked], ids[masked]) if mlm else None
        return h[:pk.N], loss

    def _encode_item_local(self, hist: torch.Tensor, mlm: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens attend within their own item only, so an item's token states are computed once per batch for
        every history that holds it; the CLS attends to all tokens of its history, each seen with its item's
        position. With one trained layer the CLS output is exactly that of full attention (the CLS reads the
        layer's inputs, which no other item has touched yet)."""
        uniq, inv = torch.unique(hist, return_inverse=True)  # (U,), (N, H)
        present = self.bank.mask[uniq] & (uniq > 0)[:, None]  # (U, P)
        if self.embed is None:
            x = self.bank.states[uniq].to(self.cls.dtype)  # (U, P, d)
        else:
            x = self.embed(self.bank.ids[uniq], self.bank.pos[uniq])
        ids = self.bank.ids[uniq]  # (U, P)
        if mlm:
            x, masked = self._mask_tokens(x, ids.masked_fill(~present, 0))
        x = x + self.cfg.embedding_scale * self.type_emb(self.bank.types[uniq])
        pos = self.cfg.embedding_scale * self.item_pos.weight[:hist.shape[1]]  # (H, d)
        sees = present[inv].flatten(1)  # (N, H * P) tokens each history's CLS reads, most recent first
        sees = sees & (sees.cumsum(1) <= self.cfg.max_tokens)  # the oldest tokens cut first
        c = self.cls.expand(len(hist), -1)  # (N, d)
        with self._autocast():
            x, c = self.drop(x), self.drop(c)
            for i, blk in enumerate(self.blocks):
                c_next = cls_block(blk, c, x, inv, pos, sees)
                if i + 1 < len(self.blocks) or mlm:
                    x = local_block(blk, x, present)
                c = c_next
        loss = self._mlm_loss(x.float()[masked], ids[masked]) if mlm else None
        return c.float(), loss

    def _mlm_loss(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the masked tokens' ids, decoded with the (tied) PLM word embeddings."""
        if len(ids) == 0:
            return h.sum() * 0.0
        w = self.word_weight if self.embed is None else self.embed.word.weight  # (V, d)
        logits = self.mlm_transform(h) @ w.T + self.mlm_bias  # (K, V)
        return F.cross_entropy(logits, ids)

    # ---- the Recommender contract
    def positions(self, batch: SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the instances trained in this batch: every counted one, or per window its last
        counted position and `positions_per_window - 1` random others."""
        counted = batch.counted  # (B, T)
        k = self.cfg.positions_per_window
        if k <= 0 or k >= counted.shape[1]:
            return counted.nonzero(as_tuple=True)
        r = torch.rand(counted.shape, device=counted.device)
        last = F.one_hot(batch.lengths - 1, counted.shape[1]).bool()
        r = torch.where(last, 2.0, r).masked_fill(~counted, -1.0)
        top = r.topk(k, dim=1)  # (B, k)
        rows = torch.arange(len(r), device=r.device)[:, None].expand_as(top.indices)
        ok = top.values >= 0
        return rows[ok], top.indices[ok]

    def histories(self, items: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(N, H) most-recent-first histories ending at items[rows, cols] (inclusive)."""
        src = cols[:, None] - torch.arange(self.cfg.max_items, device=items.device)[None]  # (N, H)
        return items[rows[:, None], src.clamp(min=0)].masked_fill(src < 0, 0)

    def encode(self, batch: SeqBatch) -> Encoded:
        rows, cols = self.positions(batch)
        reps, _ = self.encode_histories(self.histories(batch.items, rows, cols))
        return Encoded(reps, batch.targets[rows, cols], batch.instance_ids[rows, cols], batch.users[rows])

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        """Cross-entropy over all items against the table frozen within the epoch ("table", Recformer's stage 1)
        or against every item re-encoded with gradients at this step ("live")."""
        if self.cfg.finetune_loss == "live":
            items = torch.arange(1, self.n_items + 1, device=enc.reps.device)
            table = F.normalize(self.item_reps(items), dim=1)  # (n_items, d)
        else:
            table = self._table()[1:]
        logits = F.normalize(enc.reps, dim=1) @ table.T / self.cfg.temperature  # (N, n_items)
        return F.cross_entropy(logits, enc.targets - 1)

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return F.normalize(enc.reps, dim=1) @ self._table()[candidates].T / self.cfg.temperature  # (N, C)

    def eval_state(self, batch: EvalBatch, chunk: int = 256) -> torch.Tensor:
        rows = torch.arange(len(batch.items), device=batch.items.device)
        hist = self.histories(batch.items, rows, batch.lengths - 1)  # (B, H)
        reps = [self.encode_histories(hist[lo:lo + chunk])[0] for lo in range(0, len(hist), chunk)]
        return F.normalize(torch.cat(reps), dim=1)  # (B, d)

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return state @ self._table()[lo:hi].T / self.cfg.temperature  # (B, hi - lo)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@torch.no_grad()
def special_states(bert, tok, layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(d,), (d,): the PLM's states of [CLS] and [MASK] in "[CLS] [MASK] [SEP]" after `layers` layers (0 = the
    embedding output): the initial CLS and mask vectors."""
    ids = torch.tensor([[tok.cls_token_id, tok.mask_token_id, tok.sep_token_id]])
    was = bert.training
    bert.eval()
    h = bert(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[layers]
    bert.train(was)
    return h[0, 0].clone(), h[0, 1].clone()


def frozen_parameter_count(bert, frozen_layers: int) -> int:
    if frozen_layers == 0:
        return 0
    n = sum(p.numel() for p in bert.embeddings.parameters())
    return n + sum(p.numel() for layer in bert.encoder.layer[:frozen_layers] for p in layer.parameters())


# --------------------------------------------------------------------------------------------------
# the family interface


def load_plm_for(cfg: RecformerConfig):
    """(tokenizer, model, id) of the configured PLM, offline."""
    import os

    from .plm import PLM_NAME, load_plm

    if cfg.plm_path:
        os.environ["PRMKD_PLM_PATH"] = cfg.plm_path
    tok, bert = load_plm()
    return tok, bert.eval(), Path(cfg.plm_path).name if cfg.plm_path else PLM_NAME


def make_bank(cfg: RecformerConfig, ds: SeqDataset, tok, bert, plm_id: str, cache_dir: str | Path | None,
              log=log_stderr) -> ItemBank:
    """Tokenize `ds`'s items (and cache their frozen-layer states) for the model to read."""
    tokens = tokenize_items(ds, tok, cfg.fields, cfg.tail_fields, cfg.key_tokens,
                            cfg.context_tokens if cfg.frozen_layers else 0, cfg.summary_token)
    empty = int((~tokens.mask[1:].any(1)).sum())
    if empty:
        log(f"recformer: {empty} of {ds.n_items} items of {ds.name} have no text; they all look the same")
    states = None
    if cfg.frozen_layers:
        path = state_cache_path(cache_dir, ds, tokens, plm_id, cfg.frozen_layers) if cache_dir else None
        states = item_states(bert, tokens, cfg.frozen_layers, path, log)
    return ItemBank(tokens, states, ds)


def build(cfg: RecformerConfig, ds: SeqDataset, cache_dir: str | Path | None = ".prmkd/cache", plm=None,
          log=log_stderr) -> RecformerTeacher:
    """The teacher for dataset `ds` (not yet pre-trained). `plm` = (tokenizer, model) overrides MiniLM."""
    tok, bert, plm_id = (*plm, "custom") if plm is not None else load_plm_for(cfg)
    check_config(cfg, bert.config.num_hidden_layers)
    bank = make_bank(cfg, ds, tok, bert, plm_id, cache_dir, log)
    return RecformerTeacher(cfg, bert, tok, bank, plm_id)


def sample_histories(ds: SeqDataset, n: int, max_items: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """n random (history (n, H) most recent first, next item (n,)) pairs from whole source sequences."""
    u = rng.integers(ds.n_users, size=n)
    lens = ds.seq_lengths[u]
    t = 1 + (rng.random(n) * (lens - 1)).astype(np.int64)  # target position 1..len-1
    src = t[:, None] - 1 - np.arange(max_items)[None]  # (n, H)
    starts = ds.seq_offsets[u]
    hist = np.where(src >= 0, ds.seq_items[starts[:, None] + np.maximum(src, 0)], 0)
    return hist, ds.seq_items[starts + t]


def contrastive_loss(seq: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch item-item contrastive: each sequence (B, d) vs every target's encoding (B, d); a column holding
    the same item as the row's own target is not a negative."""
    logits = F.normalize(seq, dim=1) @ F.normalize(items, dim=1).T / temperature  # (B, B)
    same = (targets[:, None] == targets[None]) & ~torch.eye(len(targets), dtype=torch.bool, device=seq.device)
    return F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(len(targets), device=seq.device))


def _pretrain_fingerprint(cfg: RecformerConfig, sources: list[SeqDataset], seed: int, plm_id: str) -> str:
    from ..io import content_hash

    return content_hash({"cfg": to_dict(cfg), "sources": [s.fingerprint for s in sources], "seed": seed,
                         "plm": plm_id})


def pretrain(cfg: RecformerConfig, sources: list[SeqDataset], train_cfg: TrainConfig, out_dir: str | Path,
             cache_dir: str | Path | None = ".prmkd/cache", log: Callable[[str], None] = log_stderr,
             plm=None) -> Path:
    """Pre-train on source domains (contrastive + masked LM) for `pretrain_steps` steps or `pretrain_minutes`;
    returns the checkpoint of the shared weights (all of them: the model has no per-dataset parameter).
    train_cfg gives seed, device, threads, weight decay and gradient clipping; resumes from out_dir."""
    from ..env import resolve_device
    from ..training import (deterministic_on_cpu, resume_training, save_checkpoint, seed_everything,
                         write_training_checkpoint)

    if not sources:
        raise PrmkdError("recformer pre-training needs at least one source dataset")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final, ckpt = out_dir / "recformer_pretrained.pt", out_dir / "pretrain_checkpoint.pt"
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    device = resolve_device(train_cfg.device)
    deterministic_on_cpu(device)
    tok, bert, plm_id = (*plm, "custom") if plm is not None else load_plm_for(cfg)
    fp = _pretrain_fingerprint(cfg, sources, train_cfg.seed, plm_id)
    if final.exists() and torch.load(final, map_location="cpu", weights_only=False).get("fingerprint") == fp:
        log(f"{final}: already pre-trained with this configuration")
        return final
    t0 = time.time()
    banks = [make_bank(cfg, ds, tok, bert, plm_id, cache_dir, log).to(device) for ds in sources]
    cache_seconds = time.time() - t0
    seed_everything(train_cfg.seed)
    model = RecformerTeacher(cfg, bert, tok, banks[0], plm_id).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=train_cfg.weight_decay)
    state = {"step": 0, "seconds": 0.0, "history": []}
    ck = resume_training(ckpt, model, opt, device, fp, log)
    if ck is not None:
        state = ck["state"]
        log(f"resuming pre-training from step {state['step']}")
    _pretrain_loop(model, opt, banks, sources, cfg, train_cfg, state, device, log,
                   save=lambda: write_training_checkpoint(ckpt, model, opt, state, device, fp))
    budget = bool(cfg.pretrain_minutes) and state["step"] < cfg.pretrain_steps
    save_checkpoint(final, {"model": model.state_dict(), "config": to_dict(cfg), "plm": plm_id, "fingerprint": fp,
                            "sources": [s.name for s in sources], "steps": state["step"],
                            "train_seconds": round(state["seconds"], 1), "cache_seconds": round(cache_seconds, 1),
                            "history": state["history"], "budget_ended": budget})
    ckpt.unlink(missing_ok=True)
    log(f"pre-trained {state['step']} steps in {state['seconds']:.0f}s -> {final}" +
        (f" (ended by its time budget of {cfg.pretrain_minutes} minutes, not after its {cfg.pretrain_steps} steps)"
         if budget else ""))
    return final


def _pretrain_loop(model, opt, banks, sources, cfg, train_cfg, state, device, log, save) -> None:
    from ..training import optimizer_step

    weights = np.array([s.n_users for s in sources], dtype=np.float64)
    model.train()
    run_loss = run_mlm = 0.0
    budget = 60 * cfg.pretrain_minutes  # seconds; 0 = steps only
    while state["step"] < cfg.pretrain_steps and not (budget and state["seconds"] > budget):
        t0 = time.perf_counter()
        rng = np.random.default_rng([train_cfg.seed, state["step"]])  # batch = f(seed, step): resumable
        k = int(rng.choice(len(sources), p=weights / weights.sum()))
        model.bind(banks[k])
        hist, targets = sample_histories(sources[k], cfg.pretrain_batch_size, cfg.max_items, rng)
        hist, targets = torch.from_numpy(hist).to(device), torch.from_numpy(targets).to(device)
        seq, mlm = model.encode_histories(hist, mlm=cfg.mlm_weight > 0)
        con = contrastive_loss(seq, model.item_reps(targets), targets, cfg.temperature)
        loss = con + (cfg.mlm_weight * mlm if mlm is not None else 0.0)
        optimizer_step(model, opt, loss, train_cfg.grad_clip, f"pre-training step {state['step']}")
        state["step"] += 1
        state["seconds"] += time.perf_counter() - t0
        run_loss += con.item()
        run_mlm += mlm.item() if mlm is not None else 0.0
        if state["step"] % 50 == 0:
            rec = {"step": state["step"], "contrastive": round(run_loss / 50, 4), "mlm": round(run_mlm / 50, 4),
                   "seconds": round(state["seconds"], 1)}
            state["history"].append(rec)
            log(f"pretrain step {rec['step']:5d}  contrastive {rec['contrastive']:.4f}  mlm {rec['mlm']:.4f}  "
                f"{rec['seconds']:.0f}s")
            run_loss = run_mlm = 0.0
        if state["step"] % 250 == 0:
            save()


COMPATIBLE_KEYS = ("fields", "key_tokens", "summary_token", "frozen_layers", "max_items", "attention",
                   "embedding_scale")


def load_pretrained(model: RecformerTeacher, path: str | Path) -> None:
    """Load pre-trained weights into `model`; refuses a checkpoint of an incompatible configuration."""
    path = Path(path)
    if not path.exists():
        raise PrmkdError(f"{path}: no such pre-trained Recformer checkpoint")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "config" not in ck or "model" not in ck:
        raise PrmkdError(f"{path}: not a Recformer pre-training checkpoint")
    mine = to_dict(model.cfg)
    diff = [k for k in COMPATIBLE_KEYS if ck["config"].get(k) != mine[k]]
    if diff or ck.get("plm") != model.plm_id:
        what = ", ".join(f"{k}={ck['config'].get(k)!r} (model: {mine[k]!r})" for k in diff) or \
            f"PLM {ck.get('plm')!r} (model: {model.plm_id!r})"
        raise CacheMismatchError(f"{path}: pre-trained with another configuration: {what}")
    model.load_state_dict(ck["model"])


# --------------------------------------------------------------------------------------------------
# export


def instance_histories(ds: SeqDataset, max_items: int) -> np.ndarray:
    """(n_train_instances, H) most-recent-first history of every training instance, in instance-id order
    (instance of target position t of user u: history s[:t], its last min(max_items, max_len) items)."""
    users, _, ids = ds.train_pairs()
    t = ids - ds.train_instance_offsets[users] + 1  # target position
    H = min(max_items, ds.max_len)
    src = t[:, None] - 1 - np.arange(max_items)[None]  # (n, max_items)
    ok = (src >= 0) & (np.arange(max_items)[None] < H)
    starts = ds.seq_offsets[users]
    return np.where(ok, ds.seq_items[starts[:, None] + np.maximum(src, 0)], 0)


@torch.no_grad()
def export(model: RecformerTeacher, ds: SeqDataset, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Teacher-cache arrays: items (n_items + 1, d), train (n_train_instances, d), valid / test (n_users, d).
    Rows are unit-norm: the cache's similarity is the cosine, its temperature `model.cfg.temperature`."""
    if model.bank.fingerprint != ds.fingerprint:
        raise CacheMismatchError(f"export: the model reads the items of {model.bank.dataset}, not of {ds.name}")
    model.eval()
    device = model.cls.device
    out = {"items": model.item_table().cpu().numpy()}
    hist = instance_histories(ds, model.cfg.max_items)
    order = np.argsort((hist > 0).sum(1), kind="stable")  # similar lengths together: little padding
    train = np.zeros((len(hist), out["items"].shape[1]), dtype=np.float32)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        reps, _ = model.encode_histories(torch.from_numpy(hist[idx]).to(device))
        train[idx] = F.normalize(reps, dim=1).cpu().numpy()
    out["train"] = train
    for split in ("valid", "test"):
        rows = np.zeros_like(train[:ds.n_users])
        for batch in eval_batches(ds, split, batch_size):
            rows[batch.users.numpy()] = model.eval_state(batch.to(device)).cpu().numpy()
        out[split] = rows
    return out


# --------------------------------------------------------------------------------------------------
# the family


class Recformer(TeacherFamily):
    name = FAMILY
    Config = RecformerConfig
    similarity = SIMILARITY
    finetune_only = FINETUNE_ONLY
    pretrain_only = ("mlm_transform.", "mlm_bias", "mask_vec")  # masked LM only: fine-tuning never reaches them
    pretrain_parallel = False  # its step-based loop runs in one process

    def build(self, cfg: RecformerConfig, ds: SeqDataset, cache_dir):
        return build(cfg, ds, cache_dir)

    def pretrain(self, cfg, sources, train_cfg, out_dir, cache_dir, log=log_stderr):
        return pretrain(cfg, sources, train_cfg, out_dir, cache_dir, log)

    def load_pretrained(self, model, path) -> None:
        load_pretrained(model, path)

    def export(self, model, ds) -> dict:
        return export(model, ds)
