"""The same seeded runs built again on another machine, side by side with the committed ones.

    python benchmarks/rebuilt_runs.py    # runs/scientific against prmkd_scientific.json -> rebuilt_scientific.json

A teacher config bounded by epochs and steps (not minutes) should give the same teacher on any machine, only later
on a slower one. This reads the teachers and plain baselines that `prmkd run configs/scientific.toml` has finished
in the pipeline folder of this checkout and sets each beside the committed run of the same name and seed
(`prmkd_scientific.json`, made on another machine). Nothing is trained. Each pair is checked to be the same run:
the committed run's config, fingerprinted as prmkd fingerprints runs, must give the rebuilt run's fingerprint.

The file follows DESIGN section 8: `runs` holds both builds of each run (`build`: rebuilt | committed; the rebuilt
one with the machine, commit and date its results.json records, the committed one with the committed file's), and
`comparisons` the rebuilt minus the committed test NDCG@10 of each pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, write_json  # noqa: E402

KEEP = ("name", "role", "dataset", "seed", "config", "metrics", "timing")


def run_fingerprint(name: str, config: dict) -> str:
    """The fingerprint prmkd gives the run of this resolved config (a teacher's fine-tuning or a plain run)."""
    from prmkd.config import RunConfig, from_dict
    from prmkd.data.dataset import prepare
    from prmkd.experiment.runner import fingerprint
    from prmkd.teachers.build import TeacherRunConfig, finetune_fingerprint, pretrain_key

    if name.startswith("teacher-"):
        t = from_dict(TeacherRunConfig, config)
        key = pretrain_key(t, [prepare(s, log=None) for s in t.sources])[1] if t.sources else None
        return finetune_fingerprint(t, prepare(t.data, log=None), key)
    rc = from_dict(RunConfig, config)
    return fingerprint(rc, prepare(rc.data, log=None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="runs/scientific", help="the pipeline folder holding the rebuilt runs")
    ap.add_argument("--committed", default=str(RESULTS / "prmkd_scientific.json"))
    ap.add_argument("--out", default=str(RESULTS / "rebuilt_scientific.json"))
    args = ap.parse_args()
    from prmkd.io import read_json

    committed = read_json(Path(args.committed), "committed results")
    made_by = {"command": committed.get("pipeline_command"), "commit": committed.get("pipeline_commit"),
               "date": committed.get("pipeline_date"), "machine": committed.get("machine")}
    old = {(r["name"], r["seed"]): r for r in committed["runs"] if r.get("group") == "main"}
    pipe = ROOT / args.pipeline
    found = sorted(pipe.glob("teachers/*/finetune/results.json")) + sorted(pipe.glob("baselines/*/results.json"))
    runs, comparisons = [], []
    for path in found:
        new = read_json(path, "results file")
        was = old.get((new["name"], new["seed"]))
        if was is None:
            continue
        if run_fingerprint(was["name"], was["config"]) != new["fingerprint"]:
            raise SystemExit(f"{path.parent}: the committed {was['name']} seed {was['seed']} is another run "
                             f"(its config does not give fingerprint {new['fingerprint']})")
        env = new["environment"]
        runs.append({**{k: new[k] for k in KEEP}, "build": "rebuilt", "fingerprint": new["fingerprint"],
                     "run_dir": str(path.parent.relative_to(ROOT)), "stopped": new.get("stopped"),
                     "budget_ended": new.get("budget_ended"), "pretraining": new.get("pretraining"),
                     "machine": env["machine"], "commit": env["commit"], "date": env["date"]})
        runs.append({**{k: was[k] for k in KEEP}, "build": "committed", "fingerprint": new["fingerprint"],
                     **{k: made_by[k] for k in ("machine", "commit", "date")}})
        comparisons.append({"name": f"{new['name']} seed {new['seed']}: test NDCG@10, rebuilt - committed",
                            "a": new["name"], "b": was["name"], "seed": new["seed"], "a_build": "rebuilt",
                            "b_build": "committed", "metric": "ndcg@10",
                            "value": round(new["metrics"]["test"]["ndcg@10"] - was["metrics"]["test"]["ndcg@10"], 6),
                            "p_value": None})
    if not runs:
        raise SystemExit(f"{pipe}: no finished teacher or baseline run that {args.committed} also holds")
    write_json(Path(args.out), {
        **header(), "pipeline": args.pipeline, "committed_file": str(Path(args.committed).relative_to(ROOT)),
        "committed_made_by": made_by, "runs": runs, "comparisons": comparisons,
        "notes": ["Each pair is one run (same fingerprint); seeded CPU runs repeat bit for bit on one machine, on "
                  "another CPU model the last digits differ and grow through training.",
                  "The committed file keeps each run's metrics and timing, not its per-user values: no paired test "
                  "between the two builds is possible (p_value null)."]})
    for c in comparisons:
        print(f"{c['name']}: {c['value']:+.6f}")


if __name__ == "__main__":
    main()
