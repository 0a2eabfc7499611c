"""The three teachers on Scientific_UniSRec, with and without pre-training on Games_LLMRank, and what each
lever of the UniSRec-style teacher contributes (a small ablation table).

Run from the repository root (prmkd's virtualenv active):

    python benchmarks/teachers.py                  # every variant (finished ones are reused)
    python benchmarks/teachers.py --only unisrec   # variants whose name starts with this

Teachers are the ones of configs/scientific.toml (same options, same evaluation); a variant changes one thing.
Pre-trained variants share the pipeline's pre-training folder (runs/scientific/pretrain), and the three main
teachers are built in the pipeline's own folders, so `prmkd run configs/scientific.toml` reuses them (and this
script reuses what the pipeline built). Cost against SASRec (inference memory, per-user latency, training step)
is measured side by side by the pipeline's efficiency stage; it is copied here from
runs/scientific/efficiency.json when that exists. Output: benchmarks/results/teachers_scientific.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, header, log, mean_std, write_json  # noqa: E402

CONFIG = ROOT / "configs" / "scientific.toml"
PIPE = ROOT / "runs" / "scientific"
BENCH = ROOT / "runs" / "teachers-bench"

# name -> (base teacher of the config, pre-trained?, teacher option changes, what it tests)
PRETRAIN_CHANGES = {"unisrec-pretrain8": {"epochs": 8, "patience": 2}}
VARIANTS = {
    "unisrec": ("unisrec", True, {}, "chosen UniSRec-style teacher: inductive (text only), pre-trained on Games"),
    "unisrec-nopretrain": ("unisrec", False, {}, "same, no pre-training"),
    "unisrec-transductive": ("unisrec", True, {"id_embedding": True}, "text + item ID embedding (transductive)"),
    "unisrec-transductive-nopretrain": ("unisrec", False, {"id_embedding": True}, "transductive, no pre-training"),
    "unisrec-pretrain8": ("unisrec", True, {}, "pre-trained for 8 epochs only (the config: up to 40, patience 3)"),
    "unisrec-linear-nopretrain": ("unisrec", False, {"experts": 1},
                                  "one whitening expert instead of the 8-expert MoE adaptor (vs unisrec-nopretrain)"),
    "unisrec-frozen-transformer": ("unisrec", True, {"freeze_transformer": True},
                                   "fine-tune the adaptor only (transformer frozen after pre-training)"),
    "recformer": ("recformer", True, {}, "Recformer-style teacher (CPU configuration), pre-trained on Games"),
    "recformer-nopretrain": ("recformer", False, {}, "same, no pre-training (MiniLM weights only)"),
    "unim2rec": ("unim2rec", True, {}, "UniM2Rec-style teacher (text + image), pre-trained on Games"),
    "unim2rec-nopretrain": ("unim2rec", False, {}, "same, no pre-training"),
    "unim2rec-transductive": ("unim2rec", True, {"id_embedding": True}, "text + image + item ID embedding"),
}


# Probes: settings tried after the variants above, each made by one `prmkd teacher finetune` command (its run
# folder is the command's `out`); collected here, or run when the folder holds no finished run.
# name -> (family, what it tests, the command)
_RF = ("prmkd teacher finetune configs/teachers/recformer_scientific.toml --set pretrain_dir=runs/scientific/pretrain "
       "--set train.threads=1 --set teacher.bf16=true")
_RF_NOPRE = ("prmkd teacher finetune configs/teachers/recformer_scientific.toml --no-pretrain --set train.threads=1 "
             "--set teacher.bf16=true")
_US256 = ("prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml --no-pretrain "
          "--set teacher.hidden_size=256 --set train.threads=1")
_US256_PRE = ("prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
              "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
              "--set pretrain.threads=1")
_IDDROP8 = "--set teacher.id_embedding=true --set teacher.id_dropout=0.8"
PROBES = {
    "unisrec-d256-nopretrain": (
        "unisrec", "hidden size 256 instead of 128, no pre-training (vs unisrec-nopretrain)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp5/us-d256 "
        "--set teacher.hidden_size=256 --set train.threads=1"),
    "unim2rec-d256-nopretrain": (
        "unim2rec", "hidden size 256 instead of 128, no pre-training (vs unim2rec-nopretrain)",
        "prmkd teacher finetune configs/teachers/unim2rec_scientific.toml --no-pretrain --set out=runs/exp5/m2-d256 "
        "--set teacher.hidden_size=256 --set train.threads=1"),
    "unisrec-d256": (
        "unisrec", "hidden size 256 instead of 128, pre-trained on Games at that size (vs unisrec)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml --set out=runs/exp5/us-d256-pre "
        "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
        "--set pretrain.threads=1"),
    "unim2rec-d256": (
        "unim2rec", "hidden size 256 instead of 128, pre-trained on Games at that size (the same text-side "
                    "pre-training run as unisrec-d256; vs unim2rec)",
        "prmkd teacher finetune configs/teachers/unim2rec_scientific.toml --set out=runs/exp5/m2-d256-pre "
        "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
        "--set pretrain.threads=1"),
    "unisrec-d256-pretrain-patience10": (
        "unisrec", "as unisrec-d256, pre-training with patience 10 instead of 3 (unisrec-d256's pre-training "
                   "stopped after 12 epochs)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml --set out=runs/exp5/us-d256-pre10 "
        "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
        "--set pretrain.threads=1 --set pretrain.patience=10"),
    "unisrec-d256-nopretrain-t0.05": (
        "unisrec", "as unisrec-d256-nopretrain, temperature 0.05 instead of 0.07",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp6/us-d256-t05 "
        "--set teacher.hidden_size=256 --set teacher.temperature=0.05 --set train.threads=1"),
    "unisrec-d256-nopretrain-dropout0.3": (
        "unisrec", "as unisrec-d256-nopretrain, dropout and attention dropout 0.3 instead of 0.5",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp6/us-d256-dr3 "
        "--set teacher.hidden_size=256 --set teacher.dropout=0.3 --set teacher.attn_dropout=0.3 --set train.threads=1"),
    "unisrec-d256-nopretrain-patience10": (
        "unisrec", "as unisrec-d256-nopretrain, patience 10 instead of 5 and up to 150 epochs instead of 100",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp6/us-d256-p10 "
        "--set teacher.hidden_size=256 --set train.patience=10 --set train.epochs=150 --set train.threads=1"),
    "unisrec-d256-nopretrain-3layers": (
        "unisrec", "as unisrec-d256-nopretrain, 3 transformer layers and 4 heads instead of 2 and 2",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp6/us-d256-l3h4 "
        "--set teacher.hidden_size=256 --set teacher.layers=3 --set teacher.heads=4 --set train.threads=1"),
    "unisrec-d256-nopretrain-batch256": (
        "unisrec", "as unisrec-d256-nopretrain, batch size 256 instead of 512",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp6/us-d256-b256 "
        "--set teacher.hidden_size=256 --set train.batch_size=256 --set train.threads=1"),
    "unisrec-d256-nopretrain-16experts": (
        "unisrec", "as unisrec-d256-nopretrain, 16 adaptor experts instead of 8",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp6/us-d256-e16 "
        "--set teacher.hidden_size=256 --set teacher.experts=16 --set train.threads=1"),
    "unisrec-d256-nopretrain-seed1": (
        "unisrec", "as unisrec-d256-nopretrain, seed 1 instead of 0 (seed spread of the strongest teacher)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp7/us-d256-s1 "
        "--set teacher.hidden_size=256 --set train.seed=1 --set train.threads=1"),
    "unisrec-d256-nopretrain-seed2": (
        "unisrec", "as unisrec-d256-nopretrain, seed 2 instead of 0 (seed spread of the strongest teacher)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp7/us-d256-s2 "
        "--set teacher.hidden_size=256 --set train.seed=2 --set train.threads=1"),
    "unisrec-d256-nopretrain-inner512": (
        "unisrec", "as unisrec-d256-nopretrain, feed-forward size 512 instead of 256 (2x the hidden size, as at d=128)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp8/us-d256-i512 "
        "--set teacher.hidden_size=256 --set teacher.inner_size=512 --set train.threads=1"),
    "unisrec-d384-nopretrain": (
        "unisrec", "hidden size 384 (MiniLM's) and feed-forward size 768 instead of 256 and 256, no pre-training "
                   "(vs unisrec-d256-nopretrain)",
        "prmkd teacher finetune configs/teachers/unisrec_scientific_inductive.toml "
        "--no-pretrain --set out=runs/exp8/us-d384 "
        "--set teacher.hidden_size=384 --set teacher.inner_size=768 --set train.threads=1"),
    "unisrec-d256-nopretrain-lr5e-4": (
        "unisrec", "as unisrec-d256-nopretrain, learning rate 5e-4 instead of 1e-3, patience 8, up to 150 epochs",
        f"{_US256} --set out=runs/exp9/us-d256-lr5e-4 --set train.lr=5e-4 --set train.patience=8 "
        "--set train.epochs=150"),
    "unisrec-d256-nopretrain-dropout0.6": (
        "unisrec", "as unisrec-d256-nopretrain, dropout and attention dropout 0.6 instead of 0.5",
        f"{_US256} --set out=runs/exp9/us-d256-dr6 --set teacher.dropout=0.6 --set teacher.attn_dropout=0.6"),
    "unisrec-d256-nopretrain-ema0.99": (
        "unisrec", "as unisrec-d256-nopretrain, validating and keeping a moving average of the weights "
                   "(train.ema = 0.99 per step, a half-life of about 4 epochs)",
        f"{_US256} --set out=runs/exp9/us-d256-ema0.99 --set train.ema=0.99"),
    "unisrec-d256-nopretrain-ema0.98": (
        "unisrec", "as unisrec-d256-nopretrain-ema0.99 with train.ema = 0.98 (a half-life of about 2 epochs)",
        f"{_US256} --set out=runs/exp9/us-d256-ema0.98 --set train.ema=0.98"),
    "unisrec-d256-nopretrain-whitening1": (
        "unisrec", "as unisrec-d256-nopretrain, the MiniLM text embeddings ZCA-whitened on the domain's items before "
                   "the adaptor (teacher.text_whitening = 1)",
        f"{_US256} --set out=runs/exp9/us-d256-white1.0 --set teacher.text_whitening=1.0"),
    "unisrec-d256-nopretrain-whitening0.5": (
        "unisrec", "as unisrec-d256-nopretrain-whitening1, half of the covariance taken out (text_whitening = 0.5)",
        f"{_US256} --set out=runs/exp9/us-d256-white0.5 --set teacher.text_whitening=0.5"),
    "unisrec-d256-transductive-nopretrain": (
        "unisrec", "as unisrec-d256-nopretrain plus the item ID embedding (transductive), never dropped: the "
                   "reference for the id_dropout probes",
        f"{_US256} --set out=runs/exp9/us-d256-transductive --set teacher.id_embedding=true"),
    "unisrec-d256-transductive-iddrop0.5-nopretrain": (
        "unisrec", "as unisrec-d256-nopretrain plus the item ID embedding (transductive), each item's ID embedding "
                   "dropped with probability 0.5 while training (teacher.id_dropout)",
        f"{_US256} --set out=runs/exp9/us-d256-id-drop0.5 --set teacher.id_embedding=true "
        "--set teacher.id_dropout=0.5"),
    "unisrec-d256-transductive-iddrop0.8-nopretrain": (
        "unisrec", "as unisrec-d256-transductive-iddrop0.5-nopretrain with id_dropout 0.8",
        f"{_US256} --set out=runs/exp9/us-d256-id-drop0.8 {_IDDROP8}"),
    "unisrec-d256-transductive-iddrop0.8-nopretrain-seed1": (
        "unisrec", "as unisrec-d256-transductive-iddrop0.8-nopretrain, seed 1 instead of 0",
        f"{_US256} --set out=runs/exp9/us-d256-id-drop0.8-s1 {_IDDROP8} --set train.seed=1"),
    "unisrec-d256-transductive-iddrop0.8-nopretrain-seed2": (
        "unisrec", "as unisrec-d256-transductive-iddrop0.8-nopretrain, seed 2 instead of 0",
        f"{_US256} --set out=runs/exp9/us-d256-id-drop0.8-s2 {_IDDROP8} --set train.seed=2"),
    "unisrec-d256-transductive-iddrop0.8": (
        "unisrec", "as unisrec-d256-transductive-iddrop0.8-nopretrain, pre-trained on Games (the pre-training run of "
                   "unisrec-d256: the ID embedding and its dropout are fine-tuning options)",
        f"{_US256_PRE} --set out=runs/exp9/us-d256-pre-id-drop0.8 {_IDDROP8}"),
    "unisrec-d256-transductive-iddrop0.8-seed1": (
        "unisrec", "as unisrec-d256-transductive-iddrop0.8, fine-tuning seed 1 instead of 0 (the same pre-training)",
        f"{_US256_PRE} --set out=runs/exp9/us-d256-pre-id-drop0.8-s1 {_IDDROP8} --set train.seed=1"),
    "unisrec-d256-transductive-iddrop0.8-seed2": (
        "unisrec", "as unisrec-d256-transductive-iddrop0.8, fine-tuning seed 2 instead of 0 (the same pre-training)",
        f"{_US256_PRE} --set out=runs/exp9/us-d256-pre-id-drop0.8-s2 {_IDDROP8} --set train.seed=2"),
    "unim2rec-transductive-iddrop0.8": (
        "unim2rec", "as unim2rec plus the item ID embedding, each item's ID embedding dropped with probability 0.8 "
                    "while training (vs unim2rec-transductive, never dropped; the same pre-training run as unim2rec)",
        "prmkd teacher finetune configs/teachers/unim2rec_scientific.toml --set out=runs/exp10/m2-id-drop0.8 "
        f"--set pretrain_dir=runs/scientific/pretrain --set train.threads=1 --set pretrain.threads=1 {_IDDROP8}"),
    "unim2rec-d256-transductive-iddrop0.8": (
        "unim2rec", "as unim2rec-d256 plus the item ID embedding dropped with probability 0.8 while training "
                    "(the pre-training run of unim2rec-d256)",
        "prmkd teacher finetune configs/teachers/unim2rec_scientific.toml --set out=runs/exp10/m2-d256-id-drop0.8 "
        "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
        f"--set pretrain.threads=1 {_IDDROP8}"),
    "unim2rec-d256-transductive-iddrop0.8-seed1": (
        "unim2rec", "as unim2rec-d256-transductive-iddrop0.8, fine-tuning seed 1 instead of 0 (the same pre-training)",
        "prmkd teacher finetune configs/teachers/unim2rec_scientific.toml --set out=runs/exp10/m2-d256-id-drop0.8-s1 "
        "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
        f"--set pretrain.threads=1 {_IDDROP8} --set train.seed=1"),
    "unim2rec-d256-transductive-iddrop0.8-seed2": (
        "unim2rec", "as unim2rec-d256-transductive-iddrop0.8, fine-tuning seed 2 instead of 0 (the same pre-training)",
        "prmkd teacher finetune configs/teachers/unim2rec_scientific.toml --set out=runs/exp10/m2-d256-id-drop0.8-s2 "
        "--set pretrain_dir=runs/exp5/pretrain --set teacher.hidden_size=256 --set train.threads=1 "
        f"--set pretrain.threads=1 {_IDDROP8} --set train.seed=2"),
    "recformer-2layers-nopretrain": (
        "recformer", "two trained MiniLM layers (frozen_layers 4 instead of 5), no pre-training, bfloat16, lr 3e-4, "
                     "up to 40 epochs / 70 min with patience 4 (vs recformer-nopretrain)",
        f"{_RF_NOPRE} --set teacher.frozen_layers=4 --set out=runs/exp6/rf-L2-nopre --set train.lr=3e-4 "
        "--set train.epochs=40 --set train.patience=4 --set train.max_minutes=70"),
    "recformer-bf16-lr3e-4": (
        "recformer", "bfloat16 autocast (pre-training and fine-tuning), fine-tuning lr 3e-4 instead of 1e-4, "
                     "up to 25 epochs / 45 min (vs recformer)",
        f"{_RF} --set out=runs/exp5/rf-B --set train.lr=3e-4 --set train.epochs=25 --set train.max_minutes=45"),
    "recformer-live": (
        "recformer", "finetune_loss = live (every item re-encoded with gradients at every step, instead of the table "
                     "frozen within each epoch), bfloat16, lr 3e-4, up to 30 epochs / 60 min "
                     "(vs recformer-bf16-lr3e-4)",
        f"{_RF} --set teacher.finetune_loss=live --set train.lr=3e-4 --set out=runs/exp7/rf-live "
        "--set train.max_minutes=60 --set train.epochs=30"),
    "recformer-live-allpositions": (
        "recformer", "as recformer-live, every training position of a window per step instead of 2 (in the live "
                     "mode re-encoding the items dominates a step), up to 40 min (vs recformer-live)",
        f"{_RF} --set teacher.finetune_loss=live --set teacher.positions_per_window=0 --set train.lr=3e-4 "
        "--set out=runs/exp7/rf-live-all --set train.max_minutes=40 --set train.epochs=30"),
    "recformer-live-allpositions-long": (
        "recformer", "as recformer-live-allpositions, up to 65 min instead of 40 (that run was still improving "
                     "when its budget ended)",
        f"{_RF} --set teacher.finetune_loss=live --set teacher.positions_per_window=0 --set train.lr=3e-4 "
        "--set out=runs/exp7/rf-live-all-long --set train.max_minutes=65 --set train.epochs=40"),
    "recformer-live-nopretrain": (
        "recformer", "as recformer-live, no pre-training (MiniLM weights only)",
        f"{_RF_NOPRE} --set teacher.finetune_loss=live --set train.lr=3e-4 "
        "--set out=runs/exp7/rf-live-nopre --set train.max_minutes=60 --set train.epochs=30"),
    "recformer-live-allpositions-nopretrain": (
        "recformer", "as recformer-live-allpositions, no pre-training (MiniLM weights only), 10 epochs (what that "
                     "run trained in its 40 minutes)",
        f"{_RF_NOPRE} --set teacher.finetune_loss=live --set teacher.positions_per_window=0 "
        "--set train.lr=3e-4 --set out=runs/exp8/rf-live-all-nopre --set train.max_minutes=60 --set train.epochs=10"),
    "recformer-bf16-long": (
        "recformer", "bfloat16 autocast, the config's lr 1e-4, up to 60 epochs / 45 min with patience 5 instead of "
                     "15 epochs / 25 min with patience 3 (vs recformer)",
        f"{_RF} --set out=runs/exp5/rf-long --set train.epochs=60 --set train.patience=5 --set train.max_minutes=45"),
}


def run_probe(name: str, run: bool = True) -> dict | None:
    import shlex
    import subprocess

    family, what, command = PROBES[name]
    args = shlex.split(command)
    out = ROOT / next(a.split("=", 1)[1] for a in args if a.startswith("out="))
    results = out / "finetune" / "results.json"
    if not results.exists():
        if not run:
            log(f"probe {name}: no finished run in {out}, left out (--no-run)")
            return None
        log(f"running: {command}")
        subprocess.run(args, cwd=ROOT, check=True)
    res = json.loads(results.read_text())
    if res.get("stopped") is None and "metrics" not in res:
        raise SystemExit(f"{results}: not a finished run")
    t, pre = res["timing"], res.get("pretraining") or {}
    return {"variant": name, "family": family, "what": what, "pretrained": bool(pre.get("pretrained")),
            "command": command, "teacher": res["config"]["teacher"], "train": res["config"]["train"],
            "parameters": res["parameters"], "metrics": res["metrics"],
            "seconds": {"pretrain_train": pre.get("seconds_this_session"), "pretrain_epochs": None,
                        "finetune_train": t.get("train_seconds"), "finetune_epochs": t.get("epochs"),
                        "best_epoch": t.get("best_epoch"), "inputs": res.get("inputs_seconds")},
            "stopped": res.get("stopped"), "run_dir": str(out / "finetune")}


def teacher_run(name: str):
    from prmkd.experiment.pipeline import load_pipeline
    from prmkd.teachers.build import TeacherRunConfig

    cfg = load_pipeline(CONFIG)
    base, pretrained, changes, _ = VARIANTS[name]
    spec = next(t for t in cfg.teachers if (t.name or t.family) == base)
    main = name == base  # the pipeline's own teacher: built where the pipeline keeps it
    out = PIPE / "teachers" / base if main else BENCH / name
    pre = replace(spec.pretrain, **PRETRAIN_CHANGES.get(name, {}))
    return TeacherRunConfig(family=spec.family, name=name, teacher={**spec.teacher, **changes}, data=cfg.data,
                            sources=spec.sources if pretrained else [], pretrain=pre, train=spec.train,
                            eval=cfg.eval, out=str(out), cache_dtype=spec.cache_dtype,
                            pretrain_dir=str(PIPE / "pretrain"))


def run_variant(name: str) -> dict:
    from prmkd.teachers.build import run_export, run_finetune, run_pretrain

    tcfg = teacher_run(name)
    t0 = time.time()
    pre, rec = run_pretrain(tcfg, log)
    model, ds, res = run_finetune(tcfg, pre, rec, log)
    if name == VARIANTS[name][0]:
        run_export(replace(tcfg, name=name), model, ds, res, log)
    t = res["timing"]
    if tcfg.family == "recformer" and rec.get("weights"):  # pre-training ran for a time budget: its steps
        import torch

        meta = torch.load(rec["weights"], map_location="cpu", weights_only=False)
        rec = {**rec, "train_seconds": meta.get("train_seconds"), "epochs": f"{meta.get('steps')} steps"}
    return {"variant": name, "family": tcfg.family, "what": VARIANTS[name][3], "pretrained": bool(tcfg.sources),
            "teacher": res["config"]["teacher"], "parameters": res["parameters"],
            "metrics": res["metrics"],
            "seconds": {"pretrain_train": rec.get("train_seconds") or rec.get("seconds_this_session"),
                        "pretrain_epochs": rec.get("epochs"),
                        "finetune_train": t.get("train_seconds"), "finetune_epochs": t.get("epochs"),
                        "best_epoch": t.get("best_epoch"), "inputs": res.get("inputs_seconds")},
            "pretraining_key": rec.get("key") or (Path(rec["weights"]).parent.name if rec.get("weights") else None),
            "run_dir": str(Path(tcfg.out) / "finetune"), "script_seconds_this_variant": round(time.time() - t0, 1)}


# a teacher run again with other seeds: base row -> the rows of its other seeds
SEED_GROUPS = {"unisrec-d256-nopretrain": ["unisrec-d256-nopretrain-seed1", "unisrec-d256-nopretrain-seed2"],
               "unisrec-d256-transductive-iddrop0.8-nopretrain": [
                   "unisrec-d256-transductive-iddrop0.8-nopretrain-seed1",
                   "unisrec-d256-transductive-iddrop0.8-nopretrain-seed2"],
               "unisrec-d256-transductive-iddrop0.8": ["unisrec-d256-transductive-iddrop0.8-seed1",
                                                       "unisrec-d256-transductive-iddrop0.8-seed2"],
               "unim2rec-d256-transductive-iddrop0.8": ["unim2rec-d256-transductive-iddrop0.8-seed1",
                                                        "unim2rec-d256-transductive-iddrop0.8-seed2"]}


def _seed(row: dict) -> int:
    return (row.get("train") or {}).get("seed", 0)  # the VARIANTS rows carry no train config: seed 0


def seed_spread(rows: dict, sasrec: dict | None) -> dict:
    """Mean and sample standard deviation of test NDCG@10 / Recall@10 over each seed group that is complete."""
    out = {}
    for base, others in SEED_GROUPS.items():
        names = [base, *others]
        if not all(n in rows for n in names):
            continue
        rec = {"variants": names, "seeds": [_seed(rows[n]) for n in names]}
        for m in ("ndcg@10", "recall@10"):
            rec[f"test_{m}"] = mean_std([rows[n]["metrics"]["test"][m] for n in names])
        if sasrec:
            rec["vs_sasrec_test_ndcg@10_of_the_mean"] = round(rec["test_ndcg@10"]["mean"] / sasrec["ndcg@10"] - 1, 4)
        out[base] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="run the variants whose name starts with this")
    ap.add_argument("--probes", action="store_true", help="only collect (or run) the probes; keep the other rows")
    ap.add_argument("--no-run", action="store_true", help="collect finished probes only; run none")
    args = ap.parse_args()
    path = RESULTS / "teachers_scientific.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    rows = {r["variant"]: r for r in old.get("variants", [])}
    for name in ([] if args.probes else VARIANTS):
        if name.startswith(args.only):
            log(f"== {name}")
            rows[name] = run_variant(name)
    for name in PROBES:
        if name.startswith(args.only):
            log(f"== probe {name}")
            row = run_probe(name, run=not args.no_run)
            if row is not None:
                rows[name] = row
    order = [*VARIANTS, *PROBES]
    sasrec = _sasrec_reference()
    for r in rows.values():
        if sasrec:
            r["vs_sasrec_test_ndcg@10"] = round(r["metrics"]["test"]["ndcg@10"] / sasrec["ndcg@10"] - 1, 4)
    eff = PIPE / "efficiency.json"
    out = {**header(), "dataset": "Scientific_UniSRec", "source_domain": "Games_LLMRank", "config": str(CONFIG),
           "evaluation": "full ranking over all items, leave-one-out, unmasked, pessimistic ties (prmkd.evaluation)",
           "sasrec_reference": sasrec,
           "variants": [rows[n] for n in order if n in rows],
           "seed_spread": seed_spread(rows, sasrec),
           "runs": [{"name": f"teacher-{r['variant']}", "role": "teacher", "dataset": "Scientific_UniSRec",
                     "seed": _seed(r),
                     "config": r["teacher"], "metrics": r["metrics"], "timing": r["seconds"]}
                    for r in (rows[n] for n in order if n in rows)],
           "comparisons": [{"name": f"test ndcg@10: teacher-{r['variant']} / sasrec (mean of its seeds)",
                            "a": f"teacher-{r['variant']}", "b": "sasrec", "metric": "ndcg@10",
                            "value": round(1 + r["vs_sasrec_test_ndcg@10"], 4), "p_value": None}
                           for r in (rows[n] for n in order if n in rows) if "vs_sasrec_test_ndcg@10" in r],
           "cost_vs_sasrec": json.loads(eff.read_text()) if eff.exists() else None,
           "notes": [
               "Each variant changes one thing from the teacher of configs/scientific.toml; pre-trained variants "
               "with the same pre-training options share one pre-training run (the UniSRec- and UniM2Rec-style "
               "teachers pre-train the same text-side computation: Games has no image features).",
               "Training seconds are wall clock on a shared 2-core CPU (1 torch thread per process, 2-3 processes "
               "at once): indicative only.",
               "Recformer-style pre-training is bounded by time (pretrain_minutes), so its step count depends on "
               "the machine's load; see its pretrain record for the steps done.",
               "Probes (rows with a `command`) were tried after the variants: each is one run of its command "
               "(seed 0 unless the command sets train.seed), collected by `python benchmarks/teachers.py --probes`, "
               "which runs the command when its "
               "folder holds no finished run."]}
    if args.probes and old.get("command"):  # the other rows come from the earlier, full invocation
        out["variants_made_by"] = {k: old.get("variants_made_by", {}).get(k, old.get(k))
                                   for k in ("command", "commit", "date")}
    write_json(path, out)


def _sasrec_reference() -> dict | None:
    """Plain SASRec's mean test metrics over the pipeline's seeds, when the pipeline has run them."""
    runs = sorted((PIPE / "baselines").glob("sasrec-seed*/results.json"))
    if not runs:
        return None
    ms = [json.loads(p.read_text())["metrics"]["test"] for p in runs]
    return {k: round(sum(m[k] for m in ms) / len(ms), 6) for k in ms[0]} | {"seeds": len(ms)}


if __name__ == "__main__":
    main()
