"""One uninterrupted, timed build of a pipeline's teacher caches from scratch (pre-training included).

Run from the repository root (prmkd's virtualenv active):

    python benchmarks/teacher_build.py                       # configs/scientific.toml, --jobs 2
    python benchmarks/teacher_build.py --jobs 1              # one process, teachers one after the other

It runs `prmkd run CONFIG --stages teachers --jobs N` into a fresh output folder with a fresh data cache
(PRMKD_CACHE), so nothing is reused: data preparation, MiniLM text embeddings, Recformer frozen-layer states,
pre-training on the source domain, fine-tuning on the target and the cache export are all inside the time.
Output: benchmarks/results/teacher_build_<config name>.json with the wall time of the whole command, each
teacher's stage times and test metrics as its run recorded them, and the load average sampled during the run
(other jobs on this shared machine slow it down; the samples show how busy it was).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, load_average, write_json  # noqa: E402

TARGET_SECONDS = 2 * 3600


def sample_load(stop: threading.Event, out: list, every: float = 30.0) -> None:
    t0 = time.time()
    while not stop.wait(every):
        out.append({"t": round(time.time() - t0), "load": load_average()})


def teacher_record(folder: Path) -> dict:
    res = json.loads((folder / "finetune" / "results.json").read_text())
    manifest = json.loads((folder / "cache" / "manifest.json").read_text())
    pre = res.get("pretraining") or {}
    return {"family": manifest.get("family"), "parameters": res.get("parameters"),
            "pretraining_seconds": pre.get("seconds_this_session", pre.get("seconds")),
            "pretrained": pre.get("pretrained", bool(pre)), "pretraining_weights": pre.get("weights"),
            "finetune_timing": res.get("timing"), "inputs_seconds": res.get("inputs_seconds"),
            "stopped": res.get("stopped"), "test": res["metrics"]["test"], "valid": res["metrics"]["valid"],
            "cache": str(folder / "cache"), "cache_manifest_written": manifest.get("created")}


def describe(doc: dict, out: Path) -> dict:
    """The build folder's teachers into `doc`: their records, `runs` (DESIGN section 8, as the pipeline's
    summary.json has them) and the comparison of the wall time with the 2-hour target."""
    summary = json.loads((out / "summary.json").read_text())
    keep = ("name", "role", "dataset", "seed", "config", "metrics", "timing", "parameters")
    runs = [{k: r.get(k) for k in keep} for r in summary["runs"] if r["role"] == "teacher"]
    doc["teachers"] = {Path(r["run_dir"]).parent.name: teacher_record(Path(r["run_dir"]).parent)
                       for r in summary["runs"] if r["role"] == "teacher"}
    doc["runs"] = runs
    doc["comparisons"] = [{"name": "wall time of the whole build / 2-hour target", "a": "build", "b": "target",
                           "metric": "seconds", "value": round(doc["wall_seconds"] / TARGET_SECONDS, 4),
                           "p_value": None}]
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/scientific.toml")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/teacher-build-timed", help="fresh output folder (deleted first)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--describe-only", action="store_true",
                    help="build nothing: keep the committed measurement (wall time, load, command, commit, date) "
                         "and rewrite what is derived from the finished build folder")
    args = ap.parse_args()
    result = RESULTS / f"teacher_build_{Path(args.config).stem}.json"
    if args.describe_only:
        doc = json.loads(result.read_text())
        fresh = header()
        doc["described_by"] = {k: fresh[k] for k in ("command", "commit", "date")}
        write_json(result, describe(doc, ROOT / args.out))
        return

    out = ROOT / args.out
    cache = out / "data-cache"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = ["prmkd", "run", args.config, "--stages", "teachers", "--jobs", str(args.jobs), "--set",
           f"out={args.out}", *sum((["--set", o] for o in args.overrides), [])]
    env = {**os.environ, "PRMKD_CACHE": str(cache)}
    doc = header()
    print("running:", " ".join(cmd), f"(PRMKD_CACHE={cache.relative_to(ROOT)})", flush=True)
    samples: list = []
    stop = threading.Event()
    threading.Thread(target=sample_load, args=(stop, samples), daemon=True).start()
    t0 = time.time()
    with open(out / "build.log", "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    stop.set()
    if rc != 0:
        sys.exit(f"the build failed (exit {rc}); see {out / 'build.log'}")
    loads = [s["load"][0] for s in samples if s["load"]]
    doc.update({
        "build_command": " ".join(cmd), "environment": {"PRMKD_CACHE": "a fresh, empty folder"},
        "config": args.config, "jobs": args.jobs, "wall_seconds": round(wall, 1),
        "wall_minutes": round(wall / 60, 1), "target_seconds": TARGET_SECONDS, "under_target": wall < TARGET_SECONDS,
        "load_average_1min_during_run": {"samples": samples,
                                         "mean": round(sum(loads) / len(loads), 2) if loads else None,
                                         "max": max(loads) if loads else None},
        "log": "the command's output is in <out>/build.log (not committed)",
    })
    write_json(result, describe(doc, out))


if __name__ == "__main__":
    main()
