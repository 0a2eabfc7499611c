"""Recformer-style teacher (CPU configuration): training-step and scoring time in float32 vs bfloat16 autocast,
measured side by side in one process on the same batches.

    python benchmarks/recformer_bf16.py            # -> benchmarks/results/recformer_bf16.json
    python benchmarks/recformer_bf16.py --emulated --out benchmarks/results/recformer_bf16_avx2.json

Two models with identical weights (one with `bf16 = true`) each run the same Scientific_UniSRec training batches
(forward, own loss, backward, Adam step) in alternating rounds; the median step time of each is reported, with
their ratio. It also scores the same validation users with both and reports how far the bfloat16 scores are
from the float32 ones. bfloat16 autocast needs a CPU with AVX512-BF16 (or AMX) to be fast; the machine's flags
are recorded. Where the CPU lacks them, `bf16 = true` runs in float32 (so both models would be the same);
--emulated runs bfloat16 autocast there all the same, to measure what the fallback saves.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, header, write_json  # noqa: E402


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per model per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--emulated", action="store_true",
                    help="on a CPU without native bfloat16, autocast to bfloat16 anyway (emulated) instead of "
                         "falling back to float32")
    ap.add_argument("--out", default=str(RESULTS / "recformer_bf16.json"))
    ap.add_argument("--mode", default="live", choices=["live", "table"],
                    help="live: the pipeline's teacher (every item re-encoded with gradients at every step, every "
                         "position trained); table: the item table frozen within an epoch, 2 positions per window")
    args = ap.parse_args()

    import torch

    from prmkd.config import DataConfig
    from prmkd.data.batches import TrainBatches, eval_batches
    from prmkd.data.dataset import cache_root, prepare
    from prmkd.teachers import recformer
    from prmkd.training import seed_everything

    torch.set_num_threads(args.threads)
    dcfg = DataConfig(path=str(DATA))
    ds = prepare(dcfg)
    seed_everything(0)
    mode = {"finetune_loss": "live", "positions_per_window": 0} if args.mode == "live" else {}
    base = recformer.build(recformer.preset("cpu", **mode), ds, cache_root(dcfg))
    models = {"float32": base, "bfloat16": copy.deepcopy(base)}
    models["bfloat16"].cfg = recformer.preset("cpu", bf16=True, **mode)
    from prmkd.env import bf16_native

    native = bf16_native("cpu")  # without it, `bf16 = true` runs in float32 (recformer.use_bf16) and says so
    if args.emulated and not native:
        recformer.use_bf16 = lambda device: True  # only the bfloat16 model has cfg.bf16 set
    autocast = native or args.emulated
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    batches = [b for _, b in TrainBatches(ds, args.batch_size, seed=0).epoch(0)][: args.steps + 2]
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.train()
        for b in batches[:2]:  # warm-up: the item table and the first shapes
            m.loss(b).backward()
            m.zero_grad()
    for _ in range(args.rounds):
        for name, m in models.items():
            torch.manual_seed(1)
            for b in batches[2:]:
                t0 = time.perf_counter()
                loss = m.loss(b)
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
                times[name].append(time.perf_counter() - t0)
    # scoring: the same validation users, both models back in eval mode with the same (trained) weights
    models["bfloat16"].load_state_dict(models["float32"].state_dict())
    batch = next(iter(eval_batches(ds, "valid", 512)))
    scores, score_s = {}, {}
    with torch.no_grad():
        for name, m in models.items():
            m.eval()
            m.full_scores(batch)  # warm-up (re-encodes the item table)
            t0 = time.perf_counter()
            scores[name] = m.full_scores(batch).float()
            score_s[name] = time.perf_counter() - t0
    finite = torch.isfinite(scores["float32"])  # the padding item's column is -inf in both
    diff = (scores["bfloat16"] - scores["float32"]).abs()[finite]
    top_f = scores["float32"].topk(10, dim=1).indices
    top_b = scores["bfloat16"].topk(10, dim=1).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_f, top_b)) / (10 * len(top_f))
    med = {k: statistics.median(v) for k, v in times.items()}
    doc = {**header({"cpu_bf16_flags": cpu_flags(), "torch_threads": args.threads, "bf16_native": native}),
           "dataset": "Scientific_UniSRec", "mode": args.mode,
           "config": f"recformer.preset('cpu', **{mode}) (the CPU configuration"
                     + (", as configs/scientific.toml's teacher)" if args.mode == "live" else ", table mode)"),
           "bf16_autocast_used": autocast,
           "bf16_autocast_emulated": autocast and not native,
           "batch_size": args.batch_size, "steps_per_round": args.steps, "rounds": args.rounds,
           "train_step_seconds_median": {k: round(v, 4) for k, v in med.items()},
           "train_step_speedup_bf16": round(med["float32"] / med["bfloat16"], 2),
           "score_512_users_seconds": {k: round(v, 4) for k, v in score_s.items()},
           "score_max_abs_diff": round(float(diff.max()), 4), "score_mean_abs_diff": round(float(diff.mean()), 5),
           "top10_overlap_bf16_vs_fp32": round(overlap, 4),
           "runs": [{"name": f"recformer-cpu-{k}", "role": "reference", "dataset": "Scientific_UniSRec", "seed": 0,
                     "config": {"preset": "cpu", "bf16": k == "bfloat16", "batch_size": args.batch_size},
                     "metrics": ({} if k == "float32" else  # float32 is the reference the scores are compared to
                                 {"score_mean_abs_diff_vs_float32": round(float(diff.mean()), 5),
                                  "top10_overlap_vs_float32": round(overlap, 4)}),
                     "timing": {"train_step_seconds": round(med[k], 4),
                                "score_512_users_seconds": round(score_s[k], 4)}}
                    for k in models],
           "comparisons": [{"name": f"{what} time: float32 / bfloat16", "a": "recformer-cpu-float32",
                            "b": "recformer-cpu-bfloat16", "metric": metric, "value": round(v, 2), "p_value": None}
                           for what, metric, v in (
                               ("training step", "train_step_seconds", med["float32"] / med["bfloat16"]),
                               ("scoring", "score_512_users_seconds", score_s["float32"] / score_s["bfloat16"]))],
           "notes": ["Both models in one process, alternating rounds over the same batches; median over all timed "
                     "steps. Scores are cosine / 0.05, so they range over [-20, 20]."]}
    write_json(Path(args.out), doc)


if __name__ == "__main__":
    main()
