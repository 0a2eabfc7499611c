"""The contract of every registered student (`prmkd.models.MODELS`) and teacher family (`prmkd.teachers.base.TEACHERS`),
run on each entry, so a new model or family is checked by registering it:

- full-catalogue scores computed in item chunks equal the one-shot scores;
- `candidate_scores` equals the matching columns of the scores against every item (before and after the own loss
  ran, which dot-product models cache);
- every trainable parameter receives a finite, non-zero gradient (from the own loss, and for students from the
  PRM-KD loss too);
- weights saved and loaded into a freshly built model give the same scores;
- a distilled student's weights load into the plain model of the same configuration;
- a teacher family exports a cache that reproduces the teacher's own metrics, and pre-trains weights that its
  `load_pretrained` accepts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import small_dataset
from prmkd.config import DistillConfig, EvalConfig, RunConfig, TrainConfig
from prmkd.data.batches import TrainBatches, eval_batches
from prmkd.evaluation import evaluate
from prmkd.models import MODELS, build_model
from prmkd.teachers.base import TEACHERS, teacher_family

STUDENT_OPTIONS = {
    "sasrec": {"hidden_size": 16, "layers": 1, "inner_size": 32},
    "gru4rec": {"hidden_size": 16, "gru_size": 16},
    "bert4rec": {"hidden_size": 16, "layers": 1, "inner_size": 32},
    "fm": {"embedding_size": 8},
    "deepfm": {"embedding_size": 8, "mlp": [16, 16], "pair_block": 64},
    "lightgcn": {"embedding_size": 8},
    "recguru": {"hidden_size": 16, "layers": 1, "inner_size": 32, "source_batch": 8},
}
TEACHER_OPTIONS = {
    "unisrec": {"hidden_size": 16, "layers": 1, "inner_size": 32, "experts": 2, "id_embedding": True,
                "id_dropout": 0.5},
    "unim2rec": {"hidden_size": 16, "layers": 1, "inner_size": 32, "experts": 2, "id_embedding": True,
                 "feature_dims": {"image": 16}},
    "recformer": {"fields": {"title": 4, "brand": 1, "categories": 2}, "context_tokens": 8, "max_items": 6,
                  "max_tokens": 40, "pretrain_steps": 2, "pretrain_batch_size": 8, "pretrain_minutes": 0.0},
}


def test_every_registered_entry_has_test_settings():
    assert sorted(MODELS.names()) == sorted(STUDENT_OPTIONS)
    assert sorted(TEACHERS.names()) == sorted(TEACHER_OPTIONS)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("contract-cache")


def new_student(name: str, ds):
    torch.manual_seed(0)
    if name == "recguru":  # with a source domain (in memory), so that its cross-domain parts are checked too
        from prmkd.models.recguru import RecGURU

        cfg = RecGURU.Config(**STUDENT_OPTIONS[name])
        return RecGURU(cfg, ds.n_items, ds.max_len, source=small_dataset(seed=1, images=False))
    return build_model({"name": name, **STUDENT_OPTIONS[name]}, ds)


def new_teacher(name: str, ds, cache_dir):
    family = teacher_family(name)
    torch.manual_seed(0)
    return family, family.build(family.config(TEACHER_OPTIONS[name]), ds, cache_dir)


@pytest.fixture(scope="module", params=[*MODELS.names(), *(f"teacher:{t}" for t in TEACHERS.names())])
def entry(request, small_ds, cache_dir):
    """(kind, name, model) for every registered student and teacher family."""
    name = request.param
    if name.startswith("teacher:"):
        return "teacher", name[8:], new_teacher(name[8:], small_ds, cache_dir)[1]
    return "student", name, new_student(name, small_ds)


def first_batch(ds, size: int = 8):
    return next(TrainBatches(ds, size, seed=0).epoch(0))[1]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- scoring


@torch.no_grad()
def test_chunked_scores_equal_one_shot(entry, small_ds):
    _, _, model = entry
    model.eval()
    batch = next(eval_batches(small_ds, "test", 10))
    state = model.eval_state(batch)
    n = small_ds.n_items
    full = model.score_items(state, 1, n + 1)  # (B, n_items)
    chunks = torch.cat([model.score_items(state, lo, min(lo + 7, n + 1)) for lo in range(1, n + 1, 7)], 1)
    assert full.shape == (10, n) and close(full, chunks)
    # and the evaluator, chunked over items, ranks as it does in one shot
    one = evaluate(model, small_ds, "test", EvalConfig())
    many = evaluate(model, small_ds, "test", EvalConfig(max_elements=5 * n))
    assert np.array_equal(one.ranks, many.ranks)


@torch.no_grad()
def test_candidate_scores_are_columns_of_the_catalogue_scores(entry, small_ds):
    _, _, model = entry
    model.eval()
    n = small_ds.n_items
    cands = torch.tensor([3, 1, 17, 32, 8])
    for after_own_loss in (False, True):
        torch.manual_seed(1)
        enc = model.encode(first_batch(small_ds))
        if after_own_loss:
            model.own_loss(enc)
        every = model.candidate_scores(enc, torch.arange(1, n + 1))  # (N, n_items)
        some = model.candidate_scores(enc, cands)  # (N, 5)
        assert every.shape == (len(enc.targets), n) and close(some, every[:, cands - 1])


# ---------------------------------------------------------------------------------------------- training


def _gradients(model, loss: torch.Tensor, allowed_without: tuple[str, ...] = ()) -> None:
    model.zero_grad(set_to_none=True)
    loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith(allowed_without):
            continue
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient"


def test_every_parameter_receives_a_gradient(entry, small_ds):
    kind, name, model = entry
    model.train()
    torch.manual_seed(0)
    allowed = teacher_family(name).pretrain_only if kind == "teacher" else ()
    _gradients(model, model.loss(first_batch(small_ds, 24)), allowed)


def test_every_student_gets_gradients_from_the_kd_loss(small_ds, tmp_path):
    from prmkd.distillation.trainer import KDLoss

    cache = random_cache(small_ds, tmp_path / "t")
    for name in MODELS.names():
        model = new_student(name, small_ds).train()
        torch.manual_seed(0)
        loss = KDLoss(DistillConfig(teachers=[str(cache)]), small_ds)
        _gradients(model, loss(model, first_batch(small_ds, 24)))


def random_cache(ds, folder, d: int = 8, seed: int = 0):
    from prmkd.teachers.cache import write_cache

    rng = np.random.default_rng(seed)
    rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
    arrays = {k: rng.standard_normal((r, d)).astype(np.float32) for k, r in rows.items()}
    return write_cache(folder, name="random", family="external", ds=ds, metrics={"valid": {"ndcg@10": 0.1}},
                       **arrays)


# ---------------------------------------------------------------------------------------------- persistence


@torch.no_grad()
def test_saved_weights_load_into_a_new_model(entry, small_ds, cache_dir, tmp_path):
    kind, name, model = entry
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    fresh = new_teacher(name, small_ds, cache_dir)[1] if kind == "teacher" else new_student(name, small_ds)
    with torch.no_grad():  # make sure the load, not the seed, makes them equal
        for p in fresh.parameters():
            p.add_(0.5)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    fresh.eval()
    batch = next(eval_batches(small_ds, "test", 12))
    a = model.score_items(model.eval_state(batch), 1, small_ds.n_items + 1)
    b = fresh.score_items(fresh.eval_state(batch), 1, small_ds.n_items + 1)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODELS.names())
def test_distilled_weights_load_into_the_plain_model(name, small_ds, tmp_path):
    """Distillation changes a student's weights, never its architecture: the plain model loads them strictly."""
    from prmkd.experiment.runner import load_run, train_run

    cache = random_cache(small_ds, tmp_path / "t")
    spec = {"name": name, **STUDENT_OPTIONS[name]}
    cfg = RunConfig(model=spec, train=TrainConfig(epochs=1, batch_size=8, progress=False),
                    distill=DistillConfig(teachers=[str(cache)]), out=str(tmp_path / "run"))
    train_run(cfg, small_ds, log=lambda m: None)
    distilled = load_run(tmp_path / "run", small_ds)[0]
    plain = build_model(spec, small_ds)
    plain.load_state_dict(distilled.state_dict(), strict=True)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in distilled.parameters())


# ---------------------------------------------------------------------------------------------- teachers


@pytest.mark.parametrize("name", TEACHERS.names())
def test_teacher_family_exports_a_cache_that_reproduces_it(name, small_ds, cache_dir, tmp_path):
    from prmkd.teachers.cache import TeacherCache, check_arrays, evaluate_cache, write_cache

    family, model = new_teacher(name, small_ds, cache_dir)
    model.eval()
    with torch.no_grad():
        arrays = family.export(model, small_ds)
    check_arrays(arrays, small_ds, name)
    folder = write_cache(tmp_path / "cache", name=name, family=name, ds=small_ds, similarity=family.similarity,
                         temperature=family.temperature(model.cfg), **arrays)
    own = evaluate(model, small_ds, "test", EvalConfig()).metrics
    again = evaluate_cache(TeacherCache(folder, small_ds), small_ds, "test").metrics
    assert max(abs(own[k] - again[k]) for k in own) < 1e-6


@pytest.mark.parametrize("name", TEACHERS.names())
def test_teacher_family_pretrains_weights_it_can_load(name, small_ds, cache_dir, tmp_path):
    family = teacher_family(name)
    cfg = family.config(TEACHER_OPTIONS[name])
    source = small_dataset(seed=1, images=False)
    path = family.pretrain(cfg, [source], TrainConfig(epochs=1, batch_size=8, progress=False), tmp_path / "pre",
                           cache_dir, lambda m: None)
    _, model = new_teacher(name, small_ds, cache_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    family.load_pretrained(model, path)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "load_pretrained changed no weight"
