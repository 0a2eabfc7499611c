"""L_KD on a bounded number of instances per batch: the same distilled student?

    python benchmarks/kd_cap.py configs/scientific.toml --max-instances 512   # -> results/kd_cap_scientific.json

A batch of 512 sequences holds thousands of training instances (every prefix of every sequence); the KD loss of
each compares the student with the teachers over the batch's candidate items, which on short catalogues is
nearly the whole catalogue. `distill.max_instances = N` computes L_KD on N instances of each batch drawn at
random (L_CE still uses all of them). After `prmkd run CONFIG` has built the teachers and the main PRM-KD runs,
this repeats the main PRM-KD run on the pipeline's seeds with the cap (nothing else changed) and compares the two:
test metrics per seed, mean and spread, paired t-tests over users. What the cap saves per epoch is measured side
by side by benchmarks/kd_overhead.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, pipeline_with_teachers, student_variant, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--max-instances", type=int, default=512)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    os.chdir(ROOT)
    from prmkd.log import setup_logging

    setup_logging()
    t0 = time.time()
    hdr = header()
    label = f"max_instances={args.max_instances}"
    pipe = pipeline_with_teachers(args.config, args.overrides)
    _, comp = student_variant(pipe, "kd-cap", label, {"max_instances": args.max_instances})
    write_json(RESULTS / f"kd_cap_{pipe.cfg.name}.json", {
        **hdr, "pipeline_config": args.config, "method": __doc__.strip(), "max_instances": args.max_instances,
        **comp, "script_seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
