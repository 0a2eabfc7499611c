"""The same seeded runs built again on another machine, side by side with the committed ones.

    python benchmarks/rebuilt_runs.py    # runs/scientific against prmkd_scientific.json -> rebuilt_scientific.json

A teacher config bounded by epochs and steps (not minutes) should give the same teacher on any machine, only later
on a slower one. This reads the teachers and plain baselines that `prmkd run configs/scientific.toml` has finished
in the pipeline folder of this checkout and sets each beside the committed run of the same name and seed
(`prmkd_scientific.json`, made on another machine): metrics, epochs, best epoch, seconds per epoch and, for a
teacher, its pre-training. Nothing is trained. The rebuilt runs' own results.json say which machine and commit made
them; the committed file's header says which made it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, write_json  # noqa: E402

METRICS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="runs/scientific", help="the pipeline folder holding the rebuilt runs")
    ap.add_argument("--committed", default=str(RESULTS / "prmkd_scientific.json"))
    ap.add_argument("--out", default=str(RESULTS / "rebuilt_scientific.json"))
    args = ap.parse_args()
    from prmkd.io import read_json

    committed = read_json(Path(args.committed), "committed results")
    old = {(r["name"], r["seed"]): r for r in committed["runs"] if r.get("group") == "main"}
    pipe = ROOT / args.pipeline
    found = sorted(pipe.glob("teachers/*/finetune/results.json")) + sorted(pipe.glob("baselines/*/results.json"))
    rows = []
    for path in found:
        new = read_json(path, "results file")
        key = (new["name"], new["seed"])
        if key not in old:
            continue
        was = old[key]
        row = {"name": new["name"], "role": new["role"], "seed": new["seed"],
               "run_dir": str(path.parent.relative_to(ROOT)),
               "rebuilt": {"machine": new["environment"]["machine"], "commit": new["environment"]["commit"],
                           "date": new["environment"]["date"], "metrics": _pick(new["metrics"]),
                           "timing": _timing(new["timing"]), "stopped": new.get("stopped"),
                           "budget_ended": new.get("budget_ended")},
               "committed": {"metrics": _pick(was["metrics"]), "timing": _timing(was["timing"])},
               "same_config": _comparable(new["config"]) == _comparable(was["config"])}
        if new["role"] == "teacher":
            pre = new.get("pretraining") or {}
            row["rebuilt"]["pretraining"] = {k: pre.get(k) for k in ("steps", "epochs", "train_seconds",
                                                                        "budget_ended") if k in pre}
        row["test_ndcg@10_difference"] = round(row["rebuilt"]["metrics"]["test"]["ndcg@10"]
                                               - row["committed"]["metrics"]["test"]["ndcg@10"], 6)
        rows.append(row)
    if not rows:
        raise SystemExit(f"{pipe}: no finished teacher or baseline run that {args.committed} also holds")
    worst = max(rows, key=lambda r: abs(r["test_ndcg@10_difference"]))
    result = {**header(), "pipeline": args.pipeline, "committed_file": str(Path(args.committed).relative_to(ROOT)),
              "committed_made_by": {k: committed.get(k) for k in ("pipeline_command", "pipeline_commit",
                                                                  "pipeline_date", "machine")},
              "rows": rows,
              "comparisons": [{"name": f"{r['name']} seed {r['seed']}: test NDCG@10 rebuilt - committed",
                               "a": "rebuilt", "b": "committed", "metric": "ndcg@10",
                               "value": r["test_ndcg@10_difference"], "p_value": None} for r in rows],
              "largest_test_ndcg@10_difference": {"run": f"{worst['name']} seed {worst['seed']}",
                                                  "value": worst["test_ndcg@10_difference"]},
              "notes": ["Seeded CPU runs repeat bit for bit on one machine; on another CPU model the last digits "
                        "differ and grow through training, so the two builds are compared, not expected equal.",
                        "The committed file keeps each run's metrics and timing, not its per-user values: no paired "
                        "test between the two builds is possible."]}
    write_json(Path(args.out), result)
    for r in rows:
        print(f"{r['name']:<18} seed {r['seed']}  test ndcg@10 rebuilt {r['rebuilt']['metrics']['test']['ndcg@10']:.4f}"
              f"  committed {r['committed']['metrics']['test']['ndcg@10']:.4f}  "
              f"epochs {r['rebuilt']['timing']['epochs']}/{r['committed']['timing']['epochs']}")


def _pick(m: dict) -> dict:
    return {s: {k: round(m[s][k], 6) for k in METRICS} for s in ("valid", "test")}


def _timing(t: dict) -> dict:
    return {k: t.get(k) for k in ("epochs", "best_epoch", "epoch_seconds", "train_seconds")}


def _comparable(config: dict) -> dict:
    """A run's resolved config without what does not change its result: where it runs and reports, and options
    added later while they are off (an older file does not have them)."""
    from prmkd.config import DATA_ADDED_LATER, DISTILL_ADDED_LATER, MODEL_ADDED_LATER, TRAIN_ADDED_LATER

    off = {**DATA_ADDED_LATER, **DISTILL_ADDED_LATER, **MODEL_ADDED_LATER, **TRAIN_ADDED_LATER}
    drop = {"out", "device", "threads", "progress", "cache_dir"}

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in drop and not (k in off and v == off[k])}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(config)


if __name__ == "__main__":
    main()
