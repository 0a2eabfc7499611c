"""How the cost of training, distilling and evaluating grows with the data.

    python benchmarks/scaling.py            # -> benchmarks/results/scaling.json and scaling.png
    python benchmarks/scaling.py --skip Scientific_UniSRec Office_UniSRec_EARec --max-users 0 \
        --out benchmarks/results/scaling_games.json   # Games alone: its PRM-KD / SASRec ratios

Each measurement runs in a fresh process (so its peak resident memory, VmHWM, is its own), one after another:

- real datasets, students only (SASRec d=64, batch 512 sequences, one thread): Scientific_UniSRec, Games_LLMRank,
  Office_UniSRec_EARec (ID-only). For each: one training epoch plain, one with PRM-KD from three teacher caches
  (random rows of widths 256, 384 and 128, float16, as the Scientific teachers; the cost of a distillation step
  does not depend on what the rows hold) on every instance, one with L_KD on 512 instances a batch
  (distill.max_instances = 512), the plain and the capped one again with a sampled softmax (model.negatives = 512:
  the own loss over 512 uniform negatives a batch instead of every item), and one full-ranking evaluation of the test
  users;
- synthetic datasets generated in the process (users with 10 items on average, uniform items), up to 1M users x
  100k items: the full-ranking evaluation of a SASRec (random weights) over every item for every user, and the
  teacher-cache gather path (4,096 random training instances per batch from a memory-mapped float16 cache);
- data-parallel: one Games epoch in 1 process x 1 thread and in 2 processes x 1 thread, the same global batch.
The caches are written first, each in a process of its own, so no measurement counts their writing.
The exponents are least-squares slopes of log(cost) against log(interactions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, load_average, write_json  # noqa: E402

SHARED = Path(os.environ.get("PRMKD_SHARED", ROOT.parent / "shared")) / "data"
REAL = {"Scientific_UniSRec": SHARED / "Scientific_UniSRec", "Games_LLMRank": SHARED / "Games_LLMRank",
        "Office_UniSRec_EARec": SHARED / "Office_UniSRec_EARec"}
SYNTHETIC = [(10_000, 10_000), (100_000, 30_000), (300_000, 50_000), (1_000_000, 100_000)]
TEACHER_DIMS = (256, 384, 128)
WORK = ROOT / "runs" / "scaling"
NEGATIVES = 512  # the sampled-softmax modes: SASRec's own loss over this many uniform negatives a batch
# mode -> (distill.max_instances, or None for no distillation (0 = every instance); model.negatives (0 = full softmax))
TRAIN_MODES = {"plain": (None, 0), "kd": (0, 0), "kd-cap512": (512, 0),
               "plain-sampled": (None, NEGATIVES), "kd-cap512-sampled": (512, NEGATIVES)}
LABELS = {"plain": "SASRec", "kd": "PRM-KD SASRec", "kd-cap512": "PRM-KD SASRec, 512 KD instances a batch",
          "plain-sampled": f"SASRec, sampled softmax ({NEGATIVES} negatives)",
          "kd-cap512-sampled": f"PRM-KD SASRec, 512 KD instances, sampled softmax ({NEGATIVES})"}
# (mode, base): the ratios reported, each mode's cost over its base's on the same dataset
RATIOS = [(m, "plain") for m in TRAIN_MODES if m != "plain"] + [("kd-cap512-sampled", "plain-sampled")]


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(users: int, items: int, seed: int = 0):
    """A dataset of `users` sequences (lengths 3 + Poisson(7)) over `items` uniform items, built with numpy."""
    from prmkd.data.dataset import SeqDataset, split_fingerprint

    rng = np.random.default_rng(seed)
    lens = 3 + rng.poisson(7, users)
    seq = rng.integers(1, items + 1, int(lens.sum()))
    ds = SeqDataset(f"synthetic-{users}x{items}", [f"i{i}" for i in range(1, items + 1)], [], seq,
                    np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), {}, [""] * (items + 1), {}, 50, {})
    ds.user_keys = [""] * users  # n_users is len(user_keys); names are never read here
    ds.meta["fingerprint"] = split_fingerprint(ds)
    return ds


def cache_folders(ds) -> list[Path]:
    return [WORK / "caches" / ds.name / f"t{k}" for k in range(len(TEACHER_DIMS))]


def random_caches(ds) -> list[Path]:
    """Teacher caches of random float16 rows for `ds`, written once in row blocks (never whole in memory). Run in a
    process of its own, so that writing them never counts in a measurement's peak memory."""
    from prmkd.teachers.cache import write_cache

    rows = {"items": ds.n_items + 1, "train": ds.n_train_instances, "valid": ds.n_users, "test": ds.n_users}
    for k, (d, f) in enumerate(zip(TEACHER_DIMS, cache_folders(ds))):
        if (f / "manifest.json").exists():
            continue
        rng = np.random.default_rng(k)
        raw = f.parent / f"{f.name}-raw"
        raw.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, r in rows.items():
            a = np.lib.format.open_memmap(raw / f"{name}.npy", mode="w+", dtype=np.float16, shape=(r, d))
            for lo in range(0, r, 1 << 16):
                a[lo:lo + (1 << 16)] = rng.standard_normal((min(1 << 16, r - lo), d), dtype=np.float32)
            a.flush()
            arrays[name] = np.load(raw / f"{name}.npy", mmap_mode="r")
        write_cache(f, name=f"t{k}", family="random", ds=ds, similarity="cos", temperature=0.07,
                    metrics={"valid": {"ndcg@10": 0.05 + 0.01 * k}}, dtype="float16", **arrays)
        del arrays
        for g in raw.glob("*.npy"):
            g.unlink()
        raw.rmdir()
    return cache_folders(ds)


def child(task: dict) -> dict:
    """One measurement, in this process."""
    import torch

    from prmkd.config import DataConfig, DistillConfig, EvalConfig
    from prmkd.data.batches import TrainBatches
    from prmkd.data.dataset import prepare
    from prmkd.evaluation import evaluate
    from prmkd.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if task["kind"] == "real":
        ds = prepare(DataConfig(path=task["path"]), log=None)
    else:
        ds = synthetic(task["users"], task["items"])
    setup = time.perf_counter() - t0
    out = {**task, "users_n": ds.n_users, "items_n": ds.n_items, "interactions": int(ds.seq_lengths.sum()),
           "train_instances": ds.n_train_instances, "setup_seconds": round(setup, 2)}
    if task["mode"] == "caches":
        t0 = time.perf_counter()
        random_caches(ds)
        return {**out, "write_seconds": round(time.perf_counter() - t0, 1)}
    cap, negatives = TRAIN_MODES.get(task["mode"], (None, 0))
    model = build_model({"name": "sasrec", "hidden_size": 64, "negatives": negatives}, ds)
    if task["mode"] in TRAIN_MODES:
        loss_fn = None
        if cap is not None:
            from prmkd.distillation.trainer import KDLoss

            loss_fn = KDLoss(DistillConfig(teachers=[str(c) for c in cache_folders(ds)],
                                           max_instances=cap), ds)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        tb = TrainBatches(ds, 512, 0, 20)
        model.train()
        t0 = time.perf_counter()
        for _, batch in tb.epoch(0):
            loss = loss_fn(model, batch) if loss_fn else model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out["epoch_seconds"] = round(time.perf_counter() - t0, 2)
        out["steps"] = len(tb)
    elif task["mode"] == "eval":
        t0 = time.perf_counter()
        res = evaluate(model, ds, "test", EvalConfig())
        out["eval_seconds"] = round(time.perf_counter() - t0, 2)
        out["max_elements"] = EvalConfig().max_elements
        out["test_ndcg@10"] = res.metrics["ndcg@10"]
    elif task["mode"] == "gather":
        from prmkd.teachers.cache import TeacherCache

        caches = [TeacherCache(c) for c in cache_folders(ds)]
        rng = np.random.default_rng(0)
        n, rows_s, logits_s = 100, 0.0, 0.0
        for _ in range(n):
            ids = torch.from_numpy(rng.integers(0, ds.n_train_instances, 4096))
            cands = torch.from_numpy(rng.integers(1, ds.n_items + 1, 2048))
            t0 = time.perf_counter()
            for c in caches:
                c.rows("train", ids)
            t1 = time.perf_counter()
            for c in caches:
                c.logits("train", ids, cands)
            rows_s, logits_s = rows_s + t1 - t0, logits_s + time.perf_counter() - t1
        out["gather_ms_per_batch"] = round(1000 * rows_s / n, 2)  # the rows of 4,096 instances, all teachers
        out["logits_ms_per_batch"] = round(1000 * logits_s / n, 2)  # rows and their logits vs 2,048 candidates
        out["cache_bytes_on_disk"] = sum(f.stat().st_size for c in caches for f in c.folder.glob("*.npy"))
    out["peak_rss_mib"] = round(vm_hwm_mib(), 1)
    return out


def run_child(task: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(task)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {task} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(res), flush=True)
    return res


def ddp_epoch(name: str, nproc: int) -> dict:
    """One SASRec epoch on a real dataset through `prmkd train --nproc N` (1 thread per process)."""
    out = WORK / f"ddp-{name}-{nproc}"
    cmd = [sys.executable, "-m", "prmkd.cli", "train", "--model", "sasrec", "--nproc", str(nproc),
           "--set", f'data.path="{REAL[name]}"', "--set", "model.hidden_size=64", "--set", "train.epochs=1",
           "--set", "train.batch_size=512", "--set", "train.bucket=20", "--set", "train.threads=1",
           "--set", "train.progress=false", "--set", f'out="{out}"', "--restart"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    res = json.loads((out / "results.json").read_text())
    return {"dataset": name, "processes": nproc, "threads_per_process": 1,
            "epoch_seconds": res["timing"]["epoch_seconds"], "test_ndcg@10": res["metrics"]["test"]["ndcg@10"],
            "world_size": res["world_size"]}


def slope(x, y) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def plot(real: list[dict], synth: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(12, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots(1, 3)
    for mode, marker in zip(TRAIN_MODES, "os^vD"):
        pts = [r for r in real if r["mode"] == mode]
        ax[0].loglog([r["interactions"] for r in pts], [r["epoch_seconds"] for r in pts], marker=marker,
                     label=LABELS[mode])
        ax[1].loglog([r["interactions"] for r in pts], [r["peak_rss_mib"] for r in pts], marker=marker,
                     label=LABELS[mode])
    ev = sorted((r for r in real + synth if r["mode"] == "eval"), key=lambda r: r["users_n"] * r["items_n"])
    ax[2].loglog([r["users_n"] * r["items_n"] for r in ev], [r["eval_seconds"] for r in ev], marker="o")
    ax[0].set(xlabel="interactions", ylabel="seconds per training epoch", title="Training epoch (1 thread)")
    ax[1].set(xlabel="interactions", ylabel="peak resident MiB", title="Peak memory of training")
    ax[2].set(xlabel="users x items scored", ylabel="seconds", title="Full-ranking evaluation")
    for a in ax:
        a.grid(True, which="both", alpha=0.3)
        a.xaxis.set_minor_formatter(NullFormatter())
    ax[0].legend(loc="upper left", fontsize=8)
    ax[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


DDP_COMPARISON = "Games epoch time: 1 process / 2 processes (same global batch, 1 thread each)"


def measure(args) -> dict:
    """The single-process measurements (real datasets, synthetic points), their fits and ratios."""
    real_tasks = [{"kind": "real", "name": n, "path": str(p)} for n, p in REAL.items() if n not in args.skip]
    synth_tasks = [{"kind": "synthetic", "users": u, "items": i} for u, i in SYNTHETIC if u <= args.max_users]
    cache_writes = [run_child({**t, "mode": "caches"}) for t in real_tasks + synth_tasks]
    real = [run_child({**t, "mode": m}) for t in real_tasks for m in (*TRAIN_MODES, "eval")]
    synth = [run_child({**t, "mode": m}) for t in synth_tasks for m in ("eval", "gather")]
    fits = {}  # a slope needs two sizes (one dataset alone, e.g. --skip the others: ratios only)
    for mode in TRAIN_MODES:
        pts = [r for r in real if r["mode"] == mode]
        x = [r["interactions"] for r in pts]
        if len(pts) > 1:
            fits[f"epoch_seconds_{mode}"] = slope(x, [r["epoch_seconds"] for r in pts])
            fits[f"peak_rss_{mode}"] = slope(x, [r["peak_rss_mib"] for r in pts])
    ev = [r for r in real + synth if r["mode"] == "eval"]
    if len(ev) > 1:
        fits["eval_seconds_vs_users_x_items"] = slope([r["users_n"] * r["items_n"] for r in ev],
                                                      [r["eval_seconds"] for r in ev])
    comps = []
    for name in [t["name"] for t in real_tasks]:
        at = {r["mode"]: r for r in real if r["name"] == name}
        for mode, base in RATIOS:
            comps += [{"name": f"{name}: {LABELS[mode]} / {LABELS[base]}, {what}", "a": mode, "b": base,
                       "metric": metric, "value": round(at[mode][metric] / at[base][metric], 3)}
                      for what, metric in (("epoch time", "epoch_seconds"), ("peak memory", "peak_rss_mib"))]
    runs = [{"name": f"{r.get('name') or 'synthetic'}-{r['mode']}", "role": "measurement", "dataset":
             r.get("name") or f"synthetic {r['users']}x{r['items']}", "seed": 0, "metrics": {},
             "timing": {k: r[k] for k in ("epoch_seconds", "eval_seconds", "gather_ms_per_batch") if k in r},
             **r} for r in real + synth]
    return {"fitted_exponents": fits, "real": real, "synthetic": synth, "cache_writes": cache_writes, "runs": runs,
            "comparisons": comps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--parts", nargs="+", choices=["measure", "ddp", "plot"], default=["measure", "ddp"],
                    help="ddp alone replaces the data-parallel part of an existing results file (run it on an "
                         "otherwise idle machine: two processes need both cores); plot redraws the figure from it")
    ap.add_argument("--skip", nargs="*", default=[], choices=list(REAL), help="real datasets to leave out")
    ap.add_argument("--max-users", type=int, default=SYNTHETIC[-1][0], help="the largest synthetic point")
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    os.chdir(ROOT)
    t_start = time.time()
    out = Path(args.out)
    if "measure" in args.parts:
        res = {**header(), "method": __doc__.strip(), **measure(args), "data_parallel": []}
    elif out.exists():
        res = json.loads(out.read_text())
    else:
        raise SystemExit(f"{out}: no results file to add to (run --parts measure first)")
    if "ddp" in args.parts:
        res["data_parallel"] = [ddp_epoch("Games_LLMRank", n) for n in (1, 2)]
        res["data_parallel_made_by"] = {**{k: v for k, v in header().items() if k != "machine"},
                                        "load_average_at_start": load_average()}
        res["comparisons"] = [c for c in res["comparisons"] if c["name"] != DDP_COMPARISON] + [
            {"name": DDP_COMPARISON, "a": "1 process", "b": "2 processes", "metric": "epoch_seconds",
             "value": round(res["data_parallel"][0]["epoch_seconds"] / res["data_parallel"][1]["epoch_seconds"], 3)}]
    png = out.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(res["real"], res["synthetic"], png)
    res["plot"] = png.name
    seconds = round(time.time() - t_start, 1)
    if "measure" in args.parts:
        res["script_seconds"] = seconds
    elif "ddp" in args.parts:
        res["data_parallel_made_by"]["seconds"] = seconds
    write_json(out, res)


if __name__ == "__main__":
    main()
