"""How PRM-KD's gain depends on the student's size and on how well its plain twin is trained.

    python benchmarks/student_size.py configs/ml100k.toml --sizes 32 64 128 --seeds 0 1 \
        --recipe "patience 6:patience=6,epochs=60" --recipe "lr 3e-3:lr=3e-3" --recipe-sizes 32 64
        -> benchmarks/results/student_size_ml100k.json

For each training recipe (the config's [train], and each --recipe NAME:KEY=VALUE,... changing it) and each hidden
size, the config's student is trained plain and with the config's PRM-KD settings ([distill]) on each seed, from
the pipeline's teachers (built or reused). Runs go to <pipeline out>/student-size/ (fingerprinted: a rerun reuses
them, and the same run finished in the pipeline's folder, or in a folder given with --reuse, is copied instead of
trained). For each (recipe, size) the file holds validation and test NDCG@10 per seed and the paired t-tests over
users (per-user values averaged over the seeds) on both splits, with the teacher's own numbers beside them. For
each size, "fair" then compares the plain and the distilled student each at the recipe of its own best
validation NDCG@10: a plain twin stopped early by a noisy validation curve, or trained at a learning rate that
does not suit it, makes any gain look larger than it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, mean_std, pipeline_with_teachers, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="a training recipe besides the config's: changes to its [train] (e.g. patience=6,epochs=60)")
    ap.add_argument("--recipe-sizes", type=int, nargs="+", help="the sizes trained with the --recipe recipes "
                                                                "(default: --sizes)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time")
    ap.add_argument("--reuse", nargs="*", default=[], help="other pipeline folders whose finished runs are copied "
                                                           "when their fingerprint matches")
    ap.add_argument("--plain-only", action="store_true",
                    help="train the plain student only (no teachers are built): is it cut short by a recipe?")
    ap.add_argument("--out", help="results file (default: benchmarks/results/student_size_<pipeline name>.json)")
    args = ap.parse_args()
    os.chdir(ROOT)
    from prmkd.config import to_dict
    from prmkd.experiment.pipeline import train_planned
    from prmkd.experiment.stats import paired_test
    from prmkd.io import read_json
    from prmkd.log import setup_logging

    setup_logging()
    t0 = time.time()
    hdr = header()
    pipe = pipeline_with_teachers(args.config, args.overrides, teachers=not args.plain_only)
    cfg = pipe.cfg
    pipe.finished_runs(also=[Path(o) for o in args.reuse])  # finished runs elsewhere, as twins of the runs below
    student = cfg.student
    kd = None if args.plain_only else pipe.kd()
    roles = ("plain",) if args.plain_only else ("plain", "distilled")
    recipes = {"config": {}}
    for r in args.recipe:
        name, _, changes = r.partition(":")
        try:
            recipes[name] = {k: json.loads(v) for k, v in (c.split("=", 1) for c in changes.split(","))}
        except ValueError:
            raise SystemExit(f"--recipe {r}: expected NAME:KEY=VALUE,... (values as in JSON: 6, 3e-3)") from None
    def sizes_of(recipe: str) -> list[int]:
        return args.sizes if recipe == "config" or not args.recipe_sizes else args.recipe_sizes

    runs = {}  # (recipe, size, role, seed) -> run folder
    pipe.plan = {}  # going through the runs notes those still to train (a finished twin is copied instead)
    for recipe, changes in recipes.items():
        suffix = "".join(f"-{k}{v}" for k, v in sorted(changes.items()))
        for size in sizes_of(recipe):
            for seed in args.seeds:
                for role, distill in (("plain", None), ("distilled", kd))[:len(roles)]:
                    name = f"{student}-d{size}{suffix}" if role == "plain" else f"prmkd-{student}-d{size}{suffix}"
                    out = pipe.layout.extra("student-size", name, seed).path
                    rc = pipe.run_cfg(student, seed, out, distill, model_extra={"hidden_size": size})
                    rc = replace(rc, train=replace(rc.train, **changes))
                    runs[recipe, size, role, seed] = out
                    pipe.train_run(rc)
    plan, pipe.plan = list(pipe.plan.values()), None
    pipe.log(f"recipes {list(recipes)}, student sizes {args.sizes}, seeds {args.seeds}: {len(plan)} run(s) to train")
    train_planned(pipe, plan, args.jobs)

    teacher = {}
    for name in pipe.caches:
        res = read_json(pipe.layout.teacher(name).finetune.results)
        teacher[name] = {split: res["metrics"][split]["ndcg@10"] for split in ("valid", "test")}

    entries, comparisons = [], []  # DESIGN section 8: every run, and every paired test

    def row_of(recipe: str, size: int) -> dict:
        row = {"recipe": recipe, "train_changes": recipes[recipe], "hidden_size": size}
        for role in roles:
            res = [read_json(Path(runs[recipe, size, role, s]) / "results.json") for s in args.seeds]
            entries.extend({"name": r["name"], "role": "baseline" if role == "plain" else "distilled",
                            "dataset": pipe.ds.name, "seed": s, "recipe": recipe, "hidden_size": size,
                            "run_dir": str(runs[recipe, size, role, s]),
                            **{k: r[k] for k in ("config", "metrics", "timing")}}
                           for r, s in zip(res, args.seeds))
            row[role] = {split: mean_std([r["metrics"][split]["ndcg@10"] for r in res]) for split in ("valid", "test")}
            row[role]["parameters"] = res[0].get("parameters")
            row[role]["best_epochs"] = [r["timing"].get("best_epoch") for r in res]
            row[role]["epochs"] = [r["timing"].get("epochs") for r in res]
            row[role]["run_dirs"] = [str(runs[recipe, size, role, s]) for s in args.seeds]
        if not args.plain_only:
            row["distilled_vs_plain"] = compare(row["distilled"]["run_dirs"], row["plain"]["run_dirs"],
                                                f"{recipe}, d={size}")
        return row

    def compare(a: list[str], b: list[str], label: str) -> dict:
        tests = {split: paired_test(a, b, "ndcg@10", split) for split in ("valid", "test")}
        comparisons.extend({"name": f"prmkd-{student} vs {student} ({label}, {split})", "a": f"prmkd-{student}",
                            "b": student, "metric": "ndcg@10", "split": split, **t} for split, t in tests.items())
        return tests

    def said(label: str, c: dict) -> None:
        v, t = c["valid"], c["test"]
        pipe.log(f"{label}: valid {v['mean_b']:.4f} -> {v['mean_a']:.4f} ({v['value']:+.1%}, p {v['p_value']:.3f}); "
                 f"test {t['mean_b']:.4f} -> {t['mean_a']:.4f} ({t['value']:+.1%}, p {t['p_value']:.3f})")

    rows = [row_of(recipe, size) for recipe in recipes for size in sizes_of(recipe)]
    for row in rows:
        if args.plain_only:
            pipe.log(f"{row['recipe']}, d={row['hidden_size']}: plain valid {row['plain']['valid']['mean']:.4f}, "
                     f"test {row['plain']['test']['mean']:.4f}, best epochs {row['plain']['best_epochs']} of "
                     f"{row['plain']['epochs']}")
        else:
            said(f"{row['recipe']}, d={row['hidden_size']}", row["distilled_vs_plain"])
    fair = []
    for size in [] if args.plain_only else args.sizes:
        mine = [r for r in rows if r["hidden_size"] == size]
        best = {role: max(mine, key=lambda r: r[role]["valid"]["mean"]) for role in ("plain", "distilled")}
        f = {"hidden_size": size, "plain_recipe": best["plain"]["recipe"],
             "distilled_recipe": best["distilled"]["recipe"],
             "plain": {k: best["plain"]["plain"][k] for k in ("valid", "test")},
             "distilled": {k: best["distilled"]["distilled"][k] for k in ("valid", "test")},
             "distilled_vs_plain": compare(best["distilled"]["distilled"]["run_dirs"],
                                           best["plain"]["plain"]["run_dirs"], f"fair, d={size}")}
        fair.append(f)
        said(f"fair, d={size} (plain: {f['plain_recipe']}, PRM-KD: {f['distilled_recipe']})", f["distilled_vs_plain"])
    write_json(Path(args.out) if args.out else RESULTS / f"student_size_{cfg.name}.json", {
        **hdr, "pipeline_config": args.config, "overrides": args.overrides, "student": student,
        "seeds": args.seeds, "method": __doc__.strip().splitlines()[0],
        "plain_only": args.plain_only,
        "distill": kd and {k: getattr(kd, k) for k in ("kd_weight", "temperature", "epsilon", "normalization", "kl",
                                                        "student_temperature", "candidates", "max_instances")},
        "recipes": recipes, "train": to_dict(cfg.train), "teachers_ndcg@10": teacher, "rows": rows,
        "fair": fair, "fair_rule": "each of plain and PRM-KD at the recipe of its own best mean validation NDCG@10",
        "runs": entries, "comparisons": comparisons, "script_seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
