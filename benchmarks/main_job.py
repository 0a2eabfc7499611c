"""The README's main job from a fresh clone, timed, and compared run by run with the committed report.

    python benchmarks/main_job.py                 # clone HEAD into a temporary folder, run README command 1 there
    python benchmarks/main_job.py --repeat 2      # ... then the pipeline once more in that clone (caches deleted)
    python benchmarks/main_job.py --adopt         # also copy the (last) run's report over benchmarks/report/ml100k/

Every run is appended to benchmarks/report/ml100k/wall_time.json with its command, commit, load average (start,
end, and sampled every 30 s) and, for each of the pipeline's runs, whether its test metrics equal those of the
committed report (benchmarks/report/ml100k/summary.json) and of the previous run of this invocation. Only a
committed HEAD is cloned: uncommitted changes are not in the clone, so the script refuses a dirty tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, command_line, load_average, write_json  # noqa: E402

REPORT = ROOT / "benchmarks" / "report" / "ml100k"
README_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . && "
                  "pip install -q --no-deps recbole==1.2.1 && prmkd run configs/ml100k.toml")
AGAIN_COMMAND = "rm -rf runs .prmkd && . .venv/bin/activate && prmkd run configs/ml100k.toml"


def metrics_by_run(summary: dict) -> dict[str, dict]:
    """run folder -> test metrics (names repeat: every ablation and sweep run is a prmkd-sasrec)."""
    return {r["run_dir"]: r["metrics"]["test"] for r in summary["runs"]}


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Which runs have exactly equal test metrics; for the others, the NDCG@10 of each side."""
    same = sorted(k for k in a.keys() & b.keys() if a[k] == b[k])
    differ = {k: {"ndcg@10": [a[k].get("ndcg@10"), b[k].get("ndcg@10")]}
              for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}
    return {"identical": len(same), "of": len(a.keys() & b.keys()), "differ": differ,
            "only_one_side": sorted(a.keys() ^ b.keys())}


def timed(command: str, cwd: Path, log_path: Path) -> dict:
    loads, done = [], threading.Event()

    def sample():
        while not done.wait(30):
            loads.append(load_average()[0])

    t = threading.Thread(target=sample, daemon=True)
    start_load, t0 = load_average(), time.time()
    t.start()
    with open(log_path, "w") as log:
        rc = subprocess.run(["bash", "-c", command], cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
    done.set()
    wall = time.time() - t0
    text = log_path.read_text()
    pipeline = [ln for ln in text.splitlines() if ln.startswith("pipeline ") and " done in " in ln]
    return {"command": command, "rc": rc, "wall_seconds": round(wall, 1), "pipeline_line": pipeline[-1] if pipeline
            else None, "load_average_start": start_load, "load_average_end": load_average(),
            "load_average_1min_samples": loads, "log_tail": text.splitlines()[-5:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=1, help="pipeline runs in the clone (the first installs)")
    ap.add_argument("--adopt", action="store_true", help="copy the last run's report to benchmarks/report/ml100k")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = ap.parse_args()
    try:  # the results are written with prmkd's own JSON writer: fail now, not after a 15-minute run
        import prmkd.io  # noqa: F401
    except ImportError:
        raise SystemExit("prmkd is not importable here: activate the environment (. .venv/bin/activate) first")
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True).stdout.strip():
        raise SystemExit("the working tree has uncommitted changes: commit them first (only HEAD is cloned)")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="prmkd-main-job-", dir=ROOT.parent))  # ../shared must sit beside it
    clone = tmp / "main"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    committed = metrics_by_run(json.loads((REPORT / "summary.json").read_text()))
    wall_path = REPORT / "wall_time.json"
    record = json.loads(wall_path.read_text())
    previous = None
    try:
        for i in range(args.repeat):
            cmd = README_COMMAND if i == 0 else AGAIN_COMMAND
            print(f"run {i + 1}/{args.repeat}: {cmd}  (in {clone})", flush=True)
            res = timed(cmd, clone, tmp / f"run{i + 1}.log")
            print(f"  rc {res['rc']}, {res['wall_seconds']} s: {res['pipeline_line']}", flush=True)
            entry = {"command": cmd, "commit": commit[:7], "made_by": command_line(), **res}
            if res["rc"] == 0:
                summary = json.loads((clone / "runs" / "ml100k" / "summary.json").read_text())
                now = metrics_by_run(summary)
                entry["vs_committed_report"] = compare(committed, now)
                if previous is not None:
                    entry["vs_previous_run"] = compare(previous, now)
                previous = now
            entry["note"] = ("fresh clone: environment created and installed, then the pipeline" if i == 0 else
                             "the same clone, runs/ and .prmkd/ deleted, the environment kept")
            record["runs"].append(entry)
            write_json(wall_path, record)
            if res["rc"] != 0:
                raise SystemExit(f"run {i + 1} failed (rc {res['rc']}); log: {tmp / f'run{i + 1}.log'}")
        if args.adopt:
            run = clone / "runs" / "ml100k"
            # the Markdown report and its figures (report.html embeds them again: not committed)
            new = {f.name: f for f in (run / "report").iterdir() if f.is_file() and f.name != "report.html"}
            new.update({n: run / n for n in ("summary.json", "efficiency.json") if (run / n).exists()})
            for f in REPORT.iterdir():  # a figure the new report no longer draws goes
                if f.name != wall_path.name and f.name not in new:
                    f.unlink()
            for name, src in new.items():
                shutil.copy2(src, REPORT / name)
            print(f"copied the last run's report to {REPORT.relative_to(ROOT)}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", flush=True)


if __name__ == "__main__":
    os.environ.pop("PRMKD_CACHE", None)
    main()
