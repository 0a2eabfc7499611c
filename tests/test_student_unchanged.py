"""After distillation a student is the same architecture, with the same parameters (count, names, shapes) and
the same inference code as its plain version: its saved weights load into a plainly built model, which then
scores exactly as the distilled run does."""

import json

import pytest
import torch

from prmkd.config import DistillConfig, EvalConfig, RunConfig, TrainConfig
from prmkd.data.batches import eval_batches
from prmkd.models import build_model
from prmkd.experiment.runner import load_run, train_run
from test_distill import cyclic_dataset, oracle_cache

STUDENTS = ["sasrec", "gru4rec", "bert4rec", "fm", "deepfm", "lightgcn"]
SMALL = {"sasrec": {"hidden_size": 16}, "gru4rec": {"hidden_size": 16, "gru_size": 16},
         "bert4rec": {"hidden_size": 16}, "fm": {}, "deepfm": {}, "lightgcn": {"embedding_size": 16}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unchanged")
    ds = cyclic_dataset()
    teachers = [str(oracle_cache(ds, tmp / f"t{k}", shift=k, name=f"t{k}")) for k in (1, 2, 3)]
    return tmp, ds, teachers


@pytest.mark.parametrize("name", STUDENTS)
def test_distilled_student_is_served_exactly_like_the_plain_one(setup, name):
    tmp, ds, teachers = setup
    tc = TrainConfig(epochs=1, batch_size=32, progress=False)
    plain = build_model({"name": name, **SMALL[name]}, ds)
    cfg = RunConfig(model={"name": name, **SMALL[name]}, train=tc, eval=EvalConfig(),
                    distill=DistillConfig(teachers=teachers, kd_weight=1.0), out=str(tmp / f"kd-{name}"))
    res = train_run(cfg, ds, log=lambda m: None)
    distilled = torch.load(tmp / f"kd-{name}" / "best.pt", weights_only=False)["model"]
    # same parameter names, shapes and count as a plainly built student
    assert {k: v.shape for k, v in distilled.items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert res["parameters"] == sum(p.numel() for p in plain.parameters())
    # loaded into the plain model, the plain inference code reproduces the distilled run's scores
    plain.load_state_dict(distilled)
    plain.eval()
    model, _, _ = load_run(tmp / f"kd-{name}", ds)
    model.eval()
    batch = next(eval_batches(ds, "test", 64))
    with torch.no_grad():
        assert torch.equal(plain.full_scores(batch), model.full_scores(batch))
    assert type(model) is type(plain)
    assert json.loads((tmp / f"kd-{name}" / "results.json").read_text())["role"] == "distilled"
