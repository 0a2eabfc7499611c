"""UniSRec- / UniM2Rec-style teachers, the teacher pipeline, and external teachers (import / export)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import held_elsewhere, synthetic_events, write_table
from prmkd.config import DataConfig, EvalConfig, TrainConfig
from prmkd.data import prepare
from prmkd.distillation.kd import fused_targets
from prmkd.errors import PrmkdError
from prmkd.teachers import external
from prmkd.teachers.cache import TeacherCache, evaluate_cache
from prmkd.teachers.build import TeacherRunConfig, build_teacher
from prmkd.teachers.textseq import MoEAdaptor, TextSeqConfig, TextSeqFamily

build = TextSeqFamily().build

TINY = {"hidden_size": 16, "inner_size": 32, "experts": 2, "dropout": 0.1, "attn_dropout": 0.1}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("teachers")


def tiny_domain(work, name: str, seed: int, with_images: bool = False) -> DataConfig:
    folder = work / name
    folder.mkdir(exist_ok=True)
    rows = synthetic_events(50, 30, 4, 12, seed=seed)
    write_table(folder / "inter.csv", rows, ("user", "item", "timestamp"))
    used = sorted({r[1] for r in rows}, key=lambda s: int(s[1:]))
    write_table(folder / "items.csv", [(i, f"{name} product {i}", f"Brand{int(i[1:]) % 3}", "Tools") for i in used],
                ("item", "title", "brand", "categories"))
    feats = []
    if with_images:  # image vectors for every other item
        keys = used[::2]
        np.random.default_rng(seed).standard_normal((len(keys), 8)).astype("<f4").tofile(folder / "img.f32")
        (folder / "img.index").write_text("".join(f"{k}\t{r}\n" for r, k in enumerate(keys)))
        feats = [{"name": "image", "path": str(folder / "img.f32"), "dim": 8, "index": str(folder / "img.index")}]
    from prmkd.config import from_dict

    return from_dict(DataConfig, {"path": str(folder / "inter.csv"), "items": str(folder / "items.csv"),
                                  "max_len": 10, "cache_dir": str(work / "cache"), "features": feats})


def test_moe_adaptor_is_the_per_expert_formula():
    m = MoEAdaptor(12, 5, 3, dropout=0.0).eval()
    for p in (m.bias, m.w_gate):
        torch.nn.init.normal_(p)
    x = torch.randn(7, 12)
    per_expert = torch.einsum("nki,kio->nko", x[:, None, :] - m.bias[None], m.weight)  # W_k (x - b_k)
    gate = (x @ m.w_gate).softmax(-1)
    assert torch.allclose(m(x), (gate[:, :, None] * per_expert).sum(1), atol=1e-5)
    assert torch.allclose(MoEAdaptor(12, 5, 3, 0.0).eval().w_gate, torch.zeros(12, 3))  # gates start uniform


def test_unim2rec_needs_image_features(work):
    ds = prepare(tiny_domain(work, "noimg", 0), log=None)
    with pytest.raises(PrmkdError, match="no 'image' item features"):
        build(TextSeqConfig(modalities=["text", "image"], **TINY), ds, work / "cache")


def test_unim2rec_items_without_image_use_the_missing_vector(work):
    ds = prepare(tiny_domain(work, "img", 1, with_images=True), log=None)
    has = ds.features["image"][1]
    assert 0 < has[1:].sum() < ds.n_items  # partly missing, as on Scientific
    model = build(TextSeqConfig(modalities=["text", "image"], **TINY), ds, work / "cache").eval()
    with_img, without = int(np.flatnonzero(has)[0]), int(np.flatnonzero(~has[1:])[0] + 1)
    items = torch.tensor([with_img, without])
    before = model.item_reps(items)
    model.inputs.x_image[[with_img, without]] += 10.0  # change both items' image rows
    after = model.item_reps(items)
    assert not torch.allclose(before[0], after[0])  # an image it has is used
    assert torch.allclose(before[1], after[1])  # a row it does not have is never read


def test_id_dropout_drops_whole_id_rows_while_training_only(work):
    ds = prepare(tiny_domain(work, "iddrop", 3), log=None)
    tiny = {**TINY, "dropout": 0.0, "adaptor_dropout": 0.0, "experts": 1}  # one expert: no gate noise
    torch.manual_seed(0)
    model = build(TextSeqConfig(id_embedding=True, id_dropout=0.5, **tiny), ds, work / "cache")
    torch.nn.init.normal_(model.id_emb.weight)
    items = torch.arange(1, ds.n_items + 1)
    with torch.no_grad():
        text = model.eval().item_reps(items) - model.id_emb(items)
        torch.manual_seed(1)
        train = model.train().item_reps(items)
    ids = model.id_emb(items).detach()
    dropped = torch.isclose(train, text, atol=1e-5).all(1)
    kept = torch.isclose(train, text + 2 * ids, atol=1e-5).all(1)  # kept rows scaled by 1 / (1 - p)
    assert (dropped | kept).all() and 0.3 < dropped.float().mean() < 0.7
    evaluated = model.eval().item_reps(items)
    assert torch.allclose(evaluated, text + ids, atol=1e-5) and torch.equal(evaluated, model.item_reps(items))


def test_pipeline_pretrain_finetune_export_and_reuse(work):
    target = tiny_domain(work, "target", 2)
    source = tiny_domain(work, "source", 3)
    tc = TrainConfig(epochs=2, patience=5, batch_size=16, progress=False)
    cfg = TeacherRunConfig(family="unisrec", teacher=dict(TINY), data=target, sources=[source], pretrain=tc,
                           train=tc, out=str(work / "unisrec"), cache_dtype="float32")  # exact: float32 rows
    logs = []
    folder = build_teacher(cfg, log=logs.append)
    ds = prepare(target, log=None)
    cache = TeacherCache(folder, ds)
    man = cache.manifest
    assert man["family"] == "unisrec" and man["similarity"] == "cos" and man["dataset_fingerprint"] == ds.fingerprint
    assert cache.dim == 16
    assert cache.rows("train", torch.arange(ds.n_train_instances)).shape == (ds.n_train_instances, 16)
    # metrics recomputed from the cache alone equal the teacher's own evaluation
    for split in ("valid", "test"):
        again = evaluate_cache(cache, ds, split, EvalConfig()).metrics
        assert again == pytest.approx(man["metrics"][split], abs=1e-12)
    # the fine-tuned model started from the pre-trained weights
    results = json.loads((work / "unisrec" / "finetune" / "results.json").read_text())
    assert results["pretraining"]["pretrained"] is True
    # a rerun reuses every stage
    logs.clear()
    assert build_teacher(cfg, log=logs.append) == folder
    joined = "\n".join(logs)
    assert "pre-training already done" in joined and "already finished" in joined and "already exported" in joined


def test_text_and_image_teacher_shares_the_text_pretraining(work):
    """Sources without images: the UniM2Rec-style teacher's pre-training is the UniSRec-style one's (same key,
    one run in a shared folder); its image side starts fresh at fine-tuning, on a target with images."""
    target = tiny_domain(work, "mm-target", 5, with_images=True)
    source = tiny_domain(work, "mm-source", 6)
    tc = TrainConfig(epochs=1, patience=5, batch_size=16, progress=False)
    common = dict(data=target, sources=[source], pretrain=tc, train=tc, pretrain_dir=str(work / "shared-pre"))
    logs = []
    build_teacher(TeacherRunConfig(family="unisrec", teacher=dict(TINY), out=str(work / "mm-uni"), **common),
                  log=logs.append)
    assert "pre-training unisrec" in "\n".join(logs)
    logs.clear()
    folder = build_teacher(TeacherRunConfig(family="unim2rec", teacher=dict(TINY), out=str(work / "mm-m2"),
                                            **common), log=logs.append)
    assert "pre-training already done" in "\n".join(logs)
    assert len(list((work / "shared-pre").iterdir())) == 1
    res = json.loads((work / "mm-m2" / "finetune" / "results.json").read_text())
    assert res["pretraining"]["pretrained"] is True
    assert TeacherCache(folder, prepare(target, log=None)).manifest["family"] == "unim2rec"


def test_a_sampled_loss_teacher_pretrains_and_shares_the_pretraining(work):
    """The sampled loss is a fine-tuning option: a teacher with it pre-trains (in-batch, as every teacher does) in
    the same run as one without it."""
    target, source = tiny_domain(work, "s-target", 10), tiny_domain(work, "s-source", 11)
    tc = TrainConfig(epochs=1, patience=5, batch_size=16, progress=False)
    common = dict(data=target, sources=[source], pretrain=tc, train=tc, pretrain_dir=str(work / "s-pre"))
    logs = []
    build_teacher(TeacherRunConfig(family="unisrec", teacher={**TINY, "loss": "sampled", "negatives": 4},
                                   out=str(work / "s-sampled"), **common), log=logs.append)
    assert "pre-training unisrec" in "\n".join(logs)
    logs.clear()
    build_teacher(TeacherRunConfig(family="unisrec", teacher=dict(TINY), out=str(work / "s-full"), **common),
                  log=logs.append)
    assert "pre-training already done" in "\n".join(logs)


def test_load_pretrained_copies_the_shared_weights(work):
    load_pretrained = TextSeqFamily().load_pretrained

    ds = prepare(tiny_domain(work, "target", 2), log=None)
    shared = work / "unisrec" / "pretrain" / "shared.pt"
    if not shared.exists():
        pytest.skip("needs test_pipeline_pretrain_finetune_export_and_reuse to run first")
    model = build(TextSeqConfig(**TINY), ds, work / "cache")
    load_pretrained(model, shared)
    state = torch.load(shared, weights_only=True)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k


# ---------------------------------------------------------------------------------------------- external


@pytest.fixture(scope="module")
def built(work):
    target = tiny_domain(work, "ext", 4)
    tc = TrainConfig(epochs=1, batch_size=16, progress=False)
    folder = build_teacher(TeacherRunConfig(family="unisrec", teacher=dict(TINY), data=target, train=tc,
                                            out=str(work / "ext-teacher")), log=lambda m: None)
    return folder, prepare(target, log=None)


@pytest.mark.parametrize("form", ["safetensors", "npy"])
def test_export_then_import_gives_identical_distillation_targets(built, work, form):
    folder, ds = built
    to = work / f"portable.{form}" if form == "safetensors" else work / "portable-npy"
    files = external.export_portable(folder, to)
    items, inst = (files[0], files[0]) if form == "safetensors" else (files[0], files[1])
    again = external.import_teacher(items, inst, files[-1], ds, work / f"reimported-{form}")
    a, b = TeacherCache(folder, ds), TeacherCache(again, ds)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ds.n_train_instances, (40,), generator=g)
    cands = torch.unique(torch.randint(1, ds.n_items + 1, (25,), generator=g))
    qa, _ = fused_targets(a.logits("train", ids, cands)[None], torch.ones(1), 0.5, 0.1)
    qb, _ = fused_targets(b.logits("train", ids, cands)[None], torch.ones(1), 0.5, 0.1)
    assert torch.equal(qa, qb)
    assert b.metrics == a.metrics


def _portable(work, ds, name, items=None, inst=None, manifest=None):
    d = work / name
    d.mkdir(exist_ok=True)
    n_inst = ds.n_train_instances + 2 * ds.n_users
    np.save(d / "items.npy", np.ones((ds.n_items + 1, 4), np.float32) if items is None else items)
    np.save(d / "inst.npy", np.ones((n_inst, 4), np.float32) if inst is None else inst)
    m = {"name": "ext", "similarity": "dot", "temperature": 1.0} if manifest is None else manifest
    (d / "m.json").write_text(json.dumps(m))
    return d / "items.npy", d / "inst.npy", d / "m.json"


@pytest.mark.parametrize("case, message", [
    ("rows", "instances must have shape"),
    ("items_rows", r"items has \d+ rows, expected \d+ \(n_items \+ 1"),
    ("dtype", "must hold floats"),
    ("nan", "NaN or infinite"),
    ("dims", "rows are 4-d, the items in .* are 5-d"),
    ("unknown_key", "unknown manifest key 'tau'"),
    ("missing_key", "missing manifest key 'similarity'"),
    ("similarity", "must be \"dot\" or \"cos\""),
    ("temperature", "'temperature' must be > 0"),
])
def test_import_rejects_bad_input_clearly(built, work, case, message):
    _, ds = built
    n_inst = ds.n_train_instances + 2 * ds.n_users
    good = {"name": "ext", "similarity": "dot", "temperature": 1.0}
    kw = {
        "rows": dict(inst=np.ones((n_inst - 1, 4), np.float32)),
        "items_rows": dict(items=np.ones((ds.n_items, 4), np.float32)),
        "dtype": dict(items=np.ones((ds.n_items + 1, 4), np.int64)),
        "nan": dict(inst=np.full((n_inst, 4), np.nan, np.float32)),
        "dims": dict(items=np.ones((ds.n_items + 1, 5), np.float32)),
        "unknown_key": dict(manifest={**good, "tau": 1}),
        "missing_key": dict(manifest={"name": "ext", "temperature": 1.0}),
        "similarity": dict(manifest={**good, "similarity": "l2"}),
        "temperature": dict(manifest={**good, "temperature": 0}),
    }[case]
    paths = _portable(work, ds, f"bad-{case}", **kw)
    with pytest.raises(PrmkdError, match=message) as err:
        external.import_teacher(*paths, ds, work / f"out-{case}")
    assert str(err.value).startswith(tuple(str(p) for p in paths))  # names the input file at fault
    assert not (work / f"out-{case}").exists()  # and leaves no output folder


def test_pretraining_key_leaves_out_finetuning_only_options(work):
    """Two Recformer-style teachers that differ only in how they fine-tune share one pre-training run; a change
    that pre-training reads (its precision) gives another key."""
    from prmkd.teachers.build import pretrain_key

    target, source = tiny_domain(work, "key-target", 7), tiny_domain(work, "key-source", 8)
    sources = [prepare(source, log=None)]

    def key(**teacher):
        return pretrain_key(TeacherRunConfig(family="recformer", teacher=teacher, data=target, sources=[source]),
                            sources)

    assert key() == key(positions_per_window=0, finetune_loss="live")
    assert key() != key(bf16=True) and key() != key(frozen_layers=4)


def test_text_whitening_decorrelates_and_keeps_the_scale():
    from prmkd.teachers.textseq import whiten

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6)) + 3.0).astype(np.float32)
    rows = np.ones(400, dtype=bool)
    rows[0] = False  # the padding row
    assert whiten(x, rows, 0.0) is x  # off
    full = whiten(x, rows, 1.0)
    cov = np.cov(full[rows], rowvar=False)
    assert np.allclose(cov / cov[0, 0], np.eye(6), atol=1e-4) and np.allclose(full[rows].mean(0), 0, atol=1e-4)
    assert np.isclose(np.linalg.norm(full[rows], axis=1).mean(), np.linalg.norm(x[rows], axis=1).mean(), rtol=1e-4)
    assert not full[0].any()
    half = np.cov(whiten(x, rows, 0.5)[rows], rowvar=False)
    spread = lambda c: np.linalg.eigvalsh(c).max() / np.linalg.eigvalsh(c).min()  # noqa: E731
    assert 1.0 + 1e-3 < spread(half) < spread(np.cov(x[rows], rowvar=False))  # halfway: less spread, not none


def test_an_option_added_later_keeps_earlier_fingerprints_while_off(work):
    """Teachers and pre-training runs made before `text_whitening` existed keep their identity while it is off;
    turned on, it makes another teacher and another pre-training run. The ID embedding and its dropout shape
    fine-tuning only: they reuse the pre-training run."""
    from prmkd.teachers.build import pretrain_key, teacher_config, teacher_key

    target, source = tiny_domain(work, "later-target", 7), tiny_domain(work, "later-source", 8)
    sources = [prepare(source, log=None)]

    def keys(**teacher):
        cfg = TeacherRunConfig(family="unisrec", teacher=teacher, data=target, sources=[source])
        mod, tcfg = teacher_config(cfg)
        return teacher_key(mod, tcfg), pretrain_key(cfg, sources)

    (off, pre_off), (on, pre_on) = keys(), keys(text_whitening=1.0)
    assert "text_whitening" not in off and on["text_whitening"] == 1.0 and pre_off != pre_on
    (ids, pre_ids) = keys(id_embedding=True, id_dropout=0.8)  # fine-tuning options: the same pre-training
    assert ids["id_dropout"] == 0.8 and pre_ids == pre_off
    (sampled, pre_sampled) = keys(loss="sampled", negatives=64)  # so is the sampled loss, and it is a new teacher
    assert "negatives" not in off and sampled["negatives"] == 64 and pre_sampled == pre_off and sampled != off


def test_sampled_teacher_loss_estimates_the_full_softmax(work):
    """loss = "sampled": for one instance, exp(loss + pos) - exp(pos) estimates the full softmax's sum over the
    other items (cosine / temperature logits); its mean over many draws matches that sum. The loss's gradient
    reaches the items drawn as negatives (an item nowhere else in the batch gets an ID-embedding gradient), and
    with as many draws as the catalogue has other items the loss is the full softmax itself."""
    import math

    from prmkd.data.batches import TrainBatches

    ds = prepare(tiny_domain(work, "sampled", 5), log=None)
    tiny = {**TINY, "dropout": 0.0, "attn_dropout": 0.0, "adaptor_dropout": 0.0, "experts": 1}

    def teacher(k):
        torch.manual_seed(0)
        model = build(TextSeqConfig(id_embedding=True, loss="sampled", negatives=k, temperature=0.5, **tiny), ds,
                      work / "cache")
        torch.nn.init.normal_(model.id_emb.weight)
        return model

    model = teacher(6)
    batch = next(TrainBatches(ds, 4, seed=0).epoch(0))[1]
    model.eval()  # no dropout: the same instance representations at every draw
    with torch.no_grad():
        enc = model.encode(batch)
        one = type(enc)(enc.reps[:1], enc.targets[:1], enc.instance_ids[:1], enc.users[:1], extra=enc.extra)
        logits = model._cos(one.reps, model.item_table()[1:])[0]
        pos = float(logits[int(one.targets[0]) - 1])
        others = float(logits.double().exp().sum()) - math.exp(pos)
        est = torch.tensor([math.exp(float(model.own_loss(one)) + pos) - math.exp(pos) for _ in range(8000)],
                           dtype=torch.float64)
    assert abs(float(est.mean()) - others) < 3 * float(est.std()) / math.sqrt(len(est))

    one_seq = next(TrainBatches(ds, 1, seed=0).epoch(0))[1]
    in_batch = set(one_seq.items.flatten().tolist()) | set(one_seq.targets.flatten().tolist())
    seed = next(s for s in range(100)  # a draw holding an item that is nowhere else in the batch
                if set(torch.randint(1, ds.n_items + 1, (6,), generator=torch.Generator().manual_seed(s)).tolist())
                - in_batch)
    enc = model.encode(one_seq)
    torch.manual_seed(seed)
    model.own_loss(enc).backward()
    torch.manual_seed(seed)
    drawn = set(torch.randint(1, ds.n_items + 1, (6,)).tolist())  # the same draw as the loss's
    only_drawn = sorted(drawn - in_batch)
    assert only_drawn and all(model.id_emb.weight.grad[i].abs().sum() > 0 for i in only_drawn)

    whole = teacher(ds.n_items - 1)  # every other item: the exact full softmax, no draw
    with torch.no_grad():
        enc = whole.eval().encode(batch)
        full = torch.nn.functional.cross_entropy(whole._cos(enc.reps, whole.item_table()[1:]), enc.targets - 1)
        assert torch.equal(whole.own_loss(enc), full)


@pytest.mark.parametrize("teacher, message", [
    ({"loss": "sampeld"}, "'teacher.loss' = 'sampeld': expected one of full, in_batch, sampled"),
    ({"loss": "sampled"}, "'teacher.negatives' = 0: loss = \"sampled\" needs"),
    ({"negatives": 64}, "'teacher.negatives' = 64: only loss = \"sampled\" draws negatives"),
])
def test_a_bad_teacher_loss_is_a_config_error(work, teacher, message):
    from prmkd.errors import ConfigError
    from prmkd.teachers.build import teacher_config

    cfg = TeacherRunConfig(family="unisrec", teacher=teacher, data=tiny_domain(work, "badloss", 9))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        teacher_config(cfg)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "teachers").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_shipped_teacher_config_loads_and_is_valid(path):
    from prmkd.config import load
    from prmkd.teachers import recformer
    from prmkd.teachers.build import teacher_config

    cfg = load(TeacherRunConfig, path)
    mod, tcfg = teacher_config(cfg)
    assert cfg.data.path and all(s.path for s in cfg.sources)
    if isinstance(mod, recformer.Recformer):
        recformer.check_config(tcfg, 6)  # MiniLM's 6 layers


def test_embedding_shows_progress_for_any_count_of_texts(caplog):
    """Progress depends on elapsed time, not on how many texts there are."""
    import logging

    from prmkd.teachers.plm import embed_texts

    with caplog.at_level(logging.INFO, logger="prmkd"):
        emb = embed_texts([f"item {i}" for i in range(12)], batch_size=4, progress_every=0.0)
    assert emb.shape == (12, 384)
    assert [r.getMessage().strip() for r in caplog.records if "embedded" in r.getMessage()][-1].startswith(
        "embedded 12/12 texts")


def test_texts_another_process_is_embedding_are_waited_for_not_embedded_twice(tiny_ds, tmp_path, caplog,
                                                                               monkeypatch):
    """Two teacher builds in parallel that need the same item texts: the second waits on the embedding's lock,
    then reads what the first wrote."""
    import logging
    import threading
    import time

    from prmkd.teachers import plm

    calls = []
    monkeypatch.setattr(plm, "embed_texts", lambda texts, **kw: calls.append(len(texts)) or
                        np.ones((len(texts), 384), np.float32))
    first = plm.item_text_embeddings(tiny_ds, tmp_path)  # finds no file: embeds
    assert calls == [tiny_ds.n_items] and first.shape == (tiny_ds.n_items + 1, 384) and not first[0].any()
    (path,) = (tmp_path / "plm").glob("*.npy")
    path.rename(tmp_path / "aside.npy")  # as if the other process were still embedding

    other = held_elsewhere(path.parent / f"{path.name}.lock")
    out = {}
    with caplog.at_level(logging.INFO, logger="prmkd"):
        t = threading.Thread(target=lambda: out.setdefault("emb", plm.item_text_embeddings(tiny_ds, tmp_path)))
        t.start()
        deadline = time.time() + 60
        while not any("under way in pid 4242 on elsewhere; waiting" in r.getMessage() for r in caplog.records):
            assert t.is_alive() and time.time() < deadline
            time.sleep(0.02)
        (tmp_path / "aside.npy").rename(path)  # the other process finishes...
        other.close()  # ...and lets go
        t.join(60)
    assert np.array_equal(out["emb"], first) and calls == [tiny_ds.n_items]  # read, not embedded again


def test_float16_overflow_names_the_array_and_float16_is_the_default():
    from prmkd.teachers.cache import float16_overflow

    ok = {"items": np.ones((5, 3), np.float32), "train": np.full((70000, 2), 6e4, np.float32)}
    assert float16_overflow(ok) is None
    bad = {**ok, "test": np.array([[1.0], [-7e4]], np.float32)}
    assert float16_overflow(bad) == ("test", 7e4)
    assert TeacherRunConfig().cache_dtype == "float16"
