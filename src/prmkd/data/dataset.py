"""The prepared dataset: remapped ids, item texts, optional item features, leave-one-out split.

Ids are remapped once: internal item ids run 1..n_items (0 is padding), users 0..n_users-1.
The split is chronological leave-one-out: for a user's sequence s (length n >= 3),
train = s[:n-2] (every position t >= 1 of it is a training instance: history s[:t] -> s[t]),
valid = history s[:n-2] -> s[n-2], test = history s[:n-1] -> s[n-1]. Histories keep their last `max_len` items.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DATA_ADDED_LATER, DataConfig, to_dict, without_later_options
from ..errors import DataError
from ..io import write_atomic
from ..log import info
from . import readers

FORMAT_VERSION = 2


@dataclass
class SeqDataset:
    name: str
    item_keys: list[str]  # raw id of internal item i is item_keys[i - 1]
    user_keys: list[str]
    seq_items: np.ndarray  # (total,) int64, all users' sequences concatenated
    seq_offsets: np.ndarray  # (n_users + 1,) int64
    item_fields: dict[str, list[str]]  # field -> per internal id text (index 0 = "")
    item_text: list[str]  # assembled text per internal id (index 0 = "")
    features: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (X, has)
    max_len: int = 50
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_sequences(cls, sequences: list, n_items: int | None = None, *, fields: dict | None = None,
                       features: dict | None = None, max_len: int = 50, name: str = "toy") -> "SeqDataset":
        """A dataset made in memory from each user's item sequence (internal ids 1..n_items; raw ids "i1".. and
        "u0"..). `fields`: field -> per-item text (index 0 = the padding item); the item text is assembled from
        them as `prepare` does. `features`: name -> (X (n_items + 1, d), has (n_items + 1,) bool)."""
        seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
        n_items = n_items or int(max(int(s.max()) for s in seqs))
        fields = dict(fields or {})
        text = [""] + [_assemble_text({k: v[i] for k, v in fields.items()}, list(fields))
                       for i in range(1, n_items + 1)]
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        ds = cls(name, [f"i{i}" for i in range(1, n_items + 1)], [f"u{u}" for u in range(len(seqs))],
                 np.concatenate(seqs), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), fields, text,
                 dict(features or {}), max_len, {})
        ds.meta["fingerprint"] = split_fingerprint(ds)
        return ds

    # ---- sizes
    @property
    def n_items(self) -> int:
        """Number of real items; score matrices have n_items + 1 columns (column 0 = padding)."""
        return len(self.item_keys)

    @property
    def n_users(self) -> int:
        return len(self.user_keys)

    def seq(self, u: int) -> np.ndarray:
        return self.seq_items[self.seq_offsets[u]:self.seq_offsets[u + 1]]

    @property
    def seq_lengths(self) -> np.ndarray:
        return np.diff(self.seq_offsets)

    # ---- split
    @property
    def train_lengths(self) -> np.ndarray:
        """Length of each user's training sequence s[:n-2]."""
        return self.seq_lengths - 2

    @property
    def train_instance_offsets(self) -> np.ndarray:
        """Instance id of (user u, position t) is offsets[u] + t - 1, for t = 1..train_len-1."""
        counts = np.maximum(self.train_lengths - 1, 0)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def n_train_instances(self) -> int:
        return int(self.train_instance_offsets[-1])

    def split_targets(self, split: str) -> np.ndarray:
        """(n_users,) target item of each user in 'valid' or 'test'."""
        ends = self.seq_offsets[1:]
        if split == "test":
            return self.seq_items[ends - 1]
        if split == "valid":
            return self.seq_items[ends - 2]
        raise ValueError(f"unknown split '{split}' (expected valid or test)")

    def split_history(self, u: int, split: str) -> np.ndarray:
        s = self.seq(u)
        hist = s[:-1] if split == "test" else s[:-2]
        return hist[-self.max_len:]

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every training instance as (user, target item, instance id), in instance-id order."""
        lens = self.train_lengths
        users = np.repeat(np.arange(self.n_users), np.maximum(lens - 1, 0))
        starts = self.seq_offsets[:-1]
        counts = np.maximum(lens - 1, 0)
        pos = np.arange(self.n_train_instances) - np.repeat(self.train_instance_offsets[:-1], counts) + 1
        items = self.seq_items[starts[users] + pos]
        return users, items, np.arange(self.n_train_instances)

    def train_interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of every training-split interaction (positions 0..n-3 of each sequence)."""
        lens = self.train_lengths
        users = np.repeat(np.arange(self.n_users), lens)
        pos = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        return users, self.seq_items[self.seq_offsets[:-1][users] + pos]

    # ---- identity
    @property
    def fingerprint(self) -> str:
        """Identifies the items, sequences and split (what teacher caches must match)."""
        return self.meta["fingerprint"]

    def summary(self) -> dict:
        lens = self.seq_lengths
        return {"name": self.name, "users": self.n_users, "items": self.n_items,
                "interactions": int(lens.sum()), "avg_len": round(float(lens.mean()), 3),
                "train_instances": self.n_train_instances, "max_len": self.max_len,
                "features": {k: {"dim": int(v[0].shape[1]), "items_with": int(v[1][1:].sum())}
                             for k, v in self.features.items()},
                "fingerprint": self.fingerprint}


# --------------------------------------------------------------------------------------------------
# preparing


def resolve_format(cfg: DataConfig) -> tuple[str, Path]:
    if cfg.path.startswith("recbole:"):
        return "recbole", readers.recbole_example_folder(cfg.path.split(":", 1)[1])
    path = Path(cfg.path)
    if not cfg.path:
        raise DataError("<config>", "data.path is empty: set it to a dataset folder or file")
    if not path.exists():
        raise DataError(path, "not found")
    fmt = cfg.format
    if fmt == "auto":
        if path.is_dir():
            if any(path.glob("*.test.inter*")):
                fmt = "unisrec"
            elif any(path.glob("*.inter")):
                fmt = "recbole"
            else:
                raise DataError(path, "cannot tell the format: no '*.test.inter' (UniSRec) or '*.inter' (RecBole) "
                                      "file here; set data.format")
        elif path.name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            fmt = "amazon"
        else:
            fmt = "table"
    if fmt not in ("unisrec", "recbole", "table", "amazon"):
        raise DataError(path, f"unknown format '{fmt}' (expected auto, unisrec, recbole, table or amazon)")
    return fmt, path


def read_raw(cfg: DataConfig) -> readers.RawData:
    fmt, path = resolve_format(cfg)
    if fmt == "unisrec":
        return readers.read_unisrec(path, cfg.name)
    if fmt == "recbole":
        return readers.read_recbole(path, cfg.name)
    if fmt == "table":
        return readers.read_table(path, Path(cfg.items) if cfg.items else None, cfg.user_column, cfg.item_column,
                                  cfg.time_column, cfg.text_fields)
    if not cfg.items:
        raise DataError(path, "the amazon format needs data.items = the meta JSON lines file")
    return readers.read_amazon(path, Path(cfg.items))


def kcore(sequences: dict[str, list[str]], k: int) -> dict[str, list[str]]:
    """Iteratively keep users and items with at least k interactions each."""
    seqs = dict(sequences)
    while True:
        counts: dict[str, int] = {}
        for s in seqs.values():
            for it in s:
                counts[it] = counts.get(it, 0) + 1
        new = {}
        for u, s in seqs.items():
            kept = [it for it in s if counts[it] >= k]
            if len(kept) >= k:
                new[u] = kept
        if new == seqs:
            return new
        seqs = new


def _assemble_text(fields: dict[str, str], names: list[str]) -> str:
    """title. brand. categories.  (each present field ends in exactly one period)"""
    parts = []
    for n in names:
        v = (fields.get(n) or "").strip()
        if v and len(v) < 2000:
            parts.append(v.rstrip(".").strip() + ".")
    return " ".join(parts)


def _read_feature(spec, item_keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    path = Path(spec.path)
    if not path.exists():
        raise DataError(path, f"feature '{spec.name}': file not found")
    if path.suffix == ".npy":
        mat = np.load(path).astype(np.float32)
    else:
        if spec.dim <= 0:
            raise DataError(path, f"feature '{spec.name}': raw float32 file needs data.features.dim")
        flat = np.fromfile(path, dtype="<f4")
        if flat.size % spec.dim:
            raise DataError(path, f"feature '{spec.name}': {flat.size} floats is not a multiple of dim {spec.dim}")
        mat = flat.reshape(-1, spec.dim)
    if not np.isfinite(mat).all():
        raise DataError(path, f"feature '{spec.name}': contains NaN or infinite values")
    if not spec.index:
        raise DataError(path, f"feature '{spec.name}': needs data.features.index (KEY<TAB>row lines)")
    rows = {key: r for r, key in readers._read_index(Path(spec.index)).items()}
    out = np.zeros((len(item_keys) + 1, mat.shape[1]), dtype=np.float32)
    has = np.zeros(len(item_keys) + 1, dtype=bool)
    for i, key in enumerate(item_keys, 1):
        r = rows.get(key)
        if r is not None:
            if r >= len(mat):
                raise DataError(spec.index, f"feature '{spec.name}': row {r} for '{key}' is beyond the {len(mat)} rows")
            out[i], has[i] = mat[r], True
    if not has.any():
        raise DataError(spec.index, f"feature '{spec.name}': no key matches an item of this dataset")
    return out, has


def build(cfg: DataConfig, name: str | None = None) -> SeqDataset:
    """Read, filter, remap and split (no caching; see `prepare`)."""
    raw = read_raw(cfg)
    seqs = raw.sequences
    if cfg.kcore and not raw.presplit:
        seqs = kcore(seqs, cfg.kcore)
    if cfg.users:  # a slice: the first `users` users (file order), and only the items they touch
        seqs = dict(list(seqs.items())[:cfg.users])
    short = [u for u, s in seqs.items() if len(s) < 3]
    if short and cfg.drop_short_users:
        seqs = {u: s for u, s in seqs.items() if len(s) >= 3}
        raw.notes.append(f"{len(short)} users with fewer than 3 interactions dropped (data.drop_short_users)")
    elif short:
        where, line = raw.user_lines.get(short[0], (raw.sources[0], None))  # the user's first row
        fix = ("drop them with data.drop_short_users = true" if raw.presplit else
               "drop them with data.drop_short_users = true, or filter users and items with data.kcore = 3")
        raise DataError(where, f"{len(short)} users have fewer than 3 interactions (e.g. user '{short[0]}' "
                               f"with {len(seqs[short[0]])}, first seen here); leave-one-out needs 3: {fix}", line)
    if not seqs:
        what = " after k-core filtering" if cfg.kcore and not raw.presplit else ""
        raise DataError(raw.sources[0], f"no user with at least 3 interactions is left{what}: nothing to split")
    used = {it for s in seqs.values() for it in s}
    keep_all = raw.presplit and not cfg.users
    item_keys = list(raw.item_order) if keep_all else [k for k in raw.item_order if k in used]
    item_index = {k: i for i, k in enumerate(item_keys, 1)}
    user_keys = list(seqs)
    lens = np.array([len(seqs[u]) for u in user_keys], dtype=np.int64)
    seq_items = np.fromiter((item_index[it] for u in user_keys for it in seqs[u]), dtype=np.int64, count=lens.sum())
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    field_names = sorted({f for k in item_keys for f in raw.items.get(k, {})})
    item_fields = {f: [""] + [raw.items.get(k, {}).get(f, "") for k in item_keys] for f in field_names}
    if raw.text_ready:
        item_text = [""] + [raw.text_ready.get(k, "") for k in item_keys]
    else:
        item_text = [""] + [_assemble_text(raw.items.get(k, {}), cfg.text_fields) for k in item_keys]
    features = {f.name: _read_feature(f, item_keys) for f in cfg.features}
    ds = SeqDataset(name or _default_name(cfg), item_keys, user_keys, seq_items, offsets, item_fields, item_text,
                    features, cfg.max_len, {"sources": raw.sources, "notes": raw.notes})
    ds.meta["fingerprint"] = split_fingerprint(ds)
    return ds


def _default_name(cfg: DataConfig) -> str:
    if cfg.path.startswith("recbole:"):
        return cfg.path.split(":", 1)[1]
    p = Path(cfg.path)
    return p.name if p.is_dir() else p.stem.split(".")[0]


def split_fingerprint(ds: SeqDataset) -> str:
    h = hashlib.sha256()
    h.update(f"v{FORMAT_VERSION}|loo|max_len={ds.max_len}|n_items={ds.n_items}|".encode())
    h.update(np.ascontiguousarray(ds.seq_items, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(ds.seq_offsets, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _input_fingerprint(cfg: DataConfig, sources: list[Path]) -> str:
    h = hashlib.sha256()
    opts = without_later_options(to_dict(cfg), DATA_ADDED_LATER)
    opts.pop("cache_dir")
    h.update(json.dumps(opts, sort_keys=True).encode())
    h.update(str(FORMAT_VERSION).encode())
    for p in sources:
        if p.is_dir():
            raise DataError(p, "is a folder, expected a file")
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _input_files(cfg: DataConfig) -> list[Path]:
    fmt, path = resolve_format(cfg)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if cfg.items:
        files.append(Path(cfg.items))
    for f in cfg.features:
        files += [Path(f.path), Path(f.index)]
    return [p for p in files if p.exists() and p.suffix != ".md"]


def cache_root(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("PRMKD_CACHE") or ".prmkd/cache")


def prepare(cfg: DataConfig, log=info) -> SeqDataset:
    """Prepared dataset, from the on-disk cache when its inputs and options are unchanged."""
    name = _default_name(cfg)
    key = _input_fingerprint(cfg, _input_files(cfg))
    folder = cache_root(cfg) / "prepared" / f"{name}-{key}"
    if (folder / "meta.json").exists():
        return load_prepared(folder)
    t0 = time.time()
    ds = build(cfg, name)
    ds.meta.update({"input_fingerprint": key, "config": to_dict(cfg), "prepared_seconds": round(time.time() - t0, 2)})
    save_prepared(ds, folder)
    ds.meta["folder"] = str(folder)  # as `load_prepared` sets it, so a first prepare reports it too
    if log:
        s = ds.summary()
        log(f"prepared {name}: {s['users']} users, {s['items']} items, {s['interactions']} interactions "
            f"(avg {s['avg_len']}) -> {folder}")
    return ds


def save_prepared(ds: SeqDataset, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"seq_items": ds.seq_items, "seq_offsets": ds.seq_offsets}
    for k, (x, has) in ds.features.items():
        arrays[f"feat__{k}"], arrays[f"has__{k}"] = x, has
    write_atomic(folder / "arrays.npz", lambda t: np.savez(t, **arrays))
    items = {"item_keys": ds.item_keys, "user_keys": ds.user_keys, "item_fields": ds.item_fields,
             "item_text": ds.item_text}
    write_atomic(folder / "items.json", lambda t: t.write_text(json.dumps(items)))
    meta = {**ds.meta, "name": ds.name, "max_len": ds.max_len, "summary": ds.summary()}
    # written last: its presence means complete
    write_atomic(folder / "meta.json", lambda t: t.write_text(json.dumps(meta, indent=2)))


def load_prepared(folder: Path) -> SeqDataset:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    items = json.loads((folder / "items.json").read_text())
    arr = np.load(folder / "arrays.npz")
    feats = {k[6:]: (arr[k], arr["has__" + k[6:]]) for k in arr.files if k.startswith("feat__")}
    ds = SeqDataset(meta["name"], items["item_keys"], items["user_keys"], arr["seq_items"], arr["seq_offsets"],
                    items["item_fields"], items["item_text"], feats, meta["max_len"], meta)
    ds.meta["folder"] = str(folder)
    return ds


def concat_datasets(parts: list[SeqDataset]) -> SeqDataset:
    """Several domains as one dataset with disjoint id ranges (items of part k follow those of part k-1).

    Used for multi-domain pre-training: a batch may then mix domains, and in-batch negatives cross them.
    Per-item features are not carried (each domain's model inputs are concatenated by the caller).
    """
    if len(parts) == 1:
        return parts[0]
    item_off = np.cumsum([0] + [p.n_items for p in parts])
    seqs = [p.seq_items + item_off[k] for k, p in enumerate(parts)]
    lens = np.concatenate([p.seq_lengths for p in parts])
    fields = sorted({f for p in parts for f in p.item_fields})
    item_fields = {f: [""] + [t for p in parts for t in p.item_fields.get(f, [""] * (p.n_items + 1))[1:]]
                   for f in fields}
    ds = SeqDataset("+".join(p.name for p in parts),
                    [f"{p.name}:{k}" for p in parts for k in p.item_keys],
                    [f"{p.name}:{u}" for p in parts for u in p.user_keys],
                    np.concatenate(seqs), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                    item_fields, [""] + [t for p in parts for t in p.item_text[1:]], {},
                    max(p.max_len for p in parts), {"parts": [p.fingerprint for p in parts]})
    ds.meta["fingerprint"] = split_fingerprint(ds)
    return ds
