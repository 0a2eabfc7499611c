"""Recformer-style teacher on Scientific_UniSRec: pre-trained on Games_LLMRank vs not pre-trained.

Run from the repository root (prmkd's virtualenv active):

    python benchmarks/recformer_teacher.py            # both variants
    python benchmarks/recformer_teacher.py --only pretrained

It drives the teacher pipeline that `prmkd teacher build configs/teachers/recformer_scientific.toml` runs, stage
by stage, and times each (wall clock and process CPU time; the machine is shared, so the CPU time is the better
guide to what an unloaded machine would take):
  1. pre-training on Games (its first part: tokenizing Games and caching its frozen-layer token states),
  2. fine-tuning on Scientific (its first part: the same for Scientific), early stopping on valid NDCG@10,
  3. export of the teacher cache, whose test metrics are then recomputed from the cache alone.
The variant without pre-training runs stages 2 and 3 only. Token-state caches go to a fresh folder (under
runs/recformer-bench/) so that their cost is measured; outputs: runs/recformer-bench/<variant>/ and
benchmarks/results/recformer_scientific.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, log, write_json  # noqa: E402

CONFIG = ROOT / "configs" / "teachers" / "recformer_scientific.toml"
OUT = ROOT / "runs" / "recformer-bench"


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.time(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = round(time.time() - self.w, 1), round(time.process_time() - self.c, 1)


def variant_config(name: str, fresh_cache: bool):
    from prmkd.config import load
    from prmkd.teachers.pipeline import TeacherRunConfig

    cache = OUT / "cache"
    if fresh_cache and cache.exists():
        shutil.rmtree(cache)
    overrides = [f"out={OUT / name}", f"data.cache_dir={cache}"]
    if name == "scratch":
        overrides.append("sources=[]")
    cfg = load(TeacherRunConfig, CONFIG, overrides)
    for s in cfg.sources:
        s.cache_dir = str(cache)
    cfg.name = f"recformer-{name}"
    return cfg


def run_variant(name: str, fresh_cache: bool) -> dict:
    from prmkd.teachers.cache import TeacherCache, evaluate_cache
    from prmkd.teachers.pipeline import run_export, run_finetune, run_pretrain

    cfg = variant_config(name, fresh_cache)
    timing = {}
    with Clock() as c:
        pre_path, pre_rec = run_pretrain(cfg, log=log)
    timing["pretrain"] = {"wall": c.wall, "cpu": c.cpu}
    if pre_path is not None:
        import torch

        ck = torch.load(pre_path, map_location="cpu", weights_only=False)
        timing["pretrain"].update(steps=ck["steps"], token_cache_seconds=ck["cache_seconds"],
                                  train_seconds=ck["train_seconds"])
        pre_rec["history"] = ck["history"]
    with Clock() as c:
        model, ds, res = run_finetune(cfg, pre_path, pre_rec, log=log)
    timing["finetune"] = {"wall": c.wall, "cpu": c.cpu, "token_cache_and_build_seconds": res.get("inputs_seconds"),
                          **res["timing"]}
    with Clock() as c:
        folder = run_export(cfg, model, ds, res, log=log)
    timing["export"] = {"wall": c.wall, "cpu": c.cpu}
    again = {s: evaluate_cache(TeacherCache(folder, ds), ds, s, cfg.eval).metrics for s in ("valid", "test")}
    timing["total"] = {k: round(sum(t.get(k, 0) for t in timing.values()), 1) for k in ("wall", "cpu")}
    log(f"{name}: valid ndcg@10 {res['metrics']['valid']['ndcg@10']:.4f}  test ndcg@10 "
        f"{res['metrics']['test']['ndcg@10']:.4f}  total wall {timing['total']['wall']:.0f}s cpu {timing['total']['cpu']:.0f}s")
    return {"name": "teacher-recformer" + ("" if name == "pretrained" else "-scratch"), "role": "teacher",
            "dataset": ds.name, "seed": cfg.train.seed, "config": res["config"], "metrics": res["metrics"],
            "cache_metrics": again, "cache": str(folder.relative_to(ROOT)), "timing": timing,
            "parameters": {"trained": res["parameters"], "frozen_plm_layers": model.frozen_parameters},
            "stopped": res["stopped"], "history": res["history"], "pretraining": pre_rec.get("history")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["pretrained", "scratch"], help="run one variant")
    ap.add_argument("--keep-cache", action="store_true", help="reuse token-state caches of an earlier run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    out = {**header(), "runs": [], "comparisons": []}
    names = [args.only] if args.only else ["pretrained", "scratch"]
    for i, name in enumerate(names):
        out["runs"].append(run_variant(name, fresh_cache=(i == 0 and not args.keep_cache)))
    runs = {r["name"]: r for r in out["runs"]}
    if len(runs) == 2:
        a, b = runs["teacher-recformer"], runs["teacher-recformer-scratch"]
        for split in ("valid", "test"):
            out["comparisons"].append({"name": f"pre-training effect, {split} ndcg@10", "a": a["name"],
                                       "b": b["name"], "metric": f"{split} ndcg@10",
                                       "value": round(a["metrics"][split]["ndcg@10"] / b["metrics"][split]["ndcg@10"], 4)})
    write_json(RESULTS / f"recformer_scientific{'_' + args.only if args.only else ''}.json", out)


if __name__ == "__main__":
    main()
