"""Cost of teachers and students measured side by side in one process (the paper's Table 4).

- training speed: seconds per training step of each model over the first batches of its own epoch (its run's
  batch size and length bucketing; the plain and the distilled student see identical batches), distillation
  included for the distilled student, models interleaved round by round so all see the same machine load;
  reported per epoch (seconds per step x steps per epoch, validation excluded) and as a ratio to plain SASRec;
- inference memory: bytes of every tensor the model needs to serve (parameters and buffers);
- inference speed: milliseconds per user to score the whole catalogue for a batch of test users, the median of
  7 rounds, models interleaved round by round like the training steps.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ..data.batches import TrainBatches, eval_batches
from ..data.dataset import SeqDataset
from ..env import machine, now
from ..io import read_json, write_json
from ..training import default_loss


def inference_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers (a module's serving state), each tensor counted once."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


@torch.no_grad()
def latencies(models: dict[str, torch.nn.Module], ds: SeqDataset, n_users: int = 512, rounds: int = 7) -> dict:
    """name -> milliseconds per user to score `n_users` test users against every item: the median over `rounds`,
    the models interleaved round by round so that all see the same machine load (timed one after the other, two
    copies of one model differed by a third on a shared CPU), each after one warm-up."""
    batch = next(eval_batches(ds, "test", n_users))
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds + 1):  # round 0 warms up (and builds any item table a model caches for serving)
        for name, model in models.items():
            model.eval()
            t0 = time.perf_counter()
            state = model.eval_state(batch)
            model.score_items(state, 1, ds.n_items + 1)
            if r:
                times[name].append(time.perf_counter() - t0)
    return {name: 1000.0 * statistics.median(t) / len(batch.targets) for name, t in times.items()}


def step_seconds(entries: list[dict], ds: SeqDataset, steps: int = 24, rounds: int = 3, seed: int = 0) -> dict:
    """Seconds per training step of each entry {name, model, loss_fn, batch_size, bucket}: each round times
    the same first `steps` batches of the entry's own epoch (batch size and length bucketing as in its run,
    so models with the same settings see identical batches), entries interleaved round by round so all see
    the same machine load; the result is the median over rounds of (round time / steps)."""
    times: dict[str, list[float]] = {e["name"]: [] for e in entries}
    for rnd in range(rounds):
        for e in entries:
            model, loss_fn = e["model"], e.get("loss_fn") or default_loss
            model.train()
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            tb = TrainBatches(ds, e["batch_size"], seed, e.get("bucket", 0))
            it = tb.epoch(0)
            batches = [next(it)[1] for _ in range(min(steps, len(tb)))]
            loss = loss_fn(model, batches[-1])  # warm-up (allocator, lazily built tables)
            loss.backward()
            opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            for b in batches:
                loss = loss_fn(model, b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            times[e["name"]].append((time.perf_counter() - t0) / len(batches))
    return {k: statistics.median(v) for k, v in times.items()}


def measure(entries: list[dict], ds: SeqDataset, base: str, n_users: int = 512) -> dict:
    """entries: {name, role, model, loss_fn (None = own loss), batch_size}; `base` = the reference name."""
    steps = step_seconds(entries, ds)
    latency = latencies({e["name"]: e["model"] for e in entries}, ds, n_users)
    rows = []
    for e in entries:
        n_steps = len(TrainBatches(ds, e["batch_size"], 0, e.get("bucket", 0)))
        rows.append({"name": e["name"], "role": e["role"],
                     "parameters": sum(p.numel() for p in e["model"].parameters()),
                     "inference_bytes": inference_bytes(e["model"]),
                     "latency_ms_per_user": latency[e["name"]],
                     "train_step_seconds": steps[e["name"]], "train_epoch_seconds": steps[e["name"]] * n_steps})
    ref = next(r for r in rows if r["name"] == base)
    ratios = [{"name": r["name"], "training_speed": r["train_epoch_seconds"] / ref["train_epoch_seconds"],
               "inference_memory": r["inference_bytes"] / ref["inference_bytes"],
               "inference_speed": r["latency_ms_per_user"] / ref["latency_ms_per_user"]} for r in rows]
    return {"date": now(), "machine": machine(), "threads": torch.get_num_threads(), "users_timed": n_users,
            "dataset": ds.name, "models": rows, "relative_to": base, "ratios": ratios,
            "method": __doc__.strip()}


def measure_pipeline(pipe, path: Path) -> dict:
    """Efficiency of a pipeline's teachers, plain student and distilled student, side by side."""
    from ..data.dataset import cache_root
    from ..distillation.trainer import KDLoss
    from ..teachers.build import TeacherRunConfig, teacher_config
    from .runner import load_run

    ds, cfg, layout = pipe.ds, pipe.cfg, pipe.layout
    student = cfg.student
    entries = []
    plain = layout.baseline(student, cfg.seeds[0])
    if plain.best.exists():
        model, rc, _ = load_run(plain.path, ds)
        entries.append({"name": student, "role": "baseline", "model": model, "batch_size": rc.train.batch_size,
                        "bucket": rc.train.bucket})
    kd = layout.distilled(student, cfg.seeds[0])
    if kd.best.exists():
        model, rc, _ = load_run(kd.path, ds)
        entries.append({"name": f"prmkd-{student}", "role": "distilled", "model": model,
                        "loss_fn": KDLoss(rc.distill, ds), "batch_size": rc.train.batch_size,
                        "bucket": rc.train.bucket})
    for spec in cfg.teachers:
        fin = layout.teacher(spec.label).finetune
        if not fin.best.exists():
            continue
        fam, tcfg = teacher_config(TeacherRunConfig(family=spec.family, teacher=spec.teacher))
        model = fam.build(tcfg, ds, cache_root(cfg.data))
        model.load_state_dict(torch.load(fin.best, map_location="cpu", weights_only=False)["model"])
        entries.append({"name": f"teacher-{spec.label}", "role": "teacher", "model": model,
                        "batch_size": spec.train.batch_size, "bucket": spec.train.bucket})
    if not any(e["name"] == student for e in entries):
        return {}
    result = measure(entries, ds, base=student)
    write_json(path, result)
    return result


def load(path: Path) -> dict:
    return read_json(path, "efficiency file")
