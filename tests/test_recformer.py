"""Recformer-style teacher: it reads text (not ids), exports one row per instance, and its cache re-evaluates to
its own metrics. A tiny random BERT (with MiniLM's tokenizer) stands in for MiniLM, so every test is fast."""

import numpy as np
import pytest
import torch

from prmkd.config import EvalConfig, TrainConfig
from prmkd.data.batches import TrainBatches
from prmkd.data.dataset import SeqDataset
from prmkd.errors import CacheMismatchError, PrmkdError
from prmkd.evaluation import evaluate
from prmkd.teachers import recformer as R
from prmkd.teachers.cache import TeacherCache, evaluate_cache, write_cache
from prmkd.training import fit

TINY_FIELDS = {"title": 5, "brand": 1, "categories": 2}


@pytest.fixture(scope="module")
def plm():
    from transformers import AutoTokenizer, BertConfig, BertModel

    from prmkd.teachers.plm import plm_path

    tok = AutoTokenizer.from_pretrained(plm_path())
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, initializer_range=0.2)).eval()
    return tok, bert


WORDS = ["red", "blue", "green", "drill", "glove", "tape", "filament", "scale", "beaker", "lamp", "wire", "saw"]


def make_ds(n_items=24, n_users=30, seed=0, titles=None, perm=None, text=True, name="tiny") -> SeqDataset:
    """In-memory dataset; `perm` (n_items + 1,) renames item i to perm[i], carrying its text along."""
    rng = np.random.default_rng(seed)
    titles = titles or [f"{WORDS[i % 12]} {WORDS[(i * 5) % 12]} model {i}" for i in range(1, n_items + 1)]
    fields = {"title": [""] + titles, "brand": [""] + [f"brand{i % 3}" for i in range(1, n_items + 1)],
              "categories": [""] + [f"tools lab {WORDS[i % 4]}" for i in range(1, n_items + 1)]}
    if not text:
        fields = {k: [""] * (n_items + 1) for k in fields}
    lens = rng.integers(3, 12, size=n_users)
    seq = rng.integers(1, n_items + 1, size=int(lens.sum()))
    if perm is not None:
        seq = perm[seq]
        fields = {k: [v[int(j)] for j in np.argsort(perm)] for k, v in fields.items()}  # new id perm[i] gets i's text
    offsets = np.concatenate([[0], np.cumsum(lens)])
    return SeqDataset.from_sequences([seq[a:b] for a, b in zip(offsets[:-1], offsets[1:])], n_items, fields=fields,
                                     max_len=8, name=name)


def tiny_cfg(**kw) -> R.RecformerConfig:
    return R.preset("cpu", **{"fields": TINY_FIELDS, "frozen_layers": 1, "context_tokens": 8, "max_items": 6,
                              "max_tokens": 40, "dropout": 0.0, **kw})


def test_upper_layers_reproduce_the_plm(plm):
    """Full configuration, one item, zero-initialised extra embeddings: the CLS output is the PLM's own."""
    tok, bert = plm
    model = R.build(R.preset("full", fields=TINY_FIELDS, key_tokens=True, dropout=0.0), make_ds(), None, plm=plm).eval()
    i = 5
    ids = model.bank.ids[i][model.bank.mask[i]]
    inp = torch.cat([torch.tensor([tok.cls_token_id]), ids])[None]
    ref = bert(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state[0, 0]
    with torch.no_grad():
        mine, _ = model.encode_histories(torch.tensor([[i]]))
    assert torch.allclose(mine[0], ref, atol=1e-5)


def test_item_local_attention_is_full_attention_with_one_trained_layer(plm):
    """The CPU path computes each item's tokens once per batch; with one trained layer the CLS it gives is exactly
    full attention's (with two it is a Longformer-like local/global pattern, and differs)."""
    ds = make_ds()
    hist = torch.tensor([[5, 7, 9, 0, 0, 0], [3, 0, 0, 0, 0, 0], [11, 12, 13, 14, 1, 2]])
    full = R.build(tiny_cfg(attention="full"), ds, None, plm=plm)
    torch.nn.init.normal_(full.item_pos.weight, 0, 0.5)
    torch.nn.init.normal_(full.type_emb.weight, 0, 0.5)
    local = R.build(tiny_cfg(attention="item_local"), ds, None, plm=plm)
    local.load_state_dict(full.state_dict())
    with torch.no_grad():
        a, b = full.eval().encode_histories(hist)[0], local.eval().encode_histories(hist)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_cached_states_are_the_frozen_layers_output(plm):
    tok, bert = plm
    ds = make_ds()
    model = R.build(tiny_cfg(), ds, None, plm=plm)
    tokens = R.tokenize_items(ds, tok, TINY_FIELDS, ["categories"], False, 8, summary=True)
    i = 7
    inp = torch.tensor([tokens.inputs[i]])
    ref = bert(input_ids=inp, attention_mask=torch.ones_like(inp), output_hidden_states=True).hidden_states[1][0]
    m = tokens.mask[i] & (tokens.pos[i] >= 0)
    states = model.bank.states[i].float()
    assert torch.allclose(states[torch.from_numpy(m)], ref[torch.from_numpy(tokens.pos[i, m])], atol=2e-3)  # float16
    assert torch.allclose(states[0], ref.mean(0), atol=2e-3)  # the summary token: mean over the whole input
    # the categories field keeps its last tokens (the most specific category), typed 2 * field + value
    cat = tokens.ids[i][tokens.types[i] == 5]
    assert tok.decode(cat) == " ".join(ds.item_fields["categories"][i].split()[-2:])


def test_identical_text_gives_identical_representations(plm):
    ds = make_ds()
    for values in ds.item_fields.values():  # item 4 gets item 10's text, field by field
        values[4] = values[10]
    model = R.build(tiny_cfg(), ds, None, plm=plm).eval()
    torch.nn.init.normal_(model.item_pos.weight, 0, 0.5)  # (zero at the start: order would not matter yet)
    with torch.no_grad():
        table = model.item_table()
        reps, _ = model.encode_histories(torch.tensor([[4, 2, 7], [10, 2, 7], [2, 4, 7]]))
    assert torch.equal(table[4], table[10]) and not torch.equal(table[4], table[5])
    assert torch.allclose(reps[0], reps[1], atol=1e-6)
    assert not torch.allclose(reps[0], reps[2], atol=1e-4)  # order matters (item positions)


def test_renaming_item_ids_with_their_texts_changes_nothing(plm):
    perm = np.concatenate([[0], np.random.default_rng(3).permutation(24) + 1])
    a, b = make_ds(), make_ds(perm=perm)
    ma = R.build(tiny_cfg(), a, None, plm=plm)
    torch.nn.init.normal_(ma.item_pos.weight, 0, 0.5)  # make the extra embeddings matter
    torch.nn.init.normal_(ma.type_emb.weight, 0, 0.5)
    mb = R.build(tiny_cfg(), b, None, plm=plm)
    mb.load_state_dict(ma.state_dict())
    ma.eval(), mb.eval()
    with torch.no_grad():
        assert torch.allclose(ma.item_table()[1:], mb.item_table()[perm[1:]], atol=1e-6)
    for split in ("valid", "test"):
        ra, rb = evaluate(ma, a, split), evaluate(mb, b, split)
        assert np.array_equal(ra.ranks, rb.ranks)


def test_training_positions_are_counted_and_include_the_last(plm):
    ds = make_ds()
    model = R.build(tiny_cfg(positions_per_window=2), ds, None, plm=plm)
    _, batch = next(TrainBatches(ds, 16, 0).epoch(0))
    rows, cols = model.positions(batch)
    assert batch.counted[rows, cols].all()
    for r in range(len(batch.items)):
        picked = cols[rows == r]
        assert len(picked) == min(2, int(batch.counted[r].sum()))
        assert int(batch.lengths[r]) - 1 in picked.tolist()


def test_export_has_every_instance_and_the_cache_reproduces_the_metrics(plm, tmp_path):
    ds = make_ds(n_users=40)
    model = R.build(tiny_cfg(), ds, None, plm=plm)
    fit(model, ds, TrainConfig(epochs=2, batch_size=16, lr=1e-3, progress=False), tmp_path / "fit", log=lambda s: None)
    arrays = R.export(model, ds)
    d = model.cls.shape[0]
    assert arrays["items"].shape == (ds.n_items + 1, d) and arrays["train"].shape == (ds.n_train_instances, d)
    assert arrays["valid"].shape == arrays["test"].shape == (ds.n_users, d)
    # every training row is the representation of its own (history -> target) instance
    model.eval()
    all_positions = R.preset("cpu", **{**R.to_dict(model.cfg), "positions_per_window": 0})
    model.cfg, cfg = all_positions, model.cfg
    seen = np.zeros(ds.n_train_instances, dtype=bool)
    with torch.no_grad():
        for _, batch in TrainBatches(ds, 64, 0).epoch(0):
            enc = model.encode(batch)
            ids = enc.instance_ids.numpy()
            assert np.allclose(arrays["train"][ids], torch.nn.functional.normalize(enc.reps, dim=1).numpy(), atol=1e-5)
            seen[ids] = True
    model.cfg = cfg
    assert seen.all()
    own = {s: evaluate(model, ds, s, EvalConfig()).metrics for s in ("valid", "test")}
    folder = write_cache(tmp_path / "cache", name="recformer", family="recformer", ds=ds, similarity=R.SIMILARITY,
                         temperature=model.cfg.temperature, metrics=own, **arrays)
    for split in ("valid", "test"):
        again = evaluate_cache(TeacherCache(folder, ds), ds, split).metrics
        assert max(abs(again[k] - own[split][k]) for k in again) < 1e-9


def test_dataset_without_text_is_a_clear_error(plm):
    with pytest.raises(PrmkdError, match="has no item text"):
        R.build(tiny_cfg(), make_ds(text=False), None, plm=plm)


def test_pretrain_then_fine_tune_loads_and_refuses_another_configuration(plm, tmp_path):
    source, target = make_ds(n_items=30, seed=1, name="src"), make_ds()
    cfg = tiny_cfg(pretrain_steps=4, pretrain_batch_size=8, pretrain_minutes=0.0)
    path = R.pretrain(cfg, [source], TrainConfig(), tmp_path / "pre", None, log=lambda s: None, plm=plm)
    ck = torch.load(path, weights_only=False)
    assert ck["steps"] == 4 and ck["sources"] == ["src"]
    model = R.build(cfg, target, None, plm=plm)
    R.load_pretrained(model, path)
    assert torch.equal(model.cls, ck["model"]["cls"]) and model.bank.dataset == "tiny"
    with pytest.raises(CacheMismatchError, match="frozen_layers"):
        R.load_pretrained(R.build(tiny_cfg(frozen_layers=0, summary_token=False), target, None, plm=plm), path)


def test_live_loss_trains_the_item_side_and_the_table_loss_does_not(plm):
    """Without dropout both losses have the same value; only "live" sends gradient through the items' encodings."""
    ds = make_ds()
    _, batch = next(TrainBatches(ds, 16, 0).epoch(0))
    grads, losses = {}, {}
    for mode in ("table", "live"):
        model = R.build(tiny_cfg(finetune_loss=mode), ds, None, plm=plm)
        model.train()
        torch.manual_seed(0)
        loss = model.own_loss(model.encode(batch))
        loss.backward()
        losses[mode] = loss.item()
        grads[mode] = torch.cat([p.grad.flatten() for p in model.blocks.parameters()])
    assert losses["live"] == pytest.approx(losses["table"], rel=1e-5)
    assert not torch.allclose(grads["live"], grads["table"], rtol=1e-3, atol=1e-7)
