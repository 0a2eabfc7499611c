"""PRM-KD on Scientific_UniSRec: the committed evidence of a finished `prmkd run` of a pipeline config.

Run from the repository root (prmkd's virtualenv active), after the pipeline:

    prmkd run configs/scientific.toml            # resumable; reuses every finished stage
    python benchmarks/prmkd_scientific.py        # -> benchmarks/results/prmkd_scientific.json
                                                 #    benchmarks/report/scientific/ (md, html, PNGs, JSON)

It reads only what the pipeline wrote (runs/scientific/summary.json, efficiency.json, each run's results and
per-user test metrics) and recomputes nothing but means, spreads and ratios: PRM-KD SASRec against plain SASRec
over the seeds (test Recall/NDCG@5/10/20, relative improvement, paired t-test over users on NDCG@10), the
ablations, the other students plain vs distilled, the sweeps (with their validation NDCG@10, which is what a
choice of tau / lambda / epsilon may be based on) and the cost ratios measured side by side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, mean_std, write_json  # noqa: E402

KEYS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10"]


def group(runs: list[dict], **match) -> list[dict]:
    return [r for r in runs if all(r.get(k) == v for k, v in match.items())]


def summarise(runs: list[dict]) -> dict:
    return {"seeds": [r["seed"] for r in runs],
            "test": {k: mean_std([r["metrics"]["test"][k] for r in runs]) for k in KEYS},
            "valid_ndcg@10": mean_std([r["metrics"]["valid"]["ndcg@10"] for r in runs]),
            "epochs": [r["timing"]["epochs"] for r in runs], "best_epochs": [r["timing"]["best_epoch"] for r in runs],
            "train_seconds": [r["timing"]["train_seconds"] for r in runs], "parameters": runs[0]["parameters"]}


def relative(a: dict, b: dict) -> dict:
    return {k: round(a["test"][k]["mean"] / b["test"][k]["mean"] - 1, 4) for k in KEYS if b["test"][k]["mean"]}


def add_to_baselines(summary: dict, baselines: dict) -> None:
    """baselines_scientific.json (benchmarks/baselines.py) gets the pipeline's three sequential baselines, 3 seeds
    each, under "from_pipeline", with the settings they were trained with."""
    path = RESULTS / "baselines_scientific.json"
    if not path.exists():
        return
    doc = json.loads(path.read_text())
    runs = {r["name"]: r for r in summary["runs"] if r["group"] == "main"}
    doc["from_pipeline"] = {
        "command": summary["command"], "commit": summary["commit"], "date": summary["date"],
        "machine": summary["machine"],
        "note": "the same evaluation (full ranking, unmasked, pessimistic ties); each model's model and train "
                "settings are in `settings` (GRU4Rec and BERT4Rec: length-bucketed batches, bucket = 20)",
        "models": {m: {**b, "settings": {"model": runs[m]["config"]["model"], "train": runs[m]["config"]["train"]}}
                   for m, b in baselines.items()}}
    write_json(path, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "scientific"))
    ap.add_argument("--name", default="scientific")
    args = ap.parse_args()
    run = Path(args.run)
    summary = json.loads((run / "summary.json").read_text())
    runs, cfg = summary["runs"], summary["config"]
    student = cfg["student"]
    plain = summarise(group(runs, name=student, group="main"))
    kd = summarise(group(runs, name=f"prmkd-{student}", group="main"))
    teachers = {r["name"]: {"test": {k: round(r["metrics"]["test"][k], 6) for k in KEYS},
                            "valid_ndcg@10": round(r["metrics"]["valid"]["ndcg@10"], 6), "parameters": r["parameters"]}
                for r in runs if r["name"].startswith("teacher-")}
    baselines = {m: summarise(rs) for m in cfg["baselines"] if (rs := group(runs, name=m, group="main"))}
    not_run = {"baselines": [m for m in cfg["baselines"] if m not in baselines],
               "ablations": not group(runs, group="ablation"),
               "universality": [m for m in cfg["universality"] if not group(runs, name=m, group="universality")],
               "sweeps": not group(runs, group="sweep"),
               "runs_not_finished": summary.get("not_finished", [])}
    tests = [c for c in summary["comparisons"] if c["a"] == f"prmkd-{student}"]
    abl = {}
    for r in group(runs, group="ablation"):
        abl.setdefault(r["ablation"], []).append(r)
    ablations = {k: {**summarise(v), "vs_full_ndcg@10": round(summarise(v)["test"]["ndcg@10"]["mean"]
                                                             / kd["test"]["ndcg@10"]["mean"] - 1, 4)}
                 for k, v in abl.items()}
    univ = {}
    for m in cfg["universality"]:
        p, d = group(runs, name=m, group="universality"), group(runs, name=f"prmkd-{m}", group="universality")
        if p and d:
            sp, sd = summarise(p), summarise(d)
            univ[m] = {"plain": sp, "distilled": sd, "relative": relative(sd, sp),
                       "t_test": [c for c in summary["comparisons"] if c["a"] == f"prmkd-{m}"]}
    sweeps = [{"param": r["sweep"]["param"], "value": r["sweep"]["value"], "plain": bool(r["sweep"].get("plain")),
               "seed": r["seed"], "valid_ndcg@10": round(r["metrics"]["valid"]["ndcg@10"], 6),
               "test_ndcg@10": round(r["metrics"]["test"]["ndcg@10"], 6),
               "test_recall@10": round(r["metrics"]["test"]["recall@10"], 6)} for r in group(runs, group="sweep")]
    # a sweep setting run with several seeds: compared with plain SASRec like the main setting
    from prmkd.experiment.stats import paired_test

    plain_dirs = [r["run_dir"] for r in group(runs, name=student, group="main")]
    multi = {}
    for r in group(runs, group="sweep"):
        if not r["sweep"].get("plain") and not r["sweep"].get("main"):
            multi.setdefault((r["sweep"]["param"], r["sweep"]["value"]), []).append(r)
    sweep_settings = []
    for (param, value), rs in multi.items():
        if len(rs) > 1:
            sm = summarise(rs)
            sweep_settings.append({"param": param, "value": value, **sm, "relative_improvement": relative(sm, plain),
                                   "paired_t_tests": [{"metric": m, **paired_test([r["run_dir"] for r in rs],
                                                                                   plain_dirs, m)}
                                                      for m in ("ndcg@10", "recall@10")]})
    # how often the consistency rule dropped a teacher, over the main PRM-KD runs (each run's distill stats)
    stats = [json.loads((Path(r["run_dir"]) / "results.json").read_text())["distill"]["stats"]
             for r in group(runs, name=f"prmkd-{student}", group="main")]
    fired, inst = sum(st["rule_fired"] for st in stats), sum(st["instances"] for st in stats)
    rule = {"runs": len(stats), "training_instances_seen": inst, "rule_fired": fired,
            "fired_share": round(fired / inst, 4) if inst else None,
            "dropped_share_of_fired": {k: round(sum(st["dropped"][k] for st in stats) / fired, 4)
                                       for k in (stats[0]["dropped"] if stats else {})} if fired else {}}
    eff_path = run / "efficiency.json"
    eff = json.loads(eff_path.read_text()) if eff_path.exists() else None
    kd_cfg = cfg["distill"]
    out = {**header(), "pipeline_command": summary["command"], "pipeline_commit": summary["commit"],
           "pipeline_date": summary["date"], "dataset": summary["dataset"], "evaluation": summary["eval"],
           "distill": {k: kd_cfg[k] for k in kd_cfg if k != "teachers"},
           "teachers": teachers, "baselines": baselines,
           "main": {"student": student, "plain": plain, "prmkd": kd, "relative_improvement": relative(kd, plain),
                    "paired_t_tests": tests, "consistency_rule": rule},
           "not_run": not_run, "ablations": ablations, "universality": univ, "sweeps": sweeps,
           "sweep_settings_with_seeds": sweep_settings,
           "sweep_best_on_validation": summary.get("sweep_best_on_validation", {}),
           "ceiling": {r["name"]: {"teachers": r["config"]["teachers"],
                                   "test": {k: round(r["metrics"]["test"][k], 6) for k in KEYS}}
                       for r in group(runs, group="ceiling")},
           "efficiency": None if eff is None else {"ratios": eff["ratios"], "models": eff["models"],
                                                   "threads": eff["threads"], "method": eff["method"]},
           "runs": [{k: r.get(k) for k in ("name", "role", "dataset", "seed", "config", "metrics", "timing")}
                    | {"group": r["group"], "ablation": r["ablation"], "sweep": r["sweep"]} for r in runs],
           "comparisons": summary["comparisons"] + ([] if eff is None else [
               {"name": f"{x['name']} / {eff['relative_to']}: {what}", "a": x["name"], "b": eff["relative_to"],
                "metric": what, "value": x[key], "p_value": None}
               for x in eff["ratios"] for key, what in (("training_speed", "train_epoch_seconds"),
                                                         ("inference_memory", "inference_bytes"),
                                                         ("inference_speed", "latency_ms_per_user"))]),
           "notes": ["The main runs' distillation settings are the config's, chosen on validation (seed 0) by "
                     "benchmarks/tune_distill.py (tuning_<name>.json); the sweeps give each alternative's "
                     "validation NDCG@10 next to the main runs', and each parameter's best value on validation was "
                     "run on more seeds (sweep_best_on_validation, sweep_settings_with_seeds)."]}
    write_json(RESULTS / f"prmkd_{args.name}.json", out)
    if args.name == "scientific":
        add_to_baselines(summary, baselines)

    from prmkd.report import build_report

    dest = ROOT / "benchmarks" / "report" / args.name
    build_report(run, dest)
    for f in ("summary.json", "efficiency.json", "config.json", "data.json"):
        if (run / f).exists():
            shutil.copy(run / f, dest / f)
    print(f"report: {dest.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
