"""PRM-KD's pieces on cases worked by hand, and end to end on a fixture with a known answer."""

import math

import numpy as np
import pytest
import torch

from prmkd.config import DistillConfig, EvalConfig, TrainConfig
from prmkd.data.batches import TrainBatches
from prmkd.data.dataset import SeqDataset
from prmkd.distillation import kd
from prmkd.distillation.trainer import KDLoss, default_weights
from prmkd.evaluation import evaluate
from prmkd.models.sasrec import SASRec, SASRecConfig
from prmkd.teachers.cache import TeacherCache, write_cache
from prmkd.training import fit


# ---------------------------------------------------------------------------------------------- Eq. 1-6


def test_candidate_set_in_batch_unique_and_all():
    cands, pos = kd.candidate_set(torch.tensor([5, 3, 5, 7]))
    assert cands.tolist() == [3, 5, 7]
    assert pos.tolist() == [1, 0, 1, 2]  # each instance's own target column
    cands, pos = kd.candidate_set(torch.tensor([5, 3, 5]), unique=False)
    assert cands.tolist() == [5, 3, 5] and pos.tolist() == [0, 1, 2]
    cands, pos = kd.candidate_set(torch.tensor([2, 4]), mode="all", n_items=4)
    assert cands.tolist() == [1, 2, 3, 4] and pos.tolist() == [1, 3]


def test_teacher_probs_eq1_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert torch.allclose(kd.teacher_probs(logits, 1.0), torch.tensor([[0.25, 0.75]]))
    # tau = 0.5 doubles the logits: exp(2 ln 3) = 9 -> [1/10, 9/10]
    assert torch.allclose(kd.teacher_probs(logits, 0.5), torch.tensor([[0.1, 0.9]]))


def test_normalizations_by_hand():
    s = torch.tensor([[[0.2, 0.5, 0.3]]])  # (K=1, N=1, C=3)
    assert torch.equal(kd.normalize(s, "softmax"), s)
    assert torch.allclose(kd.normalize(s, "minmax"), torch.tensor([[[0.0, 1.0, 1 / 3]]]))
    assert torch.allclose(kd.normalize(s, "rank"), torch.tensor([[[0.0, 1.0, 0.5]]]))
    for m in ("softmax", "minmax", "rank"):
        assert (kd.normalize(torch.rand(3, 5, 7).softmax(-1), m) >= 0).all()


# the worked example: three teachers, one instance, two candidates
S_TILDE = torch.tensor([[[0.9, 0.1]], [[0.8, 0.2]], [[0.1, 0.9]]])  # (K=3, N=1, C=2)
W = torch.tensor([0.5, 0.3, 0.2])


def test_consistency_eq2_by_hand():
    conf = kd.consistency(S_TILDE)[:, 0]
    # conf_1 = (0.1^2 + 0.1^2) + (0.8^2 + 0.8^2) = 1.30; conf_2 = 0.02 + 0.98 = 1.00; conf_3 = 1.28 + 0.98 = 2.26
    assert torch.allclose(conf, torch.tensor([1.30, 1.00, 2.26]))


def test_epsilon_rule_drops_the_least_consistent_teacher():
    conf = kd.consistency(S_TILDE)
    fired = kd.adjusted_weights(conf, W, epsilon=0.5)[:, 0]
    assert torch.allclose(fired, torch.tensor([0.6, 0.4, 0.0]))  # teacher 3 out, its 0.2 shared equally
    kept = kd.adjusted_weights(conf, W, epsilon=3.0)[:, 0]  # every conf < 3: default weights
    assert torch.allclose(kept, W)
    q, _ = kd.fused_targets(torch.log(S_TILDE), W, tau=1.0, epsilon=0.5)
    assert torch.allclose(q[0], torch.tensor([0.86, 0.14]))  # 0.6 * [.9, .1] + 0.4 * [.8, .2]


def test_weights_sum_to_one_per_instance():
    g = torch.Generator().manual_seed(0)
    for K in (1, 2, 3, 5):
        logits = torch.randn(K, 64, 9, generator=g)
        w = torch.rand(K, generator=g) + 0.1
        for fusion in ("consistency", "average"):
            for eps in (0.0, 0.05, 10.0):
                q, weights = kd.fused_targets(logits, w, tau=0.7, epsilon=eps, fusion=fusion)
                assert torch.allclose(weights.sum(0), torch.ones(64), atol=1e-6)
                assert torch.allclose(q.sum(-1), torch.ones(64), atol=1e-6)
                assert (q >= 0).all()


def test_two_teachers_keep_default_weights():
    # conf is symmetric with two teachers: no single one disagrees, so the rule never drops
    conf = kd.consistency(torch.rand(2, 10, 4).softmax(-1))
    assert torch.allclose(kd.adjusted_weights(conf, torch.tensor([0.7, 0.3]), 0.0),
                          torch.tensor([[0.7], [0.3]]).expand(2, 10))


def test_one_teacher_reduces_to_plain_in_batch_kd():
    logits = torch.randn(1, 8, 5)
    q, _ = kd.fused_targets(logits, torch.ones(1), tau=0.5, epsilon=0.0)
    assert torch.allclose(q, torch.softmax(logits[0] / 0.5, -1), atol=1e-6)


def test_kl_zero_when_student_equals_target_and_positive_otherwise():
    q = torch.tensor([[0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
    for direction in ("reverse", "forward"):
        assert kd.kd_loss(q.log(), q, direction).abs() < 1e-7
        assert kd.kd_loss(torch.zeros(2, 3), q, direction) > 1e-3


def test_reverse_kl_matches_the_paper_formula():
    p_logits = torch.tensor([[1.0, 0.0, -1.0]])
    q = torch.tensor([[0.2, 0.3, 0.5]])
    p = torch.softmax(p_logits, -1)
    expected = (p * (p / q).log()).sum()
    assert torch.allclose(kd.kd_loss(p_logits, q, "reverse"), expected)
    assert torch.allclose(kd.kd_loss(p_logits, q, "forward"), (q * (q / p).log()).sum())


# ---------------------------------------------------------------------------------------------- end to end


def cyclic_dataset(n_items=12, n_users=96, seed=0) -> SeqDataset:
    """Users walk the items in a cycle: the next item is always prev % n_items + 1. Lengths 5..14 with
    max_len 10, so every position a test history uses is also trained."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        start, length = rng.integers(1, n_items + 1), rng.integers(5, 15)
        seqs.append([(start - 1 + t) % n_items + 1 for t in range(length)])
    return SeqDataset.from_sequences(seqs, n_items, max_len=10, name="cyclic")


def oracle_cache(ds: SeqDataset, folder, shift: int, name: str):
    """A teacher whose every instance representation points at the item `shift` steps after the last one."""
    n = ds.n_items
    items = np.eye(n + 1, dtype=np.float32)
    last_u, last_i, inst = ds.train_pairs()  # targets of training instances; the item before is target - 1
    prev = (last_i - 2) % n + 1
    rows = np.zeros((ds.n_train_instances, n + 1), dtype=np.float32)
    rows[np.arange(len(prev)), (prev - 1 + shift) % n + 1] = 5.0
    split_rows = {}
    for split, cut in (("valid", 2), ("test", 1)):
        last = ds.seq_items[ds.seq_offsets[1:] - cut - 1]
        r = np.zeros((ds.n_users, n + 1), dtype=np.float32)
        r[np.arange(ds.n_users), (last - 1 + shift) % n + 1] = 5.0
        split_rows[split] = r
    return write_cache(folder, name=name, family="oracle", items=items, train=rows, ds=ds,
                       metrics={"valid": {"ndcg@10": 1.0}}, **split_rows)


def test_cache_refuses_another_dataset(tmp_path):
    ds = cyclic_dataset()
    oracle_cache(ds, tmp_path / "c", 1, "oracle")
    other = cyclic_dataset(seed=1)
    from prmkd.errors import CacheMismatchError

    with pytest.raises(CacheMismatchError, match="made for dataset"):
        TeacherCache(tmp_path / "c", other)


def _distil(ds, caches, kd_weight, tmp_path, epochs=40):
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(hidden_size=32, dropout=0.0, attn_dropout=0.0), ds.n_items, ds.max_len)
    loss_fn = KDLoss(DistillConfig(teachers=[str(c) for c in caches], kd_weight=kd_weight, temperature=1.0), ds)
    fit(model, ds, TrainConfig(epochs=epochs, batch_size=64, lr=5e-3, patience=epochs, progress=False), tmp_path,
        loss_fn=loss_fn, log=lambda m: None)
    return model, {**loss_fn.info, **loss_fn.state()}


def test_student_follows_a_teacher_that_knows_the_next_item(tmp_path):
    ds = cyclic_dataset()
    # this teacher says the next item is two steps ahead, which the training labels never say: a student
    # that ranks that item first can only have learnt it from the teacher
    cache = oracle_cache(ds, tmp_path / "ahead2", shift=2, name="ahead2")
    model, info = _distil(ds, [cache], kd_weight=50.0, tmp_path=tmp_path / "run")
    model.eval()
    from prmkd.data.batches import eval_batches

    batch = next(eval_batches(ds, "test", ds.n_users))
    top1 = model.full_scores(batch).argmax(1)
    last = batch.items[torch.arange(ds.n_users), batch.lengths - 1]
    expected = (last - 1 + 2) % ds.n_items + 1
    assert (top1 == expected).float().mean() > 0.9
    assert info["stats"]["batches"] > 0 and info["weights"] == [1.0]


def test_perfect_teacher_student_ranks_target_first(tmp_path):
    ds = cyclic_dataset()
    cache = oracle_cache(ds, tmp_path / "oracle", shift=1, name="oracle")
    model, _ = _distil(ds, [cache], kd_weight=50.0, tmp_path=tmp_path / "run")
    res = evaluate(model, ds, "test", EvalConfig(ks=[1, 10]))
    assert res.metrics["recall@1"] > 0.9


def test_default_weights_from_validation_ndcg(tmp_path):
    ds = cyclic_dataset()
    a = oracle_cache(ds, tmp_path / "a", 1, "a")
    b = oracle_cache(ds, tmp_path / "b", 2, "b")
    import json

    m = json.loads((b / "manifest.json").read_text())
    m["metrics"]["valid"]["ndcg@10"] = 3.0
    (b / "manifest.json").write_text(json.dumps(m))
    caches = [TeacherCache(a, ds), TeacherCache(b, ds)]
    assert torch.allclose(default_weights(caches, "valid_ndcg"), torch.tensor([0.25, 0.75]))
    assert torch.allclose(default_weights(caches, "uniform"), torch.tensor([0.5, 0.5]))
    assert torch.allclose(default_weights(caches, [1, 3]), torch.tensor([0.25, 0.75]))


def test_a_rebuilt_teacher_cache_makes_a_distilled_run_new(tmp_path):
    """Resuming must not reuse a distilled run made from an earlier build of a cache at the same path."""
    from prmkd.config import RunConfig
    from prmkd.experiment.runner import fingerprint

    ds = cyclic_dataset()
    oracle_cache(ds, tmp_path / "c", 1, "oracle")
    rc = RunConfig(model={"name": "sasrec", "hidden_size": 32}, distill=DistillConfig(teachers=[str(tmp_path / "c")]))
    first = fingerprint(rc, ds)
    assert fingerprint(rc, ds) == first  # the same build: the same run
    oracle_cache(ds, tmp_path / "c", 1, "oracle")  # the same content, rebuilt
    assert fingerprint(rc, ds) != first
    plain = RunConfig(model={"name": "sasrec", "hidden_size": 32})
    assert fingerprint(plain, ds) != first


def test_stats_count_every_session_of_a_resumed_run_and_keep_same_named_teachers_apart(tmp_path):
    """A run killed mid-epoch and resumed reports the same consistency statistics as an uninterrupted one; three
    teachers all named 'oracle' keep three counts."""
    ds = cyclic_dataset()
    caches = [str(oracle_cache(ds, tmp_path / f"c{k}", shift=1 + k, name="oracle")) for k in range(3)]
    cfg = DistillConfig(teachers=caches, epsilon=0.0)
    train = TrainConfig(epochs=2, batch_size=16, lr=5e-3, patience=5, progress=False, checkpoint_every=1)

    class Crash(KDLoss):
        calls = 0

        def __call__(self, model, batch):
            Crash.calls += 1
            if Crash.calls == 9:
                raise RuntimeError("killed")
            return super().__call__(model, batch)

    def fit_with(loss, out):
        torch.manual_seed(0)
        model = SASRec(SASRecConfig(hidden_size=16, layers=1), ds.n_items, ds.max_len)
        fit(model, ds, train, out, loss_fn=loss, fingerprint="fp", log=lambda m: None)

    whole = KDLoss(cfg, ds)
    fit_with(whole, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="killed"):
        fit_with(Crash(cfg, ds), tmp_path / "resumed")
    resumed = KDLoss(cfg, ds)
    fit_with(resumed, tmp_path / "resumed")
    a, b = whole.state()["stats"], resumed.state()["stats"]
    assert a == b
    assert a["batches"] == 2 * len(TrainBatches(ds, 16, 0)) and a["rule_fired"] > 0
    assert list(a["dropped"]) == ["oracle#0", "oracle#1", "oracle#2"] and sum(a["dropped"].values()) == a["rule_fired"]


def test_the_fused_teacher_ranker_equals_a_slow_reference(tmp_path):
    """distillation.ceiling ranks by Eq. 1-4 over every item: checked against a per-user numpy loop, and two copies
    of a perfect teacher rank every target first."""
    from prmkd.distillation.ceiling import ceiling, fused_ranks

    ds = cyclic_dataset()
    rng = np.random.default_rng(0)
    caches = []
    for k in range(3):
        rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
        arrays = {n: rng.standard_normal((r, 4)).astype(np.float32) for n, r in rows.items()}
        caches.append(TeacherCache(write_cache(tmp_path / f"r{k}", name=f"r{k}", family="x", ds=ds, **arrays,
                                               metrics={"valid": {"ndcg@10": 0.1 * (k + 1)}}), ds))
    cfg = DistillConfig(temperature=0.7, epsilon=0.05)
    got = fused_ranks(caches, ds, cfg, "test", batch=7)
    w = np.array([0.1, 0.2, 0.3]) / 0.6
    for u in range(ds.n_users):
        logits = np.stack([c.rows("test", torch.tensor([u])).numpy() @ c.items[1:].numpy().T for c in caches])[:, 0]
        s = np.exp(logits / 0.7 - (logits / 0.7).max(1, keepdims=True))
        s /= s.sum(1, keepdims=True)  # (K, n) Eq. 1
        conf = np.array([sum(((s[k] - s[j]) ** 2).sum() for j in range(3) if j != k) for k in range(3)])  # Eq. 2
        wk = w.copy()
        if (conf >= 0.05).any():
            drop = conf.argmax()
            wk = w + w[drop] / 2
            wk[drop] = 0.0
        q = (wk[:, None] * s).sum(0)
        q /= q.sum()
        t = ds.split_targets("test")[u] - 1
        assert got[u] == (q > q[t]).sum() + (q == q[t]).sum() - 1
    perfect = TeacherCache(oracle_cache(ds, tmp_path / "o", shift=1, name="o"), ds)
    twice = ceiling([perfect, TeacherCache(perfect.folder, ds)], ds, DistillConfig(), EvalConfig())
    assert len(twice) == 1 and twice[0]["metrics"]["ndcg@10"] == 1.0
    assert len(ceiling(caches, ds, cfg, EvalConfig())) == 4  # all three, and each of the three pairs


def test_max_instances_bounds_the_kd_instances_and_keeps_fingerprints_while_off(tmp_path, monkeypatch):
    from prmkd.config import RunConfig
    from prmkd.experiment.runner import fingerprint

    ds = cyclic_dataset()
    cache = oracle_cache(ds, tmp_path / "c", 1, "oracle")
    model = SASRec(SASRecConfig(hidden_size=16, layers=1), ds.n_items, ds.max_len)
    batch = next(TrainBatches(ds, 32, 0).epoch(0))[1]
    n = int(batch.counted.sum())
    capped = KDLoss(DistillConfig(teachers=[str(cache)], max_instances=50), ds)
    capped(model, batch).backward()
    assert n > 50 and capped.state()["stats"]["instances"] == 50
    full = KDLoss(DistillConfig(teachers=[str(cache)]), ds)
    full(model, batch)
    assert full.state()["stats"]["instances"] == n
    # with the option off, a distilled run keeps the fingerprint it had before the option existed (the value
    # computed by the code of that time, for this dataset and a fixed cache identity)
    import prmkd.teachers.cache as tc

    monkeypatch.setattr(tc, "cache_identity", lambda folder: {"build": "b", "teacher_fingerprint": "t"})
    rc = RunConfig(model={"name": "sasrec", "hidden_size": 16}, distill=DistillConfig(teachers=["c"]))
    on = RunConfig(model={"name": "sasrec", "hidden_size": 16}, distill=DistillConfig(teachers=["c"],
                                                                                      max_instances=50))
    assert fingerprint(rc, ds) == FINGERPRINT_BEFORE_MAX_INSTANCES and fingerprint(on, ds) != fingerprint(rc, ds)


FINGERPRINT_BEFORE_MAX_INSTANCES = "9be7da1fd01c3608"  # computed by the code before the option existed


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec", "fm", "lightgcn", "sasrec-sampled",
                                  "bert4rec-sampled"])
def test_capped_kd_scores_only_the_kept_rows_with_the_same_loss_and_gradients(name):
    """candidate_scores_of(enc, cands, rows) is candidate_scores(enc, cands)[rows] exactly, values and gradients:
    a capped distillation gives the same run whichever of the two it calls."""
    from prmkd.models import build_model

    ds = cyclic_dataset()
    batch = next(TrainBatches(ds, 32, 0).epoch(0))[1]
    grads = []
    for way in ("select after", "rows first"):
        torch.manual_seed(0)
        size = {"embedding_size": 16} if name in ("fm", "lightgcn") else {"hidden_size": 16}
        if name.endswith("-sampled"):  # a sampled own loss computes no full logits: the kept rows are scored alone
            size["negatives"] = 5
        model = build_model({"name": name.removesuffix("-sampled"), **size}, ds)
        torch.manual_seed(1)
        enc = model.encode(batch)
        own = model.own_loss(enc)
        rows = torch.arange(0, len(enc.targets), 3)
        cands = torch.unique(enc.targets)
        s = (model.candidate_scores(enc, cands)[rows] if way == "select after" else
             model.candidate_scores_of(enc, cands, rows))
        (own + (s.log_softmax(-1) * torch.linspace(0, 1, s.shape[1])).sum()).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None] + [s.detach()])
    same = torch.equal if not name.endswith("-sampled") else (lambda a, b: torch.allclose(a, b, atol=1e-6))
    assert len(grads[0]) == len(grads[1]) and all(same(a, b) for a, b in zip(*grads))


def test_sampled_softmax_estimates_the_full_softmax_without_bias():
    """With K uniform negatives, exp(loss + pos) - exp(pos) of one instance is its estimate of the full softmax's
    sum over the other items: its mean over many draws matches that sum (within 3 standard errors), the target
    drawn as a negative never counts, and a K as large as the catalogue is the full softmax itself."""
    from prmkd.models.base import Encoded, full_softmax_ce, sampled_softmax_ce, softmax_ce

    torch.manual_seed(0)
    v, d = 40, 8
    weight = torch.randn(v + 1, d) * 0.7
    reps, target = torch.randn(1, d), torch.tensor([7])
    enc = Encoded(reps, target, torch.tensor([0]), torch.tensor([0]))
    logits = (reps @ weight[1:].T)[0]
    pos = float(logits[6])
    others = float(logits.exp().sum()) - math.exp(pos)
    est = torch.tensor([math.exp(float(sampled_softmax_ce(enc, weight, None, 6)) + pos) - math.exp(pos)
                        for _ in range(20000)], dtype=torch.float64)
    assert abs(float(est.mean()) - others) < 3 * float(est.std()) / math.sqrt(len(est))
    assert abs(float(est.mean()) - others) / others < 0.03
    # a catalogue of one item: every draw is the target, left out of its row, so nothing but the target remains
    one = Encoded(torch.randn(2, d), torch.tensor([1, 1]), torch.tensor([0, 1]), torch.tensor([0, 1]))
    assert float(sampled_softmax_ce(one, weight[:2], None, 3)) == 0.0
    enc.cache.clear()
    assert torch.equal(softmax_ce(enc, weight, negatives=v), full_softmax_ce(enc, weight))


def test_a_sampled_softmax_student_learns_and_distils(tmp_path):
    """SASRec with 4 sampled negatives (of 24 items) learns the cyclic walk, alone and distilled, and the option
    is part of the run's fingerprint (runs made before it existed keep theirs: the test above)."""
    from prmkd.config import RunConfig
    from prmkd.experiment.runner import fingerprint

    ds = cyclic_dataset(n_items=24)
    for teachers in ([], [str(oracle_cache(ds, tmp_path / "c", 1, "oracle"))]):
        torch.manual_seed(0)
        model = SASRec(SASRecConfig(hidden_size=32, dropout=0.0, attn_dropout=0.0, negatives=4), ds.n_items,
                       ds.max_len)
        loss_fn = KDLoss(DistillConfig(teachers=teachers), ds) if teachers else None
        kw = {"loss_fn": loss_fn} if loss_fn else {}
        fit(model, ds, TrainConfig(epochs=30, batch_size=64, lr=5e-3, patience=30, progress=False),
            tmp_path / f"run{len(teachers)}", log=lambda m: None, **kw)
        assert evaluate(model, ds, "test", EvalConfig()).metrics["ndcg@10"] > 0.9
    plain = RunConfig(model={"name": "sasrec", "hidden_size": 16})
    sampled = RunConfig(model={"name": "sasrec", "hidden_size": 16, "negatives": 4})
    assert fingerprint(plain, ds) != fingerprint(sampled, ds)


def test_the_capped_block_of_the_full_logits_has_a_sparse_gradient_with_the_same_bits():
    """logits_block's gradient is the dense gather's, entry for entry, but sparse: capped distillation adds no
    zero-filled (instances x items) tensor to a step. Indices that are not strictly increasing take the dense way."""
    import warnings

    from prmkd.models.base import logits_block

    torch.manual_seed(0)
    h, w = torch.randn(40, 8, requires_grad=True), torch.randn(30, 8, requires_grad=True)
    rows, cols = torch.tensor([1, 4, 5, 17, 39]), torch.tensor([0, 2, 3, 11, 29])
    q = torch.softmax(torch.randn(5, 5), 1)
    grads = []
    for way in ("dense", "block"):
        h.grad = w.grad = None
        logits = h @ w.T
        own = torch.nn.functional.cross_entropy(logits, torch.arange(40) % 30)
        s = logits[rows].index_select(1, cols) if way == "dense" else logits_block(logits, rows, cols)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (own - 3 * (q * s.log_softmax(1)).sum()).backward()
        grads.append((h.grad.clone(), w.grad.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    logits = (h @ w.T).detach().requires_grad_()
    assert torch.autograd.grad(logits_block(logits, rows, cols).sum(), logits)[0].is_sparse
    assert not torch.autograd.grad(logits_block(logits, rows, cols.flip(0)).sum(), logits)[0].is_sparse
    everything = logits_block(logits, torch.arange(40), torch.arange(30))  # most of the logits: the dense way
    assert not torch.autograd.grad(everything.sum(), logits)[0].is_sparse
