"""The sampled softmax (model.negatives = K) against the full one: what it saves and what it costs the student.

    python benchmarks/sampled_softmax.py configs/scientific.toml --negatives 512  # -> sampled_softmax_scientific.json

The full softmax scores every item of the catalogue for every training instance, so an epoch's cost grows with
interactions x items (benchmarks/scaling.py); `model.negatives = K` scores each instance's target against K items
drawn uniformly once per batch instead (`prmkd.models.base.sampled_softmax_ce`). This trains the pipeline's plain
student (its `[models.<student>]` settings, its training settings) with the full softmax and with K negatives on the
pipeline's seeds, one run after another, and compares them: test metrics per seed, mean and spread, paired t-tests
over users, and the mean epoch time of each (runs of one script on one machine, one after the other). The full-softmax
runs are the pipeline's own baseline runs (reused when `prmkd run` has trained them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, compare_variant, header, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--negatives", type=int, default=512)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    os.chdir(ROOT)
    from prmkd.data.dataset import prepare
    from prmkd.experiment.pipeline import Pipeline, load_pipeline
    from prmkd.log import setup_logging

    setup_logging()
    t0 = time.time()
    hdr = header()
    pipe = Pipeline(load_pipeline(args.config, args.overrides))
    pipe.ds = prepare(pipe.cfg.data, log=pipe.log)
    cfg, student = pipe.cfg, pipe.cfg.student
    label = f"negatives={args.negatives}"
    rows: dict[str, list] = {"main": [], label: []}  # "main": the full softmax
    for which in rows:
        for s in cfg.seeds:
            if which == "main":
                out, extra = pipe.layout.baseline(student, s).path, None
            else:
                out, extra = pipe.layout.extra("sampled-softmax", label, s).path, {"negatives": args.negatives}
            res = pipe.train_run(pipe.run_cfg(student, s, out, model_extra=extra))
            rows[which].append({"name": student if extra is None else f"{student}-{label}", "role": "baseline",
                                "dataset": pipe.ds.name, "seed": s, "run_dir": str(out), "variant": which,
                                "metrics": res["metrics"], "timing": res["timing"]})
    comparison = compare_variant(rows, label, "full softmax")
    epoch = {w: sum(r["timing"]["epoch_seconds"] for r in rs) / len(rs) for w, rs in rows.items()}
    speed = [{"name": f"{label} / full softmax, mean epoch time of the runs", "a": label, "b": "full softmax",
              "metric": "epoch_seconds", "value": round(epoch[label] / epoch["main"], 3)}]
    write_json(RESULTS / f"sampled_softmax_{cfg.name}.json", {
        **hdr, "pipeline_config": args.config, "method": __doc__.strip(), "student": student,
        "negatives": args.negatives, "items": pipe.ds.n_items, "main_label": f"{student}, full softmax",
        "mean_epoch_seconds": {w: round(v, 3) for w, v in epoch.items()}, **comparison, "speed": speed,
        "script_seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
