"""Leave-one-out split and batches: nothing lost, nothing leaked, every instance once, histories capped;
the prepared-dataset cache gives identical arrays back and changes its key when an option changes."""

from __future__ import annotations

import numpy as np
import pytest

from prmkd.config import DataConfig
from prmkd.data import TrainBatches, eval_batches, prepare
from prmkd.data.dataset import load_prepared


@pytest.fixture(params=["fixture", "scientific"])
def ds(request, tiny_ds):
    return tiny_ds if request.param == "fixture" else request.getfixturevalue("scientific")


def test_nothing_lost(ds):
    """train + valid + test = every interaction, position by position."""
    tu, ti = ds.train_interactions()
    assert len(tu) + 2 * ds.n_users == len(ds.seq_items)
    valid, test = ds.split_targets("valid"), ds.split_targets("test")
    for u in range(0, ds.n_users, max(1, ds.n_users // 300)):
        s = ds.seq(u)
        assert ti[tu == u].tolist() + [valid[u], test[u]] == s.tolist()
    assert set(np.unique(ds.seq_items)) <= set(range(1, ds.n_items + 1))  # 0 is padding, never an item


def test_train_pairs(ds):
    users, items, ids = ds.train_pairs()
    assert ids.tolist() == list(range(ds.n_train_instances))
    offs = ds.train_instance_offsets
    # user u has n - 3 instances: targets s[1..n-3] (s[0] has no history; s[n-2], s[n-1] are held out)
    assert (np.bincount(users, minlength=ds.n_users) == ds.seq_lengths - 3).all()
    pos = ids - offs[users] + 1
    assert (items == ds.seq_items[ds.seq_offsets[users] + pos]).all()
    assert (pos <= ds.seq_lengths[users] - 3).all() and (pos >= 1).all()


def _check_batch(ds, batch, seen: np.ndarray) -> None:
    """Each row is one window s[a:b] -> s[a+1:b+1] inside the training split, its counted targets are the
    instances (u, t) with ids offsets[u] + t - 1, and no input or target is one of the last two positions."""
    offs = ds.train_instance_offsets
    items, targets, inst = batch.items.numpy(), batch.targets.numpy(), batch.instance_ids.numpy()
    for r in range(len(items)):
        u, n = int(batch.users[r]), int(batch.lengths[r])
        s = ds.seq(u)
        assert 1 <= n <= ds.max_len  # histories capped at max_len
        assert (items[r, n:] == 0).all() and (targets[r, n:] == 0).all() and (inst[r, n:] == -1).all()
        counted = np.flatnonzero(inst[r, :n] >= 0)
        assert len(counted) > 0
        j = counted[0]
        a = int(inst[r, j] - offs[u] + 1) - 1 - j  # window start from its first counted target
        assert a >= 0 and a + n + 1 <= len(s) - 2  # targets end before the valid / test positions
        assert (items[r, :n] == s[a:a + n]).all() and (targets[r, :n] == s[a + 1:a + n + 1]).all()
        t = a + 1 + counted  # target positions of the counted instances
        assert (inst[r, counted] == offs[u] + t - 1).all()
        assert counted.tolist() == list(range(j, n))  # counted positions are the window's tail
        seen[inst[r, counted]] += 1


def test_train_batches_cover_every_instance_once(ds):
    batches = TrainBatches(ds, batch_size=64 if ds.n_users < 1000 else 1024, seed=3)
    seen = np.zeros(ds.n_train_instances, dtype=np.int64)
    steps = []
    for step, batch in batches.epoch(0):
        steps.append(step)
        _check_batch(ds, batch, seen)
    assert steps == list(range(len(batches)))
    assert (seen == 1).all()  # instance ids 0..n-1, each exactly once


def test_windows_split_long_sequences(tiny_ds):
    """The fixture has users longer than max_len + 3: they give several overlapping windows."""
    ds = tiny_ds
    batches = TrainBatches(ds, batch_size=1000, seed=0)
    long_users = np.flatnonzero(ds.train_lengths - 1 > ds.max_len)
    assert len(long_users) > 5
    per_user = np.bincount(batches.windows[:, 0], minlength=ds.n_users)
    assert (per_user[long_users] >= 2).all()
    assert (per_user[ds.train_lengths - 1 <= ds.max_len] == 1).all()


def test_epoch_order_depends_only_on_seed_and_epoch(tiny_ds):
    def order(seed, epoch, start=0):
        return [b.instance_ids.numpy().copy() for _, b in TrainBatches(tiny_ds, 16, seed).epoch(epoch, start)]

    a, b = order(1, 2), order(1, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(a[3:], order(1, 2, start=3)))  # resuming mid-epoch
    assert not all(np.array_equal(x, y) for x, y in zip(a, order(1, 3)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, order(2, 2)))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_batches(ds, split):
    """Histories are the last max_len items before the target; targets are s[n-2] (valid) / s[n-1] (test)."""
    cut = 1 if split == "test" else 2
    users = np.arange(ds.n_users)[::-1].copy()  # any order comes back as asked
    got_users = []
    for batch in eval_batches(ds, split, 100, users):
        for r, u in enumerate(batch.users.tolist()):
            s = ds.seq(u)
            hist = s[:len(s) - cut][-ds.max_len:]
            n = int(batch.lengths[r])
            assert batch.items[r, :n].tolist() == hist.tolist() == ds.split_history(u, split).tolist()
            assert (batch.items[r, n:] == 0).all()
            assert int(batch.targets[r]) == s[len(s) - cut]
        got_users += batch.users.tolist()
    assert got_users == users.tolist()


def test_histories_capped_at_max_len(tiny_ds):
    assert tiny_ds.max_len == 8 and tiny_ds.seq_lengths.max() > 20
    assert max(len(tiny_ds.split_history(u, "test")) for u in range(tiny_ds.n_users)) == 8


def test_cache_hit_and_fingerprint(tiny_table, tmp_path):
    inter, items = tiny_table
    cfg = DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(tmp_path / "c"))
    first = prepare(cfg, log=None)
    logs = []
    again = prepare(cfg, log=logs.append)
    assert logs == []  # no rebuild
    assert again.meta["folder"] == first.meta["folder"]
    for name in ("seq_items", "seq_offsets"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert again.item_keys == first.item_keys and again.user_keys == first.user_keys
    assert again.item_text == first.item_text and again.item_fields == first.item_fields
    assert again.fingerprint == first.fingerprint
    assert len(list((tmp_path / "c" / "prepared").iterdir())) == 1
    # a changed option is another prepared dataset with another split fingerprint
    other = prepare(DataConfig(path=str(inter), items=str(items), max_len=5, cache_dir=str(tmp_path / "c")), log=None)
    assert other.fingerprint != first.fingerprint and other.meta["folder"] != first.meta["folder"]
    assert np.array_equal(other.seq_items, first.seq_items)  # same sequences, another split (history cap)
    assert len(list((tmp_path / "c" / "prepared").iterdir())) == 2
    # a changed input file is a cache miss too
    inter.write_text(inter.read_text() + "u0,i1,99999\n")
    changed = prepare(cfg, log=None)
    assert changed.meta["folder"] != first.meta["folder"] and len(changed.seq_items) == len(first.seq_items) + 1
    # the folder alone is enough to load it
    loaded = load_prepared(first.meta["folder"])
    assert np.array_equal(loaded.seq_items, first.seq_items) and loaded.fingerprint == first.fingerprint
