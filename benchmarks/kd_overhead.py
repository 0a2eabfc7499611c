"""What a distillation epoch costs against a plain one, measured side by side in one process.

    python benchmarks/kd_overhead.py runs/ml100k runs/scientific     # -> benchmarks/results/kd_overhead.json

For each pipeline run folder: its plain student (baselines/<student>-seed0) and its PRM-KD student
(distill/prmkd-<student>-seed0) each run the same first batches of their own epoch (same batch size and length
bucketing), forward + backward + Adam step, interleaved round by round (`experiment.efficiency.step_seconds`);
an epoch is seconds per step x steps per epoch. The KD step is also cut into its parts (student forward and own
loss, teacher rows and logits, fusion Eq. 1-4, the student's KD loss, backward) on the same batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, write_json  # noqa: E402


def parts(model, loss, batches, rounds: int) -> dict:
    """Median seconds of each part of a PRM-KD step over `rounds` passes through `batches`."""
    import torch

    from prmkd.distillation.kd import candidate_set, fused_targets, kd_loss

    cfg, ds = loss.cfg, loss.ds
    loss._place(torch.device("cpu"))
    times: dict[str, list[float]] = {}
    model.train()
    for _ in range(rounds):
        acc = dict.fromkeys(("student forward + own loss", "teacher rows + logits", "fusion (Eq. 1-4)",
                             "student KD loss", "backward"), 0.0)
        for b in batches:
            t = time.perf_counter()
            enc = model.encode(b)
            own = model.own_loss(enc)
            t1 = time.perf_counter()
            keep = loss.kd_instances(enc)
            ids, targets = enc.instance_ids[keep], enc.targets[keep]
            cands, _ = candidate_set(targets, cfg.candidates, ds.n_items, cfg.unique_candidates)
            with torch.no_grad():
                tl = torch.empty(len(loss.caches), len(ids), len(cands))
                for k, c in enumerate(loss.caches):
                    c.logits("train", ids, cands, out=tl[k])
                t2 = time.perf_counter()
                q, _ = fused_targets(tl, loss.w_dev, cfg.temperature, cfg.epsilon, cfg.normalization, cfg.fusion,
                                     inplace=True)
            t3 = time.perf_counter()
            kd = kd_loss(model.candidate_scores(enc, cands)[keep] / cfg.student_temperature, q, cfg.kl)
            t4 = time.perf_counter()
            (own + cfg.kd_weight * kd).backward()
            model.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            for k, dt in zip(acc, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                acc[k] += dt / len(batches)
        for k, v in acc.items():
            times.setdefault(k, []).append(v)
    return {k: round(statistics.median(v), 5) for k, v in times.items()}


def measure(folder: Path, steps: int, rounds: int, threads: int, max_instances: int | None = None) -> dict:
    """One folder's ratio; `max_instances` replaces the run's cap on KD instances per batch (None: the run's)."""
    import dataclasses

    import torch

    from prmkd.data.batches import TrainBatches
    from prmkd.distillation.trainer import KDLoss
    from prmkd.experiment.efficiency import step_seconds
    from prmkd.experiment.layout import PipelineLayout
    from prmkd.experiment.runner import load_run
    from prmkd.io import read_json

    torch.set_num_threads(threads)
    layout = PipelineLayout(folder)
    student = read_json(layout.config)["student"]
    plain, rc, ds = load_run(layout.baseline(student, 0).path, log=lambda m: None)
    kd_model, kd_rc, _ = load_run(layout.distilled(student, 0).path, ds, log=lambda m: None)
    if max_instances is not None:
        kd_rc.distill = dataclasses.replace(kd_rc.distill, max_instances=max_instances)
    loss = KDLoss(kd_rc.distill, ds)
    entries = [{"name": student, "model": plain, "batch_size": rc.train.batch_size, "bucket": rc.train.bucket},
               {"name": f"prmkd-{student}", "model": kd_model, "loss_fn": loss, "batch_size": kd_rc.train.batch_size,
                "bucket": kd_rc.train.bucket}]
    sec = step_seconds(entries, ds, steps=steps, rounds=rounds)
    n_steps = {e["name"]: len(TrainBatches(ds, e["batch_size"], 0, e["bucket"])) for e in entries}
    epoch = {k: v * n_steps[k] for k, v in sec.items()}
    tb = TrainBatches(ds, kd_rc.train.batch_size, 0, kd_rc.train.bucket)
    it = tb.epoch(0)
    batches = [next(it)[1] for _ in range(min(steps, len(tb)))]
    enc = kd_model.encode(batches[0])
    return {"run_folder": str(folder), "dataset": ds.name, "student": student, "teachers": loss.info["teacher_names"],
            "teacher_dims": [c.dim for c in loss.caches], "distill": kd_rc.distill.__dict__ | {"teachers": None},
            "instances_first_batch": int((enc.instance_ids >= 0).sum()),
            "candidates_first_batch": int(len(enc.targets.unique())), "step_seconds": sec,
            "epoch_seconds": epoch, "ratio": round(epoch[f"prmkd-{student}"] / epoch[student], 3),
            "kd_step_parts_seconds": parts(kd_model, loss, batches, rounds), "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-instances", type=int, nargs="+", default=None, metavar="N",
                    help="also measure each folder with these caps on KD instances per batch (0: none)")
    ap.add_argument("--out", default=str(RESULTS / "kd_overhead.json"))
    args = ap.parse_args()
    import os

    os.chdir(ROOT)
    hdr = header()
    caps = args.max_instances or [None]
    rows = [measure(f, args.steps, args.rounds, args.threads, cap) for f in args.folders for cap in caps]
    comps = [{"name": f"{r['dataset']}: PRM-KD epoch / plain epoch (side by side, one process; KD instances per "
                      f"batch capped at {r['distill']['max_instances'] or 'none'})",
              "a": f"prmkd-{r['student']}", "b": r["student"], "metric": "epoch_seconds", "value": r["ratio"]}
             for r in rows]
    runs = [{"name": name, "role": "distilled" if name.startswith("prmkd-") else "baseline", "dataset": r["dataset"],
             "seed": 0, "metrics": {}, "timing": {"epoch_seconds": round(v, 3)}}
            for r in rows for name, v in r["epoch_seconds"].items()]
    write_json(Path(args.out), {**hdr, "method": __doc__.strip(), "measurements": rows, "runs": runs,
                                "comparisons": comps})


if __name__ == "__main__":
    main()
