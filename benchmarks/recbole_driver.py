"""Run RecBole 1.2.1's SASRec on pre-split UniSRec-style files and report metrics and per-epoch timings as JSON.

Runs inside the RecBole virtualenv (.venv-recbole), never inside prmkd's; `recbole_side_by_side.py` starts it:

    .venv-recbole/bin/python benchmarks/recbole_driver.py SPEC.json OUT.json

SPEC.json: {"data_path", "dataset", "workdir", "seed", "threads", "model": {...RecBole SASRec keys}, "train": {...}}.
The driver follows RecBole's own quick-start sequence (Config, init_seed, init_logger, create_dataset,
data_preparation, get_model, get_trainer, fit, evaluate). It only adds timers around Trainer._train_epoch,
Trainer._valid_epoch and Trainer.evaluate (RecBole's code is not changed), plus read-only checks of the
data RecBole built and a pessimistic-tie re-ranking of the best model's test scores.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(spec_path: str, out_path: str) -> int:
    t_start = time.perf_counter()
    spec = json.loads(open(spec_path).read())
    os.makedirs(spec["workdir"], exist_ok=True)
    os.chdir(spec["workdir"])  # RecBole writes ./log and ./log_tensorboard into the working directory

    # RecBole 1.2.1 reloads its own best checkpoint with torch.load(), which torch >= 2.6 refuses by default
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import numpy as np
    import torch

    torch.set_num_threads(int(spec["threads"]))

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    # ---- timers around RecBole's own epoch methods
    epochs: list[dict] = []
    timer = {"in_valid": False, "test_eval_seconds": None}
    orig_train, orig_valid, orig_eval = Trainer._train_epoch, Trainer._valid_epoch, Trainer.evaluate

    def timed_train(self, train_data, epoch_idx, *a, **k):
        t0 = time.perf_counter()
        loss = orig_train(self, train_data, epoch_idx, *a, **k)
        epochs.append({"epoch": int(epoch_idx), "train_seconds": time.perf_counter() - t0,
                       "loss": float(sum(loss) if isinstance(loss, tuple) else loss)})
        print(f"[recbole] epoch {epoch_idx:3d} loss {epochs[-1]['loss']:.4f} {epochs[-1]['train_seconds']:6.1f}s",
              flush=True)
        return loss

    def timed_valid(self, valid_data, *a, **k):
        t0 = time.perf_counter()
        timer["in_valid"] = True
        try:
            score, result = orig_valid(self, valid_data, *a, **k)
        finally:
            timer["in_valid"] = False
        rec = epochs[-1]
        rec["valid_seconds"] = time.perf_counter() - t0
        rec["valid_score"] = float(score)
        rec["valid"] = {k2.lower(): float(v) for k2, v in result.items()}
        print(f"[recbole]           valid ndcg@10 {score:.4f} ({rec['valid_seconds']:.1f}s)", flush=True)
        return score, result

    def timed_eval(self, *a, **k):
        if timer["in_valid"]:
            return orig_eval(self, *a, **k)
        t0 = time.perf_counter()
        out = orig_eval(self, *a, **k)
        timer["test_eval_seconds"] = time.perf_counter() - t0
        return out

    Trainer._train_epoch, Trainer._valid_epoch, Trainer.evaluate = timed_train, timed_valid, timed_eval

    # the same training-time budget as prmkd's train.max_minutes: stop as if early-stopped once exceeded
    import recbole.trainer.trainer as trainer_module

    budget = 60.0 * float(spec.get("max_minutes") or 0.0)
    stopped = {"why": "early stop or max epochs"}
    orig_stop = trainer_module.early_stopping

    def budgeted_stop(*a, **k):
        best, cur, stop, update = orig_stop(*a, **k)
        spent = sum(r["train_seconds"] + r.get("valid_seconds", 0.0) for r in epochs)
        if budget and spent > budget and not stop:
            stopped["why"] = f"time budget of {spec['max_minutes']} minutes"
            stop = True
        elif stop:
            stopped["why"] = f"early stop (stopping_step {spec['train']['stopping_step']})"
        return best, cur, stop, update

    trainer_module.early_stopping = budgeted_stop

    # ---- RecBole's quick-start sequence
    config_dict = {
        "data_path": spec["data_path"], "checkpoint_dir": os.path.join(spec["workdir"], "saved"),
        "benchmark_filename": ["train", "valid", "test"], "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
        "ITEM_LIST_LENGTH_FIELD": "item_length", "MAX_ITEM_LIST_LENGTH": 50,
        "train_neg_sample_args": None, "loss_type": "CE",
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG", "MRR"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
        "eval_step": 1, "metric_decimal_place": 6, "use_gpu": False, "seed": int(spec["seed"]), "reproducibility": True,
        "show_progress": False, "save_dataset": False, "save_dataloaders": False, "log_wandb": False,
        "worker": 0, **spec["model"], **spec["train"],
    }
    config = Config(model="SASRec", dataset=spec["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    t_data = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_seconds = time.perf_counter() - t_data
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[recbole] SASRec: {n_params:,} parameters; items incl. padding {dataset.item_num}; "
          f"train/valid/test rows {len(train_data._dataset)}/{len(valid_data._dataset)}/{len(test_data._dataset)}",
          flush=True)
    if spec.get("mode") == "eval_speed":
        return eval_speed(spec, trainer, test_data, out_path, n_params, dataset)
    t_fit = time.perf_counter()
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - t_fit
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    # ---- best epoch by RecBole's own rule (value >= best updates the best), and the time to reach it
    best, best_epoch = -float("inf"), -1
    for r in epochs:
        if "valid_score" in r and r["valid_score"] >= best:
            best, best_epoch = r["valid_score"], r["epoch"]
    to_best = sum(r["train_seconds"] + r.get("valid_seconds", 0.0) for r in epochs if r["epoch"] <= best_epoch)

    # ---- read-only checks of what RecBole evaluates
    iid, lst, ln = "item_id", "item_id_list", "item_length"
    uid = "user_id"

    def rows(ds):
        f = ds.inter_feat
        return f[uid].numpy(), f[lst].numpy(), f[ln].numpy(), f[iid].numpy()

    vu, vl, vn, vt = rows(valid_data._dataset)
    tu, tl, tn, tt = rows(test_data._dataset)
    vmap = {int(u): (vl[i, :vn[i]].tolist(), int(vt[i])) for i, u in enumerate(vu)}
    same = 0
    for i, u in enumerate(tu):
        h, t = vmap[int(u)]
        same += (h + [t])[-50:] == tl[i, :tn[i]].tolist()

    # pessimistic re-ranking of the best model's test scores (what prmkd's evaluator does) and tie counts
    model.eval()
    ranks, ties = [], []
    with torch.no_grad():
        for batch in test_data:
            inter, _, pos_u, pos_i = batch
            s = model.full_sort_predict(inter).view(-1, dataset.item_num)
            s[:, 0] = -float("inf")
            ts = s[pos_u, pos_i][:, None]
            ranks.append(((s > ts).sum(1) + (s == ts).sum(1) - 1).numpy())
            ties.append(((s == ts).sum(1) - 1).numpy())
    ranks, ties = np.concatenate(ranks), np.concatenate(ties)
    pess = {}
    for k in (5, 10, 20):
        hit = ranks < k
        pess[f"recall@{k}"] = float(hit.mean())
        pess[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    pess["mrr@10"] = float(np.where(ranks < 10, 1.0 / (ranks + 1.0), 0.0).mean())

    out = {
        "recbole_version": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
        "threads": torch.get_num_threads(), "parameters": n_params,
        "config": {k: (config[k] if not isinstance(config[k], (set, tuple)) else list(config[k]))
                   for k in ["hidden_size", "n_layers", "n_heads", "inner_size", "hidden_dropout_prob",
                             "attn_dropout_prob", "hidden_act", "layer_norm_eps", "initializer_range", "loss_type",
                             "MAX_ITEM_LIST_LENGTH", "train_batch_size", "learner", "learning_rate", "weight_decay",
                             "epochs", "stopping_step", "eval_batch_size", "valid_metric", "topk", "seed"]},
        "metrics": {"valid": {k.lower(): float(v) for k, v in (best_valid or {}).items()},
                    "test": {k.lower(): float(v) for k, v in test_result.items()},
                    "test_pessimistic_ties": pess},
        "timing": {"epochs": len(epochs), "best_epoch": best_epoch, "time_to_best_seconds": to_best,
                   "epoch_seconds": float(np.mean([r["train_seconds"] for r in epochs])),
                   "valid_seconds_mean": float(np.mean([r["valid_seconds"] for r in epochs if "valid_seconds" in r])),
                   "fit_seconds": fit_seconds, "data_seconds": data_seconds,
                   "test_eval_seconds": timer["test_eval_seconds"],
                   "process_seconds": time.perf_counter() - t_start},
        "checks": {"n_items_incl_padding": int(dataset.item_num), "n_users": int(dataset.user_num - 1),
                   "train_rows": len(train_data._dataset), "valid_rows": len(valid_data._dataset),
                   "test_rows": len(test_data._dataset),
                   "test_history_equals_valid_history_plus_valid_target": int(same),
                   "eval_mode": str(config["eval_args"]["mode"]),
                   "history_masked_in_full_sort": False if config["MODEL_TYPE"].name == "SEQUENTIAL" else True,
                   "users_with_ties_at_target_score": int((ties > 0).sum()),
                   "max_ties_at_target_score": int(ties.max())},
        "stopped": stopped["why"] if len(epochs) < int(spec["train"]["epochs"]) else "max epochs",
        "history": epochs,
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"[recbole] test ndcg@10 {out['metrics']['test'].get('ndcg@10', float('nan')):.4f} "
          f"recall@10 {out['metrics']['test'].get('recall@10', float('nan')):.4f}; best epoch {best_epoch}, "
          f"time to best {to_best:.1f}s", flush=True)
    return 0


def eval_speed(spec, trainer, test_data, out_path, n_params, dataset) -> int:
    """Time RecBole's own full-sort test evaluation (Trainer.evaluate) of a freshly initialised model: the cost of
    scoring and top-k does not depend on the weights."""
    import torch

    times = []
    for i in range(int(spec.get("warmup", 1)) + int(spec.get("repeats", 5))):
        t0 = time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        dt = time.perf_counter() - t0
        print(f"[recbole] {'warm-up' if i < int(spec.get('warmup', 1)) else 'timed'} evaluation {dt:.2f}s", flush=True)
        if i >= int(spec.get("warmup", 1)):
            times.append(dt)
    out = {"threads": torch.get_num_threads(), "parameters": n_params, "times": times,
           "n_users": len(test_data._dataset), "n_items_incl_padding": int(dataset.item_num),
           "eval_batch_size": int(trainer.config["eval_batch_size"]), "metrics_of_untrained_model": dict(result)}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
