"""Helpers shared by the benchmark scripts: the results-file header (DESIGN section 8) and small utilities.

Not a library module: the scripts put this folder on sys.path by being run as `python benchmarks/<script>.py`.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("PRMKD_SHARED", ROOT.parent / "shared")) / "data" / "Scientific_UniSRec"

SHARED_MACHINE_NOTE = (
    "2-core CPU machine shared with other developers' jobs while this ran: absolute timings drift from run to "
    "run; only ratios measured side by side in one invocation of one script are meant to be compared.")


def command_line() -> str:
    """The exact command that is running, as typed from the repository root."""
    return " ".join(["python", *(shlex.quote(a) for a in sys.argv)])


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def header(extra_machine: dict | None = None) -> dict:
    """command / commit / date / machine, as DESIGN section 8 asks."""
    from prmkd.env import git_commit, machine, now

    m = machine()
    m.update({"shared": True, "note": SHARED_MACHINE_NOTE, "load_average_at_start": load_average()})
    m.update(extra_machine or {})
    return {"command": command_line(), "commit": git_commit(ROOT), "date": now(), "machine": m}


def write_json(path: Path, obj: dict) -> None:
    from prmkd.io import jsonable, write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda t: t.write_text(json.dumps(obj, indent=2, default=jsonable) + "\n"))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": round(mean, 6), "std": round(std, 6), "n": n, "values": [round(v, 6) for v in values]}


def log(msg: str) -> None:
    print(msg, flush=True)


def pipeline_with_teachers(config: str, overrides: list[str], teachers: bool = True):
    """The pipeline of `config` with its dataset prepared and its teachers found (built when missing); with
    `teachers=False`, the dataset only (for runs that need no teacher)."""
    from prmkd.data.dataset import prepare
    from prmkd.experiment.pipeline import Pipeline, load_pipeline

    pipe = Pipeline(load_pipeline(config, overrides))
    pipe.ds = prepare(pipe.cfg.data, log=pipe.log)
    if teachers:
        pipe.stage_teachers()
    return pipe


def student_variant(pipe, group: str, label: str, kd_changes: dict | None = None, caches: dict | None = None):
    """The pipeline's main distilled student against one variant of it, on the pipeline's seeds.

    `pipe` comes from `pipeline_with_teachers`. The main runs are read (or trained, if missing); the variant's
    runs go to <out>/<group>/<label>-seed<s>, with `kd_changes` applied to the distillation settings and, when
    given, other teacher caches (name -> folder). A run with the same fingerprint finished anywhere in the pipeline
    (a tuning run, say) is copied instead of trained again. Returns (rows, comparison), the comparison holding the
    mean and spread over seeds, the paired tests over users and whether the variant's mean lies within one seed
    std of the main one."""
    cfg = pipe.cfg
    rows = {"main": [], label: []}
    for which in rows:
        if which != "main" and caches is not None:
            pipe.caches = dict(caches)
        kd = pipe.kd() if which == "main" else pipe.kd(**(kd_changes or {}))
        for s in cfg.seeds:
            out = pipe.layout.distilled(cfg.student, s).path if which == "main" else \
                pipe.layout.extra(group, label, s).path
            res = pipe.train_run(pipe.run_cfg(cfg.student, s, out, kd))
            rows[which].append({"name": f"prmkd-{cfg.student}" + ("" if which == "main" else f"-{label}"),
                                "role": "distilled", "dataset": pipe.ds.name, "seed": s, "run_dir": str(out),
                                "variant": which, "metrics": res["metrics"], "timing": res["timing"]})
    return rows, compare_variant(rows, label)


def compare_variant(rows: dict[str, list], label: str, main_name: str = "main") -> dict:
    """`rows` {"main": [...], label: [...]} of run records (each with `run_dir` and `metrics`), one per seed:
    the mean and spread over seeds, the paired tests over users (named against `main_name`) and whether the
    variant's mean lies within one seed std of the main one, on test NDCG@10 and Recall@10."""
    from prmkd.experiment.stats import paired_test

    metrics = ("ndcg@10", "recall@10")
    summary = {w: {m: mean_std([r["metrics"]["test"][m] for r in rs]) for m in metrics} for w, rs in rows.items()}
    comps = [{"name": f"{label} vs {main_name}, {m}", "a": label, "b": main_name, "metric": m,
              **paired_test([r["run_dir"] for r in rows[label]], [r["run_dir"] for r in rows["main"]], m)}
             for m in metrics]
    within = all(abs(summary[label][m]["mean"] - summary["main"][m]["mean"]) <= summary["main"][m]["std"]
                 for m in metrics)
    return {"summary": summary, "comparisons": comps, "difference_within_one_seed_std": within,
            "runs": rows["main"] + rows[label]}
