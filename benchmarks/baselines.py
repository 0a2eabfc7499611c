"""Sequential baselines (SASRec, GRU4Rec, BERT4Rec) on Scientific_UniSRec: tuned on validation, 3 seeds each.

Run from the repository root (prmkd's virtualenv active):

    python benchmarks/baselines.py

What it does:
1. Tuning, on the VALIDATION split only (seed 0): SASRec over hidden size 64/128 x dropout 0.2/0.5 (the paper's
   d=300 joins with --big-grid; --wd-stage adds the best point with the paper's Adam L2 1e-5). GRU4Rec and
   BERT4Rec run their model files' defaults at Adam lr 1e-3 and 3e-3 (more sizes/dropouts with --big-grid).
   The configuration with the highest
   validation NDCG@10 is chosen. The grid and every validation result go to
   benchmarks/results/baselines_tuning_scientific.json (test metrics of tuning runs are not looked at).
2. The chosen configuration of each model is trained with seeds 0, 1, 2 (seed 0 is the tuning run itself) and
   tested: full ranking over all 4,385 items, history not masked, pessimistic ties.
   -> benchmarks/results/baselines_scientific.json (runs, a per-model mean/std summary, comparisons).

Every training run lives in its own folder under runs/bench/Scientific_UniSRec/ (git-ignored); a finished run
is not redone when the script runs again (prmkd's run fingerprint) and an interrupted one resumes from its last
epoch checkpoint. Runs go `--jobs` at a time (default 1, 1 torch thread: the models one after another). Each run has a
training-time cap of 40 minutes (train.max_minutes) so that one slow run cannot stall the benchmark on a
loaded machine; a run stopped by it says so in "stopped".

Other options: --models sasrec gru4rec, --seeds 0 1 2, --quick (2 epochs, a one-point grid: a smoke test that
writes *_quick.json files instead).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, ROOT, header, load_average, log, mean_std, write_json  # noqa: E402

DATASET = "Scientific_UniSRec"
METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"]
SASREC_TARGET = {"recall@10": 0.100, "ndcg@10": 0.052}

# Training settings shared by every run (the paper's: batch 512, Adam lr 1e-3); patience in validations.
TRAIN = {"batch_size": 512, "lr": 1e-3, "epochs": 150, "max_minutes": 40.0}
# GRU4Rec and BERT4Rec plateau for several epochs early on: patience 5 stopped a GRU4Rec run at epoch 7
PATIENCE = {"sasrec": 5, "gru4rec": 10, "bert4rec": 10}


def sasrec_grid(big: bool) -> list[dict]:
    sizes = [300, 128, 64] if big else [128, 64]
    return [{"name": "sasrec", "hidden_size": d, "layers": 2, "heads": 2, "inner_size": 256, "dropout": p,
             "attn_dropout": p, "_weight_decay": 0.0}
            for d, p in itertools.product(sizes, [0.2, 0.5])]


def gru4rec_grid(big: bool) -> list[dict]:
    """The model file's defaults (d=64, GRU 128, dropout 0.3) at Adam lr 1e-3 and 3e-3 (prmkd feeds each training
    sequence once per epoch with every position an instance, i.e. ~4x fewer optimizer steps per epoch than
    prefix-row trainers, and these models learn slowly at 1e-3); with --big-grid also d=128 and dropout 0.5."""
    sizes, drops = ([128, 64], [0.3, 0.5]) if big else ([64], [0.3])
    return [{"name": "gru4rec", "hidden_size": d, "gru_size": 2 * d, "layers": 1, "dropout": p, "_weight_decay": 0.0,
             "_lr": lr} for d, p, lr in itertools.product(sizes, drops, [1e-3, 3e-3])]


def bert4rec_grid(big: bool) -> list[dict]:
    """The model file's defaults (d=64, dropout 0.2, mask ratio 0.2) at Adam lr 1e-3 and 3e-3; with --big-grid
    also d=128 and dropout 0.5."""
    sizes, drops = ([128, 64], [0.2, 0.5]) if big else ([64], [0.2])
    return [{"name": "bert4rec", "hidden_size": d, "layers": 2, "heads": 2, "inner_size": 256, "dropout": p,
             "attn_dropout": p, "mask_ratio": 0.2, "_weight_decay": 0.0, "_lr": lr}
            for d, p, lr in itertools.product(sizes, drops, [1e-3, 3e-3])]


GRIDS = {"sasrec": sasrec_grid, "gru4rec": gru4rec_grid, "bert4rec": bert4rec_grid}
# a second tuning stage: the best point of the first grid, with the paper's L2 of 1e-5
SECOND_STAGE = {"sasrec": lambda best: [{**best, "_weight_decay": 1e-5}]}


def tag(spec: dict) -> str:
    short = {"hidden_size": "d", "gru_size": "g", "dropout": "do", "_weight_decay": "wd", "_lr": "lr", "layers": "L"}
    parts = [spec["name"]] + [f"{short[k]}{spec[k]:g}" for k in short if k in spec]
    return "-".join(parts)


# --------------------------------------------------------------------------------------------------
# one run (in a worker process)


def run_one(spec: dict, seed: int, out_root: str, threads: int, quick: bool) -> dict:
    import torch

    from prmkd.config import DataConfig, EvalConfig, RunConfig, TrainConfig
    from prmkd.experiment.runner import train_run

    torch.set_num_threads(threads)
    model = {k: v for k, v in spec.items() if not k.startswith("_")}
    train = TrainConfig(**{**TRAIN, "lr": spec.get("_lr", TRAIN["lr"])}, weight_decay=spec["_weight_decay"],
                        patience=PATIENCE[spec["name"]], seed=seed, threads=threads, progress=False, device="cpu")
    if quick:
        train.epochs = 2
    out = Path(out_root) / f"{tag(spec)}-seed{seed}"
    cfg = RunConfig(data=DataConfig(path=str(DATA)), model=model, train=train, eval=EvalConfig(), out=str(out))
    name = f"{tag(spec)}/s{seed}"
    t0 = time.time()
    res = train_run(cfg, log=lambda m: print(f"[{name}] {m}", flush=True))
    res["_run_dir"] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    res["_session_seconds"] = round(time.time() - t0, 1)
    return res


# --------------------------------------------------------------------------------------------------
# scheduling: each model goes grid -> (second stage) -> seeds; models run side by side


class ModelPlan:
    def __init__(self, name: str, seeds: list[int], quick: bool, big: bool, wd_stage: bool):
        self.name, self.seeds, self.wd_stage = name, seeds, wd_stage and not quick
        grid = GRIDS[name](big)
        self.stages = [grid[:1] if quick else grid]
        self.results: dict[tuple[str, int], dict] = {}  # (tag, seed) -> results
        self.specs: dict[str, dict] = {}
        self.stage_index = 0
        self.chosen: dict | None = None
        self.tuning_stages: list[list[str]] = []

    def first(self) -> list[tuple[dict, int]]:
        if len(self.stages[0]) == 1 and not (self.wd_stage and self.name in SECOND_STAGE):
            self.chosen = self.stages[0][0]  # nothing to choose: every seed starts at once
            return [(self.chosen, s) for s in self.seeds]
        return [(s, 0) for s in self.stages[0]]

    def best_tuned(self) -> dict:
        tuned = [(self.results[(t, 0)]["metrics"]["valid"]["ndcg@10"], t) for st in self.tuning_stages for t in st]
        return self.specs[max(tuned)[1]]

    def next(self, quick: bool) -> list[tuple[dict, int]]:
        """Called when everything submitted for this model has finished."""
        self.stage_index += 1
        if self.stage_index == 1 and self.name in SECOND_STAGE and self.wd_stage:
            return [(s, 0) for s in SECOND_STAGE[self.name](self.best_tuned())]
        if self.chosen is None:
            self.chosen = self.best_tuned()
            return [(self.chosen, s) for s in self.seeds if (tag(self.chosen), s) not in self.results]
        return []


def schedule(models, seeds, jobs: int, threads: int, quick: bool, big: bool, wd_stage: bool, out_root: Path):
    plans = {m: ModelPlan(m, seeds, quick, big, wd_stage) for m in models}
    ctx = mp.get_context("spawn")
    pending: dict[cf.Future, tuple[str, dict, int]] = {}
    outstanding = {m: 0 for m in models}

    def submit(ex, m, items):
        for spec, seed in items:
            t = tag(spec)
            plans[m].specs[t] = spec
            fut = ex.submit(run_one, spec, seed, str(out_root), threads, quick)
            pending[fut] = (m, spec, seed)
            outstanding[m] += 1

    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
        # one job: the models one after another (each finishes completely before the next starts);
        # several jobs: every model's first stage at once, so that all workers are busy from the start
        waiting = list(models)

        def start_next_model():
            while waiting:
                m = waiting.pop(0)
                items = plans[m].first()
                plans[m].tuning_stages.append(sorted({tag(s) for s, _ in items}))
                submit(ex, m, items)
                if jobs == 1:
                    return

        start_next_model()
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                m, spec, seed = pending.pop(fut)
                res = fut.result()
                plan = plans[m]
                plan.results[(tag(spec), seed)] = res
                outstanding[m] -= 1
                v = res["metrics"]["valid"]["ndcg@10"]
                log(f"== finished {tag(spec)} seed {seed}: valid ndcg@10 {v:.4f} "
                    f"(best epoch {res['timing']['best_epoch']}, {res['timing']['train_seconds']:.0f}s)")
                if outstanding[m] == 0:
                    was_tuning = plan.chosen is None
                    items = plan.next(quick)
                    if items and plan.chosen is None:
                        plan.tuning_stages.append([tag(s) for s, _ in items])
                    elif was_tuning and plan.chosen is not None:
                        log(f"== {m}: chose {tag(plan.chosen)} on validation NDCG@10")
                    submit(ex, m, items)
                    if not items and outstanding[m] == 0:
                        start_next_model()
    return plans


# --------------------------------------------------------------------------------------------------
# results


def run_entry(res: dict, threads: int) -> dict:
    t = res["timing"]
    cfg = res["config"]
    return {
        "name": res["name"], "role": "baseline", "dataset": res["dataset"], "seed": res["seed"],
        "config": {"model": cfg["model"], "train": cfg["train"], "eval": cfg["eval"]},
        "hidden_size": cfg["model"]["hidden_size"], "parameters": res["parameters"],
        "metrics": {"valid": res["metrics"]["valid"], "test": res["metrics"]["test"]},
        "timing": {"train_seconds": t["train_seconds"], "epoch_seconds": t["epoch_seconds"],
                   "best_epoch": t["best_epoch"], "epochs": t["epochs"],
                   "time_to_best_seconds": t["time_to_best_seconds"], "test_eval_seconds": t["test_eval_seconds"],
                   "wall_seconds": t["wall_seconds_this_session"], "torch_threads": threads},
        "stopped": res.get("stopped"), "eval": {k: res["eval"][k] for k in ("mask_history", "ties", "candidates")},
        "run_dir": res["_run_dir"],
    }


def per_user(run_dir: str, metric: str) -> np.ndarray:
    return np.load(ROOT / run_dir / "per_user_test.npz")[metric]


def build_outputs(plans: dict[str, ModelPlan], seeds: list[int], args, started: float, hdr: dict):
    from scipy import stats

    tuning = {"dataset": DATASET, "selection": "highest validation NDCG@10, seed 0; test metrics not used",
              "big_grid": args.big_grid, "models": {}}
    if not args.big_grid:
        tuning["not_in_grid"] = (
            "SASRec hidden size 300 (the paper's default) and GRU4Rec/BERT4Rec hidden size 128 are in the grid only "
            "with --big-grid. On this shared 2-core CPU a smoke test measured SASRec d=300 at about 75-80 s per "
            "epoch with 1 torch thread (GRU4Rec d=128: ~26 s, BERT4Rec d=128: ~26 s) while other jobs loaded the "
            "machine, i.e. roughly an hour per SASRec d=300 training run; the default grid therefore uses d=64/128.")
    runs, summary = [], {}
    for m, plan in plans.items():
        stages = []
        for i, st in enumerate(plan.tuning_stages):
            rows = []
            for t in st:
                r = plan.results[(t, 0)]
                rows.append({"tag": t, "config": {k: v for k, v in plan.specs[t].items()},
                             "valid": r["metrics"]["valid"], "best_epoch": r["timing"]["best_epoch"],
                             "epochs": r["timing"]["epochs"], "epoch_seconds": r["timing"]["epoch_seconds"],
                             "run_dir": r["_run_dir"]})
            stages.append({"stage": i + 1, "runs": rows})
        tuning["models"][m] = {"tuned": sum(len(st) for st in plan.tuning_stages) > 1,
                               "patience": PATIENCE[m], "train": TRAIN, "stages": stages,
                               "chosen": tag(plan.chosen), "chosen_config": plan.chosen,
                               "chosen_valid_ndcg@10":
                                   plan.results[(tag(plan.chosen), 0)]["metrics"]["valid"]["ndcg@10"]}
        final = [plan.results[(tag(plan.chosen), s)] for s in seeds]
        for r in final:
            runs.append(run_entry(r, args.threads))
        summary[m] = {
            "config": tag(plan.chosen), "hidden_size": plan.chosen["hidden_size"], "seeds": seeds,
            "test": {k: mean_std([r["metrics"]["test"][k] for r in final]) for k in METRICS},
            "valid": {k: mean_std([r["metrics"]["valid"][k] for r in final]) for k in METRICS},
            "epoch_seconds": mean_std([r["timing"]["epoch_seconds"] for r in final]),
            "best_epoch": [r["timing"]["best_epoch"] for r in final],
            "train_seconds": mean_std([r["timing"]["train_seconds"] for r in final]),
        }
    comparisons = []
    if "sasrec" in plans:
        for other in [m for m in plans if m != "sasrec"]:
            a = [e for e in runs if e["name"] == "sasrec"]
            b = [e for e in runs if e["name"] == other]
            for metric in ("ndcg@10", "recall@10"):
                pa = np.mean([per_user(e["run_dir"], metric) for e in a], axis=0)
                pb = np.mean([per_user(e["run_dir"], metric) for e in b], axis=0)
                p = float(stats.ttest_rel(pa, pb).pvalue)
                comparisons.append({
                    "name": f"test {metric}: sasrec / {other} (mean over seeds)", "a": "sasrec", "b": other,
                    "metric": metric, "value": round(float(pa.mean() / pb.mean()), 4),
                    "difference": round(float(pa.mean() - pb.mean()), 5), "p_value": p,
                    "test": "paired t-test over users of the per-user metric averaged over seeds"})
        s = summary["sasrec"]["test"]
        target = {k: {"target": v, "mean": s[k]["mean"], "met": s[k]["mean"] >= v} for k, v in SASREC_TARGET.items()}
    else:
        target = None
    hdr["machine"]["load_average_at_end"] = load_average()
    out = {
        **hdr,
        "dataset": DATASET,
        "evaluation": {"protocol": "leave-one-out, full ranking over all items (no sampled negatives)",
                       "mask_history": False, "ties": "pessimistic (an equal score ranks above the target)",
                       "ks": [5, 10, 20], "test_history_includes_valid_item": True},
        "notes": [
            "Hyper-parameters chosen on the validation split only (see baselines_tuning_scientific.json); the "
            "seed-0 run of each model is its chosen tuning run.",
            f"Runs went {args.jobs} at a time, {args.threads} torch thread(s) each, on a shared 2-core machine: "
            "wall times are indicative only.",
            "std is the sample standard deviation (ddof=1) over seeds.",
            "A run that was interrupted resumes from its last epoch checkpoint and keeps its training time summed "
            "over sessions. Earlier invocations of this script ran 2-3 runs at once, so the epoch_seconds of runs "
            "begun then (the hidden-size-128 SASRec grid points) are inflated relative to the others.",
            "GRU4Rec and BERT4Rec: their model files' defaults, with the learning rate (1e-3 / 3e-3) chosen on "
            "validation and patience 10 (see baselines_tuning_scientific.json).",
        ],
        "runs": runs, "summary": summary, "sasrec_target": target, "comparisons": comparisons,
        "script_seconds": round(time.time() - started, 1),
    }
    tuning_runs = [{"name": m, "role": "baseline", "dataset": DATASET, "seed": 0, "config": row["config"],
                    "metrics": {"valid": row["valid"]},
                    "timing": {"epoch_seconds": row["epoch_seconds"], "best_epoch": row["best_epoch"]}}
                   for m, t in tuning["models"].items() for st in t["stages"] for row in st["runs"]]
    tuning = {**hdr, **tuning, "runs": tuning_runs, "comparisons": []}
    return out, tuning


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["sasrec", "gru4rec", "bert4rec"], choices=list(GRIDS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at the same time (processes); 1 = the models one after another")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, one grid point per model")
    p.add_argument("--wd-stage", action="store_true",
                   help="SASRec: also try the best grid point with Adam L2 1e-5 (the paper's) before the seeds")
    p.add_argument("--big-grid", action="store_true",
                   help="also hidden size 300 (SASRec) and 128 (GRU4Rec, BERT4Rec): hours on a shared 2-core CPU")
    args = p.parse_args(argv)
    if 0 not in args.seeds:
        p.error("seed 0 is the tuning seed and must be among --seeds")
    started = time.time()
    hdr = header({"jobs": args.jobs, "torch_threads_per_run": args.threads})
    suffix = "_quick" if args.quick else ""
    out_root = ROOT / "runs" / ("bench-quick" if args.quick else "bench") / DATASET
    log(f"baselines on {DATASET}: models {args.models}, seeds {args.seeds}, {args.jobs} jobs x {args.threads} "
        f"thread(s); run folders under {out_root.relative_to(ROOT)}")
    plans = schedule(args.models, args.seeds, args.jobs, args.threads, args.quick, args.big_grid, args.wd_stage,
                     out_root)
    out, tuning = build_outputs(plans, args.seeds, args, started, hdr)
    write_json(RESULTS / f"baselines_tuning_scientific{suffix}.json", tuning)
    write_json(RESULTS / f"baselines_scientific{suffix}.json", out)
    for m, s in out["summary"].items():
        t = s["test"]
        log(f"{m:9s} {s['config']:32s} test recall@10 {t['recall@10']['mean']:.4f} ± {t['recall@10']['std']:.4f}  "
            f"ndcg@10 {t['ndcg@10']['mean']:.4f} ± {t['ndcg@10']['std']:.4f}  "
            f"({s['epoch_seconds']['mean']:.1f} s/epoch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
