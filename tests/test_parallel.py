"""Data-parallel training: 2 processes x 1 thread with gloo (torchrun, through `prmkd ... --nproc 2`) on the tiny
table, against one process with the same global batch; and a rank killed with SIGKILL, then the same command,
ending exactly as the uninterrupted two-process run.

Tolerance of the 2-vs-1 comparison: with dropout off, the two runs compute the same global-batch gradient, but
the two halves are summed by gloo's all-reduce, one process sums the whole batch at once: float sums in another
order, so weights differ in their last bits after each step and the difference grows through training. The test
asks for the same test metrics to 0.02 absolute (the tiny table's 60 test users make one user 0.017 of recall@10)
and the per-epoch training losses to 1e-3 relative; two-process runs are compared with each other exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_tiny_table

MODEL = ["--set", "model.hidden_size=16", "--set", "model.layers=1", "--set", "model.inner_size=32",
         "--set", "model.dropout=0.0", "--set", "model.attn_dropout=0.0"]


def prmkd(*args, cwd: Path, env_extra: dict | None = None, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "prmkd.cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    inter, items = write_tiny_table(folder)
    (folder / "run.toml").write_text(
        f'[data]\npath = "{inter}"\nitems = "{items}"\nmax_len = 8\ncache_dir = "{folder / "cache"}"\n\n'
        f'[train]\nepochs = 4\npatience = 4\nbatch_size = 16\nseed = 1\nthreads = 1\ndevice = "cpu"\n'
        f'progress = false\ncheckpoint_every = 1\n')
    return folder


def train(work: Path, out: str, nproc: int, *extra):
    proc = prmkd("train", "--model", "sasrec", "--config", work / "run.toml", *MODEL, "--set", f'out="{out}"',
                 "--nproc", nproc, *extra, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / out / "results.json").read_text())


@pytest.fixture(scope="module")
def one_and_two(work):
    return train(work, "one", 1), train(work, "two", 2)


def test_two_processes_match_one_with_the_same_global_batch(one_and_two):
    one, two = one_and_two
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["fingerprint"] == two["fingerprint"]  # the world size is not part of what the run is
    for k, v in one["metrics"]["test"].items():
        assert abs(v - two["metrics"]["test"][k]) <= 0.02, k
    for a, b in zip(one["history"], two["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_a_rank_killed_with_sigkill_resumes_to_the_same_run(work, one_and_two):
    _, two = one_and_two
    args = ["train", "--model", "sasrec", "--config", work / "run.toml", *MODEL, "--set", 'out="killed"',
            "--nproc", 2]
    proc = prmkd(*args, cwd=work, wait=False)
    ckpt = work / "killed" / "checkpoint.pt"
    t0 = time.time()
    while time.time() - t0 < 300 and proc.poll() is None:  # a checkpoint from the second epoch on
        if ckpt.exists() and ckpt.stat().st_size > 0:
            import torch

            try:
                if torch.load(ckpt, weights_only=False)["state"]["epoch"] >= 1:
                    break
            except Exception:  # being replaced this instant
                pass
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    agent = _children(proc.pid)  # prmkd -> torchrun -> the ranks
    ranks = [c for a in agent for c in _children(a)] or agent
    os.kill(ranks[-1], signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode != 0 and not (work / "killed" / "results.json").exists()
    rerun = prmkd(*args, cwd=work)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from" in rerun.stderr
    done = json.loads((work / "killed" / "results.json").read_text())
    assert done["metrics"] == two["metrics"]
    assert [h["loss"] for h in done["history"]] == [h["loss"] for h in two["history"]]


def test_distillation_in_two_processes_uses_the_global_batch_as_candidates(work):
    """PRM-KD's in-batch candidates are the whole global batch's targets on every rank: two processes distil as one
    does (same tolerance), and count every instance once."""
    import numpy as np

    from prmkd.config import DataConfig
    from prmkd.data.dataset import prepare
    from prmkd.teachers.cache import write_cache

    cfg = json.loads(json.dumps({"path": str(work / "inter.csv"), "items": str(work / "items.csv"), "max_len": 8,
                                 "cache_dir": str(work / "cache")}))
    ds = prepare(DataConfig(**cfg), log=None)
    rng = np.random.default_rng(0)
    rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
    write_cache(work / "teacher", name="t", family="x", ds=ds, metrics={"valid": {"ndcg@10": 0.1}},
                **{k: rng.standard_normal((r, 8)).astype(np.float32) for k, r in rows.items()})
    out = {}
    for n in (1, 2):
        proc = prmkd("distill", "--student", "sasrec", "--teachers", work / "teacher", "--config", work / "run.toml",
                     *MODEL, "--set", f'out="kd{n}"', "--set", "train.epochs=2", "--nproc", n, cwd=work)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = json.loads((work / f"kd{n}" / "results.json").read_text())
    for k, v in out[1]["metrics"]["test"].items():
        assert abs(v - out[2]["metrics"]["test"][k]) <= 0.02, k
    assert out[1]["distill"]["stats"]["instances"] == out[2]["distill"]["stats"]["instances"] == \
        2 * ds.n_train_instances
    for a, b in zip(out[1]["history"], out[2]["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
