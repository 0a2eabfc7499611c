"""Full-ranking evaluation speed of a trained SASRec on the Scientific_UniSRec test split (8,442 users x 4,385 items).

Run from the repository root (prmkd's virtualenv active):

    python benchmarks/eval_speed.py

It loads a trained SASRec run folder (--run-dir; by default the first finished one of the RecBole side-by-side's
prmkd run, the baseline benchmark's d=64 / dropout 0.5 SASRec, runs/dev-sasrec64; if none exists, it trains one
with the baseline settings first), then times `prmkd.evaluation.evaluate(model, ds, "test")` exactly as training and
testing call it:
full ranking over every item, history not masked, pessimistic ties, per-user metrics kept. One warm-up, then
--repeats timed repetitions; the median is reported, for each torch thread count in --threads.
If .venv-recbole exists, RecBole 1.2.1's own full-sort test evaluation (Trainer.evaluate) of a SASRec of the
same size is timed in the same invocation with the same threads (a subprocess; its weights do not change the
cost), and the ratio is recorded.

-> benchmarks/results/eval_speed_scientific.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, ROOT, header, load_average, log, write_json  # noqa: E402

RECBOLE_PY = ROOT / ".venv-recbole" / "bin" / "python"
CANDIDATES = [  # finished runs only (results.json present)
    "runs/bench/recbole_side_by_side/prmkd-sasrec-seed0",
    "runs/bench/Scientific_UniSRec/sasrec-d64-do0.5-wd0-L2-seed0",
    "runs/dev-sasrec64",
]
TARGET_SECONDS = 2.0


def find_run(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    for c in CANDIDATES:
        if all((ROOT / c / f).exists() for f in ("best.pt", "config.json", "results.json")):
            return ROOT / c
    log("no trained SASRec run found: training one (d=64, dropout 0.5, patience 5)")
    from prmkd.config import DataConfig, RunConfig, TrainConfig
    from prmkd.experiment.runner import train_run

    out = ROOT / "runs" / "bench" / "eval_speed" / "sasrec-seed0"
    cfg = RunConfig(data=DataConfig(path=str(DATA)),
                    model={"name": "sasrec", "hidden_size": 64, "dropout": 0.5, "attn_dropout": 0.5},
                    train=TrainConfig(patience=5, progress=False, device="cpu"), out=str(out))
    train_run(cfg, log=log)
    return out


def time_prmkd(model, ds, threads: int, warmup: int, repeats: int) -> dict:
    import torch

    from prmkd.config import EvalConfig
    from prmkd.evaluation import evaluate

    torch.set_num_threads(threads)
    cfg = EvalConfig()
    times, res = [], None
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        res = evaluate(model, ds, "test", cfg, "cpu")
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
        log(f"  prmkd, {threads} thread(s): {'warm-up' if i < warmup else 'timed'} {dt:.3f}s")
    return {"threads": threads, "median_seconds": round(statistics.median(times), 4),
            "min_seconds": round(min(times), 4), "times": [round(t, 4) for t in times],
            "metrics": res.metrics, "settings": {k: res.settings[k] for k in
                                                 ("mask_history", "ties", "candidates", "batch_size", "max_elements",
                                                  "n_users", "n_items")}}


def time_recbole(model_cfg: dict, threads: int, warmup: int, repeats: int) -> dict:
    from recbole_side_by_side import WORK, link_data

    data_path = link_data()
    spec = {"mode": "eval_speed", "data_path": str(data_path), "dataset": "Scientific",
            "workdir": str(WORK / "work-eval-speed"), "seed": 0, "threads": threads, "warmup": warmup,
            "repeats": repeats,
            "model": {"hidden_size": model_cfg["hidden_size"], "n_layers": model_cfg["layers"],
                      "n_heads": model_cfg["heads"], "inner_size": model_cfg["inner_size"],
                      "hidden_dropout_prob": model_cfg["dropout"], "attn_dropout_prob": model_cfg["attn_dropout"],
                      "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02},
            "train": {"epochs": 1, "train_batch_size": 512, "learner": "adam", "learning_rate": 1e-3,
                      "stopping_step": 4, "eval_batch_size": 4096}}
    spec_path, out_path = WORK / f"spec-eval-speed-{threads}.json", WORK / f"result-eval-speed-{threads}.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    p = subprocess.run([str(RECBOLE_PY), str(ROOT / "benchmarks" / "recbole_driver.py"), str(spec_path),
                        str(out_path)], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONWARNINGS": "ignore"})
    for line in p.stdout.splitlines():
        if line.startswith("[recbole]"):
            log(f"  recbole, {threads} thread(s): {line[len('[recbole] '):]}")
    if p.returncode != 0 or not out_path.exists():
        raise RuntimeError("RecBole driver failed:\n" + "\n".join((p.stdout + p.stderr).splitlines()[-30:]))
    r = json.loads(out_path.read_text())
    return {"threads": r["threads"], "median_seconds": round(statistics.median(r["times"]), 4),
            "min_seconds": round(min(r["times"]), 4), "times": [round(t, 4) for t in r["times"]],
            "n_users": r["n_users"], "n_items_incl_padding": r["n_items_incl_padding"],
            "eval_batch_size": r["eval_batch_size"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", help="a trained SASRec run folder (config.json + best.pt)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-recbole", action="store_true", help="skip the RecBole timing")
    args = p.parse_args(argv)
    started = time.time()
    hdr = header()
    from prmkd.experiment.runner import load_run

    run_dir = find_run(args.run_dir)
    model, cfg, ds = load_run(run_dir, log=log)
    model.to("cpu")
    log(f"SASRec from {run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir}: "
        f"{ds.n_users} test users x {ds.n_items} items")
    runs, comparisons = [], []
    do_recbole = RECBOLE_PY.exists() and not args.no_recbole
    for threads in args.threads:
        log(f"== {threads} thread(s) (load average {load_average()})")
        pr = time_prmkd(model, ds, threads, args.warmup, args.repeats)
        runs.append({"name": "prmkd-eval", "role": "baseline", "dataset": ds.name, "seed": cfg.train.seed,
                     "config": {"model": cfg.model, "eval": pr["settings"]},
                     "metrics": {"test": pr["metrics"]},
                     "timing": {"median_seconds": pr["median_seconds"], "min_seconds": pr["min_seconds"],
                                "times": pr["times"], "torch_threads": threads,
                                "users_per_second": round(ds.n_users / pr["median_seconds"], 1)}})
        if do_recbole:
            rb = time_recbole(cfg.model, threads, args.warmup, args.repeats)
            runs.append({"name": "recbole-eval", "role": "reference", "dataset": ds.name, "seed": 0,
                         "config": {"model": "RecBole 1.2.1 SASRec of the same size (fresh initialisation)",
                                    "eval_batch_size": rb["eval_batch_size"], "mode": "full sort, Trainer.evaluate"},
                         "metrics": {},
                         "timing": {"median_seconds": rb["median_seconds"], "min_seconds": rb["min_seconds"],
                                    "times": rb["times"], "torch_threads": threads,
                                    "users_per_second": round(rb["n_users"] / rb["median_seconds"], 1)}})
            comparisons.append({"name": f"full-ranking test evaluation, {threads} thread(s): recbole / prmkd",
                                "a": "recbole-eval", "b": "prmkd-eval", "metric": "median_seconds",
                                "threads": threads, "value": round(rb["median_seconds"] / pr["median_seconds"], 3),
                                "p_value": None})
        log(f"   prmkd median {pr['median_seconds']:.3f}s" +
            (f", recbole median {rb['median_seconds']:.3f}s" if do_recbole else ""))
    best = min(r["timing"]["median_seconds"] for r in runs if r["name"] == "prmkd-eval")
    hdr["machine"]["load_average_at_end"] = load_average()
    out = {
        **hdr, "dataset": ds.name,
        "run_dir": str(run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir),
        "what": "prmkd.evaluation.evaluate(model, ds, 'test'): full ranking of every test user's target against all "
                f"{ds.n_items} items (history not masked, pessimistic ties, per-user metrics kept); one warm-up, "
                f"then {args.repeats} timed repetitions, median reported per torch thread count",
        "notes": ["The machine's 2 cores were shared with other developers' jobs (see load averages): medians of "
                  "several repetitions damp that, but absolute seconds drift between invocations; the RecBole / "
                  "prmkd ratios are measured back to back in this one invocation."],
        "runs": runs, "comparisons": comparisons,
        "target": {"seconds": TARGET_SECONDS, "best_median_seconds": best, "met": bool(best < TARGET_SECONDS)},
        "script_seconds": round(time.time() - started, 1),
    }
    write_json(RESULTS / "eval_speed_scientific.json", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
