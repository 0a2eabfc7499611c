"""Choose PRM-KD's settings on the validation split only, by coordinate ascent from the config's settings.

    python benchmarks/tune_distill.py configs/ml100k.toml --seeds 0 1    # -> benchmarks/results/tuning_ml100k.json
    python benchmarks/tune_distill.py configs/scientific.toml --seeds 0  # -> .../tuning_scientific.json
    python benchmarks/tune_distill.py configs/ml100k.toml --student fm --order kd_weight  # -> tuning_ml100k_fm.json

The pipeline's teachers are built (or reused) and its student is distilled with one setting changed at a time,
holding the others at the best found so far, in the order of --order (each parameter once: which teachers, lambda,
tau, fusion of the teachers, normalization, KL direction, student temperature, epsilon, the cap on KD instances). A
setting's score is its mean validation NDCG@10 over --seeds; the best of each coordinate is kept. Test metrics are
recorded but never looked at for the choice. Runs go to <pipeline out>/tuning/<setting>-seed<s> (fingerprinted like
every run: a rerun reuses them, and the same run finished elsewhere in the pipeline, a sweep point or an ablation,
is copied instead of trained). The results file is written after every coordinate, so a tuning stopped part way
keeps what it has measured ("unfinished" lists the coordinates left). What is chosen is written down, not applied:
put it in the config (its defaults) by hand, citing this file.

--student tunes one of the pipeline's universality models instead (FM, DeepFM, LightGCN), from the config's
[distill] with its [distill_overrides.<model>]; what is chosen goes into [distill_overrides.<model>]. Its runs go to
<pipeline out>/tuning-<model>/, its plain twin is the pipeline's universality run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, write_json  # noqa: E402

GRID = {
    "kd_weight": [0.3, 1.0, 3.0, 10.0],
    "temperature": [0.5, 1.0, 2.0, 4.0],
    "fusion": ["consistency", "average"],  # "average": the paper's w/o WA
    "normalization": ["softmax", "minmax", "rank"],
    "kl": ["reverse", "forward"],
    "student_temperature": [0.5, 1.0, 2.0],
    "epsilon": [0.01, 0.03, 0.1, 0.3],
    "max_instances": [0, 512, 1024],  # 0 = every instance of the batch (cost, not only quality, is at stake)
}


def tag(setting: dict) -> str:
    """The folder name of a setting (the KD-instance cap left out while off, the fusion while the paper's: the names
    of earlier tunings hold)."""
    return "-".join(f"{k}={v}" for k, v in sorted(setting.items()) if k != "teachers"
                    and not (k == "max_instances" and v == 0) and not (k == "fusion" and v == "consistency")) \
        + f"-teachers={'+'.join(setting['teachers'])}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--order", nargs="+", default=["teachers", *GRID])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    ap.add_argument("--out", help="results file (default: benchmarks/results/tuning_<pipeline name>.json, "
                                  "tuning_<pipeline name>_<student>.json with --student)")
    ap.add_argument("--student", help="a universality model of the config to tune instead of its student")
    ap.add_argument("--grid", action="append", default=[], metavar="PARAM=V1,V2,...",
                    help="other values for one coordinate, e.g. --grid kd_weight=3,10,30 (recorded in the results)")
    ap.add_argument("--teacher-sets", nargs="*", default=None,
                    help="teacher subsets to try, names joined by '+' (default: all, and each one alone)")
    args = ap.parse_args()
    grid = dict(GRID)
    for g in args.grid:
        param, _, values = g.partition("=")
        if param not in GRID or not values:
            raise SystemExit(f"--grid {g}: expected PARAM=V1,V2,... with PARAM one of {', '.join(GRID)}")
        kind = type(GRID[param][0])
        grid[param] = [kind(v) for v in values.split(",")]
    os.chdir(ROOT)
    from prmkd.experiment.pipeline import Pipeline, load_pipeline
    from prmkd.log import setup_logging

    setup_logging()
    t0 = time.time()
    hdr = header()
    cfg = load_pipeline(args.config, args.overrides)
    student = args.student or cfg.student
    if student != cfg.student and student not in cfg.universality:
        raise SystemExit(f"--student {student}: not the student ({cfg.student}) nor a universality model "
                         f"({', '.join(cfg.universality)}) of {args.config}")
    group = "tuning" if student == cfg.student else f"tuning-{student}"
    pipe = Pipeline(cfg, command="")
    pipe.ds = __import__("prmkd.data.dataset", fromlist=["prepare"]).prepare(cfg.data, log=pipe.log)
    pipe.stage_teachers()
    names = list(pipe.caches)
    sets = [s.split("+") for s in args.teacher_sets] if args.teacher_sets is not None else \
        [names] + ([[n] for n in names] if len(names) > 1 else [])
    d = replace(cfg.distill, **cfg.distill_overrides.get(student, {})) if student != cfg.student else cfg.distill
    best = {"teachers": names, **{k: getattr(d, k) for k in GRID}}
    tried: dict[str, dict] = {}
    runs = []

    def launch(setting: dict, seed: int) -> tuple[subprocess.Popen, str, Path] | None:
        """`prmkd distill` of one setting and seed in its own process, with the run's fingerprint and folder (None
        when it is already finished, here or elsewhere in the pipeline)."""
        from prmkd.config import to_dict
        from prmkd.experiment.pipeline import copy_run
        from prmkd.experiment.runner import finished, fingerprint

        kd = pipe.kd(setting["teachers"], **{k: setting[k] for k in GRID})
        out = pipe.layout.extra(group, tag(setting), seed).path
        rc = pipe.run_cfg(student, seed, out, kd)
        fp = fingerprint(rc, pipe.ds)
        if finished(out, fp):
            return None
        if (twin := pipe.finished_runs().get(fp)) is not None:
            pipe.log(f"{out}: the same run is finished in {twin}: copied")
            copy_run(twin, out)
            return None
        out.mkdir(parents=True, exist_ok=True)
        spec = out.parent / f"{out.name}.json"  # the name holds dots (tau=1.0): never with_suffix
        spec.write_text(json.dumps(to_dict(rc)))
        log = open(out.parent / f"{out.name}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "prmkd.cli", "distill", "--config", str(spec)],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}), fp, out

    def run_all(settings: list[dict]) -> None:
        """Every (setting, seed) not yet finished, --jobs at a time."""
        todo = [(st, sd) for st in settings for sd in args.seeds]
        running: list[tuple[subprocess.Popen, str, Path]] = []
        while todo or running:
            while todo and len(running) < args.jobs:
                job = launch(*todo.pop(0))
                if job is not None:
                    running.append(job)
            for job in list(running):
                p, fp, out = job
                if p.poll() is not None:
                    running.remove(job)
                    if p.returncode != 0:
                        raise SystemExit(f"a tuning run failed: {p.args} (see the .log beside its run folder)")
                    pipe.finished_runs()[fp] = out  # finished: a later setting with this fingerprint copies it
            time.sleep(1)

    def score(setting: dict) -> float:
        from prmkd.io import read_json

        key = tag(setting)
        if key not in tried:
            vals, tests = [], []
            for s in args.seeds:
                out = pipe.layout.extra(group, key, s)
                res = read_json(out.results)
                vals.append(res["metrics"]["valid"]["ndcg@10"])
                tests.append(res["metrics"]["test"]["ndcg@10"])
                runs.append({"name": f"prmkd-{student}", "role": "distilled", "dataset": pipe.ds.name, "seed": s,
                             "setting": setting, "run_dir": str(out.path), "config": res["config"]["distill"],
                             "metrics": res["metrics"], "timing": res["timing"]})
            tried[key] = {"setting": dict(setting), "valid_ndcg@10": sum(vals) / len(vals),
                          "test_ndcg@10": sum(tests) / len(tests), "seeds": args.seeds}
            pipe.log(f"tuning {key}: valid ndcg@10 {tried[key]['valid_ndcg@10']:.4f}")
        return tried[key]["valid_ndcg@10"]

    plain = []  # the plain student on the same seeds, first: every write below has it
    for s in args.seeds:
        out = (pipe.layout.baseline(student, s) if student == cfg.student
               else pipe.layout.universality(student, s, distilled=False)).path
        plain.append(pipe.train_run(pipe.run_cfg(student, s, out))["metrics"])

    def write(unfinished: list[str]) -> None:
        result = {**hdr, "pipeline_config": args.config, "overrides": args.overrides, "student": student,
                  "seeds": args.seeds,
                  "method": __doc__.strip().splitlines()[0], "order": args.order, "grid": grid,
                  "teacher_sets": sets, "steps": steps, "chosen": best, "unfinished": unfinished,
                  "settings_tried": list(tried.values()),
                  "plain_student_valid_ndcg@10": sum(m["valid"]["ndcg@10"] for m in plain) / len(plain),
                  "runs": runs, "comparisons": [], "script_seconds": round(time.time() - t0, 1)}
        default = f"tuning_{cfg.name}.json" if student == cfg.student else f"tuning_{cfg.name}_{student}.json"
        write_json(Path(args.out) if args.out else RESULTS / default, result)

    steps = []
    for i, coord in enumerate(args.order):
        options = sets if coord == "teachers" else grid[coord]
        candidates = [{**best, coord: v} for v in options  # epsilon needs three teachers, fusion two
                      if not (coord == "epsilon" and len(best["teachers"]) < 3)
                      and not (coord == "fusion" and len(best["teachers"]) < 2)]
        run_all(candidates)
        scores = {str(st[coord]): (st[coord], score(st)) for st in candidates}
        if scores:
            chosen = max(scores.values(), key=lambda x: x[1])[0]
            best = {**best, coord: chosen}
            steps.append({"coordinate": coord, "valid_ndcg@10": {k: s for k, (_, s) in scores.items()},
                          "chosen": chosen})
        write(args.order[i + 1:])


if __name__ == "__main__":
    main()
