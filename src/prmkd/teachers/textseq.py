"""The ID + text (+ image) sequence teacher behind the UniSRec- and UniM2Rec-style families.

Item representation: each modality's frozen feature vector (MiniLM text embedding, image vector) goes
through a mixture-of-experts adaptor of parametric-whitening experts; modalities are fused by a learned
per-item gate (a missing modality is replaced by a learned "missing" vector); in the transductive mode an
item-ID embedding is added (optionally dropped for a random share of the items at every training step, so each
item is also learned from its text alone). Behaviour model: a SASRec transformer. Score: cosine / temperature,
cross-entropy over all items (fine-tuning), over the batch's items (pre-training, in-batch negatives), or against
uniform negatives with the log(V/K) correction (fine-tuning on catalogues too large to score whole).

Item representations depend only on the item, so they are computed once per step for the items needed
(the catalogue when fine-tuning, the batch's items when pre-training) and indexed, never per position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.batches import EvalBatch, SeqBatch
from ..data.dataset import SeqDataset
from ..errors import ConfigError, PrmkdError
from ..models.base import Encoded, Recommender, draws_sample, flatten_positions, init_weights, sampled_ce
from ..models.transformer import Encoder
from ..log import info
from .base import TeacherFamily


@dataclass
class TextSeqConfig:
    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.5
    experts: int = 8
    adaptor_dropout: float = 0.2
    modalities: list[str] = field(default_factory=lambda: ["text"])  # "text" and/or a feature name ("image")
    id_embedding: bool = True  # transductive mode (text + ID); False = inductive (text only)
    id_dropout: float = 0.0  # transductive mode: while training, drop each item's ID embedding with this
    #                          probability (the rest scaled by 1 / (1 - p)), so items are also learned from text
    temperature: float = 0.07
    loss: str = "full"  # full (CE over all items) | in_batch (CE over the batch's distinct target items) |
    #                     sampled (CE against `negatives` uniform draws from the catalogue, log(V/K)-corrected)
    negatives: int = 0  # loss = "sampled": uniform negatives a step (one draw shared by the batch)
    freeze_transformer: bool = False  # fine-tuning: train only the adaptors (+ ID, fusion), as UniSRec does
    plm_max_tokens: int = 128
    text_whitening: float = 0.0  # whiten each domain's frozen text embeddings before the adaptor: the power of
    #                              their covariance taken out (0 = raw, 1 = full ZCA whitening, 0.5 = halfway)
    feature_dims: dict = field(default_factory=lambda: {"image": 512})  # input sizes of non-text modalities


class MoEAdaptor(nn.Module):
    """k parametric-whitening experts W_k (dropout(x) - b_k), mixed by a softmax gate (noisy while
    training, noise scale softplus(x W_noise)); W_gate and W_noise start at zero, so gates start uniform."""

    def __init__(self, d_in: int, d_out: int, experts: int, dropout: float):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(experts, d_in))  # b_k
        self.weight = nn.Parameter(torch.empty(experts, d_in, d_out))  # W_k
        nn.init.normal_(self.weight, 0.0, 0.02)
        self.w_gate = nn.Parameter(torch.zeros(d_in, experts))
        self.w_noise = nn.Parameter(torch.zeros(d_in, experts))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d_in) -> (n, d_out)."""
        logits = x @ self.w_gate  # (n, k)
        if self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(x @ self.w_noise)
        gate = logits.softmax(-1)  # (n, k)
        k, d_in, d_out = self.weight.shape
        # W_k (x - b_k) = W_k x - W_k b_k: one (n, d_in) x (d_in, k * d_out) matmul for all experts
        wx = (self.drop(x) @ self.weight.permute(1, 0, 2).reshape(d_in, k * d_out)).view(-1, k, d_out)
        wb = torch.einsum("ki,kio->ko", self.bias, self.weight)  # (k, d_out)
        return (gate[:, :, None] * (wx - wb[None])).sum(1)  # (n, d_out)


class DomainInputs(nn.Module):
    """One domain's frozen per-item inputs: a feature matrix and a presence mask per modality."""

    def __init__(self, feats: dict[str, tuple[np.ndarray, np.ndarray]]):
        super().__init__()
        self.names = list(feats)
        for k, (x, has) in feats.items():
            self.register_buffer(f"x_{k}", torch.as_tensor(x, dtype=torch.float32), persistent=False)
            self.register_buffer(f"has_{k}", torch.as_tensor(has, dtype=torch.bool), persistent=False)

    def get(self, name: str, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{name}")[items], getattr(self, f"has_{name}")[items]


def whiten(x: np.ndarray, rows: np.ndarray, power: float) -> np.ndarray:
    """Centre `x` on the mean of its `rows` and take out `power` of their covariance:
    (x - mu) U diag(lambda^(-power/2)) U^T (power 1 = ZCA whitening). The result is rescaled to the mean row
    norm `x` had, so the adaptor sees inputs of the usual size; rows outside `rows` become zero."""
    if power <= 0:
        return x
    if rows.sum() < 2:
        raise PrmkdError("text whitening needs at least two items with text")
    base = x[rows].astype(np.float64)
    mu = base.mean(0)
    lam, u = np.linalg.eigh(np.cov(base - mu, rowvar=False))
    lam = np.maximum(lam, lam.max() * 1e-6)  # a rank-deficient covariance must not blow up a direction
    out = (x.astype(np.float64) - mu) @ (u * lam ** (-power / 2)) @ u.T
    out *= np.linalg.norm(base, axis=1).mean() / np.linalg.norm(out[rows], axis=1).mean()
    out[~rows] = 0.0
    return out.astype(np.float32)


def domain_features(ds: SeqDataset, modalities: list[str], text_emb: np.ndarray | None,
                    text_whitening: float = 0.0) -> dict:
    """The per-item inputs this teacher needs from a dataset; a missing modality is a clear error
    for the target (all-missing is allowed only for source domains, see `source_features`)."""
    out = {}
    for m in modalities:
        if m == "text":
            has = np.array([bool(t) for t in ds.item_text])
            out["text"] = (whiten(text_emb, has, text_whitening), has)
        elif m in ds.features:
            out[m] = ds.features[m]
        else:
            raise PrmkdError(f"dataset {ds.name} has no '{m}' item features, which this teacher needs "
                             f"(configure data.features with name = '{m}'; available: "
                             f"{', '.join(ds.features) or 'none'})")
    return out


def source_features(ds: SeqDataset, modalities: list[str], text_emb: np.ndarray, dims: dict[str, int],
                    text_whitening: float = 0.0) -> dict:
    """Source domains may lack a modality entirely (Games has no images): it is then all-missing."""
    out = {}
    for m in modalities:
        if m == "text" or m in ds.features:
            out.update(domain_features(ds, [m], text_emb, text_whitening))
        else:
            out[m] = (np.zeros((ds.n_items + 1, dims[m]), dtype=np.float32), np.zeros(ds.n_items + 1, dtype=bool))
    return out


LOSSES = ("full", "in_batch", "sampled")


def check_loss(cfg: TextSeqConfig, prefix: str = "teacher.") -> None:
    if cfg.loss not in LOSSES:
        raise ConfigError(f"config key '{prefix}loss' = {cfg.loss!r}: expected one of {', '.join(LOSSES)}")
    if cfg.loss == "sampled" and cfg.negatives < 1:
        raise ConfigError(f"config key '{prefix}negatives' = {cfg.negatives}: loss = \"sampled\" needs the number "
                         f"of uniform negatives a step (an integer >= 1, e.g. 512)")
    if cfg.loss != "sampled" and cfg.negatives:
        raise ConfigError(f"config key '{prefix}negatives' = {cfg.negatives}: only loss = \"sampled\" draws "
                          f"negatives (this teacher's loss is {cfg.loss!r}); leave it out or set the loss")


class TextSeqTeacher(Recommender):
    def __init__(self, cfg: TextSeqConfig, n_items: int, max_len: int, feats: dict[str, tuple]):
        super().__init__()
        check_loss(cfg)
        self.cfg, self.n_items, self.max_len = cfg, n_items, max_len
        d = cfg.hidden_size
        self.inputs = DomainInputs(feats)
        self.adaptors = nn.ModuleDict({m: MoEAdaptor(feats[m][0].shape[1], d, cfg.experts, cfg.adaptor_dropout)
                                       for m in cfg.modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(d)) for m in cfg.modalities})
        self.fusion_gate = nn.Linear(d, 1) if len(cfg.modalities) > 1 else None
        self.id_emb = nn.Embedding(n_items + 1, d, padding_idx=0) if cfg.id_embedding else None
        self.pos_emb = nn.Embedding(max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(d, cfg.layers, cfg.heads, cfg.inner_size, cfg.dropout, cfg.attn_dropout)
        init_weights(self.encoder)
        init_weights(self.pos_emb)
        if self.id_emb is not None:
            init_weights(self.id_emb)
        self._table: torch.Tensor | None = None  # item table cached while in eval mode

    # ---- item side
    def item_reps(self, items: torch.Tensor) -> torch.Tensor:
        """(n,) item ids -> (n, d) fused item representations (padding rows are zero)."""
        per_mod = []
        for m in self.cfg.modalities:
            x, has = self.inputs.get(m, items)
            z = self.adaptors[m](x)  # (n, d)
            per_mod.append(torch.where(has[:, None], z, self.missing[m].expand_as(z)))
        if self.fusion_gate is None:
            e = per_mod[0]
        else:
            z = torch.stack(per_mod, 1)  # (n, M, d)
            w = self.fusion_gate(torch.tanh(z)).softmax(1)  # (n, M, 1) attention over modalities
            e = (w * z).sum(1)
        if self.id_emb is not None:
            ids = self.id_emb(items)
            if self.training and self.cfg.id_dropout > 0:
                ids = F.dropout(ids.new_ones(len(items), 1), self.cfg.id_dropout) * ids  # whole rows dropped
            e = e + ids
        return e * (items > 0)[:, None]

    def item_table(self) -> torch.Tensor:
        if self._table is None or self.training:
            table = self.item_reps(torch.arange(self.n_items + 1, device=self.pos_emb.weight.device))
            if self.training:
                return table
            self._table = table
        return self._table

    def train(self, mode: bool = True):
        self._table = None  # parameters may change: never serve a stale table
        return super().train(mode)

    # ---- sequence side
    def hidden(self, table_rows: torch.Tensor) -> torch.Tensor:
        """(B, T, d) item representations of right-padded histories -> (B, T, d) causal states."""
        pos = torch.arange(table_rows.shape[1], device=table_rows.device)
        h = self.drop(self.ln(table_rows + self.pos_emb(pos)[None]))
        return self.encoder(h, causal=True)

    def encode(self, batch: SeqBatch) -> Encoded:
        if not self._scores_all_items():  # only the batch's items are needed (a sampled loss draws its own)
            uniq, inv = torch.unique(torch.cat([batch.items.flatten(), batch.targets.flatten()]), return_inverse=True)
            reps = self.item_reps(uniq)  # (U, d)
            n = batch.items.numel()
            rows = reps[inv[:n]].view(*batch.items.shape, -1)
            enc = flatten_positions(self.hidden(rows), batch)
            enc.extra = (uniq, reps)
            return enc
        table = self.item_table()  # (n_items + 1, d)
        enc = flatten_positions(self.hidden(table[batch.items]), batch)
        enc.extra = (None, table)
        return enc

    def own_loss(self, enc: Encoded) -> torch.Tensor:
        uniq, reps = enc.extra
        if uniq is None:  # all items
            logits = self._cos(enc.reps, reps[1:])
            return F.cross_entropy(logits, enc.targets - 1)
        if self.cfg.loss == "sampled":
            return self._sampled_loss(enc, uniq, reps)
        cand = torch.unique(enc.targets)  # in-batch candidates: distinct targets (sorted)
        pos = torch.searchsorted(uniq, cand)
        logits = self._cos(enc.reps, reps[pos])  # (N, C)
        return F.cross_entropy(logits, torch.searchsorted(cand, enc.targets))

    def _sampled_loss(self, enc: Encoded, uniq: torch.Tensor, reps: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each instance's target against K items drawn uniformly from the catalogue (torch's
        RNG: seeded and resumable), each negative's logit raised by log(V / K) so that the sampled sum estimates
        the full softmax's; a draw equal to an instance's own target is left out of its row. Unlike in-batch
        negatives, uniform ones do not push down the items the batch happens to contain (the popular ones)."""
        v, k = self.n_items, self.cfg.negatives
        neg = torch.randint(1, v + 1, (k,), device=enc.reps.device)
        u = F.normalize(enc.reps, dim=-1)
        pos = (u * F.normalize(reps[torch.searchsorted(uniq, enc.targets)], dim=-1)).sum(-1, keepdim=True)
        s = u @ F.normalize(self.item_reps(neg), dim=-1).T + self.cfg.temperature * math.log(v / k)
        return sampled_ce(pos / self.cfg.temperature, s / self.cfg.temperature, neg, enc.targets)

    def _scores_all_items(self) -> bool:
        """The full softmax: asked for, or a sampled one with as many draws as the catalogue has other items (then
        the exact sum costs no more than the estimate, as with the students' `softmax_ce`)."""
        return self.cfg.loss == "full" or (self.cfg.loss == "sampled" and not draws_sample(self.cfg.negatives,
                                                                                            self.n_items))

    def _cos(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return F.normalize(u, dim=-1) @ F.normalize(e, dim=-1).T / self.cfg.temperature

    def candidate_scores(self, enc: Encoded, candidates: torch.Tensor) -> torch.Tensor:
        return self._cos(enc.reps, self.item_reps(candidates))

    def eval_state(self, batch: EvalBatch) -> torch.Tensor:
        h = self.hidden(self.item_table()[batch.items])
        return h[torch.arange(h.shape[0], device=h.device), batch.lengths - 1]

    def score_items(self, state: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self._cos(state, self.item_table()[lo:hi])

    # ---- transfer
    def shared_state(self) -> dict:
        """Parameters that carry across domains: adaptors, missing vectors, fusion, transformer, positions."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("id_emb.")}

    def freeze_behaviour_model(self) -> None:
        for mod in (self.encoder, self.pos_emb, self.ln):
            for p in mod.parameters():
                p.requires_grad_(False)


# options that only shape fine-tuning: changing them reuses the same pre-training
FINETUNE_ONLY = ("id_embedding", "id_dropout", "freeze_transformer", "loss", "negatives")
# options added after teachers were fingerprinted, with their "off" value: left out of a fingerprint while off,
# so the teachers and pre-training runs made before them keep their identity
ADDED_LATER = {"text_whitening": 0.0, "id_dropout": 0.0, "negatives": 0}


# --------------------------------------------------------------------------------------------------
# the family (shared by the UniSRec- and UniM2Rec-style families)


def pretrained_modalities(cfg: TextSeqConfig, sources: list[SeqDataset]) -> list[str]:
    """The modalities pre-training can learn from: text, and a feature that at least one source has (Games has
    no images, so a text + image teacher pre-trains its text side only; its image side starts at fine-tuning)."""
    return [m for m in cfg.modalities if m == "text" or any(m in s.features for s in sources)]


class TextSeqFamily(TeacherFamily):
    """Building, pre-training and transfer of the ID + text (+ image) sequence teacher."""

    Config = TextSeqConfig
    similarity = "cos"
    finetune_only = FINETUNE_ONLY
    added_later = ADDED_LATER

    def config(self, options: dict, prefix: str = "teacher."):
        cfg = super().config(options, prefix)
        check_loss(cfg, prefix)  # a bad loss name is an error before anything is built
        return cfg

    def build(self, cfg: TextSeqConfig, ds: SeqDataset, cache_dir) -> TextSeqTeacher:
        from .plm import item_text_embeddings

        text = item_text_embeddings(ds, cache_dir, cfg.plm_max_tokens) if "text" in cfg.modalities else None
        feats = domain_features(ds, cfg.modalities, text, cfg.text_whitening)
        return TextSeqTeacher(cfg, ds.n_items, ds.max_len, feats)

    def pretrain_options(self, cfg: TextSeqConfig, sources: list[SeqDataset]) -> tuple[str, dict]:
        """The UniSRec- and UniM2Rec-style families share this code, so with the same options and sources they
        share one pre-training run (family name "unisrec" for both)."""
        opts = {k: v for k, v in self.key(cfg).items() if k not in FINETUNE_ONLY}
        opts["modalities"] = pretrained_modalities(cfg, sources)
        return "unisrec", opts

    def pretrain(self, cfg: TextSeqConfig, sources: list[SeqDataset], train_cfg, out_dir, cache_dir, log=info):
        """Pre-train the domain-shared parts on the source domains (no item IDs; in-batch negatives across
        domains), early-stopped on the sources' validation split; returns the path of the shared weights."""
        from dataclasses import replace
        from pathlib import Path

        from ..config import EvalConfig, to_dict, without_later_options
        from ..data.dataset import concat_datasets
        from ..io import content_hash
        from ..training import fit, save_checkpoint
        from .plm import item_text_embeddings

        out_dir = Path(out_dir)
        cfg = replace(cfg, modalities=pretrained_modalities(cfg, sources))
        multi = concat_datasets(sources)
        feats: dict[str, list] = {m: [] for m in cfg.modalities}
        for ds in sources:
            text = item_text_embeddings(ds, cache_dir, cfg.plm_max_tokens) if "text" in cfg.modalities else None
            for m, (x, has) in source_features(ds, cfg.modalities, text, cfg.feature_dims,
                                               cfg.text_whitening).items():
                feats[m].append((x if not feats[m] else x[1:], has if not feats[m] else has[1:]))
        merged = {m: (np.concatenate([x for x, _ in v]), np.concatenate([h for _, h in v])) for m, v in feats.items()}
        # pre-training always uses the in-batch loss, so the sampled loss's negatives do not reach it (nor its key:
        # pre-training runs made before the option keep their fingerprints)
        pcfg = replace(cfg, loss="in_batch", negatives=0, id_embedding=False, freeze_transformer=False)
        model = TextSeqTeacher(pcfg, multi.n_items, multi.max_len, merged)
        pkey = without_later_options(to_dict(pcfg), {"negatives": 0})
        fp = content_hash({"pretrain": multi.fingerprint, "teacher": pkey, "train": to_dict(train_cfg)})
        fit(model, multi, train_cfg, out_dir, eval_cfg=EvalConfig(users=min(multi.n_users, 5000)),
            fingerprint=fp, log=log)
        path = out_dir / "shared.pt"
        save_checkpoint(path, model.shared_state())
        return path

    def load_pretrained(self, model: TextSeqTeacher, path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # the ID table is per domain; a modality no source had (and the fusion over modalities) starts fresh
        fresh = ("id_emb.", "fusion_gate.", *(f"{p}.{m}" for m in model.cfg.modalities
                                               for p in ("adaptors", "missing", "inputs")
                                               if not any(k.startswith(f"adaptors.{m}.") for k in state)))
        bad = [k for k in missing if not k.startswith(fresh)] + list(unexpected)
        if bad:
            raise PrmkdError(f"{path}: pre-trained weights do not fit this teacher (e.g. '{bad[0]}'); "
                             f"were they made with other modalities or sizes?")
        if model.cfg.freeze_transformer:
            model.freeze_behaviour_model()
