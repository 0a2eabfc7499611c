"""RecGURU (Li et al., WSDM 2022), the cross-domain baseline of the paper's Table 3: a SASRec whose user
representation is learned to be general across domains.

As the paper describes it, a Generalized User Representation Unit (GURU) is a sequence autoencoder: an encoder
shared by the domains (each domain with its own item embeddings) turns a user's item sequence into a user
representation, and a decoder reconstructs the sequence from it. The representations of the source and the target
domain are made indistinguishable by adversarial training against a domain discriminator. The recommender is the
encoder with the next-item prediction layer of the target domain, trained jointly with the autoencoder and the
adversarial objective. Here:

- encoder: the SASRec transformer (causal), the user representation of a sequence prefix being its state at the
  prefix's last position; item tables per domain (target: the one scored, source: Games in the pipeline);
- decoder: one bidirectional transformer layer over positional embeddings plus the representation, predicting the
  item at every position of the sequence (cross-entropy over the domain's items), for both domains;
- adversarial game: a two-layer discriminator on the representations of target and source sequences; the encoder
  plays against it through a gradient reversal layer (the min-max game with one optimizer);
- loss: L = L_next-item(target) + ae_weight (L_ae(target) + L_ae(source)) + adv_weight L_domain.
Each training step draws one batch of source sequences from torch's random generator (which the training loop
checkpoints, so that a resumed run draws the same ones). Without a source (`source = ""`) it is SASRec plus the
target autoencoder. This is written from the paper's description; it is not the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..data.batches import SeqBatch
from .base import Encoded, flatten_positions, full_softmax_ce, init_weights
from .sasrec import SASRec, SASRecConfig
from .transformer import Block


@dataclass
class RecGURUConfig(SASRecConfig):
    hidden_size: int = 128
    source: str = ""  # the source domain's data path (a prepared dataset's folder or file); "" = none
    source_batch: int = 256  # source sequences per training step
    ae_weight: float = 0.5  # weight of the two reconstruction losses
    adv_weight: float = 0.1  # weight of the domain-discrimination loss (reversed for the encoder)


class _Reverse(torch.autograd.Function):
    """Identity forward, negated gradient backward: the encoder maximises what the discriminator minimises."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class RecGURU(SASRec):
    Config = RecGURUConfig

    def __init__(self, cfg: RecGURUConfig, n_items: int, max_len: int, source=None):
        super().__init__(cfg, n_items, max_len)
        d = cfg.hidden_size
        self.source = source  # a SeqDataset or None (not saved with the weights: rebuilt from the config)
        self.source_emb = nn.Embedding(source.n_items + 1, d, padding_idx=0) if source is not None else None
        self.dec_pos = nn.Embedding(max_len, d)
        self.decoder = Block(d, cfg.heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout)
        self.discriminator = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1)) if source is not None else None
        init_weights(self.dec_pos)
        init_weights(self.decoder)
        if source is not None:
            init_weights(self.source_emb)
            init_weights(self.discriminator)
            from ..data.batches import train_windows

            self._source_windows = train_windows(source)

    @classmethod
    def from_dataset(cls, cfg: RecGURUConfig, ds) -> "RecGURU":
        source = None
        if cfg.source:
            from ..config import DataConfig
            from ..data.dataset import prepare

            source = prepare(DataConfig(path=cfg.source, max_len=ds.max_len), log=None)
        return cls(cfg, ds.n_items, ds.max_len, source)

    # ---- the encoder, for either domain
    def encode_items(self, items: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        pos = torch.arange(items.shape[1], device=items.device)
        h = self.drop(self.ln(table(items) + self.pos_emb(pos)[None]))
        return self.encoder(h, causal=True)  # (B, T, d)

    def represent(self, items: torch.Tensor, lengths: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        """(B, d) user representation: the encoder state at each sequence's last real position."""
        h = self.encode_items(items, table)
        return h[torch.arange(h.shape[0], device=h.device), lengths - 1]

    def reconstruction(self, user: torch.Tensor, items: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        """Cross-entropy of rebuilding every item of `items` (B, T) from the representations (B, d)."""
        T = items.shape[1]
        x = user[:, None, :] + self.dec_pos(torch.arange(T, device=items.device))[None]  # (B, T, d)
        h = self.decoder(x, causal=False, key_pad=items == 0)
        real = items > 0
        logits = h[real] @ table.weight[1:].T  # (M, n_items of the domain)
        return F.cross_entropy(logits, items[real] - 1)

    # ---- training
    def encode(self, batch: SeqBatch) -> Encoded:
        hidden = self.hidden(batch.items)
        enc = flatten_positions(hidden, batch)
        enc.extra = (batch, hidden)
        return enc

    def _source_batch(self, device) -> SeqBatch:
        from ..data.batches import make_seq_batch

        n = len(self._source_windows)
        rows = torch.randperm(n)[:min(self.cfg.source_batch, n)].sort().values.numpy()
        return make_seq_batch(self.source, self._source_windows[rows], self.source.train_instance_offsets).to(device)

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        loss = full_softmax_ce(enc, self.item_emb.weight)  # next-item prediction on the target
        if not self.training or enc.extra is None:
            return loss
        batch, hidden = enc.extra
        tgt_user = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.lengths - 1]  # (B, d)
        full = torch.cat([batch.items[:, :1], batch.targets], 1)  # the window's whole item run (B, T + 1)
        aux = self.reconstruction(tgt_user, full[:, -self.max_len:], self.item_emb)
        if self.source is not None:
            src = self._source_batch(batch.items.device)
            src_user = self.represent(src.items, src.lengths, self.source_emb)
            src_full = torch.cat([src.items[:, :1], src.targets], 1)[:, -self.max_len:]
            aux = aux + self.reconstruction(src_user, src_full, self.source_emb)
            reps = _Reverse.apply(torch.cat([tgt_user, src_user]))
            labels = torch.cat([torch.ones(len(tgt_user)), torch.zeros(len(src_user))]).to(reps.device)
            domain = F.binary_cross_entropy_with_logits(self.discriminator(reps)[:, 0], labels)
            loss = loss + self.cfg.adv_weight * domain
        return loss + self.cfg.ae_weight * aux
