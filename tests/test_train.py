"""The training loop: a run interrupted mid-epoch (an exception, or a real SIGKILL) and restarted ends exactly
as an uninterrupted run with the same seed; seeded runs repeat; the run folder holds what it promises."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import held_elsewhere, write_tiny_table
from prmkd.config import DataConfig, RunConfig, TrainConfig, from_dict, to_dict
from prmkd.data import TrainBatches, prepare
from prmkd.evaluation import evaluate
from prmkd.models import build_model
from prmkd.models.sasrec import SASRecConfig
from prmkd.experiment.runner import evaluate_run, train_run
from prmkd.training import default_loss, fit

NAMES = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"]
# dropout on, so a resume that lost the RNG state would not end the same
SASREC = {"name": "sasrec", "hidden_size": 16, "layers": 1, "heads": 1, "inner_size": 32, "dropout": 0.3,
          "attn_dropout": 0.3, "negatives": 0}


def train_cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=16, lr=3e-3, patience=10, seed=7, device="cpu", threads=1, progress=False,
                checkpoint_every=2)
    return TrainConfig(**{**base, **kw})


def new_model(ds, seed: int = 0):
    torch.manual_seed(seed)  # initial weights (a resumed run overwrites them from its checkpoint)
    return build_model(SASREC, ds)


def run_fit(ds, out: Path, loss_fn=default_loss, device="cpu", **kw):
    logs: list[str] = []
    model = new_model(ds)
    fr = fit(model, ds, train_cfg(device=device, **kw), out, loss_fn=loss_fn, fingerprint="fp", log=logs.append)
    return fr, evaluate(model, ds, "test", device=device), logs


def assert_same_run(a, b) -> None:
    (fa, ta, _), (fb, tb, _) = a, b
    assert (fa.best_epoch, fa.epochs_run, fa.stopped) == (fb.best_epoch, fb.epochs_run, fb.stopped)
    assert fa.best_valid == fb.best_valid

    def strip(history):  # timings differ; loss and validation metrics must not
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in history]

    assert strip(fa.history) == strip(fb.history)
    assert ta.metrics == tb.metrics
    assert np.array_equal(ta.ranks, tb.ranks)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    inter, items = write_tiny_table(folder)
    return prepare(DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(folder / "cache")), log=None)


@pytest.fixture(scope="module")
def reference(ds, tmp_path_factory):
    """The uninterrupted run."""
    return run_fit(ds, tmp_path_factory.mktemp("ref"))


def test_reference_run_learns(reference, ds):
    fr, test, _ = reference
    assert fr.epochs_run == 4 and fr.stopped == "max epochs" and len(fr.history) == 4
    assert fr.best_valid == fr.history[fr.best_epoch]["valid"]
    assert fr.history[-1]["loss"] < fr.history[0]["loss"]
    assert len(TrainBatches(ds, 16, 7)) >= 4  # several steps per epoch, so "mid-epoch" means something


def test_same_seed_same_run(reference, ds, tmp_path):
    assert_same_run(reference, run_fit(ds, tmp_path))


def test_other_seed_other_run(reference, ds, tmp_path):
    fr, _, _ = run_fit(ds, tmp_path, seed=8)
    assert fr.history[0]["loss"] != reference[0].history[0]["loss"]


def test_cpu_training_repeats_bit_for_bit_on_several_threads(ds, tmp_path):
    """fit() switches torch to its deterministic CPU kernels. Without them the backward of `x[idx]` with repeated
    indices (DeepFM's shared candidate rows, item-table gathers) sums in thread order: on 2 threads two runs of
    one seed drifted apart (the distilled DeepFM on ML-100K ended 0.0198, 0.0209 and 0.0206 NDCG@10)."""
    torch.set_num_threads(2)
    try:
        run_fit(ds, tmp_path, threads=2, epochs=1)
        assert torch.are_deterministic_algorithms_enabled()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(300, 400, generator=gen, requires_grad=True)
        idx = torch.randint(0, 300, (4000,), generator=gen)  # ~13 repeats per row
        g = torch.randn(4000, 400, generator=gen)
        grads = []
        for _ in range(6):
            x.grad = None
            x[idx].backward(g)
            grads.append(x.grad.clone())
        assert all(torch.equal(grads[0], other) for other in grads[1:])
    finally:
        torch.set_num_threads(1)


class Interrupted(Exception):
    pass


def crashing_loss(ds, epoch: int = 2, batch: int = 4):
    """The default loss, raising Interrupted at the given batch (1-based) of the given epoch; by default epoch 2's
    4th batch, whose last checkpoint is epoch 2, step 2."""
    steps = len(TrainBatches(ds, 16, 7))
    calls = 0

    def loss(model, b):
        nonlocal calls
        calls += 1
        if calls == epoch * steps + batch:
            raise Interrupted
        return default_loss(model, b)

    return loss


def test_resume_after_exception_mid_epoch(reference, ds, tmp_path):
    with pytest.raises(Interrupted):
        run_fit(ds, tmp_path, loss_fn=crashing_loss(ds))
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (ck["state"]["epoch"], ck["state"]["step"]) == (2, 2)
    resumed = run_fit(ds, tmp_path)
    assert any("resuming from" in m and "epoch 2, step 2" in m for m in resumed[2])
    assert_same_run(reference, resumed)


KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[5])
import test_train as T
from prmkd.data.dataset import load_prepared
from prmkd.training import default_loss, fit

ds, out, marker, k = load_prepared(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
calls = 0

def loss_fn(model, batch):
    global calls
    calls += 1
    if calls == k:  # tell the test where we are, then wait to be killed
        marker.write_text("ready")
        time.sleep(120)
    return default_loss(model, batch)

fit(T.new_model(ds), ds, T.train_cfg(), out, loss_fn=loss_fn, fingerprint="fp", log=lambda m: None)
"""


def test_resume_after_sigkill_mid_epoch(reference, ds, tmp_path):
    steps = len(TrainBatches(ds, 16, 7))
    out, marker = tmp_path / "run", tmp_path / "marker"
    k = steps + 4  # epoch 1, 4th batch: the last checkpoint is epoch 1, step 2
    args = [sys.executable, "-c", KILL_SCRIPT, ds.meta["folder"], str(out), str(marker), str(k),
            str(Path(__file__).parent)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the training subprocess ended before it was killed:\n{proc.stderr.read()}")
            if time.time() > deadline:
                pytest.fail("the training subprocess did not reach the kill point in time")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert (ck["state"]["epoch"], ck["state"]["step"]) == (1, 2)
    assert not list(out.glob("*.tmp*"))  # checkpoints are written atomically (temporary names: *.tmp.pt)
    resumed = run_fit(ds, out)
    assert any("resuming from" in m for m in resumed[2])
    assert_same_run(reference, resumed)


def test_early_stop_survives_a_restart(ds, tmp_path):
    """A run that stopped early and is restarted (e.g. killed while testing) must not train on."""
    first = run_fit(ds, tmp_path, lr=0.0, patience=1, epochs=6)  # weights never change: no improvement
    fr = first[0]
    assert fr.epochs_run == 2 and fr.best_epoch == 0 and fr.stopped.startswith("early stop")
    again = run_fit(ds, tmp_path, lr=0.0, patience=1, epochs=6)
    assert_same_run(first, again)


def test_epoch_time_counts_the_whole_epoch(ds, tmp_path):
    """With a checkpoint after every step, an epoch's training time is still the whole epoch's."""
    steps = len(TrainBatches(ds, 16, 7))

    def slow_loss(model, batch):
        time.sleep(0.02)
        return default_loss(model, batch)

    fr, _, _ = run_fit(ds, tmp_path, loss_fn=slow_loss, epochs=1, checkpoint_every=1)
    assert fr.history[0]["train_seconds"] >= 0.02 * steps
    assert fr.epoch_seconds >= 0.02 * steps


def test_checkpoint_of_another_configuration_is_ignored(reference, ds, tmp_path):
    steps = len(TrainBatches(ds, 16, 7))
    model = new_model(ds)
    fit(model, ds, train_cfg(epochs=1), tmp_path, fingerprint="other", log=lambda m: None)
    assert steps > 0 and (tmp_path / "checkpoint.pt").exists()
    fresh = run_fit(ds, tmp_path)
    assert any("ignoring" in m for m in fresh[2])
    assert_same_run(reference, fresh)


def test_run_folder(tmp_path):
    inter, items = write_tiny_table(tmp_path)
    cfg = RunConfig(data=DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(tmp_path / "cache")),
                    model=dict(SASREC), train=train_cfg(epochs=2), out=str(tmp_path / "run"))
    logs: list[str] = []
    res = train_run(cfg, log=logs.append)
    run = tmp_path / "run"
    assert (run / "best.pt").exists() and not (run / "checkpoint.pt").exists()

    config = json.loads((run / "config.json").read_text())
    assert from_dict(RunConfig, config) == cfg  # the resolved config rebuilds the run's config
    assert config["train"]["epochs"] == 2 and config["eval"]["mask_history"] is False
    assert {k: config["model"][k] for k in SASREC} == SASREC
    assert set(config["model"]) == {"name", *SASRecConfig.__dataclass_fields__}  # every option recorded

    results = json.loads((run / "results.json").read_text())
    assert results["metrics"] == res["metrics"] and results["config"] == config
    assert set(results["metrics"]) == {"valid", "test"}
    for split in ("valid", "test"):
        assert sorted(results["metrics"][split]) == sorted(NAMES)
    assert {"train_seconds", "epoch_seconds", "best_epoch", "epochs", "time_to_best_seconds",
            "test_eval_seconds"} <= set(results["timing"])
    assert results["timing"]["epochs"] == 2 and results["timing"]["epoch_seconds"] > 0
    env = results["environment"]
    assert env["torch"] == torch.__version__ and env["python"] and env["machine"]["cores"] and env["date"]
    from prmkd.env import bf16_native

    assert env["machine"]["cpu_bf16"] is bf16_native("cpu")  # whether a bf16 = true teacher really ran in bfloat16
    assert results["eval"]["mask_history"] is False and results["eval"]["ties"] == "pessimistic"
    assert results["dataset_summary"]["users"] == 60

    per_user = np.load(run / "per_user_test.npz")
    assert sorted(per_user.files) == sorted(["ranks", *NAMES])
    for k in per_user.files:
        assert per_user[k].shape == (60,)  # one row per user, in user order
    for k in NAMES:
        assert per_user[k].mean() == pytest.approx(results["metrics"]["test"][k])

    # the saved best weights give the recorded test metrics back
    again = evaluate_run(run, "test", device="cpu", log=lambda m: None)
    assert again.metrics == results["metrics"]["test"]
    assert np.array_equal(again.ranks, per_user["ranks"])

    # a finished run is not redone
    logs2: list[str] = []
    assert train_run(cfg, log=logs2.append) == results
    assert any("already finished" in m for m in logs2)


def test_a_run_being_trained_elsewhere_is_waited_for_not_trained_twice(tmp_path):
    """Two processes that come to train the same run folder (a tuning beside a pipeline): the second waits on the
    folder's lock, saying who holds it, then takes the first one's results instead of training into its files."""
    import threading

    inter, items = write_tiny_table(tmp_path)
    cfg = RunConfig(data=DataConfig(path=str(inter), items=str(items), max_len=8, cache_dir=str(tmp_path / "cache")),
                    model=dict(SASREC), train=train_cfg(epochs=2), out=str(tmp_path / "run"))
    results = train_run(cfg, log=lambda m: None)
    run = tmp_path / "run"
    assert (run / ".training.lock").read_text().startswith(f"pid {os.getpid()} on ")  # who trained it
    written = (run / "results.json").read_bytes()
    (run / "results.json").rename(tmp_path / "held.json")  # as if the other process were still training

    other = held_elsewhere(run / ".training.lock")  # raises if the finished run had kept it
    logs: list[str] = []
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("res", train_run(cfg, log=logs.append)))
    t.start()
    deadline = time.time() + 60
    while not any("under way in pid 4242 on elsewhere; waiting" in m for m in logs):
        assert t.is_alive() and time.time() < deadline, logs
        time.sleep(0.02)
    (tmp_path / "held.json").rename(run / "results.json")  # the other process finishes...
    other.close()  # ...and lets go
    t.join(60)
    assert out["res"] == results
    assert any("finished by the other process" in m for m in logs)
    assert not any("parameters ->" in m for m in logs)  # nothing trained here
    assert (run / "results.json").read_bytes() == written


def test_config_roundtrip_keeps_types():
    cfg = RunConfig(train=train_cfg())
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_gpu(ds, tmp_path):
    """A checkpoint loaded onto the GPU still restores the (CPU) RNG state."""
    ref = run_fit(ds, tmp_path / "ref", device="cuda")
    with pytest.raises(Interrupted):
        run_fit(ds, tmp_path / "run", loss_fn=crashing_loss(ds, epoch=1, batch=3), device="cuda")
    resumed = run_fit(ds, tmp_path / "run", device="cuda")
    assert any("resuming from" in m for m in resumed[2])
    assert resumed[0].epochs_run == ref[0].epochs_run
    assert resumed[1].metrics == pytest.approx(ref[1].metrics, abs=0.05)  # GPU kernels need not repeat bit for bit


@pytest.fixture(scope="module")
def ema_reference(ds, tmp_path_factory):
    return run_fit(ds, tmp_path_factory.mktemp("ema"), ema=0.9)


def test_ema_validates_and_returns_the_averaged_weights(ema_reference, reference, ds, tmp_path):
    """With `ema`, the weights validated, kept in best.pt and returned are the moving average, not the live
    weights the optimizer holds (those are in the checkpoint); a run with the average is a different run."""
    fr, test, _ = ema_reference
    assert fr.history[0]["loss"] == reference[0].history[0]["loss"]  # the same training steps...
    assert fr.best_valid != reference[0].best_valid  # ...validated on other weights
    out = tmp_path / "run"
    fr2, test2, _ = run_fit(ds, out, ema=0.9, epochs=fr.best_epoch + 1)
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    best = torch.load(out / "best.pt", weights_only=False)["model"]
    names = [n for n, _ in new_model(ds).named_parameters()]
    averaged = dict(zip(names, ck["ema"]))
    assert all(torch.equal(best[n], averaged[n]) for n in names)  # best.pt = the average at the best epoch
    assert any(not torch.equal(ck["model"][n], averaged[n]) for n in names)  # the live weights differ
    assert test2.metrics == test.metrics  # the returned model is the average kept at the best epoch


def test_ema_run_resumes_exactly(ema_reference, ds, tmp_path):
    with pytest.raises(Interrupted):
        run_fit(ds, tmp_path, loss_fn=crashing_loss(ds), ema=0.9)
    assert_same_run(ema_reference, run_fit(ds, tmp_path, ema=0.9))


def test_ema_off_keeps_the_fingerprints_of_earlier_runs():
    """An option added later and left at its default must not change what identifies a run already made."""
    from prmkd.config import train_key

    assert "ema" not in train_key(TrainConfig()) and train_key(TrainConfig(ema=0.99))["ema"] == 0.99
    assert set(train_key(TrainConfig())) == set(to_dict(TrainConfig())) - {"progress", "device", "threads", "ema"}


def test_latencies_interleave_the_models_round_by_round(ds):
    """Table 4's inference speed times the models in turns (a, b, a, b, ...), each after a warm-up, so that a
    change of machine load falls on all of them alike."""
    from prmkd.experiment.efficiency import latencies

    calls = []

    class Recorded(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name, self.inner = name, new_model(ds)

        def eval_state(self, batch):
            calls.append(self.name)
            return self.inner.eval_state(batch)

        def score_items(self, state, lo, hi):
            return self.inner.score_items(state, lo, hi)

    out = latencies({"a": Recorded("a"), "b": Recorded("b")}, ds, n_users=8, rounds=3)
    assert calls == ["a", "b"] * 4  # warm-up round + 3 timed rounds
    assert set(out) == {"a", "b"} and all(v > 0 for v in out.values())
