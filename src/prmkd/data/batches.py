"""Typed batches. Training batches hold whole sequences: every position is an instance, so one forward
pass trains on all of a user's next-item predictions at once. Batches are padded (right, with 0) only to
the longest sequence in them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .dataset import SeqDataset


@dataclass
class SeqBatch:
    """B training windows of length <= T.

    items[b, i] is the input item at position i, targets[b, i] the next item (0 = padding);
    instance_ids[b, i] is the global training-instance id of that prediction, -1 where it is not an
    instance of this window (padding, or a target already counted in an overlapping window).
    """

    items: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64
    instance_ids: torch.Tensor  # (B, T) int64
    users: torch.Tensor  # (B,) int64
    lengths: torch.Tensor  # (B,) int64

    def to(self, device) -> "SeqBatch":
        return type(self)(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    @property
    def counted(self) -> torch.Tensor:
        """(B, T) bool: positions that are training instances of this batch."""
        return self.instance_ids >= 0


@dataclass
class EvalBatch:
    """B users' histories (right padded) and their held-out target items."""

    items: torch.Tensor  # (B, T) int64
    lengths: torch.Tensor  # (B,) int64
    targets: torch.Tensor  # (B,) int64
    users: torch.Tensor  # (B,) int64

    def to(self, device) -> "EvalBatch":
        return type(self)(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def train_windows(ds: SeqDataset) -> np.ndarray:
    """(n_windows, 4) rows (user, start a, end b, first counted target position).

    A window feeds inputs s[a:b] and predicts targets s[a+1:b+1]. Training sequences no longer than
    max_len + 1 are one window. Longer ones are cut into windows of max_len inputs that overlap by half, and
    each target is counted once, in the window where it has the most history.
    """
    W = ds.max_len
    H = max(W // 2, 1)
    rows = []
    for u, L in enumerate(ds.train_lengths.tolist()):
        if L < 2:
            continue
        b = L - 1
        while b > W:
            rows.append((u, b - W, b, b - H + 1))
            b -= H
        rows.append((u, 0, b, 1))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def make_seq_batch(ds: SeqDataset, windows: np.ndarray, inst_offsets: np.ndarray) -> SeqBatch:
    users, a, b, first = windows.T
    T = int((b - a).max())
    B = len(windows)
    items = np.zeros((B, T), dtype=np.int64)
    targets = np.zeros((B, T), dtype=np.int64)
    inst = np.full((B, T), -1, dtype=np.int64)
    starts = ds.seq_offsets[users]
    for r in range(B):
        n = b[r] - a[r]
        s = ds.seq_items[starts[r] + a[r]: starts[r] + b[r] + 1]
        items[r, :n] = s[:-1]
        targets[r, :n] = s[1:]
        pos = np.arange(a[r] + 1, b[r] + 1)  # target positions in the user's sequence
        keep = pos >= first[r]
        inst[r, :n][keep] = inst_offsets[users[r]] + pos[keep] - 1
    return SeqBatch(torch.from_numpy(items), torch.from_numpy(targets), torch.from_numpy(inst),
                    torch.from_numpy(users.copy()), torch.from_numpy(b - a))


class TrainBatches:
    """Shuffled training batches; the order of epoch e depends only on (seed, e), so a resumed run
    sees exactly the batches an uninterrupted one would.

    With `bucket` > 0, the shuffled windows are cut into pools of `bucket` batches, each pool is sorted by
    length and cut into batches, and the batches are shuffled: batches then hold sequences of similar
    length, so padding to the longest one costs little (Amazon sequences average 7-9 items, a few reach 50).
    """

    def __init__(self, ds: SeqDataset, batch_size: int, seed: int, bucket: int = 0):
        self.ds = ds
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.windows = train_windows(ds)
        self.inst_offsets = ds.train_instance_offsets

    def __len__(self) -> int:
        return (len(self.windows) + self.batch_size - 1) // self.batch_size

    def order(self, epoch: int) -> list[np.ndarray]:
        """The window indices of each batch of `epoch`."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.windows))
        bs = self.batch_size
        if self.bucket <= 0:
            return [order[i:i + bs] for i in range(0, len(order), bs)]
        lengths = self.windows[:, 2] - self.windows[:, 1]
        pool = self.bucket * bs
        batches = []
        for lo in range(0, len(order), pool):
            chunk = order[lo:lo + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def epoch(self, epoch: int, start_step: int = 0):
        batches = self.order(epoch)
        for step in range(start_step, len(batches)):
            yield step, make_seq_batch(self.ds, self.windows[batches[step]], self.inst_offsets)

    def instances(self, idx: np.ndarray) -> int:
        """Training instances counted in the windows `idx` (targets at positions a+1..b from `first` on)."""
        w = self.windows[idx]
        return int((w[:, 2] - np.maximum(w[:, 1] + 1, w[:, 3]) + 1).clip(min=0).sum())

    def shards(self, epoch: int, start_step: int, rank: int, world: int):
        """(step, this rank's part of the global batch, weight) for data-parallel training: the global batches
        are those of `epoch` (the same on every rank), each cut into `world` contiguous parts; `weight` =
        world x this part's share of the batch's instances, so that the average over ranks of weight x (mean loss of
        the part) is the mean loss of the whole batch. A rank left without windows (a last batch smaller than the
        world) reads one window with weight 0."""
        batches = self.order(epoch)
        for step in range(start_step, len(batches)):
            idx = batches[step]
            part = np.array_split(idx, world)[rank]
            total = self.instances(idx)
            weight = world * self.instances(part) / max(total, 1) if len(part) else 0.0
            yield step, make_seq_batch(self.ds, self.windows[part if len(part) else idx[:1]], self.inst_offsets), weight


def eval_batches(ds: SeqDataset, split: str, batch_size: int, users: np.ndarray | None = None):
    """EvalBatch per `batch_size` users (all users by default), histories capped at max_len."""
    users = np.arange(ds.n_users) if users is None else np.asarray(users)
    targets = ds.split_targets(split)
    cut = 1 if split == "test" else 2
    ends = ds.seq_offsets[1:] - cut
    for lo in range(0, len(users), batch_size):
        us = users[lo:lo + batch_size]
        starts = np.maximum(ds.seq_offsets[us], ends[us] - ds.max_len)
        lens = ends[us] - starts
        T = int(lens.max())
        items = np.zeros((len(us), T), dtype=np.int64)
        # vectorised gather: row r takes seq_items[starts[r] : starts[r] + lens[r]]
        col = np.arange(T)
        valid = col[None, :] < lens[:, None]
        idx = starts[:, None] + col[None, :]
        items[valid] = ds.seq_items[idx[valid]]
        yield EvalBatch(torch.from_numpy(items), torch.from_numpy(lens), torch.from_numpy(targets[us]),
                        torch.from_numpy(us.astype(np.int64)))
