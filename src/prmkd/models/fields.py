"""Fields of the feature-interaction students (FM, DeepFM): user id, item id and item-side token fields.

An item-side field is a bag of tokens per item, taken from the dataset's item metadata: the brand is one token
(the whole brand string), the categories are the words of the category string (split on spaces and commas).
A bag keeps an item's first `MAX_TOKENS` distinct tokens (a few metadata strings are long junk: on
Scientific_UniSRec 99% of items have at most 12 category words, one has 85) and is averaged (an empty bag,
e.g. an item without a brand, contributes a zero vector). A field that the dataset does not have, or that is
empty for every item, is left out, so an ID-only dataset gives user + item.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..data.dataset import SeqDataset

# how each known metadata field becomes tokens; any other field is split into words
WHOLE_VALUE_FIELDS = ("brand",)
MAX_TOKENS = 20


def tokenize(field: str, value: str) -> list[str]:
    """Distinct lower-case tokens of one item's field value (empty list when the value is empty)."""
    value = value.strip().lower()
    if not value:
        return []
    if field in WHOLE_VALUE_FIELDS:
        return [value]
    words = [w for w in re.split(r"[\s,]+", value) if any(c.isalnum() for c in w)]
    return list(dict.fromkeys(words))  # de-duplicated, first-seen order


def item_token_fields(ds: SeqDataset, names: list[str], max_tokens: int = MAX_TOKENS) -> dict[str, torch.Tensor]:
    """field -> (n_items + 1, L) token ids (0 = padding, row 0 = the padding item), for the fields in `names`
    that the dataset has with at least one token. Token ids follow the sorted vocabulary (deterministic)."""
    out = {}
    for name in names:
        values = ds.item_fields.get(name)
        if values is None:
            continue
        bags = [tokenize(name, v)[:max_tokens] for v in values[1:]]
        vocab = {t: i for i, t in enumerate(sorted({t for bag in bags for t in bag}), 1)}
        if not vocab:
            continue
        width = max(len(bag) for bag in bags)
        ids = torch.zeros(ds.n_items + 1, width, dtype=torch.long)
        for item, bag in enumerate(bags, 1):
            ids[item, :len(bag)] = torch.tensor([vocab[t] for t in bag], dtype=torch.long)
        out[name] = ids
    return out


class FieldEmbeddings(nn.Module):
    """Per-field vectors (d) and first-order weights (1) for the user, the item and each item-side token field.

    Token tables have one row per vocabulary token plus row 0 for padding (never trained).
    """

    def __init__(self, n_users: int, n_items: int, tokens: dict[str, torch.Tensor], dim: int):
        super().__init__()
        self.field_names = ["user", "item", *tokens]
        self.user_vec = nn.Embedding(n_users, dim)
        self.user_w = nn.Embedding(n_users, 1)
        self.item_vec = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.item_w = nn.Embedding(n_items + 1, 1, padding_idx=0)
        self.token_vec = nn.ModuleDict()
        self.token_w = nn.ModuleDict()
        for name, ids in tokens.items():
            vocab = int(ids.max()) + 1
            self.token_vec[name] = nn.Embedding(vocab, dim, padding_idx=0)
            self.token_w[name] = nn.Embedding(vocab, 1, padding_idx=0)
            # derived from the dataset by `item_token_fields`, so not part of the saved weights
            self.register_buffer(f"tokens_{name}", ids, persistent=False)
        self.bias = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in self.modules():
            if isinstance(emb, nn.Embedding):
                nn.init.xavier_normal_(emb.weight)
                if emb.padding_idx is not None:
                    with torch.no_grad():
                        emb.weight[emb.padding_idx].zero_()

    @property
    def n_item_fields(self) -> int:
        """Item-side fields: the item id plus each token field."""
        return 1 + len(self.token_vec)

    def users(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) users -> field vectors (N, 1, d) and summed first-order weights (N,)."""
        return self.user_vec(users)[:, None, :], self.user_w(users)[:, 0]

    def items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C,) items -> field vectors (C, F_item, d) and summed first-order weights (C,); bags are averaged."""
        vecs, weights = [self.item_vec(items)], self.item_w(items)[:, 0]
        for name in self.token_vec:
            ids = getattr(self, f"tokens_{name}")[items]  # (C, L)
            count = (ids > 0).sum(1, keepdim=True).clamp(min=1)  # (C, 1)
            vecs.append(self.token_vec[name](ids).sum(1) / count)  # (C, L, d) -> (C, d)
            weights = weights + self.token_w[name](ids)[..., 0].sum(1) / count[:, 0]
        return torch.stack(vecs, 1), weights  # (C, F_item, d), (C,)


def pairwise_interactions(vecs: torch.Tensor) -> torch.Tensor:
    """sum over field pairs f < g of <v_f, v_g>, for (n, F, d) field vectors -> (n,). Rendle's O(F d) identity:
    0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2)."""
    total = vecs.sum(1)  # (n, d)
    return 0.5 * (total.pow(2) - vecs.pow(2).sum(1)).sum(-1)
