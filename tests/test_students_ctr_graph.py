"""FM, DeepFM and LightGCN students: decomposed scoring equals direct scoring, every parameter learns, the
models learn a known structure, and LightGCN's graph holds training interactions only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prmkd.config import EvalConfig
from prmkd.data.batches import EvalBatch, TrainBatches
from prmkd.data.dataset import SeqDataset
from prmkd.evaluation import evaluate
from prmkd.models import build_model
from prmkd.models.fields import item_token_fields, tokenize
from prmkd.models.general import sample_negatives
from prmkd.models.lightgcn import normalized_adjacency

MODELS = ["fm", "deepfm", "lightgcn"]


def block_dataset(groups: int = 8, per_group: int = 12, users_per_group: int = 12, seq_len: int = 8,
                  seed: int = 0, with_fields: bool = True) -> SeqDataset:
    """Users in `groups` groups; each user consumes `seq_len` distinct items of its group's block of items.
    Item metadata: brand = the group (blank for every 5th item), categories = a group word and a shared word
    (blank for every 7th item)."""
    rng = np.random.default_rng(seed)
    n_items = groups * per_group
    seqs = [rng.choice(np.arange(g * per_group, (g + 1) * per_group) + 1, seq_len, replace=False)
            for g in range(groups) for _ in range(users_per_group)]
    group = [""] + [str((i - 1) // per_group) for i in range(1, n_items + 1)]
    fields = {}
    if with_fields:
        fields = {"brand": [""] + [f"Brand {group[i]}" if i % 5 else "" for i in range(1, n_items + 1)],
                  "categories": [""] + [f"Tools, kind{group[i]} & all" if i % 7 else "" for i in range(1, n_items + 1)]}
    return SeqDataset.from_sequences(seqs, n_items, fields=fields, name="blocks")


@pytest.fixture(scope="module")
def ds() -> SeqDataset:
    return block_dataset()


def first_batch(ds: SeqDataset, size: int = 16):
    return next(TrainBatches(ds, size, seed=0).epoch(0))[1]


def users_batch(users: torch.Tensor) -> EvalBatch:
    """An EvalBatch for these users (these models ignore histories)."""
    n = len(users)
    return EvalBatch(torch.ones(n, 1, dtype=torch.long), torch.ones(n, dtype=torch.long),
                     torch.ones(n, dtype=torch.long), users)


def build(name: str, ds: SeqDataset, **opts):
    torch.manual_seed(0)
    return build_model({"name": name, **opts}, ds)


# ---------------------------------------------------------------- direct (slow, obvious) references


def fm_reference(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Textbook FM on the full field list of each (user, item) pair: w0 + sum w_f + sum_{f<g} <v_f, v_g>."""
    f = model.fields
    out = torch.empty(len(users), len(items))
    for a, u in enumerate(users):
        uv, uw = f.users(u[None])
        for b, i in enumerate(items):
            iv, iw = f.items(i[None])
            v = torch.cat([uv[0], iv[0]])  # (F, d)
            pairs = sum(v[x] @ v[y] for x in range(len(v)) for y in range(x + 1, len(v)))
            out[a, b] = f.bias + uw[0] + iw[0] + pairs
    return out


def deepfm_reference(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """FM plus the MLP on the concatenated field embeddings, with no decomposition of its first layer."""
    fm = fm_reference(model, users, items)
    uv, _ = model.fields.users(users)  # (N, 1, d)
    iv, _ = model.fields.items(items)  # (C, F, d)
    x = torch.cat([uv.flatten(1)[:, None, :].expand(-1, len(items), -1),
                   iv.flatten(1)[None, :, :].expand(len(users), -1, -1)], -1)  # (N, C, (1 + F) d)
    return fm + model.rest(torch.relu(model.first(x)))[..., 0]


def lightgcn_reference(model, ds: SeqDataset, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Dense propagation over an adjacency built with loops from the training sequences."""
    U, n = ds.n_users, ds.n_users + ds.n_items
    adj = torch.zeros(n, n)
    for u in range(U):
        for i in set(ds.seq(u)[:-2].tolist()):
            adj[u, U + i - 1] = adj[U + i - 1, u] = 1.0
    deg = adj.sum(1)
    norm = adj / torch.sqrt(deg[:, None] * deg[None, :]).clamp(min=1e-12)
    e = torch.cat([model.user_emb.weight, model.item_emb.weight])
    layers = [e]
    for _ in range(model.cfg.layers):
        layers.append(norm @ layers[-1])
    final = torch.stack(layers).mean(0)
    return final[users] @ final[U + items - 1].T


# ---------------------------------------------------------------- (a) decomposed == direct


@pytest.mark.parametrize("name", MODELS)
def test_full_catalogue_scores_equal_candidate_scores(ds, name):
    opts = {"pair_block": 50} if name == "deepfm" else {}  # many small blocks: the chunking is exercised
    model = build(name, ds, **opts).eval()
    with torch.no_grad():
        enc = model.encode(first_batch(ds))
        every = torch.arange(1, ds.n_items + 1)
        cand = model.candidate_scores(enc, every)  # (N, n_items)
        state = model.eval_state(users_batch(enc.users))
        full = model.score_items(state, 1, ds.n_items + 1)
        chunks = torch.cat([model.score_items(state, lo, min(lo + 37, ds.n_items + 1))
                            for lo in range(1, ds.n_items + 1, 37)], 1)
        some = torch.tensor([5, 1, ds.n_items, 17, 5])
        subset = model.candidate_scores(enc, some)
    assert cand.shape == (len(enc.targets), ds.n_items)
    torch.testing.assert_close(full, cand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunks, cand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(subset, cand[:, some - 1], rtol=1e-5, atol=1e-5)
    pairs = torch.stack([enc.targets, some[:1].expand_as(enc.targets)], 1)  # (N, 2) per-instance items
    with torch.no_grad():
        own = model.pair_scores(enc, pairs)
    torch.testing.assert_close(own, cand.gather(1, pairs - 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_decomposed_scores_equal_textbook_model(ds, name):
    model = build(name, ds).eval()
    users, items = torch.tensor([0, 13, 95]), torch.tensor([1, 5, 10, 35, 60, 96])  # items with and without fields
    with torch.no_grad():
        got = model.score_items(model.eval_state(users_batch(users)), 1, ds.n_items + 1)[:, items - 1]
        if name == "fm":
            want = fm_reference(model, users, items)
        elif name == "deepfm":
            want = deepfm_reference(model, users, items)
        else:
            want = lightgcn_reference(model, ds, users, items)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fm_item_table_is_a_dot_product_model(ds):
    model = build("fm", ds).eval()
    with torch.no_grad():
        state = model.eval_state(users_batch(torch.tensor([3, 4])))
        torch.testing.assert_close(state @ model.item_table()[1:].T, model.score_items(state, 1, ds.n_items + 1))


def test_models_without_item_fields(ds):
    bare = block_dataset(with_fields=False)
    for name in ("fm", "deepfm"):
        model = build(name, bare).eval()
        assert model.fields.field_names == ["user", "item"]
        users, items = torch.tensor([0, 50]), torch.tensor([1, 2, 96])
        with torch.no_grad():
            got = model.score_items(model.eval_state(users_batch(users)), 1, bare.n_items + 1)[:, items - 1]
            ref = fm_reference(model, users, items) if name == "fm" else deepfm_reference(model, users, items)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert build("fm", ds).fields.field_names == ["user", "item", "brand", "categories"]


# ---------------------------------------------------------------- (b) every parameter gets a gradient


@pytest.mark.parametrize("name,opts", [("fm", {"loss": "bce", "num_negatives": 2}), ("fm", {}),
                                       ("deepfm", {}), ("deepfm", {"loss": "softmax", "softmax_items": 20}),
                                       ("lightgcn", {}), ("lightgcn", {"loss": "softmax"})])
def test_every_parameter_gets_a_gradient(ds, name, opts):
    model = build(name, ds, **opts).train()
    for (_, batch), _ in zip(TrainBatches(ds, 16, seed=0).epoch(0), range(2)):
        loss = model.loss(batch)
        assert torch.isfinite(loss)
        loss.backward()
    # a softmax over items cannot move a per-user constant (w0, user linear weights): zero but present
    shift_free = {"fields.bias", "fields.user_w.weight"} if opts.get("loss", model.cfg.loss) == "softmax" else set()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name} {opts}: {pname} has no gradient"
        if pname not in shift_free:
            assert p.grad.abs().sum() > 0, f"{name} {opts}: {pname} has a zero gradient"


def test_candidate_scores_backpropagate_to_every_parameter(ds):
    """What distillation uses: a loss on in-batch candidate scores alone reaches every parameter."""
    for name in MODELS:
        model = build(name, ds).train()
        enc = model.encode(first_batch(ds))
        cands = enc.targets.unique()
        scores = model.candidate_scores(enc, cands)  # (N, C)
        assert scores.shape == (len(enc.targets), len(cands))
        (scores.log_softmax(1)[:, 0].mean() + scores.mean()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{name}: {missing}"


# ---------------------------------------------------------------- (c) learning a known structure


def train_briefly(model, ds: SeqDataset, epochs: int, lr: float, batch_size: int = 32) -> float:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = TrainBatches(ds, batch_size, seed=0)
    model.train()
    for e in range(epochs):
        for _, batch in batches.epoch(e):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
    return evaluate(model, ds, "test", EvalConfig(ks=[10])).metrics["recall@10"]


@pytest.mark.parametrize("name,opts,epochs,lr", [
    ("fm", {}, 30, 0.02),
    ("fm", {"loss": "bce", "num_negatives": 4}, 30, 0.02),
    ("deepfm", {}, 30, 0.01),
    ("lightgcn", {}, 30, 0.05),
])
def test_learns_group_structure(ds, name, opts, epochs, lr):
    # random ranking gives Recall@10 = 10 / 96 ~ 0.10; knowing the user's group gives ~10 / 12
    recall = train_briefly(build(name, ds, **opts), ds, epochs, lr)
    assert recall > 0.5, f"{name} {opts}: test Recall@10 {recall:.3f}"


# ---------------------------------------------------------------- (d) LightGCN's graph


def test_lightgcn_graph_holds_training_interactions_only(ds):
    model = build("lightgcn", ds)
    adj = model.adjacency.to_dense()
    U = ds.n_users
    assert torch.equal(adj, adj.T)
    assert adj[:U, :U].abs().sum() == 0 and adj[U:, U:].abs().sum() == 0  # bipartite
    deg_item = torch.zeros(ds.n_items + 1)
    for u in range(U):
        for i in set(ds.seq(u)[:-2].tolist()):
            deg_item[i] += 1
    for u in range(U):
        s = ds.seq(u)
        train, valid, test = set(s[:-2].tolist()), int(s[-2]), int(s[-1])
        linked = {int(c) - U + 1 for c in torch.nonzero(adj[u]).flatten()}
        assert linked == train
        assert valid not in linked and test not in linked  # the fixture's items are distinct per user
        for i in train:
            want = 1.0 / np.sqrt(len(train) * deg_item[i].item())
            assert adj[u, U + i - 1].item() == pytest.approx(want, rel=1e-6)


def test_lightgcn_graph_ignores_valid_and_test_items():
    """Two datasets that differ only in their valid / test items build the same graph."""
    a = block_dataset()
    b = block_dataset()
    b.seq_items = b.seq_items.copy()
    ends = b.seq_offsets[1:]
    b.seq_items[ends - 1] = b.seq_items[ends - 1] % b.n_items + 1  # another test item for every user
    b.seq_items[ends - 2] = 1  # and another valid item
    ga, gb = build("lightgcn", a).adjacency, build("lightgcn", b).adjacency
    assert torch.equal(ga.to_dense(), gb.to_dense())


def test_normalized_adjacency_counts_repeats_once():
    adj = normalized_adjacency(2, 3, np.array([0, 0, 0, 1]), np.array([1, 1, 2, 2])).to_dense()
    # user 0 - items 1, 2; user 1 - item 2: degrees u0 2, u1 1, i1 1, i2 2, i3 0
    assert adj[0, 2].item() == pytest.approx(1 / np.sqrt(2 * 1))
    assert adj[0, 3].item() == pytest.approx(1 / np.sqrt(2 * 2))
    assert adj[1, 3].item() == pytest.approx(1 / np.sqrt(1 * 2))
    assert adj[4].abs().sum() == 0  # an item with no training interaction is isolated


def test_lightgcn_eval_cache_is_never_stale(ds):
    model = build("lightgcn", ds)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    users = users_batch(torch.arange(5))

    def fresh() -> torch.Tensor:
        u, i = model.propagate()
        return u[:5] @ i[1:].T

    model.eval()
    with torch.no_grad():
        before = model.full_scores(users)[:, 1:]
        assert model.tables()[0] is model.tables()[0]  # cached: one propagation per evaluation
    torch.testing.assert_close(before, fresh().detach())
    # a training step without any change of mode
    model.loss(first_batch(ds)).backward()
    opt.step()
    with torch.no_grad():
        after = model.full_scores(users)[:, 1:]
        torch.testing.assert_close(after, fresh())
        assert not torch.allclose(after, before)
        # an in-place edit in eval mode, and a reload of the old weights
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.user_emb.weight.add_(1.0)
        torch.testing.assert_close(model.full_scores(users)[:, 1:], fresh())
        model.load_state_dict(state)
        torch.testing.assert_close(model.full_scores(users)[:, 1:], after)


# ---------------------------------------------------------------- pieces


def test_tokenize():
    assert tokenize("brand", "  Small Parts ") == ["small parts"]
    assert tokenize("categories", "Industrial & Scientific, Lab  Lab 3D") == ["industrial", "scientific", "lab", "3d"]
    assert tokenize("categories", "") == [] and tokenize("brand", " ") == []


def test_item_token_fields(ds):
    toks = item_token_fields(ds, ["brand", "categories", "title"])  # no 'title' in this dataset: skipped
    assert list(toks) == ["brand", "categories"]
    assert toks["brand"].shape == (ds.n_items + 1, 1)
    assert (toks["brand"][0] == 0).all() and (toks["brand"][5] == 0).all()  # padding item, blank brand
    assert int(toks["brand"].max()) == 8  # one brand per group
    # categories "Tools, kind<g> & all": tools, kind<g>, all; blank for every 7th item
    assert (toks["categories"][1] > 0).sum() == 3 and (toks["categories"][7] == 0).all()
    assert int(toks["categories"].max()) == 8 + 2


def test_sample_negatives_never_the_target():
    torch.manual_seed(0)
    t = torch.randint(1, 6, (2000,))
    neg = sample_negatives(t, 5, 3)
    assert (neg != t[:, None]).all() and neg.min() == 1 and neg.max() == 5
    counts = torch.bincount(neg[t == 3].flatten(), minlength=6)[1:]
    others = counts[[0, 1, 3, 4]]
    assert counts[2] == 0 and others.min() > 0.8 * others.max()  # uniform over the other items


def test_unknown_loss_is_a_config_error(ds):
    from prmkd.errors import ConfigError

    with pytest.raises(ConfigError, match="model.loss"):
        build("lightgcn", ds, loss="bce")
    with pytest.raises(ConfigError, match="num_negatives"):
        build("fm", ds, num_negatives=0)
