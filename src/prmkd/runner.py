"""Train (or distil) one model from a `RunConfig` into a run folder, and evaluate saved runs.

A run folder holds: config.json (resolved), checkpoint.pt / best.pt, results.json (metrics, timings,
environment, dataset summary, history), per_user_valid.npz and per_user_test.npz.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from .config import EvalConfig, RunConfig, from_dict, to_dict, train_key
from .data.dataset import SeqDataset, prepare
from .env import environment, resolve_device
from .errors import PrmkdError
from .evaluate import EvalResult, evaluate
from .models import build_model, resolved_spec
from .train import fit, seed_everything, write_json


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
    """What makes two runs the same: the resolved config (minus where it is written and how it reports),
    the dataset, and for a distilled run which build of each teacher cache it read (a cache rebuilt at the
    same path, e.g. after its teacher's settings changed, makes a new run, not a stale reuse)."""
    from .teachers.cache import cache_identity

    d = resolved(cfg)
    d.pop("out", None)
    d["train"] = train_key(d["train"])
    d["data"] = ds.fingerprint
    if cfg.distill.teachers:
        d["teacher_caches"] = [cache_identity(t) for t in cfg.distill.teachers]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def default_out(cfg: RunConfig, ds_name: str) -> Path:
    return Path("runs") / f"{run_name(cfg)}-{ds_name}-seed{cfg.train.seed}"


def save_per_user(path: Path, res: EvalResult, ds: SeqDataset) -> None:
    np.savez_compressed(path, ranks=res.ranks, **res.per_user)


def train_run(cfg: RunConfig, ds: SeqDataset | None = None, log=print, restart: bool = False) -> dict:
    """Train and test one model; returns (and writes) its results. A finished run is not redone."""
    ds = ds or prepare(cfg.data, log=log)
    out = Path(cfg.out) if cfg.out else default_out(cfg, ds.name)
    seed_everything(cfg.train.seed)  # initial weights depend on the seed alone, not on what ran before
    model = build_model(cfg.model, ds)
    loss_fn, kd_info = _loss_for(cfg, ds, model)
    return train_and_test(model, ds, train_cfg=cfg.train, eval_cfg=cfg.eval, out=out, name=run_name(cfg),
                          role="distilled" if cfg.distill.teachers else "baseline", config=resolved(cfg),
                          fp=fingerprint(cfg, ds), loss_fn=loss_fn, extra={"distill": kd_info} if kd_info else None,
                          log=log, restart=restart)


def finished(out: Path, fp: str) -> dict | None:
    """The results of a finished run in `out` with fingerprint `fp`, else None."""
    path = Path(out) / "results.json"
    if path.exists():
        done = json.loads(path.read_text())
        if done.get("fingerprint") == fp:
            return done
    return None


def train_and_test(model, ds: SeqDataset, *, train_cfg, eval_cfg, out: Path, name: str, role: str, config: dict,
                   fp: str, loss_fn=None, extra: dict | None = None, log=print, restart: bool = False) -> dict:
    """Fit `model`, evaluate its best weights on valid and test, write the run folder."""
    from .train import default_loss

    out = Path(out)
    if not restart and (done := finished(out, fp)):
        log(f"{out}: already finished (fingerprint {fp}); pass --restart to train again")
        return done
    if restart:
        for f in ("checkpoint.pt", "best.pt", "results.json"):
            (out / f).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config)
    log(f"{name} on {ds.name}: {count_parameters(model):,} parameters -> {out}")
    t0 = time.time()
    fr = fit(model, ds, train_cfg, out, eval_cfg=eval_cfg, loss_fn=loss_fn or default_loss, fingerprint=fp, log=log)
    device = resolve_device(train_cfg.device)
    t1 = time.perf_counter()
    test = evaluate(model, ds, "test", eval_cfg, device)
    test_seconds = time.perf_counter() - t1
    valid = evaluate(model, ds, "valid", eval_cfg, device)
    save_per_user(out / "per_user_test.npz", test, ds)
    save_per_user(out / "per_user_valid.npz", valid, ds)
    results = {
        "name": name, "role": role, "dataset": ds.name, "seed": train_cfg.seed, "config": config, "fingerprint": fp,
        "metrics": {"valid": valid.metrics, "test": test.metrics},
        "timing": {"train_seconds": round(fr.train_seconds, 2), "epoch_seconds": round(fr.epoch_seconds, 3),
                   "best_epoch": fr.best_epoch, "epochs": fr.epochs_run,
                   "time_to_best_seconds": round(fr.time_to_best, 2), "test_eval_seconds": round(test_seconds, 3),
                   "wall_seconds_this_session": round(time.time() - t0, 2)},
        "stopped": fr.stopped, "parameters": count_parameters(model), "eval": test.settings,
        "dataset_summary": ds.summary(), "environment": environment(), "history": fr.history, **(extra or {}),
    }
    write_json(out / "results.json", results)
    (out / "checkpoint.pt").unlink(missing_ok=True)  # the finished run keeps best.pt only
    m = test.metrics
    log(f"test: recall@10 {m['recall@10']:.4f}  ndcg@10 {m['ndcg@10']:.4f}  (best epoch {fr.best_epoch}, "
        f"{fr.train_seconds:.0f}s)")
    return results


def _loss_for(cfg: RunConfig, ds: SeqDataset, model):
    if not cfg.distill.teachers:
        from .train import default_loss

        return default_loss, None
    from .distill.trainer import make_kd_loss

    return make_kd_loss(cfg.distill, ds, model)


def load_run(run_dir: Path, ds: SeqDataset | None = None, log=print):
    """(model with its best weights, its RunConfig, dataset) of a saved run folder."""
    run_dir = Path(run_dir)
    cfg_path, best = run_dir / "config.json", run_dir / "best.pt"
    if not cfg_path.exists() or not best.exists():
        raise PrmkdError(f"{run_dir}: not a run folder (expected config.json and best.pt)")
    cfg = from_dict(RunConfig, json.loads(cfg_path.read_text()))
    ds = ds or prepare(cfg.data, log=log)
    model = build_model(cfg.model, ds)
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["model"])
    return model, cfg, ds


def evaluate_run(run_dir: Path, split: str = "test", eval_cfg: EvalConfig | None = None, device: str = "auto",
                 log=print) -> EvalResult:
    model, cfg, ds = load_run(run_dir, log=log)
    dev = resolve_device(device)
    model.to(dev)
    return evaluate(model, ds, split, eval_cfg or cfg.eval, dev)
