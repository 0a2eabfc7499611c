"""prmkd's SASRec next to RecBole 1.2.1's SASRec on Scientific_UniSRec: accuracy and time to the best epoch.

Run from the repository root (prmkd's virtualenv active; RecBole in its own virtualenv, see below):

    python benchmarks/recbole_side_by_side.py

RecBole is never a dependency of prmkd. It lives in .venv-recbole (git-ignored), made once with
    python3 -m venv .venv-recbole
    .venv-recbole/bin/pip install torch==2.13.0 recbole==1.2.1 'numpy<2' 'setuptools<81' 'pandas<3'
and runs as a subprocess (benchmarks/recbole_driver.py) on the same three pre-split files, linked into a
git-ignored folder under .prmkd/ (RecBole's `benchmark_filename: [train, valid, test]`,
`alias_of_item_id: [item_id_list]`, `load_col: {inter: [user_id, item_id_list, item_id]}`).

Both get the same model and training settings: hidden size, 2 layers, 2 heads, inner size 256, dropout (hidden
and attention), GELU, LayerNorm eps 1e-12, N(0, 0.02) init, max sequence length 50, batch of about 512
training instances (RecBole: 512 prefix rows; prmkd: 128 sequences, every position an instance, 34,101 / 8,442
= 4.04 instances per sequence, batched by similar length: `--batch-sequences`, `--bucket`), Adam lr 1e-3,
cross-entropy over all items, full
ranking, validation NDCG@10 for early stopping with the same patience (RecBole stops after stopping_step + 1
evaluations without gain, so stopping_step = patience - 1), the same torch thread count. For each seed the two
run one after the other in this one invocation (the order alternates between seeds), so they see the same
machine; time to best = training + validation time summed up to and including the best validation epoch.
A training-time budget (--max-minutes, the same for both) keeps a run on a loaded machine from running for hours;
a run stopped by it says so and its time to best is then a lower bound.

-> benchmarks/results/recbole_vs_prmkd_sasrec.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, ROOT, header, load_average, log, mean_std, write_json  # noqa: E402

RECBOLE_PY = ROOT / ".venv-recbole" / "bin" / "python"
WORK = ROOT / ".prmkd" / "recbole-side-by-side"  # git-ignored (.prmkd/)
METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"]


def link_data() -> Path:
    """RecBole reads {data_path}/{dataset}/{dataset}.{train,valid,test}.inter: link the shared files there."""
    folder = WORK / "data" / "Scientific"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        dst = folder / f"Scientific.{split}.inter"
        src = DATA / f"Scientific.{split}.inter"
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(src)
    return folder.parent


def read_rows(path: Path) -> list[tuple[str, list[str], str]]:
    rows = []
    with open(path) as f:
        f.readline()
        for line in f:
            u, hist, t = line.rstrip("\n").split("\t")
            rows.append((u, hist.split(), t))
    return rows


def data_check(ds) -> dict:
    """prmkd's prepared valid/test histories and targets against the raw pre-split files RecBole reads."""
    def index(name):
        out = {}
        for line in open(DATA / name):
            k, i = line.rstrip("\n").split("\t")
            out[i] = k
        return out

    items, users = index("Scientific.item2index"), index("Scientific.user2index")
    user_pos = {k: u for u, k in enumerate(ds.user_keys)}
    out = {}
    for split in ("valid", "test"):
        rows = read_rows(DATA / f"Scientific.{split}.inter")
        targets = ds.split_targets(split)
        same = 0
        for u_raw, hist, t in rows:
            u = user_pos[users[u_raw]]
            mine = [ds.item_keys[i - 1] for i in ds.split_history(u, split)]
            same += mine == [items[h] for h in hist] and ds.item_keys[targets[u] - 1] == items[t]
        out[f"{split}_rows"] = len(rows)
        out[f"{split}_rows_identical_in_prmkd"] = same
    tr = read_rows(DATA / "Scientific.train.inter")
    out["train_rows"] = len(tr)
    out["prmkd_train_instances"] = ds.n_train_instances
    return out


def recbole_freeze() -> list[str]:
    out = subprocess.run([str(RECBOLE_PY), "-m", "pip", "freeze"], capture_output=True, text=True)
    return out.stdout.split()


def run_prmkd(args, seed: int, ds) -> dict:
    import torch

    from prmkd.config import DataConfig, EvalConfig, RunConfig, TrainConfig
    from prmkd.experiment.runner import train_run

    torch.set_num_threads(args.threads)
    model = {"name": "sasrec", "hidden_size": args.hidden_size, "layers": 2, "heads": 2, "inner_size": 256,
             "dropout": args.dropout, "attn_dropout": args.dropout}
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_sequences, bucket=args.bucket, lr=args.lr,
                        weight_decay=args.weight_decay,
                        patience=args.patience, seed=seed, device="cpu", threads=args.threads, progress=False,
                        max_minutes=args.max_minutes)
    out = ROOT / "runs" / "bench" / "recbole_side_by_side" / f"prmkd-sasrec-seed{seed}"
    cfg = RunConfig(data=DataConfig(path=str(DATA)), model=model, train=train, eval=EvalConfig(), out=str(out))
    t0 = time.perf_counter()
    res = train_run(cfg, ds=ds, restart=True, log=lambda m: log(f"[prmkd s{seed}] {m}"))
    wall = time.perf_counter() - t0
    t = res["timing"]
    hist = res["history"]
    return {
        "name": "prmkd-sasrec", "role": "baseline", "dataset": "Scientific_UniSRec", "seed": seed,
        "framework": "prmkd", "config": {"model": res["config"]["model"], "train": res["config"]["train"],
                                         "eval": res["config"]["eval"]},
        "parameters": res["parameters"],
        "metrics": {"valid": res["metrics"]["valid"], "test": res["metrics"]["test"]},
        "timing": {"time_to_best_seconds": t["time_to_best_seconds"], "best_epoch": t["best_epoch"],
                   "epochs": t["epochs"], "epoch_seconds": t["epoch_seconds"],
                   "valid_seconds_mean": round(float(np.mean([h["eval_seconds"] for h in hist
                                                              if "eval_seconds" in h])), 3),
                   "train_seconds": t["train_seconds"], "test_eval_seconds": t["test_eval_seconds"],
                   "process_seconds": round(wall, 2), "torch_threads": args.threads},
        "stopped": res["stopped"],
        "history": [{"epoch": h["epoch"], "train_seconds": h["train_seconds"], "valid_seconds": h.get("eval_seconds"),
                     "valid_ndcg@10": h.get("valid", {}).get("ndcg@10")} for h in hist],
    }


def run_recbole(args, seed: int, data_path: Path) -> dict:
    spec = {
        "data_path": str(data_path), "dataset": "Scientific", "workdir": str(WORK / f"work-seed{seed}"),
        "seed": seed, "threads": args.threads, "max_minutes": args.max_minutes,
        "model": {"hidden_size": args.hidden_size, "n_layers": 2, "n_heads": 2, "inner_size": 256,
                  "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout, "hidden_act": "gelu",
                  "layer_norm_eps": 1e-12, "initializer_range": 0.02},
        "train": {"epochs": args.epochs, "train_batch_size": 512, "learner": "adam", "learning_rate": args.lr,
                  "weight_decay": args.weight_decay, "stopping_step": args.patience - 1, "eval_batch_size": 4096},
    }
    spec_path, out_path = WORK / f"spec-seed{seed}.json", WORK / f"result-seed{seed}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    with subprocess.Popen([str(RECBOLE_PY), str(ROOT / "benchmarks" / "recbole_driver.py"), str(spec_path),
                           str(out_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=ROOT) as p:
        tail = []
        for line in p.stdout:
            tail = (tail + [line.rstrip()])[-40:]
            if line.startswith("[recbole]"):
                log(f"[recbole s{seed}] {line[len('[recbole] '):].rstrip()}")
        rc = p.wait()
    if rc != 0 or not out_path.exists():
        raise RuntimeError("RecBole driver failed:\n" + "\n".join(tail))
    r = json.loads(out_path.read_text())
    t = r["timing"]
    return {
        "name": "recbole-sasrec", "role": "reference", "dataset": "Scientific_UniSRec", "seed": seed,
        "framework": f"recbole {r['recbole_version']}", "config": r["config"], "parameters": r["parameters"],
        "metrics": {"valid": {k: r["metrics"]["valid"][k] for k in METRICS if k in r["metrics"]["valid"]},
                    "test": {k: r["metrics"]["test"][k] for k in METRICS if k in r["metrics"]["test"]},
                    "test_recomputed_pessimistic_ties": r["metrics"]["test_pessimistic_ties"]},
        "timing": {"time_to_best_seconds": round(t["time_to_best_seconds"], 2), "best_epoch": t["best_epoch"],
                   "epochs": t["epochs"], "epoch_seconds": round(t["epoch_seconds"], 3),
                   "valid_seconds_mean": round(t["valid_seconds_mean"], 3),
                   "train_seconds": round(t["fit_seconds"], 2), "data_seconds": round(t["data_seconds"], 2),
                   "test_eval_seconds": round(t["test_eval_seconds"] or 0.0, 3),
                   "process_seconds": round(time.perf_counter() - t0, 2), "torch_threads": r["threads"]},
        "stopped": r.get("stopped"),
        "checks": r["checks"],
        "history": [{"epoch": h["epoch"], "train_seconds": round(h["train_seconds"], 3),
                     "valid_seconds": round(h.get("valid_seconds", 0.0), 3),
                     "valid_ndcg@10": h.get("valid", {}).get("ndcg@10")} for h in r["history"]],
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for both")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--batch-sequences", type=int, default=128,
                   help="prmkd's batch in sequences (every position an instance): 128 sequences hold about 517 "
                        "training instances on Scientific (34,101 / 8,442 per sequence), RecBole's 512 rows")
    p.add_argument("--bucket", type=int, default=20, help="prmkd: length-bucketed batches (0 = off)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=45.0, help="training-time budget per run, both frameworks")
    args = p.parse_args(argv)
    if not RECBOLE_PY.exists():
        p.error(f"{RECBOLE_PY} not found: create the RecBole virtualenv first (see this script's docstring)")
    started = time.time()
    hdr = header({"torch_threads_per_run": args.threads})
    from prmkd.config import DataConfig
    from prmkd.data.dataset import prepare

    ds = prepare(DataConfig(path=str(DATA)), log=log)
    check = data_check(ds)
    log(f"data check: {check}")
    data_path = link_data()
    freeze = recbole_freeze()
    runs = []
    for i, seed in enumerate(args.seeds):
        order = ["prmkd", "recbole"] if i % 2 == 0 else ["recbole", "prmkd"]
        for fw in order:
            log(f"== seed {seed}: {fw} (load average {load_average()})")
            runs.append(run_prmkd(args, seed, ds) if fw == "prmkd" else run_recbole(args, seed, data_path))
            r = runs[-1]
            log(f"== {r['name']} seed {seed}: test ndcg@10 {r['metrics']['test']['ndcg@10']:.4f} recall@10 "
                f"{r['metrics']['test']['recall@10']:.4f}; best epoch {r['timing']['best_epoch']}, time to best "
                f"{r['timing']['time_to_best_seconds']:.1f}s, {r['timing']['epoch_seconds']:.1f} s/epoch")

    P = [r for r in runs if r["name"] == "prmkd-sasrec"]
    R = [r for r in runs if r["name"] == "recbole-sasrec"]
    comparisons = []
    for a, b in zip(R, P):
        s = a["seed"]
        comparisons += [
            {"name": f"time to best validation epoch, seed {s}: recbole / prmkd", "a": "recbole-sasrec",
             "b": "prmkd-sasrec", "metric": "time_to_best_seconds", "seed": s,
             "value": ratio(a["timing"]["time_to_best_seconds"], b["timing"]["time_to_best_seconds"]), "p_value": None},
            {"name": f"training time per epoch, seed {s}: recbole / prmkd", "a": "recbole-sasrec", "b": "prmkd-sasrec",
             "metric": "epoch_seconds", "seed": s,
             "value": ratio(a["timing"]["epoch_seconds"], b["timing"]["epoch_seconds"]), "p_value": None},
            {"name": f"validation (full ranking) time per epoch, seed {s}: recbole / prmkd", "a": "recbole-sasrec",
             "b": "prmkd-sasrec", "metric": "valid_seconds_mean", "seed": s,
             "value": ratio(a["timing"]["valid_seconds_mean"], b["timing"]["valid_seconds_mean"]), "p_value": None},
        ]
    summary = {}
    for name, rs in (("prmkd-sasrec", P), ("recbole-sasrec", R)):
        summary[name] = {"test": {k: mean_std([r["metrics"]["test"][k] for r in rs]) for k in METRICS},
                         "time_to_best_seconds": mean_std([r["timing"]["time_to_best_seconds"] for r in rs]),
                         "epoch_seconds": mean_std([r["timing"]["epoch_seconds"] for r in rs]),
                         "best_epoch": [r["timing"]["best_epoch"] for r in rs]}
    for metric in ("ndcg@10", "recall@10"):
        comparisons.append({"name": f"test {metric}: prmkd / recbole (mean over seeds)", "a": "prmkd-sasrec",
                            "b": "recbole-sasrec", "metric": metric,
                            "value": ratio(summary["prmkd-sasrec"]["test"][metric]["mean"],
                                           summary["recbole-sasrec"]["test"][metric]["mean"]),
                            "difference": round(summary["prmkd-sasrec"]["test"][metric]["mean"]
                                                - summary["recbole-sasrec"]["test"][metric]["mean"], 5),
                            "p_value": None})
    speed = ratio(summary["recbole-sasrec"]["time_to_best_seconds"]["mean"],
                  summary["prmkd-sasrec"]["time_to_best_seconds"]["mean"])
    comparisons.append({"name": "time to best validation epoch: recbole / prmkd (mean over seeds)",
                        "a": "recbole-sasrec", "b": "prmkd-sasrec", "metric": "time_to_best_seconds",
                        "value": speed, "p_value": None})
    hdr["machine"]["load_average_at_end"] = load_average()
    rb_checks = R[0]["checks"] if R else {}
    out = {
        **hdr,
        "dataset": "Scientific_UniSRec",
        "recbole": {"version": "1.2.1", "virtualenv": ".venv-recbole (separate from prmkd's)",
                    "install": "python3 -m venv .venv-recbole && .venv-recbole/bin/pip install torch==2.13.0 "
                               "recbole==1.2.1 'numpy<2' 'setuptools<81' 'pandas<3'",
                    "pip_freeze": freeze,
                    "config_keys": ["benchmark_filename: [train, valid, test]", "alias_of_item_id: [item_id_list]",
                                    "load_col: {inter: [user_id, item_id_list, item_id]}", "MAX_ITEM_LIST_LENGTH: 50",
                                    "train_neg_sample_args: None", "loss_type: CE", "eval_args.mode: full",
                                    "valid_metric: NDCG@10", f"stopping_step: {args.patience - 1}",
                                    "eval_step: 1", "topk: [5, 10, 20]", "metrics: [Recall, NDCG, MRR]"],
                    "torch_load": "RecBole 1.2.1 reloads its best checkpoint with torch.load(), which torch >= 2.6 "
                                  "refuses by default (weights_only=True); the driver sets "
                                  "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for RecBole's process only (its own "
                                  "checkpoint)."},
        "settings": {"hidden_size": args.hidden_size, "layers": 2, "heads": 2, "inner_size": 256,
                     "dropout": args.dropout, "attn_dropout": args.dropout,
                     "batch_size": {"recbole_rows": 512, "prmkd_sequences": args.batch_sequences,
                                    "prmkd_bucket": args.bucket,
                                    "prmkd_mean_instances_per_batch": round(args.batch_sequences * 34101 / 8442, 1)},
                     "lr": args.lr,
                     "weight_decay": args.weight_decay, "max_len": 50, "loss": "cross-entropy over all items",
                     "patience": args.patience, "epochs_cap": args.epochs, "max_minutes": args.max_minutes,
                     "torch_threads": args.threads, "seeds": args.seeds},
        "data_check": {"prmkd_vs_raw_files": check, "recbole": rb_checks},
        "evaluation_comparison": {
            "both": "full ranking over all items, leave-one-out, history not masked; the test history includes the "
                    "validation item (RecBole reads it from test.inter; prmkd builds it from the full sequence: "
                    "see data_check); no retraining on train + valid",
            "ties": "prmkd: pessimistic (every other item with an equal score ranks above the target). RecBole: "
                    "torch.topk order, which can place the target above items of equal score. The RecBole run's "
                    "test metrics are recomputed here from its best model's scores with prmkd's pessimistic rule "
                    "(metrics.test_recomputed_pessimistic_ties) and ties at the target's score are counted "
                    "(checks.users_with_ties_at_target_score): with float scores from a trained model they are "
                    "(near) absent, so the two rules agree.",
            "padding_item": "RecBole's training softmax includes the padding item's column; prmkd's excludes it "
                            "(both set it to -inf at evaluation).",
            "training_instances": "same 34,101 (history, next item) instances per epoch: RecBole feeds the "
                                  "prefix-augmented rows of train.inter, one instance per row, each padded to 50; "
                                  "prmkd feeds each user's training sequence once with every position an instance "
                                  "(so it makes ~4x fewer optimizer steps per epoch at batch 512).",
            "early_stopping": "RecBole counts a validation score equal to the best as an improvement (>=); prmkd "
                              "requires strictly better. stopping_step = patience - 1 makes the stopping point "
                              "the same otherwise.",
        },
        "notes": [
            "Each seed's two runs ran back to back in this one invocation. Other developers' jobs (and this "
            "project's other benchmark runs) shared the 2 CPU cores throughout, so the absolute seconds are "
            "inflated and noisy; the ratios are the comparable numbers.",
            "Target: prmkd at least as accurate (within seed noise) and >= 5x faster to its best validation epoch.",
        ],
        "runs": runs, "summary": summary, "comparisons": comparisons,
        "target": {"speedup_time_to_best": speed, "speedup_target": 5.0, "met": bool(speed >= 5.0)},
        "script_seconds": round(time.time() - started, 1),
    }
    write_json(RESULTS / "recbole_vs_prmkd_sasrec.json", out)
    log(f"time to best: recbole / prmkd = {speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
