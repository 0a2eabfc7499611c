"""Train (or distil) one model from a `RunConfig` into a run folder, and evaluate saved runs.

A run folder (`layout.RunDir`) holds: config.json (resolved), checkpoint.pt / best.pt, results.json (metrics,
timings, environment, dataset summary, history), per_user_valid.npz and per_user_test.npz. A folder is either
unfinished (no results.json) or holds one finished run: a run of another configuration never overwrites a
finished one unless told to (`replace`), and then the old run's files go first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from .. import parallel
from ..config import (DISTILL_ADDED_LATER, MODEL_ADDED_LATER, EvalConfig, RunConfig, from_dict, to_dict, train_key,
                      without_later_options)
from ..data.dataset import SeqDataset, prepare
from ..env import check_device, environment, resolve_device
from ..errors import PrmkdError
from ..evaluation import EvalResult, evaluate
from ..io import content_hash, read_json, write_json
from ..models import build_model, resolved_spec
from ..training import Loss, default_loss, fit, seed_everything
from .layout import RunDir

logger = logging.getLogger("prmkd")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_name(cfg: RunConfig) -> str:
    return ("prmkd-" if cfg.distill.teachers else "") + cfg.model.get("name", "sasrec")


def resolved(cfg: RunConfig) -> dict:
    out = to_dict(cfg)
    out["model"] = resolved_spec(cfg.model)
    if not cfg.distill.teachers:
        out.pop("distill")
    return out


def fingerprint(cfg: RunConfig, ds: SeqDataset) -> str:
    """What makes two runs the same: the resolved config (minus where it is written and how it reports, and
    options added later while they are off), the dataset, and for a distilled run which build of each teacher
    cache it read (a cache rebuilt at the same path makes a new run, not a stale reuse)."""
    from ..teachers.cache import cache_identity

    d = resolved(cfg)
    d.pop("out", None)
    d["train"] = train_key(d["train"])
    d["data"] = ds.fingerprint
    d["model"] = without_later_options(d["model"], MODEL_ADDED_LATER)
    if cfg.distill.teachers:
        d["distill"] = without_later_options(d["distill"], DISTILL_ADDED_LATER)
        d["teacher_caches"] = [cache_identity(t) for t in cfg.distill.teachers]
    return content_hash(d)


def default_out(cfg: RunConfig, ds_name: str) -> Path:
    return Path("runs") / f"{run_name(cfg)}-{ds_name}-seed{cfg.train.seed}"


def save_per_user(path: Path, res: EvalResult) -> None:
    from ..io import write_atomic

    write_atomic(Path(path), lambda t: np.savez_compressed(t, ranks=res.ranks, **res.per_user))


def train_run(cfg: RunConfig, ds: SeqDataset | None = None, log=logger.info, restart: bool = False,
              replace: bool = False) -> dict:
    """Train and test one model; returns (and writes) its results. A finished run is not redone."""
    check_device(cfg.train.device)
    ds = ds or prepare(cfg.data, log=log)
    out = Path(cfg.out) if cfg.out else default_out(cfg, ds.name)
    seed_everything(cfg.train.seed)  # initial weights depend on the seed alone, not on what ran before
    model = build_model(cfg.model, ds)
    loss_fn, kd_info = _loss_for(cfg, ds)
    return train_and_test(model, ds, train_cfg=cfg.train, eval_cfg=cfg.eval, out=out, name=run_name(cfg),
                          role="distilled" if cfg.distill.teachers else "baseline", config=resolved(cfg),
                          fp=fingerprint(cfg, ds), loss_fn=loss_fn, extra={"distill": kd_info} if kd_info else None,
                          log=log, restart=restart, replace=replace)


def finished(out: Path, fp: str) -> dict | None:
    """The results of a finished run in `out` with fingerprint `fp`, else None."""
    run = RunDir(out)
    if run.results.exists():
        done = read_json(run.results, "results file")
        if done.get("fingerprint") == fp:
            return done
    return None


def _clear(run: RunDir) -> None:
    for f in (run.results, run.checkpoint, run.best, run.per_user("valid"), run.per_user("test")):
        f.unlink(missing_ok=True)


def train_and_test(model, ds: SeqDataset, *, train_cfg, eval_cfg, out: Path, name: str, role: str, config: dict,
                   fp: str, loss_fn=None, extra: dict | None = None, log=logger.info, restart: bool = False,
                   replace: bool = False) -> dict:
    """Fit `model`, evaluate its best weights on valid and test, write the run folder.

    `restart`: train again even when this run is finished. `replace`: a finished run of another configuration in
    the folder is replaced (the pipeline, which owns its folders, does this); otherwise it is refused."""
    run = RunDir(out)
    d = parallel.init(resolve_device(train_cfg.device).type)
    if not restart and (done := finished(run.path, fp)):
        log(f"{run.path}: already finished (fingerprint {fp}); pass --restart to train again")
        return done
    if not d.main:  # rank 0 prepares the folder and writes the results; the others train beside it
        parallel.barrier()
        fit(model, ds, train_cfg, run.path, eval_cfg=eval_cfg, loss_fn=loss_fn or default_loss, fingerprint=fp,
            log=log)
        if isinstance(loss_fn, Loss) and extra and "distill" in extra:
            parallel.gather(loss_fn.state())
        parallel.barrier()
        return {"name": name, "rank": d.rank}
    with run.training(log) as waited:
        if waited and not restart and (done := finished(run.path, fp)):
            log(f"{run.path}: finished by the other process (fingerprint {fp})")
            return done
        return _train_and_test(model, ds, run, d, train_cfg=train_cfg, eval_cfg=eval_cfg, name=name, role=role,
                               config=config, fp=fp, loss_fn=loss_fn, extra=extra, log=log, restart=restart,
                               replace=replace)


def _train_and_test(model, ds: SeqDataset, run: RunDir, d, *, train_cfg, eval_cfg, name: str, role: str,
                    config: dict, fp: str, loss_fn, extra: dict | None, log, restart: bool, replace: bool) -> dict:
    """`train_and_test` on rank 0, with the run's folder locked."""
    if run.results.exists():
        old = read_json(run.results, "results file")
        if not (restart or replace):
            raise PrmkdError(f"{run.path} holds a finished run of another configuration ({old.get('name')}, "
                             f"fingerprint {old.get('fingerprint')}); pass --restart to replace it, or set out= "
                             f"to another folder")
        log(f"{run.path}: replacing the finished run {old.get('name')} (fingerprint {old.get('fingerprint')})")
        _clear(run)
    elif restart:
        _clear(run)
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(run.config, config)
    parallel.barrier()
    log(f"{name} on {ds.name}: {count_parameters(model):,} parameters -> {run.path}" +
        (f" ({d.world} processes)" if d.active else ""))
    t0 = time.time()
    fr = fit(model, ds, train_cfg, run.path, eval_cfg=eval_cfg, loss_fn=loss_fn or default_loss, fingerprint=fp,
             log=log)
    device = resolve_device(train_cfg.device)
    t1 = time.perf_counter()
    test = evaluate(model, ds, "test", eval_cfg, device)
    test_seconds = time.perf_counter() - t1
    valid = evaluate(model, ds, "valid", eval_cfg, device)
    save_per_user(run.per_user("test"), test)
    save_per_user(run.per_user("valid"), valid)
    if isinstance(loss_fn, Loss) and extra and "distill" in extra:
        states = parallel.gather(loss_fn.state()) if d.active else [loss_fn.state()]
        extra = {**extra, "distill": {**extra["distill"], "stats": _summed([st.get("stats", {}) for st in states])}}
    results = {
        "name": name, "role": role, "dataset": ds.name, "seed": train_cfg.seed, "config": config, "fingerprint": fp,
        "metrics": {"valid": valid.metrics, "test": test.metrics},
        "timing": {"train_seconds": round(fr.train_seconds, 2), "epoch_seconds": round(fr.epoch_seconds, 3),
                   "best_epoch": fr.best_epoch, "epochs": fr.epochs_run,
                   "time_to_best_seconds": round(fr.time_to_best, 2), "test_eval_seconds": round(test_seconds, 3),
                   "wall_seconds_this_session": round(time.time() - t0, 2)},
        "stopped": fr.stopped, "budget_ended": fr.budget_ended, "world_size": d.world,
        "parameters": count_parameters(model),
        "eval": test.settings, "dataset_summary": ds.summary(), "environment": environment(),
        "history": fr.history, **(extra or {}),
    }
    write_json(run.results, results)
    run.checkpoint.unlink(missing_ok=True)  # the finished run keeps best.pt only
    parallel.barrier()
    m = test.metrics
    log(f"test: recall@10 {m['recall@10']:.4f}  ndcg@10 {m['ndcg@10']:.4f}  (best epoch {fr.best_epoch}, "
        f"{fr.train_seconds:.0f}s)" + ("  [ended by its time budget]" if fr.budget_ended else ""))
    return results


def _summed(stats: list[dict]) -> dict:
    """Counts of several ranks added up (numbers, and dicts of numbers, key by key)."""
    out: dict = {}
    for st in stats:
        for k, v in st.items():
            out[k] = _summed([out.get(k, {}), v]) if isinstance(v, dict) else out.get(k, 0) + v
    return out


def _loss_for(cfg: RunConfig, ds: SeqDataset):
    if not cfg.distill.teachers:
        return default_loss, None
    from ..distillation.trainer import KDLoss

    loss = KDLoss(cfg.distill, ds)
    return loss, loss.info


def load_run(run_dir: Path, ds: SeqDataset | None = None, log=logger.info):
    """(model with its best weights, its RunConfig, dataset) of a finished run folder."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise PrmkdError(f"{run.path}: no such run folder")
    if not run.config.exists() or not run.best.exists():
        raise PrmkdError(f"{run.path}: not a run folder (expected config.json and best.pt)")
    cfg = from_dict(RunConfig, read_json(run.config, "run config"))
    ds = ds or prepare(cfg.data, log=log)
    model = build_model(cfg.model, ds)
    try:
        state = torch.load(run.best, map_location="cpu", weights_only=False)["model"]
        model.load_state_dict(state)
    except (RuntimeError, KeyError, EOFError) as e:
        raise PrmkdError(f"{run.best}: does not hold the weights of the model in {run.config} "
                         f"({str(e).splitlines()[0]})") from None
    return model, cfg, ds


def evaluate_run(run_dir: Path, split: str = "test", eval_cfg: EvalConfig | None = None, device: str = "auto",
                 log=logger.info) -> EvalResult:
    model, cfg, ds = load_run(run_dir, log=log)
    dev = resolve_device(device)
    model.to(dev)
    return evaluate(model, ds, split, eval_cfg or cfg.eval, dev)
