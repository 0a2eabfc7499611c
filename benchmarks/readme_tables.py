"""Markdown tables for the README's results section, read from the committed JSON in benchmarks/results/.

    python benchmarks/readme_tables.py > /tmp/tables.md

Formatting only: every number comes from a results file written by another benchmark script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS  # noqa: E402


def load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.exists() else None


def f4(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def ms(d: dict) -> str:
    return f"{d['mean']:.4f} ± {d['std']:.4f}" if d.get("n", 1) > 1 else f"{d['mean']:.4f}"


def teachers() -> None:
    d = load("teachers_scientific.json")
    if not d:
        return
    ref = d.get("sasrec_reference") or {}
    print("| teacher variant | pre-trained on Games | valid NDCG@10 | test NDCG@10 | test Recall@10 "
          "| vs SASRec (NDCG@10) "
          "| parameters | fine-tune s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for v in d["variants"]:
        m = v["metrics"]
        rel = v.get("vs_sasrec_test_ndcg@10")
        print(f"| `{v['variant']}` | {'yes' if v['pretrained'] else 'no'} | {f4(m['valid']['ndcg@10'])} | "
              f"{f4(m['test']['ndcg@10'])} | {f4(m['test']['recall@10'])} | "
              f"{'–' if rel is None else f'{rel:+.1%}'} | {v['parameters']:,} | {v['seconds']['finetune_train']} |")
    if ref:
        print(f"\nPlain SASRec (mean of {ref['seeds']} seeds): test NDCG@10 {ref['ndcg@10']:.4f}, "
              f"Recall@10 {ref['recall@10']:.4f}.")
    if d.get("seed_spread"):
        print("\n| teacher (3 seeds) | seeds | test NDCG@10 | test Recall@10 | vs SASRec (NDCG@10 of the mean) |")
        print("|---|---|---:|---:|---:|")
        for name, g in d["seed_spread"].items():
            print(f"| `{name}` | {', '.join(map(str, g['seeds']))} | {ms(g['test_ndcg@10'])} | "
                  f"{ms(g['test_recall@10'])} | {g['vs_sasrec_test_ndcg@10_of_the_mean']:+.1%} |")


def main_table(name: str = "prmkd_scientific.json") -> None:
    d = load(name)
    if not d:
        return
    rows = [(f"teacher {k[len('teacher-'):]}", {kk: {"mean": vv, "n": 1} for kk, vv in v["test"].items()})
            for k, v in d["teachers"].items()]
    rows += [(m, b["test"]) for m, b in d["baselines"].items()]
    rows += [("PRM-KD (SASRec)", d["main"]["prmkd"]["test"])]
    keys = ["recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20"]
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, t in rows:
        print(f"| {name} | " + " | ".join(ms(t[k]) for k in keys) + " |")
    rel = d["main"]["relative_improvement"]
    print("| PRM-KD vs SASRec | " + " | ".join(f"{rel[k]:+.1%}" for k in keys) + " |")
    for c in d["main"]["paired_t_tests"]:
        print(f"\nPaired t-test over {c['n_users']} users, {c['metric']}: PRM-KD {c['mean_a']:.4f} vs SASRec "
              f"{c['mean_b']:.4f}, t = {c['t']:.2f}, p = {c['p_value']:.2g}.", end="")
    print()


def ablations() -> None:
    d = load("prmkd_scientific.json")
    if not d or not d["ablations"]:
        return
    print("| variant (seed 0) | test NDCG@10 | test Recall@10 | vs full PRM-KD (NDCG@10) |")
    print("|---|---:|---:|---:|")
    for k, v in d["ablations"].items():
        print(f"| {k} | {ms(v['test']['ndcg@10'])} | {ms(v['test']['recall@10'])} | {v['vs_full_ndcg@10']:+.1%} |")
    print()
    print("| student (seed 0) | plain NDCG@10 | PRM-KD NDCG@10 | plain Recall@10 | PRM-KD Recall@10 |")
    print("|---|---:|---:|---:|---:|")
    for m, u in d["universality"].items():
        print(f"| {m} | {ms(u['plain']['test']['ndcg@10'])} | {ms(u['distilled']['test']['ndcg@10'])} | "
              f"{ms(u['plain']['test']['recall@10'])} | {ms(u['distilled']['test']['recall@10'])} |")
    print()
    if d["sweeps"]:
        groups: dict = {}
        for s in d["sweeps"]:
            groups.setdefault((s["param"], s["plain"], s["value"]), []).append(s)
        print("| sweep | value | seeds | valid NDCG@10 | test NDCG@10 |")
        print("|---|---:|---:|---:|---:|")
        for (param, plain, value), ss in sorted(groups.items()):
            name = param + (" (plain SASRec)" if plain else "")
            v = sum(x["valid_ndcg@10"] for x in ss) / len(ss)
            t = sum(x["test_ndcg@10"] for x in ss) / len(ss)
            print(f"| {name} | {value} | {len(ss)} | {v:.4f} | {t:.4f} |")
    for st in d.get("sweep_settings_with_seeds", []):
        rel = st["relative_improvement"]["ndcg@10"]
        tt = next(t for t in st["paired_t_tests"] if t["metric"] == "ndcg@10")
        print(f"\n{st['param']} = {st['value']} over seeds {st['seeds']}: test NDCG@10 {ms(st['test']['ndcg@10'])}, "
              f"Recall@10 {ms(st['test']['recall@10'])}, {rel:+.1%} NDCG@10 over SASRec (paired t-test p = "
              f"{tt['p_value']:.2g}).")
    if d.get("efficiency"):
        print("\n| model | training epoch / SASRec | inference memory / SASRec | latency per user / SASRec |")
        print("|---|---:|---:|---:|")
        for r in d["efficiency"]["ratios"]:
            print(f"| {r['name']} | {r['training_speed']:.2f}x | {r['inference_memory']:.2f}x | "
                  f"{r['inference_speed']:.2f}x |")


if __name__ == "__main__":
    for fn in (teachers, main_table, ablations, lambda: main_table("prmkd_scientific_live.json"),
               lambda: main_table("prmkd_scientific_strong.json"), lambda: main_table("prmkd_scientific_m2id.json")):
        fn()
        print()
