"""One training loop for everything trainable (baselines, distilled students, teachers).

Adam; validation NDCG@10 after each epoch with early stopping; the best weights kept; checkpoints at
every epoch end (and every `checkpoint_every` steps) holding model, optimizer and RNG state, so a run
killed at any point and restarted continues where it stopped and ends exactly as an uninterrupted run.
Optionally (`ema` > 0) an exponential moving average of the weights is what is validated, kept and returned.

The step and checkpoint helpers (`optimizer_step`, `write_training_checkpoint`, `resume_training`, `rng_state`)
are shared with the loops that do not fit this shape (the Recformer-style teacher's step-based pre-training), so
every loop checks the loss before stepping and restores the same four random number generators.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .config import EvalConfig, TrainConfig
from .data.batches import SeqBatch, TrainBatches
from .data.dataset import SeqDataset
from .env import resolve_device
from .errors import PrmkdError
from .evaluation import evaluate
from .experiment.layout import RunDir
from . import parallel
from .io import write_atomic

class Loss:
    """A training objective: `loss(model, batch)` -> scalar tensor. `state()` / `load_state()` carry what it
    accumulates across steps (distillation's statistics), checkpointed with the run, so a resumed run counts every
    session. The plain objective is the model's own loss; any callable (model, batch) -> tensor also works."""

    def __call__(self, model, batch: SeqBatch) -> torch.Tensor:
        return model.loss(batch)

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


default_loss = Loss()
LossFn = Callable[[torch.nn.Module, SeqBatch], torch.Tensor]


class TrainingDiverged(PrmkdError):
    """The loss became NaN or infinite; the step was not taken, the last checkpoint is intact."""


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict
    epochs_run: int
    train_seconds: float  # training + validation time, summed over all (resumed) sessions
    time_to_best: float  # seconds from the start until the end of the best epoch
    epoch_seconds: float  # mean training time of one epoch (validation excluded)
    stopped: str
    history: list = field(default_factory=list)
    budget_ended: bool = False  # a time budget (max_minutes), not the data, ended training


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def deterministic_on_cpu(device: torch.device) -> None:
    """On a CPU, make torch use its deterministic kernels. By default the backward of advanced indexing
    (`x[idx]` with repeated indices, i.e. index_put with accumulate) sums in thread order, so two runs of the
    same seed differ in the last bits and, after a few epochs, in their metrics. The deterministic kernel sorts
    instead. warn_only: an op without a deterministic kernel warns instead of failing. GPUs are left alone (cuBLAS
    would need CUBLAS_WORKSPACE_CONFIG, and several CUDA kernels are slower in deterministic mode)."""
    if device.type == "cpu" and not torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(True, warn_only=True)


def save_checkpoint(path: Path, obj) -> None:
    """torch.save, atomically: a kill never leaves a half-written checkpoint, a failed write leaves nothing."""
    write_atomic(Path(path), lambda t: torch.save(obj, t))


def rng_state(device) -> dict:
    """Every random number generator training draws from: torch (CPU and the device's), numpy, Python."""
    import random

    import numpy as np

    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device) -> None:
    import random

    import numpy as np

    # RNG states must be CPU byte tensors; a checkpoint loaded with map_location="cuda" has moved them
    torch.set_rng_state(st["torch"].cpu())
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and device.type == "cuda":
        torch.cuda.set_rng_state(st["cuda"].cpu(), device)


def write_training_checkpoint(path: Path, model, opt, state: dict, device, fingerprint: str, **extra) -> None:
    """Model, optimizer, loop state and every RNG, so that a resumed run continues exactly. With several ranks,
    every rank calls it: rank 0 writes the file, with the RNG states of every rank."""
    d = parallel.env()
    rng = parallel.gather(rng_state(device)) if d.active else rng_state(device)
    if d.main:
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                               "rng": rng, "fingerprint": fingerprint, "world_size": d.world, **extra})
    parallel.barrier()


def resume_training(path: Path, model, opt, device, fingerprint: str, log) -> dict | None:
    """The checkpoint at `path` restored into model, optimizer and RNGs (its whole dict returned), or None when
    there is none or it belongs to another configuration (then it is ignored, and said so)."""
    path = Path(path)
    if not path.exists():
        return None
    ck = torch.load(path, map_location=device, weights_only=False)
    if ck.get("fingerprint") != fingerprint:
        log(f"ignoring {path}: it belongs to another configuration")
        return None
    d = parallel.env()
    if ck.get("world_size", 1) != d.world:
        log(f"ignoring {path}: it was written by {ck.get('world_size', 1)} process(es), this run has {d.world}")
        return None
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    set_rng_state(ck["rng"][d.rank] if d.active else ck["rng"], device)
    return ck


def optimizer_step(model, opt, loss: torch.Tensor, grad_clip: float, where: str) -> float:
    """Backward, clip, step; returns the loss value (with several ranks, the whole batch's: the mean of the ranks'
    weighted losses). A NaN or infinite loss raises, on every rank, before anything changes."""
    d = parallel.env()
    value = loss.item() if not d.active else parallel.all_sum(loss.detach().clone()).item() / d.world
    if not math.isfinite(value):
        raise TrainingDiverged(f"the training loss became {value} at {where}; the step was not taken (lower "
                               f"train.lr, or set train.grad_clip); the last checkpoint is intact")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return value


class _Objective(torch.nn.Module):
    """The training loss as a module's forward, so that DistributedDataParallel sees every computation of a step
    (models are driven through encode / own_loss / candidate_scores, not forward)."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: SeqBatch, weight: float) -> torch.Tensor:
        return self.loss_fn(self.model, batch) * weight


def _quiet(msg: str) -> None:
    """The log of ranks other than 0."""


def _copy_into(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """Put `values` into the parameters in place."""
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def fit(model: torch.nn.Module, ds: SeqDataset, cfg: TrainConfig, out_dir: Path, *,
        eval_cfg: EvalConfig | None = None, loss_fn: LossFn = default_loss, fingerprint: str = "",
        log: Callable[[str], None] = print, batches: TrainBatches | None = None) -> FitResult:
    """Train `model` on `ds` (train split), validating on the valid split; resumes from `out_dir`.

    A run that does not resume starts clean: a best.pt left by another configuration is removed first, so it can
    never be taken for this run's best weights."""
    run = RunDir(out_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    eval_cfg = eval_cfg or EvalConfig()
    d = parallel.init(resolve_device(cfg.device).type)
    device = parallel.device_for(cfg.device, d)
    if not d.main:
        log = _quiet
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deterministic_on_cpu(device)
    seed_everything(cfg.seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = batches or TrainBatches(ds, cfg.batch_size, cfg.seed, cfg.bucket)
    params = [p for p in model.parameters() if p.requires_grad]  # frozen weights need no average
    ema = [p.detach().clone() for p in params] if cfg.ema > 0 else None
    stateful = loss_fn if isinstance(loss_fn, Loss) else None
    if d.active:  # each rank its part of every global batch, gradients averaged by DistributedDataParallel
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(_Objective(model, loss_fn), device_ids=[device] if device.type == "cuda"
                                      else None, find_unused_parameters=model.ddp_find_unused)
        steps = lambda ep, start: batches.shards(ep, start, d.rank, d.world)  # noqa: E731
        objective = lambda m, b, w: ddp(b, w)  # noqa: E731
    else:
        steps = lambda ep, start: ((s, b, 1.0) for s, b in batches.epoch(ep, start))  # noqa: E731
        objective = lambda m, b, w: loss_fn(m, b)  # noqa: E731

    state = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": -1, "best_valid": {}, "bad": 0,
             "elapsed": 0.0, "time_to_best": 0.0, "history": [], "epoch_train_seconds": []}
    ck = resume_training(run.checkpoint, model, opt, device, fingerprint, log)
    if ck is not None:
        state = ck["state"]
        if ema is not None:
            _copy_into(ema, ck["ema"])
        if stateful is not None and ck.get("loss_state"):
            stateful.load_state(ck["loss_state"][d.rank] if d.active else ck["loss_state"])
        log(f"resuming from {run.checkpoint} (epoch {state['epoch']}, step {state['step']})")
    elif d.main:
        run.best.unlink(missing_ok=True)
    parallel.barrier()

    def checkpoint():
        loss_state = stateful.state() if stateful is not None else {}
        write_training_checkpoint(run.checkpoint, model, opt, state, device, fingerprint, ema=ema,
                                  loss_state=parallel.gather(loss_state) if d.active else loss_state)

    show_bar = cfg.progress and sys.stderr.isatty()
    state.setdefault("stopped", "")  # why training ended; kept, so a resumed run does not train past it
    state.setdefault("cur", {"loss": 0.0, "n": 0, "seconds": 0.0})  # the epoch in progress, across a resume
    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch = state["epoch"]
        cur = state["cur"]
        model.train()
        t0 = time.perf_counter()
        bar = None
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), initial=state["step"], desc=f"epoch {epoch}", leave=False, file=sys.stderr)
        for step, batch, weight in steps(epoch, state["step"]):
            loss = objective(model, batch.to(device), weight)
            value = optimizer_step(model, opt, loss, cfg.grad_clip, f"epoch {epoch}, step {step}")
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, params):
                        e.lerp_(p, 1.0 - cfg.ema)  # e = ema * e + (1 - ema) * p
            cur["loss"] += value
            cur["n"] += 1
            state["step"] = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and state["step"] < len(batches):
                dt = time.perf_counter() - t0
                state["elapsed"] += dt
                cur["seconds"] += dt
                t0 = time.perf_counter()
                checkpoint()
        if bar is not None:
            bar.close()
        train_sec = cur["seconds"] + time.perf_counter() - t0  # the whole epoch, not since the last checkpoint
        state["epoch_train_seconds"].append(train_sec)
        record = {"epoch": epoch, "loss": cur["loss"] / max(cur["n"], 1), "train_seconds": round(train_sec, 3)}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            t1 = time.perf_counter()
            live = None
            if ema is not None:  # validate (and keep) the average
                live = [p.detach().clone() for p in params]
                _copy_into(params, ema)
            metrics = evaluate(model, ds, "valid", eval_cfg, device).metrics if d.main else None
            metrics = parallel.broadcast(metrics)  # rank 0 validates; every rank takes the same decision
            record["valid"] = metrics
            record["eval_seconds"] = round(time.perf_counter() - t1, 3)
            score = metrics["ndcg@10"]
            state["elapsed"] += time.perf_counter() - t0
            if score > state["best"]:
                state.update(best=score, best_epoch=epoch, best_valid=metrics, bad=0,
                             time_to_best=state["elapsed"])
                if d.main:
                    save_checkpoint(run.best, {"model": model.state_dict(), "epoch": epoch, "valid": metrics})
            else:
                state["bad"] += 1
            if live is not None:
                _copy_into(params, live)  # training goes on from the live weights
        else:
            state["elapsed"] += time.perf_counter() - t0
        state["history"].append(record)
        state["epoch"], state["step"] = epoch + 1, 0
        state["cur"] = {"loss": 0.0, "n": 0, "seconds": 0.0}
        state["elapsed"] = parallel.broadcast(state["elapsed"])  # the time budget: rank 0's clock decides
        if state["bad"] >= cfg.patience and state["epoch"] >= cfg.min_epochs:
            state["stopped"] = f"early stop (no better validation NDCG@10 for {cfg.patience} evaluations)"
        elif cfg.max_minutes and state["elapsed"] > 60 * cfg.max_minutes and state["epoch"] < cfg.epochs:
            state["stopped"] = f"time budget of {cfg.max_minutes} minutes"
            state["budget_ended"] = True
        checkpoint()  # after the stop decision, which it records
        v = record.get("valid", {}).get("ndcg@10")
        log(f"epoch {epoch:3d}  loss {record['loss']:.4f}  {train_sec:6.1f}s" +
            (f"  valid ndcg@10 {v:.4f}  recall@10 {record['valid']['recall@10']:.4f}" if v is not None else "") +
            ("  *" if state["best_epoch"] == epoch else ""))
    stopped = state["stopped"] or "max epochs"
    parallel.barrier()
    if not run.best.exists():
        raise PrmkdError(f"{run.path}: training ended without a validated model (no best.pt)")
    model.load_state_dict(torch.load(run.best, map_location=device, weights_only=False)["model"])
    eps = state["epoch_train_seconds"]
    return FitResult(state["best_epoch"], state["best_valid"], state["epoch"], state["elapsed"],
                     state["time_to_best"], sum(eps) / max(len(eps), 1), stopped, state["history"],
                     budget_ended=bool(state.get("budget_ended")))
