"""Full-ranking evaluation: hand-computed values, a slow per-user reference loop against the vectorised
evaluator, pessimistic ties, history masking (exactly the history, never the target), per-user order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prmkd.config import EvalConfig
from prmkd.data.dataset import SeqDataset
from prmkd.errors import PrmkdError
from prmkd.evaluation import evaluate, metrics_from_ranks
from prmkd.models.base import Recommender

NAMES = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"]


class FixedScores(Recommender):
    """Scores user u against item j as S[u, j] (S is (n_users, n_items + 1); column 0 is padding)."""

    def __init__(self, scores):
        super().__init__()
        self.S = torch.as_tensor(scores)
        self.n_items = self.S.shape[1] - 1
        self.calls: list[tuple[int, int]] = []

    def eval_state(self, batch):
        return batch.users

    def score_items(self, state, lo, hi):
        assert 1 <= lo < hi <= self.n_items + 1  # never the padding item 0
        self.calls.append((lo, hi))
        return self.S[state, lo:hi]


class Constant(Recommender):
    def __init__(self, n_items: int):
        super().__init__()
        self.n_items = n_items

    def eval_state(self, batch):
        return len(batch.users)

    def score_items(self, state, lo, hi):
        return torch.zeros(state, hi - lo)


def make_ds(seqs: list[list[int]], n_items: int, max_len: int = 50) -> SeqDataset:
    return SeqDataset.from_sequences(seqs, n_items, max_len=max_len)


def random_ds(n_users=37, n_items=53, max_len=4, seed=0) -> SeqDataset:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, n_items + 1, size=int(rng.integers(3, 16))).tolist() for _ in range(n_users)]
    return make_ds(seqs, n_items, max_len)


# --------------------------------------------------------------------------------------------------
# hand-computed


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(np.array([0, 2, 6, 14, 30]))
    assert m["recall@5"].tolist() == [1, 1, 0, 0, 0]
    assert m["recall@10"].tolist() == [1, 1, 1, 0, 0]
    assert m["recall@20"].tolist() == [1, 1, 1, 1, 0]
    # 1 / log2(rank + 2): rank 0 -> 1, rank 2 -> 1/2, rank 6 -> 1/3, rank 14 -> 1/4
    assert np.allclose(m["ndcg@5"], [1, 0.5, 0, 0, 0])
    assert np.allclose(m["ndcg@10"], [1, 0.5, 1 / 3, 0, 0])
    assert np.allclose(m["ndcg@20"], [1, 0.5, 1 / 3, 0.25, 0])
    assert np.allclose(m["mrr@10"], [1, 1 / 3, 1 / 7, 0, 0])


def test_evaluate_by_hand():
    n = 30
    ds = make_ds([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], n)
    S = torch.zeros(4, n + 1)
    S[:, 0] = 100.0  # the padding column must never be ranked
    S[0, 3], S[0, [20, 21]] = 0.9, 1.0  # two items above the target: rank 2
    S[1, 6] = 5.0  # strictly best: rank 0
    S[2, 9], S[2, 21:25], S[2, 25:30] = 0.5, 0.5, 0.9  # 5 above, 4 tied (ties count against): rank 9
    S[3, 12] = -1.0  # below the 29 zeros: rank 29
    res = evaluate(FixedScores(S), ds, "test")
    assert res.ranks.tolist() == [2, 0, 9, 29]
    assert res.per_user["recall@5"].tolist() == [1, 1, 0, 0]
    assert res.per_user["recall@10"].tolist() == [1, 1, 1, 0]
    assert np.allclose(res.per_user["ndcg@10"], [0.5, 1, 1 / math.log2(11), 0])
    assert np.allclose(res.per_user["mrr@10"], [1 / 3, 1, 0.1, 0])
    assert res.metrics["recall@10"] == pytest.approx(0.75)
    assert res.metrics["ndcg@5"] == pytest.approx((0.5 + 1) / 4)
    assert res.metrics["mrr@10"] == pytest.approx((1 / 3 + 1 + 0.1) / 4)
    assert sorted(res.metrics) == sorted(NAMES)
    assert res.settings["ties"] == "pessimistic" and res.settings["mask_history"] is False
    assert res.settings["split"] == "test" and res.settings["n_items"] == n


# --------------------------------------------------------------------------------------------------
# slow reference loop


def reference(ds: SeqDataset, S: np.ndarray, split: str, mask: bool) -> dict[str, np.ndarray]:
    """Per user, obviously: rank = number of other items scored >= the target (history items, the target
    excepted, dropped first when masking); then the metric definitions."""
    out = {k: [] for k in ["rank", *NAMES]}
    for u in range(ds.n_users):
        s = ds.seq(u).tolist()
        end = len(s) - (1 if split == "test" else 2)
        target, history = s[end], set(s[:end])
        rank = 0
        for j in range(1, ds.n_items + 1):
            if j == target or (mask and j in history):
                continue
            if S[u, j] >= S[u, target]:
                rank += 1
        out["rank"].append(rank)
        for k in (5, 10, 20):
            out[f"recall@{k}"].append(1.0 if rank < k else 0.0)
            out[f"ndcg@{k}"].append(1.0 / math.log2(rank + 2) if rank < k else 0.0)
        out["mrr@10"].append(1.0 / (rank + 1) if rank < 10 else 0.0)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("max_elements", [1 << 25, 20, 7])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_against_reference_loop(split, mask, max_elements, dtype):
    ds = random_ds()
    rng = np.random.default_rng(1)
    # few distinct values (ties everywhere), not exactly representable in binary (0.1 steps)
    S = torch.tensor(np.round(rng.integers(0, 8, size=(ds.n_users, ds.n_items + 1)) * 0.1, 1), dtype=dtype)
    model = FixedScores(S)
    res = evaluate(model, ds, split, EvalConfig(mask_history=mask, max_elements=max_elements, batch_size=5))
    ref = reference(ds, S.numpy(), split, mask)
    assert res.ranks.tolist() == ref["rank"].tolist()
    for k in NAMES:
        assert np.allclose(res.per_user[k], ref[k]), k
        assert res.metrics[k] == pytest.approx(ref[k].mean())
    widths = {hi - lo for lo, hi in model.calls}
    if max_elements < ds.n_items:  # the multi-chunk path ran: item chunks no wider than max_elements
        assert max(widths) <= max_elements and min(lo for lo, _ in model.calls) == 1
    else:
        assert widths == {ds.n_items}
    assert res.settings["mask_history"] is mask


def test_constant_scores_get_zero():
    ds = random_ds()
    for mask in (False, True):
        res = evaluate(Constant(ds.n_items), ds, "test", EvalConfig(mask_history=mask))
        assert res.metrics["recall@20"] == 0.0 and res.metrics["ndcg@20"] == 0.0 and res.metrics["mrr@10"] == 0.0
    assert (evaluate(Constant(ds.n_items), ds, "test").ranks == ds.n_items - 1).all()


def test_constant_scores_on_scientific(scientific):
    res = evaluate(Constant(scientific.n_items), scientific, "test", EvalConfig(max_elements=1 << 22))
    assert res.metrics["recall@20"] == 0.0
    assert (res.ranks == scientific.n_items - 1).all()


# --------------------------------------------------------------------------------------------------
# masking


def test_masking_removes_exactly_the_history():
    """History items above the target: masking removes all of them (rank 0). Non-history items above the target:
    masking removes none of them. The full history counts, not only the last max_len items a model sees; the
    target is never masked, even when it is in the history."""
    n = 40
    seqs = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 10], [5, 6, 5, 7, 5], [20, 21, 22, 23, 24, 25, 26, 20]]
    ds = make_ds(seqs, n, max_len=3)
    targets = ds.split_targets("test")
    hist = [set(s[:-1]) - {s[-1]} for s in seqs]
    above_in = torch.zeros(len(seqs), n + 1)  # history items 1, the target 0.5, the rest 0
    above_out = torch.ones(len(seqs), n + 1)  # history items 0, the target 0.5, the rest 1
    for u, h in enumerate(hist):
        above_in[u, list(h)] = 1.0
        above_out[u, list(h)] = 0.0
    above_in[range(4), targets] = above_out[range(4), targets] = 0.5
    on, off = EvalConfig(mask_history=True), EvalConfig(mask_history=False)
    assert evaluate(FixedScores(above_in), ds, "test", off).ranks.tolist() == [len(h) for h in hist]
    assert evaluate(FixedScores(above_in), ds, "test", on).ranks.tolist() == [0, 0, 0, 0]
    expect = [n - 1 - len(h) for h in hist]
    assert evaluate(FixedScores(above_out), ds, "test", off).ranks.tolist() == expect
    assert evaluate(FixedScores(above_out), ds, "test", on).ranks.tolist() == expect
    # multi-chunk path too
    tiny = EvalConfig(mask_history=True, max_elements=6)
    assert evaluate(FixedScores(above_in), ds, "test", tiny).ranks.tolist() == [0, 0, 0, 0]
    assert evaluate(FixedScores(above_out), ds, "test", tiny).ranks.tolist() == expect


# --------------------------------------------------------------------------------------------------
# order, subsets, errors


def test_per_user_arrays_in_user_order():
    """User u's target has exactly u items above it; histories of different lengths make the evaluator
    batch users out of order internally."""
    n, U = 30, 12
    rng = np.random.default_rng(0)
    seqs = [[1 + (u + k) % 5 for k in range(int(rng.integers(3, 9)))] + [29 - u % 2] for u in range(U)]
    ds = make_ds(seqs, n, max_len=4)
    S = torch.zeros(U, n + 1)
    targets = ds.split_targets("test")
    for u in range(U):
        S[u, targets[u]] = 0.5
        above = [j for j in range(1, n + 1) if j != targets[u]][:u]
        S[u, above] = 1.0
    res = evaluate(FixedScores(S), ds, "test", EvalConfig(batch_size=3))
    assert res.ranks.tolist() == list(range(U))
    assert res.per_user["recall@5"].tolist() == [1.0] * 5 + [0.0] * 7
    sub = evaluate(FixedScores(S), ds, "test", EvalConfig(batch_size=2), users=np.array([7, 2, 11]))
    assert sub.ranks.tolist() == [7, 2, 11] and sub.per_user["recall@5"].tolist() == [0, 1, 0]


def test_nan_scores_are_an_error():
    ds = random_ds()
    S = torch.zeros(ds.n_users, ds.n_items + 1)
    S[3, 5] = float("nan")
    with pytest.raises(PrmkdError, match="NaN"):
        evaluate(FixedScores(S), ds, "test")


def test_model_mode_restored():
    ds = random_ds()
    m = Constant(ds.n_items)
    m.train()
    evaluate(m, ds, "valid")
    assert m.training
