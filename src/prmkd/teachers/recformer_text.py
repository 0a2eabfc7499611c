"""Item text as Recformer key-value tokens, and the token states of the frozen lower PLM layers.

An item's text is its attribute fields (title, brand, categories, ...) written as key-value pairs. For each
field the PLM reads the key's word pieces (optional) and up to `context_tokens` value word pieces; of those the
item keeps a few tokens (`fields[f]` value tokens, the first ones, or the last ones for `tail_fields`, where
the most specific category sits). Every kept token has a token type, 2 * field index + (1 for a value, 0 for a
key), and its position inside the item's own PLM input.

With frozen lower layers (`frozen_layers > 0`) the states of the kept tokens after those layers are computed
once per dataset (each item alone, reading its whole context) and stored as a memory-mappable float16 array
(n_items + 1, tokens_per_item, d); the trained upper layers then only ever read those states.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import write_atomic
from ..log import info
from ..errors import PrmkdError

KEY_WORDS = {"categories": "category"}  # the key's words as the PLM reads them (default: the field name)


@dataclass
class ItemTokens:
    """The kept tokens of every item (row 0 = the padding item, no tokens)."""

    ids: np.ndarray  # (n_items + 1, P) int64 token ids (0 where there is no token)
    types: np.ndarray  # (n_items + 1, P) int64 token types: 2 * field index + is_value
    pos: np.ndarray  # (n_items + 1, P) int64 position of the token in the item's own PLM input
    mask: np.ndarray  # (n_items + 1, P) bool: a kept token is there
    inputs: list[list[int]]  # per item, the PLM input ids ([CLS] ... [SEP]) the frozen layers read
    summary: bool = False  # slot 0 of every item is its summary token (id 0, type 2 * n_fields, pos -1)

    @property
    def tokens_per_item(self) -> int:
        return self.ids.shape[1]


def field_values(ds, fields: list[str]) -> dict[str, list[str]]:
    """field -> text per internal item id. A dataset with item text but none of the configured fields (e.g. a
    table read with a single text column) gets its assembled text as the first field."""
    present = {f: ds.item_fields[f] for f in fields if f in ds.item_fields and any(ds.item_fields[f][1:])}
    if not present and any(ds.item_text[1:]):
        present = {fields[0]: list(ds.item_text)}
    if not present:
        raise PrmkdError(f"dataset {ds.name} has no item text (fields {', '.join(fields)} are empty or missing): "
                         f"the Recformer-style teacher reads item text only and cannot be built on it")
    return present


def _key_ids(tok, field: str) -> list[int]:
    return tok(KEY_WORDS.get(field, field), add_special_tokens=False)["input_ids"]


def tokenize_items(ds, tok, fields: dict[str, int], tail_fields: list[str], key_tokens: bool,
                   context_tokens: int, summary: bool = False) -> ItemTokens:
    """Key-value tokens of every item of `ds`. `context_tokens` = 0: the PLM reads the kept tokens only.
    `summary`: every item also gets a first token whose state is the mean of all its input tokens' states after
    the frozen layers (MiniLM's sentence embedding is such a mean): it tells apart items whose few kept tokens
    coincide (on Scientific, 689 of 4,385 items share their 8 kept tokens with another item)."""
    names = list(fields)
    values = field_values(ds, names)
    pieces = {f: tok([v or "" for v in vals], add_special_tokens=False)["input_ids"] for f, vals in values.items()}
    keys = {f: _key_ids(tok, f) if key_tokens else [] for f in names}
    P = sum(len(keys[f]) + k for f, k in fields.items() if f in values) + int(summary)
    n = ds.n_items + 1
    ids, types, pos = (np.zeros((n, P), dtype=np.int64) for _ in range(3))
    mask = np.zeros((n, P), dtype=bool)
    inputs: list[list[int]] = [[]]
    for i in range(1, n):
        inp, kept = [tok.cls_token_id], []  # kept: (position in inp, token type); -1 = the summary token
        if summary:
            kept.append((-1, 2 * len(names)))
        for fi, f in enumerate(names):
            if f not in values or not pieces[f][i]:
                continue
            k, tail, vt = fields[f], f in tail_fields, pieces[f][i]
            ctx = max(context_tokens, k)
            ctx_ids = vt[-ctx:] if tail else vt[:ctx]
            n_keep = min(k, len(ctx_ids))
            kept += [(len(inp) + j, 2 * fi) for j in range(len(keys[f]))]
            inp += keys[f]
            first = len(inp) + (len(ctx_ids) - n_keep if tail else 0)
            kept += [(first + j, 2 * fi + 1) for j in range(n_keep)]
            inp += ctx_ids
        inp.append(tok.sep_token_id)
        inputs.append(inp)
        for j, (p, t) in enumerate(kept):
            ids[i, j], types[i, j], pos[i, j], mask[i, j] = inp[p] if p >= 0 else 0, t, p, True
    return ItemTokens(ids, types, pos, mask, inputs, summary)


def _lower_layers(bert, frozen_layers: int):
    """A copy of the PLM that stops after its first `frozen_layers` transformer layers."""
    lower = copy.deepcopy(bert).eval()
    lower.encoder.layer = lower.encoder.layer[:frozen_layers]
    return lower


@torch.no_grad()
def lower_states(bert, frozen_layers: int, inputs: list[list[int]], batch_size: int = 128,
                 log=None) -> list[torch.Tensor]:
    """(len_i, d) state of every token of every input after the first `frozen_layers` PLM layers."""
    lower = _lower_layers(bert, frozen_layers)
    order = np.argsort([len(x) for x in inputs], kind="stable")
    out: list[torch.Tensor] = [None] * len(inputs)  # type: ignore[list-item]
    t0 = last = time.time()
    for lo in range(0, len(inputs), batch_size):
        idx = order[lo:lo + batch_size]
        L = max(len(inputs[i]) for i in idx)
        ids = torch.zeros(len(idx), L, dtype=torch.long)
        att = torch.zeros(len(idx), L, dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(inputs[i])] = torch.tensor(inputs[i])
            att[r, :len(inputs[i])] = 1
        h = lower(input_ids=ids, attention_mask=att, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        for r, i in enumerate(idx):  # (B, L, d) -> one (len_i, d) per input
            out[i] = h[r, :len(inputs[i])].clone()
        if log and time.time() - last > 20:
            last = time.time()
            log(f"  token states: {lo + len(idx)}/{len(inputs)} items ({(lo + len(idx)) / (last - t0):.0f}/s)")
    return out


def state_cache_path(cache_dir: str | Path, ds, tokens: ItemTokens, plm_id: str, frozen_layers: int) -> Path:
    h = hashlib.sha256()
    h.update(f"{plm_id}|{frozen_layers}|".encode())
    h.update(json.dumps(tokens.inputs).encode())
    h.update(tokens.pos.tobytes())
    return Path(cache_dir) / "recformer" / f"{ds.name}-{h.hexdigest()[:12]}-L{frozen_layers}.npy"


def item_states(bert, tokens: ItemTokens, frozen_layers: int, path: Path | None = None,
                log=None) -> np.ndarray:
    """(n_items + 1, P, d) float16 states of the kept tokens after the frozen layers, cached at `path`."""
    if path is not None and path.exists():
        return np.load(path, mmap_mode="r")
    t0 = time.time()
    d = bert.config.hidden_size
    n, P = tokens.ids.shape
    out = np.zeros((n, P, d), dtype=np.float16)
    states = lower_states(bert, frozen_layers, tokens.inputs[1:], log=log)
    for i, h in enumerate(states, 1):  # h: (len_i, d)
        m = tokens.mask[i] & (tokens.pos[i] >= 0)
        out[i, m] = h[torch.from_numpy(tokens.pos[i, m])].numpy()
        if tokens.summary:
            out[i, 0] = h.mean(0).numpy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda t: np.save(t, out))
        if log:
            log(f"cached token states of {n - 1} items ({P} tokens x {d}, {out.nbytes / 2**20:.0f} MiB) after "
                f"{frozen_layers} frozen PLM layers in {time.time() - t0:.0f}s -> {path}")
    return out


def log_stderr(msg: str) -> None:
    """The package logger (stderr under the CLI)."""
    info(msg)
